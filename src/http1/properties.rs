//! Properties of the codec over generated messages: what is encoded parses back the same, a
//! message parses the same however its bytes are split, and arbitrary bytes never break a
//! reader (`exercise.rs`).

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};
use proptest::collection::vec;
use proptest::prelude::*;

use super::chunked::{self, Chunk, Decoder, Strictness};
use super::encode::{self, Asked, Framing, Known};
use super::framing::BodyLength;
use super::head::{self, Limits, Parsed};

const LIMITS: Limits = Limits {
    max_head: 64 * 1024,
    max_fields: 100,
    max_line: 8192,
};

/// Field names that are not framing or connection fields (the encoder owns those).
fn name() -> impl Strategy<Value = HeaderName> {
    "x-[a-z0-9-]{1,12}".prop_map(|name| HeaderName::from_bytes(name.as_bytes()).unwrap())
}

/// Values as a field can carry them: visible characters and inner spaces and tabs.
fn value() -> impl Strategy<Value = HeaderValue> {
    "[!-~]([ \t!-~]{0,30}[!-~])?".prop_map(|text| HeaderValue::from_str(&text).unwrap())
}

fn fields() -> impl Strategy<Value = HeaderMap> {
    vec((name(), value()), 0..12).prop_map(|pairs| {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name, value);
        }
        map
    })
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::GET),
        Just(Method::POST),
        Just(Method::PUT),
        Just(Method::DELETE),
        "[A-Z]{1,10}".prop_map(|m| Method::from_bytes(m.as_bytes()).unwrap()),
    ]
}

fn target() -> impl Strategy<Value = String> {
    "/[a-zA-Z0-9._~%!$&'()*+,;=:@/-]{0,40}(\\?[a-zA-Z0-9=&%/-]{0,20})?"
}

fn request_body() -> impl Strategy<Value = BodyLength> {
    prop_oneof![
        Just(BodyLength::Empty),
        (1u64..1 << 40).prop_map(BodyLength::Length),
        Just(BodyLength::Chunked),
    ]
}

fn parse_request(bytes: &[u8]) -> head::RequestHead {
    match head::parse_request(bytes, &LIMITS, |len| Bytes::copy_from_slice(&bytes[..len])) {
        Ok(Parsed::Complete(head)) => head,
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bytes)),
    }
}

