//! Message heads read from the wire: a request's (the server side) and a response's (the client
//! side), both with httparse, into `http`'s types, with the body length decided
//! (`framing.rs`) and the connection's persistence (RFC 9112 section 9.3).
//!
//! Header values are slices of one [`Bytes`] holding the head, so parsing copies no value. The
//! caller says how that `Bytes` is made from the head's bytes (`take`): a server that reads
//! into shared chunks slices them; a client with a reused read buffer copies the head out.

use std::mem::MaybeUninit;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode, Uri, Version, request, response};

use super::fields::{lists, tokens};
use super::framing::{self, BodyLength, Declared, FramingError};
use crate::{arena, names};

/// Field slots kept on the stack (8 KiB, uninitialised): enough for a backend's response head
/// (256 fields, and the one that tells the limit was passed), whose slots on the heap had been
/// an allocation from glibc's slow path for every response. A head allowed more gets them on
/// the heap.
const STACK_FIELDS: usize = 257;

/// Fields a proxy may add to a request on its way (`Host`, forwarding fields, `Via`, a request
/// id, a cookie): room for them is made at once, since growing a map re-hashes it.
const ROOM_IN_REQUESTS: usize = 8;

/// Fields a proxy may add to a response (`Via`, the request id, a sticky session's cookie).
/// Fewer than a request's: a response's map is most often one a request left (its room spent),
/// and asking it for more than it has would grow it again. That happens on every HTTP/2
/// request, whose response's map hyper keeps.
const ROOM_IN_RESPONSES: usize = 4;

/// How large a head may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Bytes of the whole head, up to and including its empty line.
    pub(crate) max_head: usize,
    /// Header fields.
    pub(crate) max_fields: usize,
    /// Bytes of the first line (request line or status line): one longer is refused before the
    /// head ends.
    pub(crate) max_line: usize,
}

/// A response's reason phrase, kept (as a response extension) when it is not the usual one for
/// its status, so that it is relayed as the backend wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reason(pub(crate) Bytes);

/// A parse that may need more bytes.
#[derive(Debug)]
pub(crate) enum Parsed<T> {
    Complete(T),
    /// The head has not ended yet; nothing was consumed.
    Partial,
}

/// Why a head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeadError {
    /// Not HTTP/1 syntax; the reason names what.
    Malformed(&'static str),
    /// A version other than HTTP/1.0 and HTTP/1.1.
    Version,
    /// The first line is longer than allowed.
    LineTooLong,
    /// The head is larger than allowed.
    TooLarge,
    /// More fields than allowed.
    TooManyFields,
    /// Framing fields that cannot be trusted.
    Framing(FramingError),
}

impl HeadError {
    /// The status a server answers a request head with this error.
    pub(crate) fn status(self) -> StatusCode {
        match self {
            HeadError::Framing(FramingError::UnknownCoding) => StatusCode::NOT_IMPLEMENTED,
            HeadError::Malformed(_) | HeadError::Framing(_) => StatusCode::BAD_REQUEST,
            HeadError::Version => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            HeadError::LineTooLong => StatusCode::URI_TOO_LONG,
            HeadError::TooLarge | HeadError::TooManyFields => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
        }
    }

    /// What was wrong, in a few words.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            HeadError::Malformed(reason) => reason,
            HeadError::Version => "unsupported HTTP version",
            HeadError::LineTooLong => "first line too long",
            HeadError::TooLarge => "head too large",
            HeadError::TooManyFields => "too many header fields",
            HeadError::Framing(error) => error.reason(),
        }
    }
}

impl std::fmt::Display for HeadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

/// A request head.
#[derive(Debug)]
pub(crate) struct RequestHead {
    pub(crate) parts: request::Parts,
    /// Bytes of the input the head took.
    pub(crate) len: usize,
    pub(crate) body: BodyLength,
    /// The client lets the connection carry another request after this one.
    pub(crate) keep_alive: bool,
    /// `Expect: 100-continue`: the client waits for a `100 Continue` before its body.
    pub(crate) expect_continue: bool,
    /// `TE: trailers`: the client accepts trailer fields in a chunked response.
    pub(crate) trailers: bool,
}

