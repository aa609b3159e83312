//! The request corpus: ordinary requests, odd but valid heads, and every framing and smuggling
//! case of `tests/client_framing.rs`, each with the fate it must meet in every variant. The
//! tables keep a case a line (`rustfmt::skip`): read down, they are the corpus.

use super::requests::{Case, Fate, case};

/// Methods, bodies (Content-Length, chunked with extensions and trailers), `Expect`,
/// HTTP/1.0 with and without keep-alive, absolute-form targets, `Connection: close`.
#[rustfmt::skip]
pub fn ordinary() -> Vec<Case> {
    use Fate::Served;
    let chunked = "POST /r HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n";
    vec![
        case("GET", "GET /r?x=1 HTTP/1.1\r\nHost: a\r\nUser-Agent: t/1\r\nAccept: */*\r\n\r\n", Served),
        case("HEAD", "HEAD /r HTTP/1.1\r\nHost: a\r\n\r\n", Served),
        case("POST, Content-Length", "POST /r HTTP/1.1\r\nHost: a\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello world", Served),
        case("POST, empty body", "POST /r HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", Served),
        case("PUT", "PUT /r/1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", Served),
        case("DELETE", "DELETE /r/1 HTTP/1.1\r\nHost: a\r\n\r\n", Served),
        case("OPTIONS", "OPTIONS /r HTTP/1.1\r\nHost: a\r\n\r\n", Served),
        case("OPTIONS, Max-Forwards", "OPTIONS /r HTTP/1.1\r\nHost: a\r\nMax-Forwards: 5\r\n\r\n", Served),
        case("chunked", format!("{chunked}\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), Served),
        case("chunked, extensions", format!("{chunked}\r\n5;name=value\r\nhello\r\n6;x;y=\"q\"\r\n world\r\n0;end\r\n\r\n"), Served),
        case("chunked, trailers", format!("{chunked}\r\n5\r\nhello\r\n0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n"), Served),
        case("chunked, hex digits and leading zeros", format!("{chunked}\r\nA\r\n0123456789\r\n00b\r\nabcdefghijk\r\n0000\r\n\r\n"), Served),
        case("Expect: 100-continue, Content-Length", "POST /r HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello", Served),
        case("Expect: 100-continue, chunked", format!("{chunked}Expect: 100-continue\r\n\r\n5\r\nhello\r\n0\r\n\r\n"), Served),
        case("HTTP/1.0", "GET /r HTTP/1.0\r\nHost: a\r\n\r\n", Served),
        case("HTTP/1.0, keep-alive", "GET /r HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n", Served),
        case("HTTP/1.0 POST", "POST /r HTTP/1.0\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", Served),
        case("HTTP/1.0 POST, keep-alive", "POST /r HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nhello", Served),
        case("HTTP/1.0 without Host", "GET /r HTTP/1.0\r\n\r\n", Served),
        case("absolute-form", "GET http://a/r?q=1 HTTP/1.1\r\nHost: a\r\n\r\n", Served),
        case("absolute-form with a port", "GET http://a:8080/r HTTP/1.1\r\nHost: a:8080\r\n\r\n", Served),
        case("absolute-form POST", "POST http://a/r HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", Served),
        case("Connection: close", "GET /r HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", Served),
        case("POST, Connection: close", "POST /r HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello", Served),
    ]
}

/// Heads that are valid but unusual: whitespace, empty and repeated fields, name case, long
/// values, hop-by-hop fields, and a few a recipient may read either way (`Consistent`).
#[rustfmt::skip]
pub fn odd_heads() -> Vec<Case> {
    use Fate::{Consistent, Served};
    let fifty: String = (0..50).map(|i| format!("X-Field-{i}: value {i}\r\n")).collect();
    vec![
        case("tab inside a value", "GET /r HTTP/1.1\r\nHost: a\r\nX-Tab: a\tb\r\n\r\n", Served),
        case("whitespace around a value", "GET /r HTTP/1.1\r\nHost: a\r\nX-Pad: \t padded \t\r\n\r\n", Served),
        case("no space after the colon", "GET /r HTTP/1.1\r\nHost:a\r\nX-A:b\r\n\r\n", Served),
        case("empty values", "GET /r HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nX-Blank: \r\n\r\n", Served),
        case("repeated fields", "GET /r HTTP/1.1\r\nHost: a\r\nX-R: 1\r\nAccept: text/html\r\nX-R: 2\r\nAccept: */*\r\n\r\n", Served),
        case("lower-case names", "POST /r HTTP/1.1\r\nhost: a\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\nhello", Served),
        case("upper-case names", "POST /r HTTP/1.1\r\nHOST: a\r\nCONTENT-LENGTH: 5\r\nX-UPPER: V\r\n\r\nhello", Served),
        case("CHUNKED in upper case", "POST /r HTTP/1.1\r\nHost: a\r\nTRANSFER-ENCODING: CHUNKED\r\n\r\n5\r\nhello\r\n0\r\n\r\n", Served),
        case("a 4 KB value", format!("GET /r HTTP/1.1\r\nHost: a\r\nX-Long: {}\r\n\r\n", "v".repeat(4000)), Served),
        case("a 2 KB query and cookie", format!("GET /r?q={} HTTP/1.1\r\nHost: a\r\nCookie: s={}; t=1\r\n\r\n", "q".repeat(2000), "c".repeat(2000)), Served),
        case("fifty fields", format!("GET /r HTTP/1.1\r\nHost: a\r\n{fifty}\r\n"), Served),
        case("Host with a port", "GET /r HTTP/1.1\r\nHost: a:8080\r\n\r\n", Served),
        case("Host in upper case", "GET /r HTTP/1.1\r\nHost: A\r\n\r\n", Served),
        case("percent-encoded target", "GET /r/%7Euser?a=%20b&c HTTP/1.1\r\nHost: a\r\n\r\n", Served),
        case("JSON in the path and the query", "GET /r/{\"a\":1}?json={\"b\":[1,2]}&t=`x` HTTP/1.1\r\nHost: a\r\n\r\n", Served),
        case("hop-by-hop fields", "GET /r HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\n\r\n", Served),
        case("an underscore in a name", "GET /r HTTP/1.1\r\nHost: a\r\nX_Under: 1\r\n\r\n", Served),
        case("the client's own forwarding fields", "GET /r HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\nVia: 1.1 other\r\n\r\n", Served),
        case("the client's own request id", "GET /r HTTP/1.1\r\nHost: a\r\nX-Request-Id: client-chosen-1\r\n\r\n", Served),
        case("Expect: 100-continue without a body", "GET /r HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n", Served),
        case("obs-text in a value", &b"GET /r HTTP/1.1\r\nHost: a\r\nX-Latin: caf\xe9\r\n\r\n"[..], Consistent),
        case("Content-Length with leading zeros", "POST /r HTTP/1.1\r\nHost: a\r\nContent-Length: 005\r\n\r\nhello", Consistent),
        case("Content-Length: 5, 5", "POST /r HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello", Consistent),
        case("two equal Content-Lengths", "POST /r HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", Consistent),
        case("bare LF line endings", "GET /r HTTP/1.1\nHost: a\nX-A: 1\n\n", Consistent),
        case("OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", Consistent),
        case("an unknown method", "PURGE /r HTTP/1.1\r\nHost: a\r\n\r\n", Consistent),
    ]
}

/// Every request `tests/client_framing.rs` has refused with 400 before anything is forwarded,
/// and the classic smuggling pairs with a request hidden behind them.
#[rustfmt::skip]
pub fn refused() -> Vec<Case> {
    let refused = |name: &str, bytes: String| case(name, bytes, Fate::Refused(400));
    let post = "POST / HTTP/1.1\r\nHost: a\r\n";
    let hidden = "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut cases = vec![
        refused("CL then TE", format!("{post}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")),
        refused("TE then CL", format!("{post}Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n")),
        refused("CL.TE smuggling", format!("{post}Content-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{hidden}", hidden.len())),
        refused("TE.CL smuggling", format!("{post}Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n")),
        refused("two different Content-Lengths", format!("{post}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!")),
        refused("TE chunked twice", format!("{post}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")),
        refused("TE Chunked twice", format!("{post}Transfer-Encoding: Chunked\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n")),
        refused("HTTP/1.0 with TE", "POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_owned()),
        refused("space before the colon of TE", format!("{post}Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n")),
    ];
    for value in ["5, 6", "+5", "-1", "0x10", "", "5 5", "1e3"] {
        cases.push(refused(
            &format!("Content-Length: {value:?}"),
            format!("{post}Content-Length: {value}\r\n\r\nhello"),
        ));
    }
    let codings = ["chunked, chunked", "xchunked", "chunked ,", "\u{b}chunked", "identity", "gzip", "chunked, gzip"];
    for value in codings {
        cases.push(refused(
            &format!("Transfer-Encoding: {value:?}"),
            format!("{post}Transfer-Encoding: {value}\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        ));
    }
    // Clear framing, in a coding the proxy does not implement: 501 (RFC 9112 section 6.1).
    cases.push(case(
        "Transfer-Encoding: \"gzip, chunked\"",
        format!("{post}Transfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        Fate::Refused(501),
    ));
    let heads = [
        ("space before a colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n"),
        ("obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n folded\r\n\r\n"),
        ("bare CR in a value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n"),
        ("NUL in a value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\0b\r\n\r\n"),
        ("NUL in a name", "GET / HTTP/1.1\r\nHost: a\r\nX\0A: 1\r\n\r\n"),
        ("missing Host", "GET / HTTP/1.1\r\n\r\n"),
        ("two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
        ("HTTP/1.0, two Hosts", "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"),
        ("Host with a space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n"),
        ("Host with two colons", "GET / HTTP/1.1\r\nHost: a:b:c\r\n\r\n"),
        ("Host with a slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"),
        ("Host with only a port", "GET / HTTP/1.1\r\nHost: :80\r\n\r\n"),
        ("userinfo in the target", "GET http://user:pass@a:80/x HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("empty host in the target", "GET http://:80/x HTTP/1.1\r\nHost: a\r\n\r\n"),
    ];
    for (name, request) in heads {
        cases.push(refused(name, request.to_owned()));
    }
    cases
}

/// Chunked bodies that cannot be read (`tests/client_framing.rs`): never forwarded whole.
pub fn bad_chunks() -> Vec<Case> {
    let bodies = [
        ("chunk size not hex", "zz\r\nhello\r\n0\r\n\r\n"),
        ("chunk size with 0x", "0x5\r\nhello\r\n0\r\n\r\n"),
        ("empty chunk size", "\r\nhello\r\n0\r\n\r\n"),
        (
            "chunk size overflowing",
            "fffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        ),
        ("chunk longer than its size", "3\r\nhello\r\n0\r\n\r\n"),
        (
            "bare CR in a chunk extension",
            "5;a=b\rc\r\nhello\r\n0\r\n\r\n",
        ),
    ];
    bodies
        .iter()
        .map(|(name, body)| {
            let request =
                format!("POST /r HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{body}");
            case(name, request, Fate::NeverWhole)
        })
        .collect()
}
