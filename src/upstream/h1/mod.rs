//! HTTP/1.1 to backends: Fulcrum's own client on the codec (`http1/`), plain or over TLS, every
//! exchange (with or without a body, health probes, upgrades) driven by the task that serves
//! the request.
//!
//! - `connection.rs`: one connection and one exchange on it: the request written, the response
//!   head read.
//! - `body.rs`: the response body, read as the client takes it; the connection goes back to
//!   its backend's idle stack once it is read whole.
//!
//! The rules for a connection lost under a request are here, once:
//! - Writing the request to a pooled connection failed: the backend got none of it, and it goes
//!   again (whatever its method) on another connection.
//! - A pooled connection closed with no byte of response (the backend closed it as the request
//!   went out: the keep-alive race): an idempotent request goes again, once, on a new one, as
//!   Go's client does.
//!
//! Either needs the body to be sent again from its start, which a body that sent more than
//! `body::REPLAY_LIMIT` cannot.

use std::future::Future;
use std::time::Duration;

use http::{Request, Response};

use super::exchange::{Answer, Cause, Failed, Replay, Report};
use super::head::is_idempotent;
use super::relayed::UpstreamBody;
use super::{Backend, Client, Failure, connections};
use crate::arena;
use crate::body::RequestBody;

mod body;
mod connection;
#[cfg(test)]
mod tests;

pub(crate) use body::ResponseBody;
pub(crate) use connection::{Connection, ExchangeError, Exchanged};

/// Sends `request` to `backend` on a pooled connection, or a new one, and waits for the
/// response head.
// An `async fn` would store its arguments twice: see `Proxy::handle`.
#[allow(clippy::manual_async_fn)]
pub(super) fn exchange(
    client: &Client,
    backend: &Backend,
    mut request: Request<RequestBody>,
    report: Report,
    upgrade: bool,
    timeout: Duration,
) -> impl Future<Output = Result<Answer, Failed>> {
    async move {
        // Whether the request went again on a new connection after its pooled one was lost.
        let mut resent = false;
        loop {
            let pooled = if resent {
                None
            } else {
                backend.connections().take()
            };
            let reused = pooled.is_some();
            let connection = match pooled {
                Some(connection) => connection,
                None => match connect(client, backend).await {
                    Ok(connection) => connection,
                    Err(failure) => return Err(failed(Cause::Failed(failure), request, report)),
                },
            };
            let error = match connection.exchange(&mut request, upgrade, timeout).await {
                Ok(Exchanged::Response(parts, body)) => {
                    // Sent whole: its head is done with, and its map serves the next message.
                    arena::recycle(request.into_parts().0.headers);
                    return Ok(Answer::Response(Response::from_parts(
                        parts,
                        UpstreamBody::H1(body),
                    )));
                }
                Ok(Exchanged::Switched(parts, connection)) => {
                    return Ok(Answer::Switched(
                        Response::from_parts(parts, ()),
                        connection,
                    ));
                }
                Err(error) => error,
            };
            let again = match &error {
                ExchangeError::NotSent(_) => reused,
                ExchangeError::ClosedEarly => {
                    let again = reused && !resent && is_idempotent(request.method());
                    resent |= again;
                    again
                }
                _ => false,
            };
            if again && request.body_mut().rewind() {
                continue;
            }
            return Err(failed(cause(error), request, report));
        }
    }
}

/// A new connection to `backend`, made with the settings of the epoch read before.
async fn connect(client: &Client, backend: &Backend) -> Result<Box<Connection>, Failure> {
    let epoch = backend.connections().epoch();
    let started = std::time::Instant::now();
    // Boxed: with its TLS handshake the future is several KiB, which every request's future
    // would otherwise carry.
    let stream = Box::pin(connections::open(backend, client.connect_timeout())).await?;
    backend.stats().connect.observe(started.elapsed());
    Ok(Connection::new(stream, epoch))
}

/// What an exchange's error means for the attempt.
fn cause(error: ExchangeError) -> Cause {
    Cause::Failed(match error {
        ExchangeError::TimedOut => return Cause::TimedOut,
        ExchangeError::NotSent(error) => Failure::NotSent(super::describe_io(&error)),
        ExchangeError::ClosedEarly => {
            Failure::Upstream("connection closed before message completed".to_owned())
        }
        ExchangeError::Response(reason) => Failure::Upstream(reason),
        ExchangeError::Body(error) => Failure::of_body(error.as_ref()),
    })
}

/// A failed attempt, with its request to send again when its body can be.
fn failed(cause: Cause, mut request: Request<RequestBody>, report: Report) -> Failed {
    let replay = request
        .body_mut()
        .rewind()
        .then(|| Replay::Request(request, report));
    Failed { cause, replay }
}

/// A health probe on a connection of its own, closed after it.
pub(super) async fn probe(
    backend: &Backend,
    mut request: Request<RequestBody>,
    timeout: Duration,
) -> Result<Response<ResponseBody>, String> {
    let stream = connections::open(backend, timeout)
        .await
        .map_err(|failure| failure.to_string())?;
    let connection = Connection::new(stream, backend.connections().epoch());
    match connection.exchange(&mut request, false, timeout).await {
        Ok(Exchanged::Response(parts, body)) => Ok(Response::from_parts(parts, body)),
        Ok(Exchanged::Switched(..)) => Err("unsolicited 101 Switching Protocols".to_owned()),
        Err(error) => Err(match cause(error) {
            Cause::TimedOut => format!("no answer within {timeout:?}"),
            Cause::Failed(failure) => failure.to_string(),
        }),
    }
}
