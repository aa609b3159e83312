//! HTTP/1.1 as bytes: the one codec both sides of the proxy use, the server reading requests and
//! writing responses, the client writing requests and reading responses (RFC 9112). It does no
//! I/O: it turns bytes into `http` types and decisions, and back, so every rule about the wire
//! is written once and unit-tested without a socket. Connections, timers and buffers are the
//! callers' (`downstream/h1/`, `upstream/h1/`).
//!
//! - `head.rs`: request and response heads parsed (httparse), with the body length decided.
//! - `framing.rs`: the body-length decision itself (RFC 9112 section 6.3).
//! - `chunked.rs`: the chunked coding, decoded in any pieces and encoded.
//! - `encode.rs`: request and response heads written, framed for their body.
//! - `fields.rs`: token lists and `Content-Length`.

pub(crate) mod chunked;
pub(crate) mod encode;
pub(crate) mod fields;
pub(crate) mod framing;
pub(crate) mod head;

pub(crate) use framing::BodyLength;

#[cfg(any(test, fuzzing))]
pub(crate) mod exercise;
#[cfg(test)]
mod properties;
