//! An HTTP/1 connection served by a task of its own from accept to close, with one timer: the
//! admin API's. Its listener has few connections, so parking them (`home.rs`) would buy nothing;
//! the codec, the exchange and the writer are the main server's.

use std::fmt::Display;
use std::future::{Future, poll_fn};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Body;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::debug;

use super::exchange::{self, Next, Serving};
use super::input::Input;
use super::{date, head_limits, refusal};
use crate::body::ClientBody;
use crate::config::Limits;
use crate::http1::head::RequestHead;

/// Serves `stream` until it closes: each head (and the wait for it, between requests) within
/// `head_timeout`; each request answered by `call`.
pub(crate) async fn serve_alone<F, Fut, B>(
    stream: TcpStream,
    limits: Limits,
    head_timeout: Duration,
    call: F,
) where
    F: Fn(Request<ClientBody>) -> Fut,
    Fut: Future<Output = Response<B>>,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Display,
{
    let mut input = Input::new(stream);
    let head_limits = head_limits(&limits);
    loop {
        let head =
            match tokio::time::timeout(head_timeout, read_head(&mut input, &head_limits)).await {
                Ok(Ok(Some(head))) => head,
                Ok(Ok(None)) => break,
                Ok(Err(status)) => return refuse(&mut input, status).await,
                Err(_) if input.has_partial_head() => {
                    return refuse(&mut input, StatusCode::REQUEST_TIMEOUT).await;
                }
                Err(_) => break,
            };
        let serving = Serving {
            draining: &|| false,
            date: date::today,
            send_limit: head_timeout,
            discard_limit: head_timeout,
        };
        match exchange::serve(&mut input, head, &call, serving).await {
            Next::KeepAlive => {}
            Next::Close { .. } | Next::Switch(_) => break,
            Next::Reset => return super::reset(&input.stream),
        }
    }
    input.stream.shutdown().await.ok();
}

/// The next request head; `None` when the client closed first.
async fn read_head(
    input: &mut Input<TcpStream>,
    limits: &crate::http1::head::Limits,
) -> Result<Option<RequestHead>, StatusCode> {
    loop {
        if let Some(head) = input.take_head(limits).map_err(|error| error.status())? {
            return Ok(Some(head));
        }
        match poll_fn(|cx| input.poll_fill(cx)).await {
            Ok(true) => {}
            Ok(false) | Err(_) => return Ok(None),
        }
    }
}

async fn refuse(input: &mut Input<TcpStream>, status: StatusCode) {
    let (answer, _) = refusal(status, None);
    if let Err(error) = input.stream.write_all(&answer).await {
        debug!(%error, "answering a refused head");
    }
    input.stream.shutdown().await.ok();
}