/// A response head.
#[derive(Debug)]
pub(crate) struct ResponseHead {
    pub(crate) parts: response::Parts,
    /// Bytes of the input the head took.
    pub(crate) len: usize,
    pub(crate) body: BodyLength,
    /// The server lets the connection carry another request after this exchange.
    pub(crate) keep_alive: bool,
}

/// Parses the request head at the start of `input`. `take(len)` gives the head's first `len`
/// bytes as `Bytes`, which the header values and the target share.
pub(crate) fn parse_request(
    input: &[u8],
    limits: &Limits,
    take: impl FnOnce(usize) -> Bytes,
) -> Result<Parsed<RequestHead>, HeadError> {
    with_slots(limits.max_fields, |slots| {
        let mut head = httparse::Request::new(&mut []);
        let len = match head.parse_with_uninit_headers(input, slots) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return partial(input, limits),
            // Which of 400 and 505 is told by the whole line: until it has come, wait, so that
            // the answer does not depend on how TCP split it.
            Err(httparse::Error::Version) => {
                return match first_line(input) {
                    None => partial(input, limits),
                    Some(line) if names_a_version(line) => match as_http11(input, line) {
                        Some(read_as) => parse_request(&read_as, limits, take),
                        None => Err(HeadError::Version),
                    },
                    Some(_) => Err(HeadError::Malformed("invalid request line")),
                };
            }
            Err(error) => return Err(refused(error)),
        };
        check_size(len, head.headers.len(), limits)?;
        let version = version(head.version)?;
        let method = head.method.unwrap_or_default();
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|_| HeadError::Malformed("invalid method"))?;
        let bytes = take(len);
        let target = head.path.unwrap_or_default();
        let uri = match Uri::from_maybe_shared(slice(&bytes, input, target.as_bytes())) {
            Ok(uri) => uri,
            Err(_) => quoted_in_query(target.as_bytes())
                .ok_or(HeadError::Malformed("invalid request target"))?,
        };
        let (mut headers, noted) = fields(&bytes, input, head.headers, ROOM_IN_REQUESTS)?;
        let body =
            framing::request(version, &noted.framing, &headers).map_err(HeadError::Framing)?;
        framing::normalize_length(&mut headers, &noted.framing);
        let expect_continue = version == Version::HTTP_11
            && noted.expect
            && headers
                .get_all(header::EXPECT)
                .iter()
                .any(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let trailers = noted.te && lists(headers.get_all(header::TE), b"trailers");
        let (mut parts, ()) = http::Request::new(()).into_parts();
        parts.method = method;
        parts.uri = uri;
        parts.version = version;
        parts.headers = headers;
        Ok(Parsed::Complete(RequestHead {
            parts,
            len,
            body,
            keep_alive: noted.keeps_alive(version),
            expect_continue,
            trailers,
        }))
    })
}

/// Parses the response head at the start of `input`, which answers a request with `method`.
/// An interim (1xx) head is returned like any other: the caller skips it, or takes a 101.
pub(crate) fn parse_response(
    input: &[u8],
    method: &Method,
    limits: &Limits,
    take: impl FnOnce(usize) -> Bytes,
) -> Result<Parsed<ResponseHead>, HeadError> {
    with_slots(limits.max_fields, |slots| {
        let mut head = httparse::Response::new(&mut []);
        let parsing = httparse::ParserConfig::default();
        let len = match parsing.parse_response_with_uninit_headers(&mut head, input, slots) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return partial(input, limits),
            Err(httparse::Error::Version) => {
                return match status_as_http11(input) {
                    Some(read_as) => parse_response(&read_as, method, limits, take),
                    None => Err(HeadError::Version),
                };
            }
            Err(error) => return Err(refused(error)),
        };
        check_size(len, head.headers.len(), limits)?;
        let version = version(head.version)?;
        let status = StatusCode::from_u16(head.code.unwrap_or_default())
            .map_err(|_| HeadError::Malformed("invalid status code"))?;
        let bytes = take(len);
        let (mut headers, noted) = fields(&bytes, input, head.headers, ROOM_IN_RESPONSES)?;
        let body = framing::response(method, status, version, &noted.framing, &headers)
            .map_err(HeadError::Framing)?;
        framing::normalize_length(&mut headers, &noted.framing);
        let (mut parts, ()) = http::Response::new(()).into_parts();
        parts.status = status;
        parts.version = version;
        parts.headers = headers;
        // A reason other than the usual one is kept, to be relayed as it was.
        if let Some(reason) = head.reason
            && Some(reason) != status.canonical_reason()
        {
            parts
                .extensions
                .insert(Reason(slice(&bytes, input, reason.as_bytes())));
        }
        Ok(Parsed::Complete(ResponseHead {
            parts,
            len,
            body,
            keep_alive: noted.keeps_alive(version) && body != BodyLength::UntilClose,
        }))
    })
}

