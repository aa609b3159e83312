//! The request bodies that cross layers, streamed frame by frame, never buffered whole: the
//! client's body as a server hands it over (`client.rs`; `feed.rs`, read from its HTTP/1
//! connection on demand), as the proxy reads it (`inbound.rs`: counted, limited, timed, trailers
//! screened), and on its way to a backend, kept for replay when an attempt fails
//! (`request.rs`); the fields no trailer may carry (`trailers.rs`), whichever way it goes; and
//! the client's connection after a `101` (`upgrade.rs`), handed from the server to the tunnel.
//!
//! Response bodies are not here: a backend's is upstream's (`upstream/relayed.rs`), and the one
//! sent to the client is the proxy's (`proxy/body.rs`). This module uses no other layer.

mod client;
pub mod feed;
mod inbound;
mod request;
mod trailers;
pub mod upgrade;

pub use client::ClientBody;
pub use inbound::{BodyError, BodyRules, Inbound};
pub use request::{Leftover, REPLAY_LIMIT, RequestBody};
pub use trailers::strip_trailer_fields;

/// A response body's error, whichever connection it was read from.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
