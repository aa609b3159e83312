//! One request's access log entry: filled in as the request goes (head, response head, body end)
//! and formatted once, when the response body has ended.
//!
//! JSON fields: `time` (request arrival, RFC 3339 UTC), `client` (address:port), `method`, `host`,
//! `path` (path and query, as received), `query` (the query alone), `protocol`, `status`, `pool`,
//! `backend` (the one that answered, or the last one tried; empty when none), `attempts`,
//! `request_bytes` and `response_bytes` (bodies), `duration` (arrival to the last body byte,
//! seconds), `upstream_time` (waiting on backends for response heads, seconds; `null` when no
//! backend was tried), `priority` (`low`, `normal`, `high` or `critical`), `queued` (time spent
//! waiting in the pool's queue for a free backend, seconds; 0 when it did not wait) and
//! `request_id`.
//!
//! Common: `client - - [time] "METHOD path PROTOCOL" status bytes`, as Apache and nginx write it.

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::uri::Authority;
use http::{HeaderValue, Method, Request, Version, header};

use crate::arena;
use crate::config::{AccessFormat, Priority};

/// A request's entry, in progress.
#[derive(Debug)]
pub struct Entry {
    time: SystemTime,
    started: Instant,
    client: SocketAddr,
    method: Method,
    host: String,
    target: String,
    version: Version,
    request_id: HeaderValue,
    /// Body bytes received from the client, counted by the request body as it streams.
    received: Arc<AtomicU64>,
    status: u16,
    pool: Option<Arc<str>>,
    backend: Option<Authority>,
    attempts: u32,
    upstream_time: Option<Duration>,
    priority: Priority,
    /// Time spent in the pool's queue.
    queued: Option<Duration>,
    sent: u64,
}

impl Entry {
    /// Starts the entry of `request` from `client`, which arrived at `started`.
    pub fn begin<B>(
        request: &Request<B>,
        client: SocketAddr,
        request_id: &HeaderValue,
        started: Instant,
    ) -> Entry {
        let host = match request.uri().authority() {
            Some(authority) => authority.as_str(),
            None => request
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or(""),
        };
        let target = request
            .uri()
            .path_and_query()
            .map_or_else(|| request.uri().path(), |pq| pq.as_str());
        Entry {
            time: SystemTime::now(),
            started,
            client,
            method: request.method().clone(),
            host: host.to_owned(),
            target: target.to_owned(),
            version: request.version(),
            // The entry lives as long as the response's body: not a slice of the arena.
            request_id: arena::own(request_id),
            received: Arc::new(AtomicU64::new(0)),
            status: 0,
            pool: None,
            backend: None,
            attempts: 0,
            upstream_time: None,
            priority: Priority::Normal,
            queued: None,
            sent: 0,
        }
    }

    /// The entry of a request refused before it could be served: a head that could not be
    /// parsed (400, 414, 431) or did not arrive in time (408). Nothing of it is known but the
    /// client: the method is `-` and the path empty, as nginx logs such a request. `sent`: the
    /// answer's body bytes.
    pub fn refused(client: SocketAddr, status: u16, sent: u64, took: Duration) -> Entry {
        let now = Instant::now();
        Entry {
            time: SystemTime::now() - took,
            started: now.checked_sub(took).unwrap_or(now),
            client,
            method: Method::from_bytes(b"-").expect("- is a token"),
            host: String::new(),
            target: String::new(),
            version: Version::HTTP_11,
            request_id: HeaderValue::from_static(""),
            received: Arc::default(),
            status,
            pool: None,
            backend: None,
            attempts: 0,
            upstream_time: None,
            priority: Priority::Normal,
            queued: None,
            sent,
        }
    }

    /// The counter the request body adds received bytes to.
    pub fn received(&self) -> &Arc<AtomicU64> {
        &self.received
    }