/// Runs `parse` with room for `max_fields` fields, and one more so that exceeding the limit is
/// told apart from meeting it.
fn with_slots<'i, R>(
    max_fields: usize,
    parse: impl FnOnce(&mut [MaybeUninit<httparse::Header<'i>>]) -> R,
) -> R {
    if max_fields < STACK_FIELDS {
        // Uninitialised: empty fields written for every message would cost more than parsing.
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_FIELDS];
        parse(&mut slots[..max_fields + 1])
    } else {
        let mut slots = Vec::with_capacity(max_fields + 1);
        slots.resize_with(max_fields + 1, MaybeUninit::uninit);
        parse(&mut slots)
    }
}

/// Whether a complete head of `len` bytes and `fields` fields is within `limits`.
fn check_size(len: usize, fields: usize, limits: &Limits) -> Result<(), HeadError> {
    if len > limits.max_head {
        return Err(HeadError::TooLarge);
    }
    if fields > limits.max_fields {
        return Err(HeadError::TooManyFields);
    }
    Ok(())
}

/// The verdict on a head not complete yet: wait for more, unless it is already too large.
fn partial<T>(input: &[u8], limits: &Limits) -> Result<Parsed<T>, HeadError> {
    if input.len() >= limits.max_head {
        return Err(HeadError::TooLarge);
    }
    if first_line_longer_than(input, limits.max_line) {
        return Err(HeadError::LineTooLong);
    }
    Ok(Parsed::Partial)
}

/// Whether the first line, after any empty lines, is already longer than `max`.
pub(crate) fn first_line_longer_than(input: &[u8], max: usize) -> bool {
    let start = input
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(input.len());
    let line = &input[start..];
    match line.iter().position(|&b| b == b'\n') {
        Some(end) => end > max,
        None => line.len() > max,
    }
}

/// The first line, after any empty lines, without its line ending: `None` until it has ended.
fn first_line(input: &[u8]) -> Option<&[u8]> {
    let start = input
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(input.len());
    let line = &input[start..];
    let end = line.iter().position(|&b| b == b'\n')?;
    Some(line[..end].strip_suffix(b"\r").unwrap_or(&line[..end]))
}