proptest! {
    #[test]
    fn an_encoded_request_head_parses_back(
        method in method(), target in target(), fields in fields(), body in request_body()
    ) {
        let mut wire = Vec::new();
        encode::request(&method, &target, &fields, body, &mut wire);
        let head = parse_request(&wire);
        prop_assert_eq!(head.len, wire.len());
        prop_assert_eq!(&head.parts.method, &method);
        prop_assert_eq!(head.parts.uri.to_string(), target);
        prop_assert_eq!(head.body, body);
        let mut parsed = head.parts.headers;
        parsed.remove(http::header::CONTENT_LENGTH);
        parsed.remove(http::header::TRANSFER_ENCODING);
        prop_assert_eq!(parsed, fields);
    }

    #[test]
    fn an_encoded_response_head_parses_back(
        status in 200u16..600, fields in fields(), length in proptest::option::of(1u64..1 << 40)
    ) {
        let status = StatusCode::from_u16(status).unwrap();
        let mut response = http::Response::new(());
        *response.status_mut() = status;
        *response.headers_mut() = fields.clone();
        let (parts, ()) = response.into_parts();
        let asked = Asked { version: Version::HTTP_11, head: false, keep_alive: true, trailers: false };
        let known = length.map_or(Known::Unknown, Known::Exactly);
        let mut wire = Vec::new();
        let (framing, _) = encode::response(&parts, known, &asked, b"Sun, 06 Nov 1994 08:49:37 GMT", &mut wire);
        let parsed = match head::parse_response(&wire, &Method::GET, &LIMITS, |len| Bytes::copy_from_slice(&wire[..len])) {
            Ok(Parsed::Complete(head)) => head,
            other => panic!("{other:?}"),
        };
        prop_assert_eq!(parsed.len, wire.len());
        prop_assert_eq!(parsed.parts.status, status);
        let expected = match (framing, super::framing::has_body(status)) {
            (_, false) => BodyLength::Empty,
            (Framing::Length(n), _) => BodyLength::Length(n),
            (Framing::Chunked { .. }, _) => BodyLength::Chunked,
            (Framing::None, _) => BodyLength::Empty,
            (Framing::UntilClose, _) => BodyLength::UntilClose,
        };
        prop_assert_eq!(parsed.body, expected);
        let mut headers = parsed.parts.headers;
        for framing in ["content-length", "transfer-encoding", "date"] {
            headers.remove(framing);
        }
        prop_assert_eq!(headers, fields);
    }

    #[test]
    fn a_head_parses_the_same_however_it_arrives(
        method in method(), target in target(), fields in fields(), body in request_body(),
        cut in any::<prop::sample::Index>()
    ) {
        let mut wire = Vec::new();
        encode::request(&method, &target, &fields, body, &mut wire);
        let whole = parse_request(&wire);
        // Every proper prefix waits for more, never refuses.
        let cut = cut.index(wire.len());
        let prefix = head::parse_request(&wire[..cut], &LIMITS, |len| Bytes::copy_from_slice(&wire[..len]));
        prop_assert!(matches!(prefix, Ok(Parsed::Partial)), "{:?}", prefix);
        // And what follows a head does not change it.
        let mut longer = wire.clone();
        longer.extend_from_slice(b"POST /next HTTP/1.1\r\n");
        let again = parse_request(&longer);
        prop_assert_eq!(again.len, whole.len);
        prop_assert_eq!(again.parts.headers, whole.parts.headers);
    }

    #[test]
    fn an_encoded_chunked_body_decodes_the_same_in_any_pieces(
        pieces in vec(vec(any::<u8>(), 1..300), 0..8),
        trailers in fields(),
        piece in 1usize..64,
        lenient in any::<bool>(),
    ) {
        let mut wire = Vec::new();
        for data in &pieces {
            chunked::encode_size(data.len() as u64, &mut wire);
            wire.extend_from_slice(data);
            wire.extend_from_slice(chunked::CHUNK_END);
        }
        let trailers = (!trailers.is_empty()).then_some(trailers);
        chunked::encode_end(trailers.as_ref(), &mut wire);
        wire.extend_from_slice(b"NEXT");
        let strictness = if lenient { Strictness::Lenient } else { Strictness::Strict };
        let (data, decoded_trailers, rest) = decode_pieces(&wire, piece, strictness);
        prop_assert_eq!(data, pieces.concat());
        prop_assert_eq!(decoded_trailers, trailers);
        prop_assert_eq!(rest.as_deref(), Some(&b"NEXT"[..]));
    }

    #[test]
    fn a_request_framed_has_one_reading(
        fields in vec((prop_oneof![Just("transfer-encoding"), Just("content-length")],
                       prop_oneof![Just("chunked".to_owned()), Just("Chunked".to_owned()),
                                   Just("gzip, chunked".to_owned()), "[0-9]{1,3}",
                                   "[0-9]{1,2}, ?[0-9]{1,2}", "[ -~]{0,6}"]), 0..4),
        http10 in any::<bool>(),
    ) {
        let mut headers = HeaderMap::new();
        for (name, value) in &fields {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.append(*name, value);
            }
        }
        let version = if http10 { Version::HTTP_10 } else { Version::HTTP_11 };
        let codings: Vec<_> = headers.get_all("transfer-encoding").iter().collect();
        let lengths: Vec<_> = headers
            .get_all("content-length")
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .map(|v| String::from_utf8_lossy(v).trim().to_owned())
            .collect();
        let fields = super::framing::Declared::of(&headers);
        match super::framing::request(version, &fields, &headers) {
            Ok(BodyLength::Chunked) => {
                prop_assert!(!http10 && lengths.is_empty());
                prop_assert!(codings.len() == 1 && codings[0].as_bytes().eq_ignore_ascii_case(b"chunked"));
            }
            Ok(BodyLength::Length(n)) => {
                prop_assert!(codings.is_empty());
                prop_assert!(lengths.iter().all(|l| l.parse() == Ok(n)));
            }
            Ok(BodyLength::Empty) => {
                prop_assert!(codings.is_empty());
                prop_assert!(lengths.iter().all(|l| l.parse() == Ok(0u64)));
            }
            Ok(BodyLength::UntilClose) => prop_assert!(false, "a request never runs until close"),
            Err(_) => {}
        }
    }

    #[test]
    fn arbitrary_bytes_break_no_reader(input in vec(any::<u8>(), 0..600), split in 1usize..40) {
        super::exercise::exercise(&input, split);
    }

    #[test]
    fn chunk_like_bytes_break_no_reader(
        input in "([0-9a-fA-F ;=\t]{0,6}(\r\n|\n|\r)[a-z]{0,5}(\r\n|\n)?){0,8}",
        split in 1usize..10
    ) {
        super::exercise::exercise(input.as_bytes(), split);
    }
}

/// The data, trailers and what follows of a chunked body fed `piece` bytes at a time.
fn decode_pieces(
    input: &[u8],
    piece: usize,
    strictness: Strictness,
) -> (Vec<u8>, Option<HeaderMap>, Option<Vec<u8>>) {
    let mut decoder = Decoder::new(strictness);
    let mut pending = Vec::new();
    let mut data = Vec::new();
    for bytes in input.chunks(piece) {
        pending.extend_from_slice(bytes);
        loop {
            match decoder.decode(&pending).expect("an encoded body decodes") {
                Chunk::Data { used, data: len } => {
                    data.extend_from_slice(&pending[used..used + len]);
                    pending.drain(..used + len);
                }
                Chunk::More { .. } => {
                    pending.clear();
                    break;
                }
                Chunk::End { used, trailers } => {
                    pending.drain(..used);
                    let offset = bytes.as_ptr() as usize + bytes.len() - input.as_ptr() as usize;
                    pending.extend_from_slice(&input[offset..]);
                    return (data, trailers, Some(pending));
                }
            }
        }
    }
    (data, None, None)
}
