//! What a run came to: each request's record, tallied per priority, then printed as a table (on
//! stderr) and as one JSON object (on stdout).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use crate::Priority;

/// How one request ended.
pub enum Outcome {
    /// `at_once`: a 503 whose body says it was refused on arrival (Fulcrum's "(queue full)"),
    /// not after waiting in a queue.
    Answered {
        status: u16,
        retry_after: bool,
        at_once: bool,
    },
    Timeout,
    Failed(String),
}

/// One request's priority, outcome, and latency from its intended send time.
pub struct Record {
    pub priority: Priority,
    pub outcome: Outcome,
    pub latency: Duration,
}

/// What a run came to: the JSON object printed at its end.
#[derive(Default, Serialize)]
pub struct Report {
    target: String,
    rate: f64,
    duration_s: f64,
    timeout_s: f64,
    /// From the first request's send to the last answer (or timeout).
    elapsed_s: f64,
    sent: u64,
    ok: u64,
    /// 2xx answers per second of `elapsed_s`.
    goodput: f64,
    shed: u64,
    /// Over every priority: a p50 well below the queue timeout says most were refused at once.
    shed_p50_ms: Option<f64>,
    shed_p99_ms: Option<f64>,
    /// The shed answers refused on arrival (the queue full, nothing less important in it): what
    /// a shed costs, without the time an evicted or timed-out request spent queued first.
    shed_at_once: u64,
    shed_at_once_p99_ms: Option<f64>,
    /// How late the schedule sent its latest request, in ms: more than a few means this
    /// generator, not the target, was the bottleneck.
    max_send_lag_ms: f64,
    connections_opened: u64,
    /// Answers neither 2xx nor 503, by status.
    other_statuses: BTreeMap<u16, u64>,
    /// The first failure's message, to say what "failed" was.
    first_failure: Option<String>,
    priorities: Vec<Tally>,
}

/// One priority's share of a run.
#[derive(Default, Serialize)]
struct Tally {
    priority: &'static str,
    sent: u64,
    ok: u64,
    ok_share: f64,
    ok_p50_ms: Option<f64>,
    ok_p99_ms: Option<f64>,
    shed: u64,
    shed_p50_ms: Option<f64>,
    shed_p99_ms: Option<f64>,
    shed_retry_after: u64,
    other: u64,
    timeout: u64,
    failed: u64,
    #[serde(skip)]
    ok_latencies: Vec<Duration>,
    #[serde(skip)]
    shed_latencies: Vec<Duration>,
    #[serde(skip)]
    at_once_latencies: Vec<Duration>,
}

impl Report {
    pub fn new(target: SocketAddr, rate: f64, duration: Duration, timeout: Duration) -> Self {
        let tally = |priority: Priority| Tally {
            priority: priority.name(),
            ..Tally::default()
        };
        Report {
            target: target.to_string(),
            rate,
            duration_s: duration.as_secs_f64(),
            timeout_s: timeout.as_secs_f64(),
            priorities: Priority::ALL.map(tally).into(),
            ..Report::default()
        }
    }

    pub fn note_lag(&mut self, lag: Duration) {
        self.max_send_lag_ms = self.max_send_lag_ms.max(millis(lag));
    }

    pub fn add(&mut self, record: Record) {
        self.sent += 1;
        let index = Priority::ALL
            .iter()
            .position(|&priority| priority == record.priority)
            .expect("ALL holds every priority");
        let tally = &mut self.priorities[index];
        tally.sent += 1;
        match record.outcome {
            Outcome::Answered { status, .. } if (200..300).contains(&status) => {
                self.ok += 1;
                tally.ok_latencies.push(record.latency);
            }
            Outcome::Answered {
                status: 503,
                retry_after,
                at_once,
            } => {
                tally.shed_latencies.push(record.latency);
                if at_once {
                    tally.at_once_latencies.push(record.latency);
                }
                tally.shed_retry_after += u64::from(retry_after);
            }
            Outcome::Answered { status, .. } => {
                tally.other += 1;
                *self.other_statuses.entry(status).or_default() += 1;
            }
            Outcome::Timeout => tally.timeout += 1,
            Outcome::Failed(message) => {
                tally.failed += 1;
                self.first_failure.get_or_insert(message);
            }
        }
        tally.ok = tally.ok_latencies.len() as u64;
        tally.shed = tally.shed_latencies.len() as u64;
        tally.ok_share = tally.ok as f64 / tally.sent as f64;
    }

    /// The goodput and latency percentiles, once every record is in, `elapsed` after the start.
    pub fn finish(&mut self, elapsed: Duration, connections_opened: u64) {
        self.connections_opened = connections_opened;
        self.elapsed_s = elapsed.as_secs_f64();
        self.goodput = self.ok as f64 / self.elapsed_s;
        let mut shed = Vec::new();
        let mut at_once = Vec::new();
        for tally in &mut self.priorities {
            at_once.extend_from_slice(&tally.at_once_latencies);
            tally.ok_latencies.sort_unstable();
            tally.shed_latencies.sort_unstable();
            tally.ok_p50_ms = percentile(&tally.ok_latencies, 0.50);
            tally.ok_p99_ms = percentile(&tally.ok_latencies, 0.99);
            tally.shed_p50_ms = percentile(&tally.shed_latencies, 0.50);
            tally.shed_p99_ms = percentile(&tally.shed_latencies, 0.99);
            shed.extend_from_slice(&tally.shed_latencies);
        }
        shed.sort_unstable();
        self.shed = shed.len() as u64;
        self.shed_p50_ms = percentile(&shed, 0.50);
        self.shed_p99_ms = percentile(&shed, 0.99);
        at_once.sort_unstable();
        self.shed_at_once = at_once.len() as u64;
        self.shed_at_once_p99_ms = percentile(&at_once, 0.99);
    }

    pub fn print_table(&self) {
        let ms = |value: Option<f64>| value.map_or("-".into(), |ms| format!("{ms:.1}"));
        eprintln!(
            "{:<9} {:>7} {:>7} {:>6} {:>8} {:>8} {:>7} {:>8} {:>8} {:>6} {:>7} {:>6}",
            "priority",
            "sent",
            "2xx",
            "share",
            "p50 ms",
            "p99 ms",
            "shed",
            "shed p50",
            "shed p99",
            "other",
            "timeout",
            "failed"
        );
        for t in &self.priorities {
            eprintln!(
                "{:<9} {:>7} {:>7} {:>5.1}% {:>8} {:>8} {:>7} {:>8} {:>8} {:>6} {:>7} {:>6}",
                t.priority,
                t.sent,
                t.ok,
                100.0 * t.ok_share,
                ms(t.ok_p50_ms),
                ms(t.ok_p99_ms),
                t.shed,
                ms(t.shed_p50_ms),
                ms(t.shed_p99_ms),
                t.other,
                t.timeout,
                t.failed
            );
        }
        eprintln!(
            "goodput {:.1}/s over {:.1} s, {} req/s offered; latest send {:.1} ms late; {} connections opened",
            self.goodput, self.elapsed_s, self.rate, self.max_send_lag_ms, self.connections_opened
        );
        if let Some(failure) = &self.first_failure {
            eprintln!("first failure: {failure}");
        }
    }
}

/// The nearest-rank percentile of sorted latencies, in ms.
fn percentile(sorted: &[Duration], rank: f64) -> Option<f64> {
    let index = ((sorted.len() as f64 * rank).ceil() as usize).max(1) - 1;
    sorted.get(index).map(|&latency| millis(latency))
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
