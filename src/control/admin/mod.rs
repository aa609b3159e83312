//! The admin API: JSON over HTTP/1.1 on its own listener, off unless `[admin]` is configured.
//!
//! | endpoint | does |
//! |---|---|
//! | `GET /status` | config generation, load time, last reload error, every pool and backend |
//! | `GET /metrics` | Prometheus metrics (text format 0.0.4) |
//! | `POST /reload` | reload the config file now |
//! | `GET /pools/{pool}/backends[?available=true]` | the pool's members (only those pickable now) |
//! | `POST /pools/{pool}/backends` | register `{"address", "weight", "backup", "ttl"}` (201; 200 when it updates an existing registration) |
//! | `DELETE /pools/{pool}/backends/{address}` | deregister a registered backend (204) |
//! | `POST /pools/{pool}/backends/{address}/drain` / `disable` / `enable` | stop / stop (maintenance) / resume new requests |
//! | `PUT /pools/{pool}/backends/{address}/heartbeat` | renew a registration's lease |
//! | `GET /pools/{pool}/route?key=K[&n=N]` | where a consistent-hash key lives: home and replicas |
//!
//! With `[admin] token`, every request needs `Authorization: Bearer <token>` (else 401). Errors
//! are `{"error": "..."}`: 400 for bad JSON or values, 404 for an unknown pool, backend or
//! endpoint, 405 for a wrong method, 409 for a conflict (an address the file already lists), 422
//! for a rejected reload.
//!
//! Reads are answered by `views.rs` (`GET /metrics` rendered by `exposition.rs`), changes by
//! `handlers.rs`.

mod exposition;
mod handlers;
mod shared;
mod views;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{info, warn};

use crate::body::ClientBody;
use crate::control::Control;
use crate::downstream::serve_alone;

/// An admin response.
pub type Reply = Response<Full<Bytes>>;

/// Binds the admin listener.
pub async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await.map_err(|err| {
        std::io::Error::new(
            err.kind(),
            format!("cannot listen on {address} (admin): {err}"),
        )
    })
}

/// Admin connections open at once; more are closed as they are accepted. The token is checked
/// only once a head has arrived, so without a cap anyone who can connect could hold descriptors.
const MAX_CONNECTIONS: usize = 64;

/// Serves the admin API on `listener` until the task is dropped.
///
/// Each connection is Fulcrum's HTTP/1 server's (`downstream/h1/alone.rs`), with the main
/// listener's `request_header` to send a head (which also closes a connection idle that long
/// between requests), and `request_body_idle` for a body, so a silent or dribbling client cannot
/// hold one.
pub async fn serve(listener: TcpListener, control: Control, token: Option<String>) {
    if let Ok(address) = listener.local_addr() {
        info!(%address, "admin API listening");
    }
    let open = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(%error, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
            warn!(%peer, "admin connection refused: {MAX_CONNECTIONS} already open");
            continue;
        };
        let (limits, head_timeout) = {
            let state = control.state().load();
            (*state.limits(), state.timeouts().request_header)
        };
        let (control, token) = (control.clone(), token.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let call = |request| handle(&control, token.as_deref(), request);
            serve_alone(stream, limits, head_timeout, call).await;
        });
    }
}