    /// The response head: its status, and where the request went.
    pub fn answered(
        &mut self,
        status: u16,
        pool: Option<Arc<str>>,
        backend: Option<Authority>,
        attempts: u32,
        upstream_time: Option<Duration>,
    ) {
        self.status = status;
        self.pool = pool;
        self.backend = backend;
        self.attempts = attempts;
        self.upstream_time = upstream_time;
    }

    /// How much the request mattered, and how long it waited in its pool's queue.
    pub fn prioritized(&mut self, priority: Priority, queued: Option<Duration>) {
        self.priority = priority;
        self.queued = queued;
    }

    /// The request's id.
    pub fn request_id(&self) -> &HeaderValue {
        &self.request_id
    }

    /// Response body bytes sent so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Counts response body bytes sent.
    pub fn add_sent(&mut self, bytes: u64) {
        self.sent += bytes;
    }

    /// Counts request bytes received outside the body (a tunnel's).
    pub fn add_received(&mut self, bytes: u64) {
        self.received.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The finished line in `format`, newline included.
    pub fn line(&self, format: AccessFormat) -> String {
        let duration = self.started.elapsed();
        match format {
            AccessFormat::Json => self.json(duration),
            AccessFormat::Common => self.common(),
        }
    }

    fn json(&self, duration: Duration) -> String {
        let mut line = String::with_capacity(384);
        let time = humantime::format_rfc3339_millis(self.time);
        let query = self.target.split_once('?').map_or("", |(_, q)| q);
        line.push_str("{\"time\":\"");
        let _ = write!(line, "{time}");
        line.push_str("\",\"client\":\"");
        let _ = write!(line, "{}", self.client);
        line.push_str("\",\"method\":");
        push_json(&mut line, self.method.as_str());
        line.push_str(",\"host\":");
        push_json(&mut line, &self.host);
        line.push_str(",\"path\":");
        push_json(&mut line, &self.target);
        line.push_str(",\"query\":");
        push_json(&mut line, query);
        let _ = write!(
            line,
            ",\"protocol\":\"{}\",\"status\":{},\"pool\":",
            protocol(self.version),
            self.status
        );
        push_json(&mut line, self.pool.as_deref().unwrap_or(""));
        line.push_str(",\"backend\":");
        push_json(
            &mut line,
            self.backend.as_ref().map_or("", Authority::as_str),
        );
        let _ = write!(
            line,
            ",\"attempts\":{},\"request_bytes\":{},\"response_bytes\":{},\"duration\":{:.6},\"upstream_time\":",
            self.attempts,
            self.received.load(Ordering::Relaxed),
            self.sent,
            duration.as_secs_f64(),
        );
        match self.upstream_time {
            Some(upstream) => {
                let _ = write!(line, "{:.6}", upstream.as_secs_f64());
            }
            None => line.push_str("null"),
        }
        let _ = write!(
            line,
            ",\"priority\":\"{}\",\"queued\":{:.6}",
            self.priority.name(),
            self.queued.unwrap_or_default().as_secs_f64()
        );
        line.push_str(",\"request_id\":");
        push_json(
            &mut line,
            &String::from_utf8_lossy(self.request_id.as_bytes()),
        );
        line.push_str("}\n");
        line
    }

    fn common(&self) -> String {
        let target: String = self
            .target
            .chars()
            .map(|c| if c == '"' { '\'' } else { c })
            .collect();
        let bytes = match self.sent {
            0 => "-".to_owned(),
            n => n.to_string(),
        };
        let request = if target.is_empty() {
            // A request refused unparsed: nginx writes its request line as "-".
            "-".to_owned()
        } else {
            format!("{} {} {}", self.method, target, protocol(self.version))
        };
        format!(
            "{} - - [{}] \"{request}\" {} {}\n",
            self.client.ip(),
            common_time(self.time),
            self.status,
            bytes
        )
    }
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// `text` as a JSON string.
fn push_json(line: &mut String, text: &str) {
    line.push('"');
    for c in text.chars() {
        match c {
            '"' => line.push_str("\\\""),
            '\\' => line.push_str("\\\\"),
            '\n' => line.push_str("\\n"),
            '\r' => line.push_str("\\r"),
            '\t' => line.push_str("\\t"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                let _ = write!(line, "\\u{:04x}", u32::from(c));
            }
            c => line.push(c),
        }
    }
    line.push('"');
}

/// `26/Nov/2026:13:55:44 +0000`: the Common Log Format's time, in UTC.
fn common_time(time: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let (days, of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{day:02}/{}/{year}:{:02}:{:02}:{:02} +0000",
        MONTHS[(month - 1) as usize],
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}

/// Year, month (1-12) and day of the month of a day counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        let request = Request::get("/a/b?x=1&y=2")
            .header("host", "shop\"example\\com")
            .body(())
            .unwrap();
        let mut entry = Entry::begin(
            &request,
            "10.1.2.3:5555".parse().unwrap(),
            &HeaderValue::from_static("abc"),
            Instant::now(),
        );
        entry.time = UNIX_EPOCH + Duration::from_secs(1_795_701_344);
        entry.answered(
            200,
            Some("web".into()),
            Some(Authority::from_static("127.0.0.1:9001")),
            2,
            Some(Duration::from_millis(3)),
        );
        entry.prioritized(Priority::High, Some(Duration::from_millis(250)));
        entry.received.store(12, Ordering::Relaxed);
        entry.add_sent(42);
        entry
    }

    #[test]
    fn json_lines_carry_every_field_and_parse() {
        let line = entry().line(AccessFormat::Json);
        assert!(line.ends_with("}\n"));
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["client"], "10.1.2.3:5555");
        assert_eq!(value["method"], "GET");
        assert_eq!(value["priority"], "high");
        assert_eq!(value["queued"], 0.25);
        assert_eq!(
            value["host"], "shop\"example\\com",
            "escaped, and read back"
        );
        assert_eq!(value["path"], "/a/b?x=1&y=2");
        assert_eq!(value["query"], "x=1&y=2");
        assert_eq!(value["protocol"], "HTTP/1.1");
        assert_eq!(value["status"], 200);
        assert_eq!(value["pool"], "web");
        assert_eq!(value["backend"], "127.0.0.1:9001");
        assert_eq!(value["attempts"], 2);
        assert_eq!(value["request_bytes"], 12);
        assert_eq!(value["response_bytes"], 42);
        assert_eq!(value["upstream_time"], 0.003);
        assert_eq!(value["request_id"], "abc");
        assert_eq!(value["time"], "2026-11-26T13:55:44.000Z");
        assert!(value["duration"].as_f64().unwrap() >= 0.0);
    }

