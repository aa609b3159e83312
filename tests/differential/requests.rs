//! One raw request sent in six ways (three paces × plain and TLS) to a fresh proxy in front of
//! a fresh [`Recorder`], and the check that all six fare the same: the backend receives the
//! same bytes, and the client the same answer.

use std::fmt;

use super::common::{self, Certs, WAIT};
use crate::support::raw_client::{Pace, RawConnection};
use crate::support::recorder::{Received, Recorder};
use crate::support::wire::{self, Head, Response};

/// What a corpus request must come to, besides faring the same in every variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Forwarded once, whole; the backend's `200 ok` relayed.
    Served,
    /// Answered with this status by the proxy, the connection closed, nothing forwarded.
    Refused(u16),
    /// A body that cannot be read: `400` or no answer, the connection closed, and the backend
    /// never receives the request whole.
    NeverWhole,
    /// Only that it fares the same in every variant.
    Consistent,
}

/// One corpus entry.
pub struct Case {
    pub name: String,
    pub bytes: Vec<u8>,
    pub fate: Fate,
}

pub fn case(name: &str, bytes: impl Into<Vec<u8>>, fate: Fate) -> Case {
    Case {
        name: name.to_owned(),
        bytes: bytes.into(),
        fate,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Plain,
    Tls,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    Whole,
    ByteByByte,
    /// In one write on a keep-alive connection, after a `POST` with a small body was answered.
    AfterPost,
}

#[derive(Debug, Clone, Copy)]
struct Variant(Transport, Way);

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let transport = match self.0 {
            Transport::Plain => "plain",
            Transport::Tls => "TLS",
        };
        let way = match self.1 {
            Way::Whole => "whole",
            Way::ByteByByte => "byte by byte",
            Way::AfterPost => "after a POST",
        };
        write!(f, "{transport}, {way}")
    }
}

const VARIANTS: [Variant; 6] = [
    Variant(Transport::Plain, Way::Whole),
    Variant(Transport::Plain, Way::ByteByByte),
    Variant(Transport::Plain, Way::AfterPost),
    Variant(Transport::Tls, Way::Whole),
    Variant(Transport::Tls, Way::ByteByByte),
    Variant(Transport::Tls, Way::AfterPost),
];

/// The request before the corpus one in the "after a POST" variants; not compared.
const WARM_UP: &[u8] = b"POST /__warmup HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";

/// What one variant saw.
struct Seen {
    variant: Variant,
    /// What the backend received, the warm-up and the probe left out.
    received: Vec<Received>,
    /// Every backend connection was closed when we looked, so all the proxy sent was in.
    settled: bool,
    answer: Result<Response, String>,
    /// Whether the connection was closed after the answer.
    after: String,
}

/// Sends every case in every variant; panics listing every (case, variant) that missed its
/// fate and every case whose variants disagree.
pub async fn check(invariant: &str, cases: &[Case]) {
    let certs = Certs::new();
    let mut failures = Vec::new();
    for case in cases {
        let mut seen = Vec::new();
        for variant in VARIANTS {
            seen.push(run(&case.bytes, variant, &certs).await);
        }
        for seen in &seen {
            if let Err(why) = meets(case, seen) {
                failures.push((case.name.clone(), format!("[{}] {why}", seen.variant)));
            }
        }
        let backend: Vec<_> = seen
            .iter()
            .map(|s| (s.variant.to_string(), backend_text(s)))
            .collect();
        let answers: Vec<_> = seen
            .iter()
            .map(|s| (s.variant.to_string(), answer_text(s)))
            .collect();
        if std::env::var_os("DIFFERENTIAL_SHOW").is_some() {
            eprintln!("== {:?}\n{}\n{}", case.name, backend[0].1, answers[0].1);
        }
        if let Some(report) = common::disagreement("what the backend received", &backend) {
            failures.push((case.name.clone(), report));
        }
        if let Some(report) = common::disagreement("the answer", &answers) {
            failures.push((case.name.clone(), report));
        }
    }
    common::assert_none(invariant, cases.len(), &failures);
}

