//! The proxy as a `tower::Service`: what every server calls, Fulcrum's own (`downstream/`) and
//! any server embedding it (`examples/embed.rs`).
//!
//! Any request body goes in: Fulcrum's server's is taken as it is, any other is boxed (one
//! allocation). What the request's connection is travels with it as an extension ([`Peer`]).
//! The service is always ready and never fails: every error becomes a response.

use std::convert::Infallible;
use std::future::Future;
use std::mem;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use hyper::body::Body;

use super::guard::Watch;
use super::{Logged, Proxy};
use crate::arena;
use crate::body::{BoxError, ClientBody};

/// The client connection a request came on, as a request extension: who the client is (for
/// `X-Forwarded-For`, hashing, admission and the logs) and whether it came over TLS (for
/// `X-Forwarded-Proto` and `redirect_https`). A request without it is taken as from
/// `0.0.0.0:0`, over plain HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub addr: SocketAddr,
    pub tls: bool,
}

/// The watch on the HTTP/2 connection a request came on (`guard.rs`): its server's extension.
#[derive(Debug, Clone)]
pub(crate) struct Watched(pub(crate) Arc<Watch>);

/// The response body the proxy answers with.
pub type ResponseBody = Logged;

impl<B> tower_service::Service<Request<B>> for Proxy
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let peer = request.extensions_mut().remove::<Peer>().unwrap_or(Peer {
            addr: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            tls: false,
        });
        let watch = request.extensions_mut().remove::<Watched>();
        if request.extensions().is_empty() {
            arena::recycle_extensions(mem::take(request.extensions_mut()));
        }
        let request = request.map(ClientBody::from_body);
        // Boxed: the request's future is large, and servers move it about; a box moves as a
        // pointer. Written into a box allocated first: `Box::pin(future)` made it on the stack
        // and copied its 2 KiB twice on the way in.
        let boxed = Box::new_uninit();
        let boxed: Box<_> = Box::write(
            boxed,
            self.clone().handle(
                request,
                peer.addr,
                peer.tls,
                watch.map(|Watched(watch)| watch),
            ),
        );
        Box::into_pin(boxed)
    }
}