    #[test]
    fn common_lines_are_ncsa_format() {
        let line = entry().line(AccessFormat::Common);
        assert_eq!(
            line,
            "10.1.2.3 - - [26/Nov/2026:13:55:44 +0000] \"GET /a/b?x=1&y=2 HTTP/1.1\" 200 42\n"
        );
    }

    #[test]
    fn a_refused_request_is_a_dash_in_either_format() {
        let took = Duration::from_millis(300);
        let mut refused = Entry::refused("10.1.2.3:5555".parse().unwrap(), 408, 40, took);
        refused.time = UNIX_EPOCH + Duration::from_secs(1_795_701_344);
        assert_eq!(
            refused.line(AccessFormat::Common),
            "10.1.2.3 - - [26/Nov/2026:13:55:44 +0000] \"-\" 408 40\n"
        );
        let value: serde_json::Value =
            serde_json::from_str(&refused.line(AccessFormat::Json)).unwrap();
        assert_eq!(value["method"], "-");
        assert_eq!(value["path"], "");
        assert_eq!(value["status"], 408);
        assert_eq!(value["response_bytes"], 40, "the answer's body");
        assert_eq!(value["upstream_time"], serde_json::Value::Null);
        assert!(value["duration"].as_f64().unwrap() >= 0.3, "{value}");
    }

    #[test]
    fn civil_dates_match_the_calendar() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_783), (2026, 11, 26));
    }
}
