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
//! (503: count, p50, p99, how many carried Retry-After); other statuses, timeouts and failures (no
//! answer); and the goodput, 2xx answers per second from the first request's send to the last
//! answer, so that a backend busy with requests whose clients gave up counts that time as lost. A
//! table goes to stderr and one JSON object, on one line, to stdout.
//!
//! Usage: `cargo run --release --example openloop -- --target 127.0.0.1:18301 --rate 2400
//! --duration 10s [--path /]`

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
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

mod report;

use report::{Outcome, Record, Report};

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
    let mut report = Report::new(args.target, args.rate, duration, timeout);
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
        tasks.spawn(send(
            connections.clone(),
            request,
            priority,
            intended,
            timeout,
        ));
        while let Some(done) = tasks.try_join_next() {
            report.add(done.expect("a request's task does not panic"));
        }
    }
    while let Some(done) = tasks.join_next().await {
        report.add(done.expect("a request's task does not panic"));
    }
    report.finish(start.elapsed(), connections.opened.load(Ordering::Relaxed));
    Ok(report)
}

/// One request, sent when it was meant to be (or as soon after as the timer allows): what came
/// of it, within `timeout` of `intended`.
async fn send(
    connections: Arc<Connections>,
    request: http::Request<Empty<Bytes>>,
    priority: Priority,
    intended: Instant,
    timeout: Duration,
) -> Record {
    let outcome = match tokio::time::timeout_at(intended + timeout, connections.send(request)).await
    {
        Ok(Ok((status, retry_after, at_once))) => Outcome::Answered {
            status,
            retry_after,
            at_once,
        },
        Ok(Err(error)) => Outcome::Failed(error.to_string()),
        Err(_) => Outcome::Timeout,
    };
    Record {
        priority,
        outcome,
        latency: Instant::now() - intended,
    }
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

    /// Sends `request` on an idle connection or a new one: its status, whether it carried
    /// Retry-After, and whether its body says it was refused on arrival ("(queue full)"), once
    /// its body has been read.
    async fn send(&self, request: http::Request<Empty<Bytes>>) -> Result<(u16, bool, bool), Error> {
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
        let body = response.into_body().collect().await?.to_bytes();
        let at_once = memchr::memmem::find(&body, b"(queue full)").is_some();
        if !closing {
            self.idle.lock().push(connection);
        }
        Ok((status, retry_after, at_once))
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
