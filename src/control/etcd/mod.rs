//! etcd, where several Fulcrum instances share their runtime registrations (`[registry] etcd`):
//! `shared.rs` follows and writes them; `client.rs` speaks etcd's v3 gRPC API over hyper's
//! HTTP/2 client, with the messages it needs written by hand in `proto.rs` (no `protoc` at build
//! time).

pub mod client;
mod proto;
pub mod shared;

pub use client::EtcdError;
pub use shared::Shared;
