//! Differential tests: a request's fate, and a response's, must not depend on incidental
//! things — how the bytes were cut into writes, whether the connection had served a request
//! before, whether it came over TLS, which protocol the client speaks, which method asked.
//!
//! Requests: each corpus request is sent whole, a byte per write, and after a `POST` on a
//! keep-alive connection, over the plain and the TLS listener, each time to a fresh proxy in
//! front of a fresh recording backend. All six must leave the backend the same bytes and the
//! client the same answer (normalised for what legitimately differs: request id, `Date`,
//! `X-Forwarded-Proto`, chunk boundaries), and meet the case's fate.
//!
//! Responses: each corpus response is requested as GET, HEAD, POST and PUT by an HTTP/1.1
//! client on each listener and an HTTP/2 client over TLS; all twelve must come to one outcome,
//! the one the team decided: relayed whole, or a 502 naming the reason.
//!
//! Each test collects every mismatch and fails once, listing each (case, variant) and, where
//! variants disagree, the text one group of variants saw and how each other group's differed.
//! `DIFFERENTIAL_SHOW=1 cargo test --test differential -- --nocapture` prints, for every request
//! case, what the backend received and the answer (first variant): the corpus as it fares.

mod support;

#[path = "differential/common.rs"]
mod common;
#[path = "differential/request_corpus.rs"]
mod request_corpus;
#[path = "differential/requests.rs"]
mod requests;
#[path = "differential/responses.rs"]
mod responses;
#[path = "differential/stray.rs"]
mod stray;

/// Two workers, so that the proxy reads a request written a byte at a time as it comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordinary_requests_fare_the_same_however_they_arrive() {
    requests::check(
        "An ordinary request is forwarded and answered the same whatever its pace and transport.",
        &request_corpus::ordinary(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_but_valid_heads_fare_the_same_however_they_arrive() {
    requests::check(
        "An odd but valid head is forwarded and answered the same whatever its pace and transport.",
        &request_corpus::odd_heads(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_requests_are_refused_however_they_arrive() {
    requests::check(
        "A request two parties could read differently is refused with 400, closed, and never \
         forwarded, whatever its pace and transport.",
        &request_corpus::refused(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_chunked_bodies_are_never_forwarded_whole_however_they_arrive() {
    requests::check(
        "A chunked body that cannot be read is answered 400 (or not at all), closed, and never \
         reaches the backend whole, whatever its pace and transport.",
        &request_corpus::bad_chunks(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_has_one_outcome_whatever_the_method_transport_and_client_protocol() {
    responses::check(
        "A backend response comes to one outcome (relayed whole, or a 502 naming the reason) \
         whatever the method, the listener and the client's protocol.",
        &responses::corpus(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stray_bytes_after_a_bodiless_response_are_never_read_as_the_next_response() {
    let stray: [(&str, &[u8], u16); 2] = [
        (
            "204 with stray bytes",
            b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello",
            204,
        ),
        (
            "304 with stray bytes",
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\nhello",
            304,
        ),
    ];
    stray::check(
        "Bytes after a 204 or 304 head are not relayed and are never taken for the next \
         response on the connection.",
        &stray,
    )
    .await;
}

/// The raw peers above read what they are sent, framing included.
#[test]
fn the_raw_peers_read_http1_as_sent() {
    use support::wire::{Chunked, Parsed, chunked, head_end, response};
    assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest"), Some(24));
    assert_eq!(head_end(b"HTTP/1.1 200 OK\nA: b\n\nhello"), Some(22));
    assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);

    let body = b"5;a=b\r\nhello\r\n 6 \r\n world\r\n0\r\nX-T: 1\r\n\r\nnext";
    let whole = Chunked::Whole {
        len: body.len() - 4,
        data: b"hello world".to_vec(),
        trailers: b"X-T: 1\n".to_vec(),
    };
    assert_eq!(chunked(body), whole);
    assert_eq!(chunked(b"5\r\nhel"), Chunked::Incomplete);
    assert!(matches!(chunked(b"zz\r\n"), Chunked::Bad(_)));

    let wire = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokX";
    let Parsed::Whole(answer) = response(wire, false, false) else {
        panic!("a whole response after an interim one");
    };
    assert_eq!((answer.interim.len(), &answer.body[..]), (1, &b"ok"[..]));
    assert_eq!(answer.len, wire.len() - 1);
    let until_close = b"HTTP/1.0 200 OK\r\n\r\nhello";
    assert_eq!(response(until_close, false, false), Parsed::Incomplete);
    assert!(matches!(
        response(until_close, false, true),
        Parsed::Whole(_)
    ));
    assert!(matches!(
        response(until_close, true, false),
        Parsed::Whole(_)
    ));
}
