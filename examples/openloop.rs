//! An open-loop HTTP/1.1 load generator, for `benches/overload.sh`, as wrk2 is one: requests leave
//! on a fixed schedule (`--rate` a second for `--duration`) whatever the answers' latency, and each
//! one's latency counts from the moment the schedule meant to send it, so time spent queued
//! anywhere, in this generator included, is not hidden (the coordinated omission of closed-loop
//! tools such as wrk, whose clients wait for an answer before they ask again).
//!
//! Each request names its priority in `x-priority`, from a fixed, interleaved sequence of ten:
//! 1 critical, 2 high, 4 normal, 3 low. It takes an idle keep-alive connection or opens one, up to
//! `--connections` (4096) in use at once; beyond that it waits for one, its clock running, so a
//! slow answer never holds the schedule back. Every request has `--timeout` (5 s) from its intended
//! send time: one not answered by then is a timeout, and its connection is closed. A run ends at
//! most `--duration` + `--timeout` after it starts.
//!
//! The result, per priority: requests sent; 2xx answers (count, share, p50, p99); shed answers
//! (503: count, p99, how many carried Retry-After); other statuses, timeouts and failures (no
//! answer); and the goodput, 2xx answers per second from the first request's send to the last
//! answer, so that a backend busy with requests whose clients gave up counts that time as lost. A
//! table goes to stderr and one JSON object, on one line, to stdout.
//!
//! Usage: `cargo run --release --example openloop -- --target 127.0.0.1:18301 --rate 2400
//! --duration 10s [--path /]`

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http::header::{CONNECTION, HOST, RETRY_AFTER};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

/// Sends GETs at a fixed rate and reports, per priority, what came back and how late.
#[derive(Parser)]
struct Args {
    /// The proxy or server to load: loopback only.
    #[arg(long)]
    target: SocketAddr,
    /// Requests a second.
    #[arg(long)]
    rate: f64,
    /// How long requests are sent for.
    #[arg(long, default_value = "10s")]
    duration: humantime::Duration,
    /// The path requested.
    #[arg(long, default_value = "/")]
    path: String,
    /// How long a request may take, from its intended send time.
    #[arg(long, default_value = "5s")]
    timeout: humantime::Duration,
    /// Most connections in use at once.
    #[arg(long, default_value_t = 4096)]
    connections: usize,
}

#[derive(Clone, Copy, PartialEq)]
enum Priority {
    Critical,
    High,
    Normal,
    Low,
}

impl Priority {
    const ALL: [Priority; 4] = [Self::Critical, Self::High, Self::Normal, Self::Low];

    fn name(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::High => "high",
            Self::Normal => "normal",
            Self::Low => "low",
        }
    }
}

/// Request `i` has priority `MIX[i % 10]`: 10% critical, 20% high, 40% normal, 30% low, spread
/// through time rather than in runs.
const MIX: [Priority; 10] = {
    use Priority::{Critical, High, Low, Normal};
    [
        Critical, Normal, Low, High, Normal, Low, Normal, High, Low, Normal,
    ]
};

/// How one request ended.
enum Outcome {
    Answered { status: u16, retry_after: bool },
    Timeout,
    Failed(String),
}

