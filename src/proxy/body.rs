//! The response body sent to the client: the backend's, relayed ([`Relayed`]), or a short one
//! the proxy wrote itself. An enum rather than a boxed body: no allocation per response.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, SizeHint};

use crate::body::BoxError;
use crate::upstream::Relayed;

/// A response body sent to the client.
#[derive(Debug)]
pub(crate) enum ProxyBody {
    /// Relayed from a backend.
    Upstream(Relayed),
    /// Written by the proxy.
    Local(Full<Bytes>),
}

impl ProxyBody {
    /// A body the proxy writes itself.
    pub(crate) fn text(text: impl Into<Bytes>) -> ProxyBody {
        ProxyBody::Local(Full::new(text.into()))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Upstream(relayed) => Pin::new(relayed).poll_frame(cx),
            ProxyBody::Local(full) => Pin::new(full)
                .poll_frame(cx)
                .map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream(relayed) => relayed.is_end_stream(),
            ProxyBody::Local(full) => full.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream(relayed) => relayed.size_hint(),
            ProxyBody::Local(full) => full.size_hint(),
        }
    }
}