async fn handle(control: &Control, token: Option<&str>, request: Request<ClientBody>) -> Reply {
    if let Some(token) = token
        && !authorized(&request, token)
    {
        let mut reply = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        reply
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return reply;
    }
    let path = request.uri().path().to_owned();
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(crate::upstream::affinity::percent_decode)
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    // HEAD is GET without the body (the server leaves the body out).
    let method = match request.method() {
        &Method::HEAD => Method::GET,
        method => method.clone(),
    };
    match (segments.as_slice(), method) {
        (["status"], Method::GET) => json_reply(StatusCode::OK, views::status(control)),
        (["metrics"], Method::GET) => views::metrics(control).await,
        (["reload"], Method::POST) => handlers::reload(control).await,
        (["pools", pool, "backends"], Method::GET) => {
            let available_only = request
                .uri()
                .query()
                .is_some_and(|q| q.split('&').any(|pair| pair == "available=true"));
            handlers::list(control, pool, available_only)
        }
        (["pools", pool, "route"], Method::GET) => {
            let query = request.uri().query().unwrap_or("");
            handlers::route(control, pool, query)
        }
        (["pools", pool, "backends"], Method::POST) => {
            handlers::register(control, pool, request.into_body()).await
        }
        (["pools", pool, "backends", address], Method::GET) => {
            handlers::show(control, pool, address)
        }
        (["pools", pool, "backends", address], Method::DELETE) => {
            handlers::deregister(control, pool, address).await
        }
        (["pools", pool, "backends", address, "drain"], Method::POST) => {
            handlers::set_admin(
                control,
                pool,
                address,
                crate::upstream::health::AdminState::Draining,
            )
            .await
        }
        (["pools", pool, "backends", address, "enable"], Method::POST) => {
            handlers::set_admin(
                control,
                pool,
                address,
                crate::upstream::health::AdminState::Enabled,
            )
            .await
        }
        (["pools", pool, "backends", address, "disable"], Method::POST) => {
            handlers::set_admin(
                control,
                pool,
                address,
                crate::upstream::health::AdminState::Disabled,
            )
            .await
        }
        (["pools", pool, "backends", address, "heartbeat"], Method::PUT) => {
            handlers::heartbeat(control, pool, address).await
        }
        (segments, _) => match allowed(segments) {
            Some(allow) => {
                let mut reply = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here");
                reply
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
                reply
            }
            None => error(StatusCode::NOT_FOUND, "no such endpoint"),
        },
    }
}

/// The methods an endpoint takes, for the `Allow` of its 405 (RFC 9110 section 15.5.6); `None`
/// for no endpoint.
fn allowed(segments: &[&str]) -> Option<&'static str> {
    Some(match segments {
        ["status"] | ["metrics"] | ["pools", _, "route"] => "GET, HEAD",
        ["reload"] | ["pools", _, "backends", _, "drain" | "disable" | "enable"] => "POST",
        ["pools", _, "backends"] => "GET, HEAD, POST",
        ["pools", _, "backends", _] => "GET, HEAD, DELETE",
        ["pools", _, "backends", _, "heartbeat"] => "PUT",
        _ => return None,
    })
}

fn authorized<B>(request: &Request<B>, token: &str) -> bool {
    let Some(value) = request.headers().get(header::AUTHORIZATION) else {
        return false;
    };
    // The scheme is case-insensitive (RFC 9110 section 11.1); the token is not.
    let value = value.as_bytes();
    if value.len() < 7 || !value[..7].eq_ignore_ascii_case(b"bearer ") {
        return false;
    }
    // In constant time, so timing says nothing about the token.
    value[7..].ct_eq(token.as_bytes()).into()
}

/// A JSON response.
pub fn json_reply(status: StatusCode, body: Value) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(body.to_string())));
    *reply.status_mut() = status;
    reply.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    reply
}

/// `204 No Content`: no body, no content type.
pub fn no_content() -> Reply {
    let mut reply = Response::new(Full::new(Bytes::new()));
    *reply.status_mut() = StatusCode::NO_CONTENT;
    reply
}

/// `{"error": message}` with `status`.
pub fn error(status: StatusCode, message: impl std::fmt::Display) -> Reply {
    json_reply(status, json!({ "error": message.to_string() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_token_must_match_exactly() {
        let with = |value: &str| {
            Request::get("/")
                .header("authorization", value)
                .body(())
                .unwrap()
        };
        assert!(authorized(&with("Bearer s3cret"), "s3cret"));
        assert!(!authorized(&with("Bearer s3cre"), "s3cret"));
        assert!(
            authorized(&with("bearer s3cret"), "s3cret"),
            "the scheme is case-insensitive"
        );
        assert!(
            !authorized(&with("Bearer S3CRET"), "s3cret"),
            "the token is not"
        );
        assert!(!authorized(&with("s3cret"), "s3cret"));
        assert!(!authorized(&Request::get("/").body(()).unwrap(), "s3cret"));
    }
}