/// One request's priority, outcome, and latency from its intended send time.
struct Record {
    priority: Priority,
    outcome: Outcome,
    latency: Duration,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if !args.target.ip().is_loopback() {
        return Err("the load generator targets loopback only".into());
    }
    if !(args.rate > 0.0 && args.rate.is_finite()) || args.connections == 0 {
        return Err("--rate and --connections must be positive".into());
    }
    // One thread, as wrk2's -t1: it shares its core with the backend.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(run(&args))?;
    report.print_table();
    // The result itself, for the script that runs this: one JSON object on one line.
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// Sends the schedule's requests, each at its time, and gathers what they came to.
async fn run(args: &Args) -> Result<Report, http::Error> {
    let connections = Arc::new(Connections::new(args.target, args.connections));
    let duration: Duration = args.duration.into();
    let timeout: Duration = args.timeout.into();
    let total = (args.rate * duration.as_secs_f64()).round() as u64;
    let mut report = Report::new(args, duration);
    let mut tasks = JoinSet::new();
    let start = Instant::now();
    for index in 0..total {
        let intended = start + Duration::from_secs_f64(index as f64 / args.rate);
        // The timer wakes on whole milliseconds: requests due meanwhile leave together, late by
        // less than one, which their latency includes.
        tokio::time::sleep_until(intended).await;
        report.note_lag(Instant::now() - intended);
        let priority = MIX[(index % 10) as usize];
        let request = http::Request::get(args.path.as_str())
            .header(HOST, args.target.to_string())
            .header("x-priority", priority.name())
            .body(Empty::new())?;
        let connections = connections.clone();
        tasks.spawn(async move {
            let deadline = intended + timeout;
            let outcome = match tokio::time::timeout_at(deadline, connections.send(request)).await {
                Ok(Ok((status, retry_after))) => Outcome::Answered {
                    status,
                    retry_after,
                },
                Ok(Err(error)) => Outcome::Failed(error.to_string()),
                Err(_) => Outcome::Timeout,
            };
            let latency = Instant::now() - intended;
            Record {
                priority,
                outcome,
                latency,
            }
        });
        while let Some(done) = tasks.try_join_next() {
            report.add(done.expect("a request's task does not panic"));
        }
    }
    while let Some(done) = tasks.join_next().await {
        report.add(done.expect("a request's task does not panic"));
    }
    report.connections_opened = connections.opened.load(Ordering::Relaxed);
    report.finish(start.elapsed());
    Ok(report)
}

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The generator's keep-alive connections: a permit per request in flight bounds how many are
/// in use, and idle ones wait on a stack for the next request.
struct Connections {
    target: SocketAddr,
    permits: Semaphore,
    idle: Mutex<Vec<Connection>>,
    opened: AtomicU64,
}

/// One connection: its request sender and the task driving it, stopped (closing the socket)
/// when this is dropped: a request that timed out takes its connection with it.
struct Connection {
    sender: SendRequest<Empty<Bytes>>,
    driver: AbortHandle,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Connections {
    fn new(target: SocketAddr, most: usize) -> Self {
        Connections {
            target,
            permits: Semaphore::new(most),
            idle: Mutex::new(Vec::new()),
            opened: AtomicU64::new(0),
        }
    }

    /// Sends `request` on an idle connection or a new one: its status, and whether it carried
    /// Retry-After, once its body has been read.
    async fn send(&self, request: http::Request<Empty<Bytes>>) -> Result<(u16, bool), Error> {
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("the permits are never closed");
        let mut connection = self.take().await?;
        let response = connection.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let retry_after = response.headers().contains_key(RETRY_AFTER);
        let closing = response
            .headers()
            .get_all(CONNECTION)
            .iter()
            .any(|value| value.as_bytes().eq_ignore_ascii_case(b"close"));
        response.into_body().collect().await?;
        if !closing {
            self.idle.lock().push(connection);
        }
        Ok((status, retry_after))
    }

    /// An idle connection still open, or else a new one.
    async fn take(&self) -> Result<Connection, Error> {
        loop {
            let idle = self.idle.lock().pop();
            let Some(mut connection) = idle else { break };
            if connection.sender.ready().await.is_ok() {
                return Ok(connection);
            }
        }
        let stream = TcpStream::connect(self.target).await?;
        stream.set_nodelay(true)?;
        let (sender, driver) = http1::handshake(TokioIo::new(stream)).await?;
        self.opened.fetch_add(1, Ordering::Relaxed);
        // A connection's failure reaches the request using it through its sender.
        let driver = tokio::spawn(async move { driver.await.ok() }).abort_handle();
        Ok(Connection { sender, driver })
    }
}

/// What a run came to: the JSON object printed at its end.
#[derive(Serialize)]
struct Report {
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
#[derive(Serialize)]
struct Tally {
    priority: &'static str,
    sent: u64,
    ok: u64,
    ok_share: f64,
    ok_p50_ms: Option<f64>,
    ok_p99_ms: Option<f64>,
    shed: u64,
    shed_p99_ms: Option<f64>,
    shed_retry_after: u64,
    other: u64,
    timeout: u64,
    failed: u64,
    #[serde(skip)]
    ok_latencies: Vec<Duration>,
    #[serde(skip)]
    shed_latencies: Vec<Duration>,
}

impl Report {
    fn new(args: &Args, duration: Duration) -> Self {
        let tally = |priority: Priority| Tally {
            priority: priority.name(),
            sent: 0,
            ok: 0,
            ok_share: 0.0,
            ok_p50_ms: None,
            ok_p99_ms: None,
            shed: 0,
            shed_p99_ms: None,
            shed_retry_after: 0,
            other: 0,
            timeout: 0,
            failed: 0,
            ok_latencies: Vec::new(),
            shed_latencies: Vec::new(),
        };
        Report {
            target: args.target.to_string(),
            rate: args.rate,
            duration_s: duration.as_secs_f64(),
            timeout_s: Duration::from(args.timeout).as_secs_f64(),
            elapsed_s: 0.0,
            sent: 0,
            ok: 0,
            goodput: 0.0,
            max_send_lag_ms: 0.0,
            connections_opened: 0,
            other_statuses: BTreeMap::new(),
            first_failure: None,
            priorities: Priority::ALL.map(tally).into(),
        }
    }

    fn note_lag(&mut self, lag: Duration) {
        self.max_send_lag_ms = self.max_send_lag_ms.max(millis(lag));
    }

    fn add(&mut self, record: Record) {
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
            } => {
                tally.shed_latencies.push(record.latency);
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
    fn finish(&mut self, elapsed: Duration) {
        self.elapsed_s = elapsed.as_secs_f64();
        self.goodput = self.ok as f64 / self.elapsed_s;
        for tally in &mut self.priorities {
            tally.ok_latencies.sort_unstable();
            tally.shed_latencies.sort_unstable();
            tally.ok_p50_ms = percentile(&tally.ok_latencies, 0.50);
            tally.ok_p99_ms = percentile(&tally.ok_latencies, 0.99);
            tally.shed_p99_ms = percentile(&tally.shed_latencies, 0.99);
        }
    }

    fn print_table(&self) {
        let ms = |value: Option<f64>| value.map_or("-".into(), |ms| format!("{ms:.1}"));
        eprintln!(
            "{:<9} {:>7} {:>7} {:>6} {:>8} {:>8} {:>7} {:>8} {:>6} {:>7} {:>6}",
            "priority",
            "sent",
            "2xx",
            "share",
            "p50 ms",
            "p99 ms",
            "shed",
            "shed p99",
            "other",
            "timeout",
            "failed"
        );
        for t in &self.priorities {
            eprintln!(
                "{:<9} {:>7} {:>7} {:>5.1}% {:>8} {:>8} {:>7} {:>8} {:>6} {:>7} {:>6}",
                t.priority,
                t.sent,
                t.ok,
                100.0 * t.ok_share,
                ms(t.ok_p50_ms),
                ms(t.ok_p99_ms),
                t.shed,
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
