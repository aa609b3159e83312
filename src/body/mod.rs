//! Message bodies on their way through the proxy, streamed frame by frame, never buffered whole.
//!
//! - `inbound.rs`: the client's request body as read: counted, limited, timed, trailers screened.
//! - `request.rs`: request and response body types.

mod inbound;
mod request;

pub use inbound::{BodyError, BodyRules, ClientBody, Inbound};
pub use request::{
    BoxError, Leftover, ProxyBody, REPLAY_LIMIT, Relayed, Replay, RequestBody, UpstreamBody,
};
