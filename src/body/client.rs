//! A client's request body as a server hands it to the proxy: from Fulcrum's HTTP/1 server (none,
//! whole when it came with its head, or read from the connection as asked: `feed.rs`), from
//! hyper's HTTP/2 server, or any other body a server embedding the proxy gives it.

use std::any::Any;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::BoxError;
use super::feed::Fed;

/// A request body, whichever server read it.
#[derive(Debug)]
pub enum ClientBody {
    Empty,
    /// The whole body, which came with its head.
    Full(Option<Bytes>),
    /// Read from its HTTP/1 connection as it is asked for.
    Fed(Fed),
    /// From an HTTP/2 stream.
    H2(Incoming),
    /// Any other body.
    Other(UnsyncBoxBody<Bytes, BoxError>),
}

impl ClientBody {
    /// `body` as a client body: itself when it is one already, else boxed.
    pub fn from_body<B>(body: B) -> ClientBody
    where
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let mut body = Some(body);
        if let Some(own) = (&mut body as &mut dyn Any).downcast_mut::<Option<ClientBody>>() {
            return own.take().expect("just put there");
        }
        let body = body.expect("not taken");
        if body.is_end_stream() {
            return ClientBody::Empty;
        }
        let boxed = body
            .map_frame(|frame| frame.map_data(|mut data| data.copy_to_bytes(data.remaining())))
            .map_err(Into::into)
            .boxed_unsync();
        ClientBody::Other(boxed)
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ClientBody::Empty => Poll::Ready(None),
            ClientBody::Full(data) => Poll::Ready(data.take().map(|data| Ok(Frame::data(data)))),
            ClientBody::Fed(fed) => Pin::new(fed).poll_frame(cx).map_err(Into::into),
            ClientBody::H2(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            ClientBody::Other(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Empty => true,
            ClientBody::Full(data) => data.is_none(),
            ClientBody::Fed(fed) => fed.is_end_stream(),
            ClientBody::H2(body) => body.is_end_stream(),
            ClientBody::Other(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Empty => SizeHint::with_exact(0),
            ClientBody::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            ClientBody::Fed(fed) => fed.size_hint(),
            ClientBody::H2(body) => body.size_hint(),
            ClientBody::Other(body) => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    #[test]
    fn a_client_body_is_taken_as_it_is_and_any_other_boxed() {
        let own = ClientBody::from_body(ClientBody::Full(Some(Bytes::from_static(b"a"))));
        assert!(matches!(own, ClientBody::Full(Some(_))));
        let other = ClientBody::from_body(Full::new(Bytes::from_static(b"b")));
        assert!(matches!(other, ClientBody::Other(_)));
        let empty = ClientBody::from_body(http_body_util::Empty::<Bytes>::new());
        assert!(matches!(empty, ClientBody::Empty));
    }
}
