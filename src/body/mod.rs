//! The request bodies that cross layers, streamed frame by frame, never buffered whole: the
//! client's body as the proxy reads it (`inbound.rs`: counted, limited, timed, trailers
//! screened), and that body on its way to a backend, kept for replay when an attempt fails
//! (`request.rs`); and the fields no trailer may carry (`trailers.rs`), whichever way it goes.
//!
//! Response bodies are not here: a backend's is upstream's (`upstream/relayed.rs`), and the one
//! sent to the client is the proxy's (`proxy/body.rs`). This module uses no other layer.

mod inbound;
mod request;
mod trailers;

pub use inbound::{BodyError, BodyRules, ClientBody, Inbound};
pub use request::{Leftover, RequestBody};
pub use trailers::strip_trailer_fields;

/// A response body's error, whichever connection it was read from.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
