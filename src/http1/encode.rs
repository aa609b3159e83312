//! Heads written to the wire: a request's (the client side) and a response's (the server side).
//! The framing fields are the encoder's alone: `Content-Length` and `Transfer-Encoding` in the
//! message's fields are replaced by what the body it is sent with needs.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::response::Parts;
use http::{Method, StatusCode, Version};

use super::fields::lists;
use super::framing::{BodyLength, has_body};
use super::head::Reason;

/// Appends a request head for a body framed as `body` (never [`BodyLength::UntilClose`]).
/// Without a body, `Content-Length: 0` is sent only where the fields had a `Content-Length`.
pub(crate) fn request(
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    body: BodyLength,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut had_length = false;
    for (name, value) in headers {
        if *name == header::CONTENT_LENGTH {
            had_length = true;
            continue;
        }
        if *name != header::TRANSFER_ENCODING {
            field(out, name, value.as_bytes());
        }
    }
    match body {
        BodyLength::Empty if had_length => length(out, 0),
        BodyLength::Empty | BodyLength::UntilClose => {}
        BodyLength::Length(n) => length(out, n),
        BodyLength::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// What the client's request asked of the response to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Asked {
    /// The request's version: an HTTP/1.0 client cannot take a chunked body.
    pub(crate) version: Version,
    /// The request was `HEAD`: the head is a `GET`'s, with no body.
    pub(crate) head: bool,
    /// The client lets the connection go on after the response.
    pub(crate) keep_alive: bool,
    /// `TE: trailers`: trailer fields may follow a chunked body.
    pub(crate) trailers: bool,
}

/// How long a response's body is known to be before it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Known {
    Exactly(u64),
    Unknown,
}

/// How the encoded response's body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body bytes are sent.
    None,
    Length(u64),
    /// Chunked; trailer fields are sent if `trailers`.
    Chunked {
        trailers: bool,
    },
    /// Until the connection closes.
    UntilClose,
}

/// Appends a response head for `parts`, whose body is `known` long, answering a request that
/// `asked`; `date` is today's `Date` value, added when the fields have none. Returns the body's
/// framing and whether the connection may carry another request after it.
///
/// `Connection` in `parts` is read for `close` and dropped; the connection's own field is
/// written instead (except on a 101, whose `Connection: upgrade` goes as it is).
pub(crate) fn response(
    parts: &Parts,
    known: Known,
    asked: &Asked,
    date: &[u8],
    out: &mut Vec<u8>,
) -> (Framing, bool) {
    status_line(parts, out);
    let status = parts.status;
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    let bodiless = asked.head || !has_body(status);
    // A 304's and a HEAD's `Content-Length` describe the body a GET would get: relayed.
    let relay_length = asked.head || status == StatusCode::NOT_MODIFIED;
    let (mut wrote_date, mut closing, mut wrote_length) = (false, false, false);
    for (name, value) in &parts.headers {
        match *name {
            header::CONTENT_LENGTH if relay_length && !wrote_length => {
                wrote_length = true;
                field(out, name, value.as_bytes());
            }
            header::CONTENT_LENGTH | header::TRANSFER_ENCODING => {}
            header::CONNECTION if !switching => {
                closing |= lists(std::iter::once(value), b"close");
            }
            _ => {
                wrote_date |= *name == header::DATE;
                field(out, name, value.as_bytes());
            }
        }
    }
    let framing = match known {
        _ if bodiless => Framing::None,
        Known::Exactly(0) => {
            length(out, 0);
            Framing::None
        }
        Known::Exactly(n) => {
            length(out, n);
            Framing::Length(n)
        }
        Known::Unknown if asked.version == Version::HTTP_10 => Framing::UntilClose,
        Known::Unknown => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            Framing::Chunked {
                trailers: asked.trailers,
            }
        }
    };
    let keep_alive = asked.keep_alive && !closing && framing != Framing::UntilClose;
    if switching {
    } else if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if asked.version == Version::HTTP_10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    if !wrote_date {
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(date);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    (framing, keep_alive)
}

/// The interim response asked for with `Expect: 100-continue`.
pub(crate) const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// `HTTP/1.1 <code> <reason>`: the reason the backend gave, else the usual one. The version is
/// always Fulcrum's own (RFC 9110 section 2.5), whatever the backend spoke.
fn status_line(parts: &Parts, out: &mut Vec<u8>) {
    let reason = parts.extensions.get::<Reason>();
    if parts.status == StatusCode::OK && reason.is_none() {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        return;
    }
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    match reason {
        Some(Reason(reason)) => out.extend_from_slice(reason),
        None => out.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes()),
    }
    out.extend_from_slice(b"\r\n");
}