/// Whether the request line is a method, a target and a well-formed version (`HTTP/d.d`), one
/// space apart: a version httparse does not take is then one not supported (505), where any
/// other line it refuses (a space in the target, say) is malformed (400).
fn names_a_version(line: &[u8]) -> bool {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    !method.is_empty()
        && !target.is_empty()
        && matches!(version, [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit())
}

/// `input` with the request `line`'s version made `HTTP/1.1` when it names a later HTTP/1 minor
/// version (`HTTP/1.2`): RFC 9110 section 2.5 has a recipient read such a message as the
/// highest minor version it implements, as nginx and HAProxy do. Only the version's digit
/// changes, so every field and the target keep their place, and so their bytes in the head
/// the caller takes.
fn as_http11(input: &[u8], line: &[u8]) -> Option<Vec<u8>> {
    let [.., b'H', b'T', b'T', b'P', b'/', b'1', b'.', minor] = line else {
        return None;
    };
    if *minor <= b'1' {
        return None;
    }
    let at = (line.as_ptr() as usize - input.as_ptr() as usize) + line.len() - 1;
    let mut read_as = input.to_vec();
    read_as[at] = b'1';
    Some(read_as)
}

/// `input` with its status line's version made `HTTP/1.1` when it names a later HTTP/1 minor
/// version (`HTTP/1.2 200 OK`), as a request line's is ([`as_http11`]); nginx and HAProxy relay
/// such a response too.
fn status_as_http11(input: &[u8]) -> Option<Vec<u8>> {
    let start = input.iter().position(|&b| b != b'\r' && b != b'\n')?;
    let [b'H', b'T', b'T', b'P', b'/', b'1', b'.', minor, ..] = &input[start..] else {
        return None;
    };
    if !(b'2'..=b'9').contains(minor) {
        return None;
    }
    let mut read_as = input.to_vec();
    read_as[start + 7] = b'1';
    Some(read_as)
}

/// A target whose query has `"` in it (JSON in a query string, say), with each made `%22`:
/// `http`'s `Uri` takes `"` in a path, as clients send it and nginx and HAProxy forward it,
/// but not in a query. Any query parser reads `%22` as `"`. `None` for any other target `Uri`
/// refuses.
fn quoted_in_query(target: &[u8]) -> Option<Uri> {
    let query = target.iter().position(|&b| b == b'?')?;
    if !target[query..].contains(&b'"') {
        return None;
    }
    let mut quoted = Vec::with_capacity(target.len() + 8);
    quoted.extend_from_slice(&target[..query]);
    for &byte in &target[query..] {
        match byte {
            b'"' => quoted.extend_from_slice(b"%22"),
            _ => quoted.push(byte),
        }
    }
    Uri::from_maybe_shared(Bytes::from(quoted)).ok()
}

fn refused(error: httparse::Error) -> HeadError {
    match error {
        httparse::Error::TooManyHeaders => HeadError::TooManyFields,
        httparse::Error::Version => HeadError::Version,
        httparse::Error::HeaderName => HeadError::Malformed("invalid header field name"),
        httparse::Error::HeaderValue => HeadError::Malformed("invalid header field value"),
        httparse::Error::NewLine => HeadError::Malformed("invalid line ending"),
        httparse::Error::Status => HeadError::Malformed("invalid status line"),
        httparse::Error::Token => HeadError::Malformed("invalid token"),
    }
}

fn version(minor: Option<u8>) -> Result<Version, HeadError> {
    match minor {
        Some(0) => Ok(Version::HTTP_10),
        Some(1) => Ok(Version::HTTP_11),
        _ => Err(HeadError::Version),
    }
}

/// `part` (a slice of `input`) as the same bytes of `bytes` (`input`'s head, taken).
fn slice(bytes: &Bytes, input: &[u8], part: &[u8]) -> Bytes {
    match (part.as_ptr() as usize).checked_sub(input.as_ptr() as usize) {
        Some(offset) if !part.is_empty() && offset + part.len() <= bytes.len() => {
            bytes.slice(offset..offset + part.len())
        }
        // An empty part need not point into the input.
        _ => Bytes::new(),
    }
}

/// A field value as httparse passed it, made a [`HeaderValue`] without checking its bytes again.
///
/// httparse, with the default `ParserConfig` both heads are parsed with (no obs-fold), accepts a
/// value only if every byte is HTAB, SP, visible ASCII or obs-text (0x80-0xFF): exactly the bytes
/// [`HeaderValue::from_bytes`] accepts. Checking them again was about 2.5% of a proxied GET's
/// instructions (`benches/instructions.sh`: README, "What pays").
#[allow(unsafe_code)]
fn value(bytes: Bytes) -> HeaderValue {
    debug_assert!(HeaderValue::from_bytes(&bytes).is_ok(), "{bytes:?}");
    // SAFETY: `from_maybe_shared_unchecked` requires valid header value bytes; httparse has
    // accepted these (see above), and a debug build checks it.
    unsafe { HeaderValue::from_maybe_shared_unchecked(bytes) }
}

/// What the pass over a head's fields noted: what `Connection` fields ask of the connection,
/// and which fields the head's meaning depends on are present at all, so that a message
/// without them (most) spares their lookups.
#[derive(Debug, Default, Clone, Copy)]
struct Noted {
    close: bool,
    keep_alive: bool,
    /// What the `Content-Length` and `Transfer-Encoding` fields declare.
    framing: Declared,
    /// An `Expect` field.
    expect: bool,
    /// A `TE` field.
    te: bool,
}

impl Noted {
    /// RFC 9112 section 9.3: HTTP/1.1 persists unless told `close`; HTTP/1.0 only when told
    /// `keep-alive`.
    fn keeps_alive(self, version: Version) -> bool {
        !self.close && (version == Version::HTTP_11 || self.keep_alive)
    }

    /// Notes a field other than `Connection`.
    fn note(&mut self, name: &HeaderName, value: &HeaderValue) {
        if *name == header::CONTENT_LENGTH {
            self.framing.content_length(value);
        } else if *name == header::TRANSFER_ENCODING {
            self.framing.transfer_encoding(value);
        } else if *name == header::EXPECT {
            self.expect = true;
        } else if *name == header::TE {
            self.te = true;
        }
    }

    /// Notes the tokens of a `Connection` value; whether it names nothing else, so that it can
    /// be left out of the fields (it is hop-by-hop, and says no more than this notes).
    fn note_connection(&mut self, value: &[u8]) -> bool {
        let mut only_these = true;
        for token in tokens(value) {
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else {
                only_these = false;
            }
        }
        only_these
    }
}

/// The header fields, their values sharing `bytes`, in a map with `room` for more.
fn fields(
    bytes: &Bytes,
    input: &[u8],
    parsed: &[httparse::Header<'_>],
    room: usize,
) -> Result<(HeaderMap, Noted), HeadError> {
    let mut headers = arena::header_map(parsed.len() + room);
    let mut noted = Noted::default();
    for field in parsed {
        let name = names::header_name(field.name.as_bytes())
            .map_err(|_| HeadError::Malformed("invalid header field name"))?;
        let value = value(slice(bytes, input, field.value));
        if name == header::CONNECTION {
            if noted.note_connection(value.as_bytes()) {
                continue;
            }
        } else {
            noted.note(&name, &value);
        }
        headers.append(name, value);
    }
    Ok((headers, noted))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_head: 8192,
        max_fields: 100,
        max_line: 1024,
    };

    fn request(text: &str) -> Result<Parsed<RequestHead>, HeadError> {
        let input = Bytes::copy_from_slice(text.as_bytes());
        parse_request(&input, &LIMITS, |len| input.slice(..len))
    }

    fn complete(text: &str) -> RequestHead {
        match request(text) {
            Ok(Parsed::Complete(head)) => head,
            other => panic!("{text:?}: {other:?}"),
        }
    }

    fn response(text: &str, method: Method) -> Result<Parsed<ResponseHead>, HeadError> {
        let input = text.as_bytes();
        parse_response(input, &method, &LIMITS, |len| {
            Bytes::copy_from_slice(&input[..len])
        })
    }

    fn complete_response(text: &str) -> ResponseHead {
        match response(text, Method::GET) {
            Ok(Parsed::Complete(head)) => head,
            other => panic!("{text:?}: {other:?}"),
        }
    }

    #[test]
    fn a_request_head_is_parsed_with_its_fields_in_order() {
        let text = "GET /a%2Fb?x=1 HTTP/1.1\r\nHost: shop\r\nX-A: 1\r\nx-a: 2\r\n\r\nGET /next";
        let head = complete(text);
        assert_eq!(head.len, text.len() - "GET /next".len());
        assert_eq!(head.parts.method, Method::GET);
        assert_eq!(head.parts.uri, "/a%2Fb?x=1");
        assert_eq!(head.parts.version, Version::HTTP_11);
        assert_eq!(head.parts.headers["host"], "shop");
        let values: Vec<_> = head.parts.headers.get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
        assert_eq!(head.body, BodyLength::Empty);
        assert!(head.keep_alive && !head.expect_continue && !head.trailers);
    }

    #[test]
    fn a_quote_in_a_query_is_forwarded_percent_encoded() {
        let head = complete("GET /a\"b?json={\"k\":1}&t=`x` HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(head.parts.uri, "/a\"b?json={%22k%22:1}&t=`x`");
        assert!(matches!(
            request("GET /a?b=<c> HTTP/1.1\r\nHost: a\r\n\r\n"),
            Err(HeadError::Malformed("invalid request target"))
        ));
    }

    #[test]
    fn a_status_line_of_a_later_http1_minor_version_is_read_as_http11() {
        let head = complete_response("HTTP/1.2 200 OK\r\nContent-Length: 5\r\n\r\nhello");
        assert_eq!(head.parts.status, StatusCode::OK);
        assert_eq!(head.parts.version, Version::HTTP_11);
        assert_eq!(head.body, BodyLength::Length(5));
        assert_eq!(
            head.len,
            "HTTP/1.2 200 OK\r\nContent-Length: 5\r\n\r\n".len()
        );
        for refused in ["HTTP/2.0 200 OK\r\n\r\n", "HTTP/1.23 200 OK\r\n\r\n"] {
            assert!(
                matches!(response(refused, Method::GET), Err(HeadError::Version)),
                "{refused:?}"
            );
        }
    }

    #[test]
    fn a_later_http1_minor_version_is_read_as_http11() {
        let text = "\r\nPOST /a?b HTTP/1.9\r\nHost: shop\r\nContent-Length: 2\r\n\r\nokGET";
        let head = complete(text);
        assert_eq!(head.len, text.len() - "okGET".len());
        assert_eq!(head.parts.version, Version::HTTP_11);
        assert_eq!(head.parts.uri, "/a?b");
        assert_eq!(head.parts.headers["host"], "shop");
        assert_eq!(head.body, BodyLength::Length(2));
        assert!(head.keep_alive);
        // Until the line has ended, whether it names a version is not known.
        assert!(matches!(request("GET / HTTP/1.2"), Ok(Parsed::Partial)));
        assert!(matches!(
            request("GET / HTTP/1.2\r\nHost: a\r\n"),
            Ok(Parsed::Partial)
        ));
        for other in [
            "GET / HTTP/2.0\r\n\r\n",
            "GET / HTTP/0.9\r\n\r\n",
            "GET / HTTP/3.1\r\n\r\n",
        ] {
            assert!(matches!(request(other), Err(HeadError::Version)), "{other}");
        }
    }

    #[test]
    fn empty_lines_before_a_request_line_are_skipped() {
        let head = complete("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(head.len, 4 + "GET / HTTP/1.1\r\nHost: a\r\n\r\n".len());
    }

    #[test]
    fn every_target_form_is_read() {
        assert_eq!(
            complete("GET http://a:8/x?y HTTP/1.1\r\n\r\n").parts.uri,
            "http://a:8/x?y"
        );
        assert_eq!(
            complete("CONNECT a:443 HTTP/1.1\r\n\r\n").parts.uri,
            "a:443"
        );
        assert_eq!(complete("OPTIONS * HTTP/1.1\r\n\r\n").parts.uri, "*");
    }

    #[test]
    fn persistence_follows_version_and_connection() {
        assert!(!complete("GET / HTTP/1.1\r\nConnection: x, Close\r\n\r\n").keep_alive);
        assert!(!complete("GET / HTTP/1.0\r\n\r\n").keep_alive);
        let old = complete("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert!(old.keep_alive);
        assert!(
            !old.parts.headers.contains_key("connection"),
            "a Connection naming only keep-alive or close is noted, not kept"
        );
        let naming = complete("GET / HTTP/1.1\r\nConnection: close, X-A\r\n\r\n");
        assert_eq!(naming.parts.headers["connection"], "close, X-A");
        let upgrade = complete("GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: ws\r\n\r\n");
        assert_eq!(upgrade.parts.headers["connection"], "Upgrade");
    }

    #[test]
    fn expectations_and_trailers_are_noticed() {
        let head = complete(
            "PUT / HTTP/1.1\r\nExpect: 100-Continue\r\nTE: gzip, trailers\r\nContent-Length: 3\r\n\r\n",
        );
        assert!(head.expect_continue && head.trailers);
        assert_eq!(head.body, BodyLength::Length(3));
        // HTTP/1.0 clients do not know 100 Continue.
        assert!(!complete("PUT / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n").expect_continue);
    }

    #[test]
    fn a_head_not_yet_ended_waits_until_it_is_too_large() {
        assert!(matches!(
            request("GET / HTTP/1.1\r\nHost: a\r\n"),
            Ok(Parsed::Partial)
        ));
        assert!(matches!(request(""), Ok(Parsed::Partial)));
        let long_line = format!("GET /{} HTTP/1.1", "a".repeat(1100));
        assert_eq!(request(&long_line).unwrap_err(), HeadError::LineTooLong);
        let huge = format!("GET / HTTP/1.1\r\nX-A: {}", "a".repeat(9000));
        assert_eq!(request(&huge).unwrap_err(), HeadError::TooLarge);
    }

    #[test]
    fn malformed_request_heads_are_refused_with_their_status() {
        for (text, status) in [
            ("GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nX-A: a\0b\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nX\0A: 1\r\n\r\n", 400),
            ("GET /\x01 HTTP/1.1\r\n\r\n", 400),
            ("G(T / HTTP/1.1\r\n\r\n", 400),
            ("this is not http\r\n\r\n", 400),
            ("GET / HTTP/x.1\r\n\r\n", 400),
            ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
            ("GET / HTTP/2.0\r\n\r\n", 505),
            ("GET /a b HTTP/1.1\r\n\r\n", 400),
            ("GET /a HTTP/1.1 x\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\n", 400),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                501,
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
                501,
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                400,
            ),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: x\x0bchunked\r\n\r\n",
                400,
            ),
            (
                "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n",
                400,
            ),
        ] {
            let error = request(text).expect_err(text);
            assert_eq!(error.status().as_u16(), status, "{text:?}: {error}");
        }
    }

    #[test]
    fn a_refused_request_line_gets_one_status_however_it_arrives() {
        for (text, status) in [
            ("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET /g HTTP/2.0\r\nHost: a\r\n\r\n", 505),
            ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
        ] {
            // Each prefix, as a connection reading it a byte at a time sees it: waiting for
            // more, or refused with the status the whole head gets.
            for end in 1..=text.len() {
                match request(&text[..end]) {
                    Ok(Parsed::Partial) => continue,
                    Err(error) => {
                        assert_eq!(error.status().as_u16(), status, "{:?}", &text[..end]);
                    }
                    Ok(Parsed::Complete(_)) => panic!("{text:?} taken"),
                }
            }
        }
    }

    #[test]
    fn more_fields_than_allowed_is_431() {
        let limits = Limits {
            max_fields: 2,
            ..LIMITS
        };
        let input = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
        let error = parse_request(input, &limits, |len| Bytes::copy_from_slice(&input[..len]));
        assert_eq!(error.unwrap_err(), HeadError::TooManyFields);
        let input = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n";
        let parsed = parse_request(input, &limits, |len| Bytes::copy_from_slice(&input[..len]));
        assert!(matches!(parsed, Ok(Parsed::Complete(_))));
        let many = Limits {
            max_fields: 500,
            ..LIMITS
        };
        let input = format!("GET / HTTP/1.1\r\n{}\r\n", "A: 1\r\n".repeat(300));
        let parsed = parse_request(input.as_bytes(), &many, |len| {
            Bytes::copy_from_slice(&input.as_bytes()[..len])
        });
        assert!(matches!(parsed, Ok(Parsed::Complete(h)) if h.parts.headers.len() == 300));
    }

    #[test]
    fn values_share_the_heads_bytes() {
        let input = Bytes::from_static(b"GET /x HTTP/1.1\r\nX-A: value\r\n\r\n");
        let Ok(Parsed::Complete(head)) = parse_request(&input, &LIMITS, |len| input.slice(..len))
        else {
            panic!("complete");
        };
        let value = head.parts.headers["x-a"].as_bytes().as_ptr() as usize;
        let start = input.as_ptr() as usize;
        assert!(
            value > start && value < start + input.len(),
            "a slice, not a copy"
        );
    }

    #[test]
    fn a_response_head_is_parsed_with_its_framing_and_reason() {
        let head = complete_response("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-A: b\r\n\r\nok\n");
        assert_eq!(head.parts.status, StatusCode::OK);
        assert_eq!(head.parts.headers["x-a"], "b");
        assert_eq!(head.body, BodyLength::Length(3));
        assert!(head.keep_alive);
        assert!(head.parts.extensions.get::<Reason>().is_none());
        let custom = complete_response("HTTP/1.1 200 Fine Thanks\r\n\r\n");
        let reason = custom.parts.extensions.get::<Reason>().unwrap();
        assert_eq!(reason.0, "Fine Thanks");
        assert_eq!(custom.body, BodyLength::UntilClose);
        assert!(!custom.keep_alive, "a body until close ends the connection");
    }

    #[test]
    fn response_persistence_follows_version_and_connection() {
        assert!(
            complete_response(
                "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n"
            )
            .keep_alive
        );
        assert!(!complete_response("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").keep_alive);
        assert!(!complete_response("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").keep_alive);
    }

    #[test]
    fn repeated_lengths_are_read_as_one() {
        let head = complete_response("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n");
        assert_eq!(head.body, BodyLength::Length(5));
        let lengths: Vec<_> = head
            .parts
            .headers
            .get_all("content-length")
            .iter()
            .collect();
        assert_eq!(lengths, ["5"], "relayed as one field with one number");
        let request = complete("PUT / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n");
        let lengths: Vec<_> = request
            .parts
            .headers
            .get_all("content-length")
            .iter()
            .collect();
        assert_eq!(lengths, ["3"]);
    }

    #[test]
    fn bare_lf_heads_and_status_lines_without_reason_are_read() {
        let head = complete_response("HTTP/1.1 204\nX-A: b\n\n");
        assert_eq!(head.parts.status, StatusCode::NO_CONTENT);
        assert_eq!(head.parts.headers["x-a"], "b");
        let request = complete("GET / HTTP/1.1\nHost: a\n\n");
        assert_eq!(request.parts.headers["host"], "a");
    }

    #[test]
    fn malformed_responses_are_refused() {
        for text in [
            "SSH-2.0-OpenSSH\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\nContent-Length: 2\r\n\r\nok",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            "HTTP/1.1 20 OK\r\n\r\n",
            "HTTP/2.0 200 OK\r\n\r\n",
        ] {
            assert!(response(text, Method::GET).is_err(), "{text:?}");
        }
    }

    #[test]
    fn a_head_request_s_response_has_no_body_whatever_it_declares() {
        let parsed = response(
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
            Method::HEAD,
        );
        assert!(
            matches!(parsed, Ok(Parsed::Complete(h)) if h.body == BodyLength::Empty && h.keep_alive)
        );
    }

    #[test]
    fn the_first_line_is_measured_after_empty_lines() {
        assert!(!first_line_longer_than(b"\r\n\r\nGET / HTTP/1.1", 20));
        assert!(first_line_longer_than(b"\r\nGET /aaaaaaaaaaaaaaaaaaaa", 20));
        assert!(!first_line_longer_than(
            b"GET / HTTP/1.1\r\nX-Long-Header: aaaaaaaaaaaaaaaa",
            20
        ));
    }
}