/// One variant, on a proxy and backend of its own.
async fn run(request: &[u8], variant: Variant, certs: &Certs) -> Seen {
    let recorder = Recorder::start().await;
    let proxy = certs.proxy(recorder.addr, "").await;
    let mut connection = match variant.0 {
        Transport::Plain => RawConnection::plain(proxy.addr).await,
        Transport::Tls => RawConnection::tls(proxy.tls_addr.expect("a TLS listener")).await,
    };
    let to_head = request.starts_with(b"HEAD ");
    let pace = match variant.1 {
        Way::ByteByByte => Pace::ByteByByte,
        Way::Whole | Way::AfterPost => Pace::Whole,
    };
    let warm_up = match variant.1 {
        Way::AfterPost => connection
            .exchange(WARM_UP, Pace::Whole, false, WAIT)
            .await
            .map(|_| ())
            .map_err(|why| format!("the POST before it was not answered: {why}")),
        _ => Ok(()),
    };
    let answer = match warm_up {
        Ok(()) => connection.exchange(request, pace, to_head, WAIT).await,
        Err(why) => Err(why),
    };
    let after = match answer {
        Ok(_) => connection.closed_after(WAIT).await,
        Err(_) => String::new(),
    };
    drop(connection);
    // Stopping the proxy closes its backend connections: once the backend has seen them all
    // closed, it has read everything the proxy sent.
    tokio::time::timeout(WAIT, proxy.stop()).await.ok();
    let settled = recorder.all_closed(WAIT).await;
    let received = recorder
        .received()
        .into_iter()
        .filter(|r| !matches!(r.target(), "/__warmup" | "/__probe"))
        .collect();
    Seen {
        variant,
        received,
        settled,
        answer,
        after,
    }
}

/// Whether `seen` meets the case's fate; if not, what it came to instead.
fn meets(case: &Case, seen: &Seen) -> Result<(), String> {
    let status = seen.answer.as_ref().ok().and_then(|r| r.head.status());
    let whole: Vec<_> = seen.received.iter().filter(|r| r.cut.is_none()).collect();
    let closed = seen.after == "closed";
    let to_head = case.bytes.starts_with(b"HEAD ");
    let short = || answer_text(seen).lines().next().unwrap_or("").to_owned();
    match case.fate {
        Fate::Served => {
            let body_ok = seen
                .answer
                .as_ref()
                .is_ok_and(|r| r.body == if to_head { &b""[..] } else { &b"ok"[..] });
            if status != Some(200) || !body_ok {
                return Err(format!(
                    "expected the backend's 200 \"ok\", got {}",
                    short()
                ));
            }
            if whole.len() != 1 || seen.received.len() != 1 {
                return Err(format!(
                    "expected the backend to receive it once, whole; it received:\n{}",
                    backend_text(seen)
                ));
            }
        }
        Fate::Refused(code) => {
            if status != Some(code) || !closed || !seen.received.is_empty() {
                return Err(format!(
                    "expected {code}, closed, nothing forwarded; got {} (then {}), backend received: {}",
                    short(),
                    seen.after,
                    backend_text(seen)
                ));
            }
        }
        Fate::NeverWhole => {
            let refused = status.is_none_or(|s| s == 400) && (closed || status.is_none());
            if !refused || !whole.is_empty() {
                return Err(format!(
                    "expected 400 or no answer, closed, never forwarded whole; got {} (then {}), backend received: {}",
                    short(),
                    seen.after,
                    backend_text(seen)
                ));
            }
        }
        Fate::Consistent => {}
    }
    Ok(())
}

/// What the backend received, readable, with what legitimately differs replaced: the request
/// id, and `X-Forwarded-Proto` where it names the listener the request came in on.
fn backend_text(seen: &Seen) -> String {
    // A head sent ahead of a body cut before its first byte carries nothing of the request to
    // compare: whether it left before the body failed depends on how soon the backend
    // connection was ready, not on the request. Such a head counts as nothing.
    let received: Vec<_> = seen
        .received
        .iter()
        .filter(|r| !(r.body.is_empty() && r.cut.is_some()))
        .collect();
    if received.is_empty() {
        return "nothing".to_owned();
    }
    let proto = match seen.variant.0 {
        Transport::Plain => "http",
        Transport::Tls => "https",
    };
    let mut text = String::new();
    for received in received {
        let forwarded_proto = Head::parse(&received.head).values("x-forwarded-proto");
        let mut placeholders = vec![("x-request-id", "<request id>")];
        if forwarded_proto == [proto] {
            placeholders.push(("x-forwarded-proto", "<http or https, as the listener>"));
        }
        text += &wire::show_head(&received.head, &placeholders);
        text += "\n";
        text += &received.show_body();
        if let Some(why) = &received.cut {
            text += &format!("\n(cut short: {why})");
        }
        text += "\n";
    }
    if !seen.settled {
        text += "(a backend connection was still open after the proxy stopped)\n";
    }
    text
}

/// The answer, readable, in a normal form (see [`common::normal_fields`]); interim responses
/// are left out (a server may skip `100 Continue` once the body has arrived).
fn answer_text(seen: &Seen) -> String {
    match &seen.answer {
        Err(why) => format!("no answer: {why}"),
        Ok(response) => {
            let fields = response
                .head
                .fields
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_slice()));
            let mut text = format!(
                "{}\n{}\nbody {:?}\n",
                response.head.start,
                common::normal_fields(fields, &[]),
                wire::escape(&response.body)
            );
            if !response.trailers.is_empty() {
                text += &format!("trailers {:?}\n", wire::escape(&response.trailers));
            }
            text + &format!("then: {}\n", seen.after)
        }
    }
}