fn field(out: &mut Vec<u8>, name: &HeaderName, value: &[u8]) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn length(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// A header value that is a number.
pub(crate) fn number(n: u64) -> HeaderValue {
    HeaderValue::from_str(itoa::Buffer::new().format(n)).expect("digits are a valid value")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &[u8] = b"Sun, 06 Nov 1994 08:49:37 GMT";

    const KEEP: Asked = Asked {
        version: Version::HTTP_11,
        head: false,
        keep_alive: true,
        trailers: false,
    };

    fn parts(status: u16, fields: &[(&str, &str)]) -> Parts {
        let mut builder = http::Response::builder().status(status);
        for (name, value) in fields {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn head(parts: &Parts, known: Known, asked: Asked) -> (String, Framing, bool) {
        let mut out = Vec::new();
        let (framing, keep_alive) = response(parts, known, &asked, DATE, &mut out);
        (String::from_utf8(out).unwrap(), framing, keep_alive)
    }

    #[test]
    fn a_request_head_carries_the_bodys_framing_only() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("a"));
        headers.insert("content-length", HeaderValue::from_static("99"));
        headers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        let encode = |body| {
            let mut out = Vec::new();
            request(&Method::POST, "/x?y", &headers, body, &mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            encode(BodyLength::Length(5)),
            "POST /x?y HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n\r\n"
        );
        assert_eq!(
            encode(BodyLength::Chunked),
            "POST /x?y HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        assert_eq!(
            encode(BodyLength::Empty),
            "POST /x?y HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\n\r\n"
        );
        let mut out = Vec::new();
        request(
            &Method::GET,
            "/",
            &HeaderMap::new(),
            BodyLength::Empty,
            &mut out,
        );
        assert_eq!(out, b"GET / HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn a_response_is_framed_by_what_its_body_knows() {
        let ok = parts(200, &[("x-a", "b"), ("content-length", "7")]);
        assert_eq!(
            head(&ok, Known::Exactly(3), KEEP),
            (
                "HTTP/1.1 200 OK\r\nx-a: b\r\ncontent-length: 3\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n".into(),
                Framing::Length(3),
                true
            )
        );
        let (text, framing, _) = head(&ok, Known::Unknown, KEEP);
        assert!(
            text.contains("transfer-encoding: chunked\r\n") && !text.contains("content-length")
        );
        assert_eq!(framing, Framing::Chunked { trailers: false });
        let (text, framing, _) = head(&ok, Known::Exactly(0), KEEP);
        assert!(text.contains("content-length: 0\r\n"));
        assert_eq!(framing, Framing::None);
    }

    #[test]
    fn an_http_1_0_client_gets_a_body_until_close_or_kept_alive_by_length() {
        let old = Asked {
            version: Version::HTTP_10,
            ..KEEP
        };
        let ok = parts(200, &[]);
        let (text, framing, keep_alive) = head(&ok, Known::Unknown, old);
        assert_eq!(framing, Framing::UntilClose);
        assert!(!keep_alive && text.contains("connection: close\r\n"));
        let (text, _, keep_alive) = head(&ok, Known::Exactly(2), old);
        assert!(keep_alive && text.contains("connection: keep-alive\r\n"));
        let (text, _, keep_alive) = head(
            &ok,
            Known::Exactly(2),
            Asked {
                keep_alive: false,
                ..old
            },
        );
        assert!(!keep_alive && text.contains("connection: close\r\n"));
    }

    #[test]
    fn bodiless_responses_carry_no_framing_of_their_own() {
        let (text, framing, _) = head(
            &parts(204, &[("content-length", "5")]),
            Known::Exactly(5),
            KEEP,
        );
        assert!(!text.contains("content-length"), "{text}");
        assert_eq!(framing, Framing::None);
        let (text, framing, _) = head(
            &parts(304, &[("content-length", "5")]),
            Known::Exactly(0),
            KEEP,
        );
        assert!(
            text.contains("content-length: 5\r\n"),
            "a 304 relays its length: {text}"
        );
        assert_eq!(framing, Framing::None);
        let head_request = Asked { head: true, ..KEEP };
        let (text, framing, _) = head(
            &parts(200, &[("content-length", "10")]),
            Known::Exactly(0),
            head_request,
        );
        assert!(text.contains("content-length: 10\r\n"), "{text}");
        assert_eq!(framing, Framing::None);
    }

    #[test]
    fn a_close_asked_for_is_said_and_a_switch_keeps_its_connection_field() {
        let closing = parts(400, &[("connection", "close")]);
        let (text, _, keep_alive) = head(&closing, Known::Exactly(0), KEEP);
        assert!(!keep_alive);
        assert_eq!(text.matches("connection: close").count(), 1, "{text}");
        let switching = parts(101, &[("connection", "upgrade"), ("upgrade", "websocket")]);
        let (text, framing, _) = head(&switching, Known::Exactly(0), KEEP);
        assert!(
            text.starts_with(
                "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n"
            ),
            "{text}"
        );
        assert_eq!(framing, Framing::None);
    }

    #[test]
    fn a_date_given_is_kept_and_reasons_are_relayed() {
        let dated = parts(404, &[("date", "Mon, 01 Jan 2001 00:00:00 GMT")]);
        let (text, _, _) = head(&dated, Known::Exactly(0), KEEP);
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert_eq!(text.matches("date: ").count(), 1);
        let mut custom = parts(200, &[]);
        custom
            .extensions
            .insert(Reason(bytes::Bytes::from_static(b"Fine")));
        assert!(
            head(&custom, Known::Exactly(0), KEEP)
                .0
                .starts_with("HTTP/1.1 200 Fine\r\n")
        );
        assert!(
            head(&parts(599, &[]), Known::Exactly(0), KEEP)
                .0
                .starts_with("HTTP/1.1 599 \r\n")
        );
    }
}
