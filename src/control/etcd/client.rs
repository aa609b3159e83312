//! A small etcd v3 client: gRPC (length-prefixed protobuf messages over HTTP/2, hyper's client,
//! prior knowledge) to the first of the configured endpoints that answers, on one multiplexed
//! connection made again when it breaks. Only what the registry needs: read a prefix, put and
//! delete a key, leases (grant, keep alive, revoke), and a watch on a prefix.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::body::{Body, Frame};
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prost::Message;
use tokio::sync::mpsc;

use super::proto::*;

/// How long connecting to an endpoint, or a unary call, may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a call to etcd failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EtcdError {
    #[error("etcd is unreachable: {0}")]
    Unreachable(String),
    #[error("etcd refused: {0}")]
    Refused(String),
    #[error("etcd's answer could not be read: {0}")]
    Garbled(String),
}

/// A client of one etcd cluster.
#[derive(Debug)]
pub struct Etcd {
    endpoints: Vec<SocketAddr>,
    connection: tokio::sync::Mutex<Option<SendRequest<GrpcBody>>>,
}

impl Etcd {
    pub fn new(endpoints: Vec<SocketAddr>) -> Etcd {
        Etcd {
            endpoints,
            connection: tokio::sync::Mutex::new(None),
        }
    }

    /// The live connection, or a new one to the first endpoint that answers.
    async fn sender(&self) -> Result<SendRequest<GrpcBody>, EtcdError> {
        let mut connection = self.connection.lock().await;
        if let Some(sender) = connection.as_ref()
            && !sender.is_closed()
        {
            return Ok(sender.clone());
        }
        let mut last = String::from("no endpoint configured");
        for endpoint in &self.endpoints {
            match tokio::time::timeout(CALL_TIMEOUT, connect(*endpoint)).await {
                Ok(Ok(sender)) => {
                    *connection = Some(sender.clone());
                    return Ok(sender);
                }
                Ok(Err(reason)) => last = format!("{endpoint}: {reason}"),
                Err(_) => last = format!("{endpoint}: no connection within {CALL_TIMEOUT:?}"),
            }
        }
        *connection = None;
        Err(EtcdError::Unreachable(last))
    }

    /// Opens a call to `method` (`/etcdserverpb.KV/Range`) with `body`.
    async fn call(&self, method: &str, body: GrpcBody) -> Result<Response<Incoming>, EtcdError> {
        let mut sender = self.sender().await?;
        let request = Request::post(format!("http://etcd{method}"))
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(http::header::TE, "trailers")
            .body(body)
            .map_err(|err| EtcdError::Garbled(err.to_string()))?;
        sender
            .ready()
            .await
            .map_err(|err| EtcdError::Unreachable(err.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|err| EtcdError::Unreachable(err.to_string()))?;
        if !response.status().is_success() {
            return Err(EtcdError::Refused(format!("HTTP {}", response.status())));
        }
        grpc_status(response.headers())?;
        Ok(response)
    }

    /// One request, one answer.
    async fn unary<A: Message + Default>(
        &self,
        method: &str,
        request: &impl Message,
    ) -> Result<A, EtcdError> {
        let call = async {
            let response = self.call(method, GrpcBody::once(request)).await?;
            let collected = response
                .into_body()
                .collect()
                .await
                .map_err(|err| EtcdError::Unreachable(err.to_string()))?;
            if let Some(trailers) = collected.trailers() {
                grpc_status(trailers)?;
            }
            let mut frames = Frames::default();
            frames.extend(&collected.to_bytes());
            frames
                .next_message()?
                .ok_or_else(|| EtcdError::Garbled(format!("{method}: no message")))
        };
        tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .map_err(|_| {
                EtcdError::Unreachable(format!("{method}: no answer within {CALL_TIMEOUT:?}"))
            })?
    }

    /// Every key under `prefix`, and the store's revision when they were read.
    pub async fn list(&self, prefix: &[u8]) -> Result<(i64, Vec<KeyValue>), EtcdError> {
        let request = RangeRequest {
            key: prefix.to_vec(),
            range_end: prefix_end(prefix),
        };
        let response: RangeResponse = self.unary("/etcdserverpb.KV/Range", &request).await?;
        let revision = response.header.map_or(0, |h| h.revision);
        Ok((revision, response.kvs))
    }

    /// The key `key`, if it exists (a list of one or none).
    pub async fn get(&self, key: &[u8]) -> Result<Vec<KeyValue>, EtcdError> {
        let request = RangeRequest {
            key: key.to_vec(),
            range_end: Vec::new(),
        };
        let response: RangeResponse = self.unary("/etcdserverpb.KV/Range", &request).await?;
        Ok(response.kvs)
    }

    /// Sets `key` to `value`, attached to `lease` (0: none).
    pub async fn put(&self, key: &[u8], value: &[u8], lease: i64) -> Result<(), EtcdError> {
        let request = PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            lease,
        };
        let _: PutResponse = self.unary("/etcdserverpb.KV/Put", &request).await?;
        Ok(())
    }

    /// Deletes `key`; whether it existed.
    pub async fn delete(&self, key: &[u8]) -> Result<bool, EtcdError> {
        let request = DeleteRangeRequest { key: key.to_vec() };
        let response: DeleteRangeResponse =
            self.unary("/etcdserverpb.KV/DeleteRange", &request).await?;
        Ok(response.deleted > 0)
    }

    /// A new lease of `ttl` (whole seconds, at least one).
    pub async fn grant(&self, ttl: Duration) -> Result<i64, EtcdError> {
        let request = LeaseGrantRequest {
            ttl: ttl.as_secs_f64().ceil().max(1.0) as i64,
        };
        let response: LeaseGrantResponse = self
            .unary("/etcdserverpb.Lease/LeaseGrant", &request)
            .await?;
        if !response.error.is_empty() {
            return Err(EtcdError::Refused(response.error));
        }
        Ok(response.id)
    }

    /// Renews `lease` once; whether it was still alive.
    pub async fn keep_alive(&self, lease: i64) -> Result<bool, EtcdError> {
        let response: LeaseKeepAliveResponse = self
            .unary(
                "/etcdserverpb.Lease/LeaseKeepAlive",
                &LeaseKeepAliveRequest { id: lease },
            )
            .await?;
        Ok(response.ttl > 0)
    }

    /// Ends `lease` now: etcd deletes its keys.
    pub async fn revoke(&self, lease: i64) -> Result<(), EtcdError> {
        let _: LeaseRevokeResponse = self
            .unary(
                "/etcdserverpb.Lease/LeaseRevoke",
                &LeaseRevokeRequest { id: lease },
            )
            .await?;
        Ok(())
    }

    /// Watches every key under `prefix` from `start_revision` (inclusive).
    pub async fn watch(&self, prefix: &[u8], start_revision: i64) -> Result<Watch, EtcdError> {
        let (requests, receiver) = mpsc::channel(1);
        let create = WatchRequest {
            create_request: Some(WatchCreateRequest {
                key: prefix.to_vec(),
                range_end: prefix_end(prefix),
                start_revision,
                progress_notify: true,
            }),
        };
        requests
            .try_send(frame(&create))
            .expect("a new channel has room for one");
        let call = self.call("/etcdserverpb.Watch/Watch", GrpcBody::Channel(receiver));
        let response = tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .map_err(|_| EtcdError::Unreachable("watch: no answer".to_owned()))??;
        Ok(Watch {
            body: response.into_body(),
            frames: Frames::default(),
            _requests: requests,
        })
    }
}

/// A watch's answers as they come.
#[derive(Debug)]
pub struct Watch {
    body: Incoming,
    frames: Frames,
    /// Kept open: closing the request stream would end the watch.
    _requests: mpsc::Sender<Bytes>,
}

impl Watch {
    /// The next answer; an error when the watch broke.
    pub async fn next(&mut self) -> Result<WatchResponse, EtcdError> {
        loop {
            if let Some(message) = self.frames.next_message()? {
                return Ok(message);
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        self.frames.extend(data);
                    } else if let Some(trailers) = frame.trailers_ref() {
                        grpc_status(trailers)?;
                        return Err(EtcdError::Unreachable("the watch ended".to_owned()));
                    }
                }
                Some(Err(err)) => return Err(EtcdError::Unreachable(err.to_string())),
                None => return Err(EtcdError::Unreachable("the watch ended".to_owned())),
            }
        }
    }
}

async fn connect(endpoint: SocketAddr) -> Result<SendRequest<GrpcBody>, String> {
    let stream = tokio::net::TcpStream::connect(endpoint)
        .await
        .map_err(|err| err.to_string())?;
    stream.set_nodelay(true).ok();
    let (sender, connection) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|err| err.to_string())?;
    tokio::spawn(async move {
        // A broken connection shows in the next call, which makes a new one.
        connection.await.ok();
    });
    Ok(sender)
}

/// The end of the range of keys starting with `prefix`: `prefix` with its last byte that is
/// not 0xff incremented (etcd's "prefix end"); `\0` (every key) when there is none.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A gRPC error carried in `headers` (trailers, or the headers of a trailers-only answer).
fn grpc_status(headers: &HeaderMap) -> Result<(), EtcdError> {
    let Some(status) = headers.get("grpc-status") else {
        return Ok(());
    };
    if status == "0" {
        return Ok(());
    }
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .unwrap_or("");
    let status = status.to_str().unwrap_or("?");
    Err(EtcdError::Refused(format!(
        "gRPC status {status}: {message}"
    )))
}

/// `message` as one gRPC frame: uncompressed flag, length, protobuf.
fn frame(message: &impl Message) -> Bytes {
    let length = message.encoded_len();
    let mut buffer = BytesMut::with_capacity(5 + length);
    buffer.put_u8(0);
    buffer.put_u32(length as u32);
    message
        .encode(&mut buffer)
        .expect("the buffer has room for the message");
    buffer.freeze()
}

/// gRPC frames arriving in pieces.
#[derive(Debug, Default)]
struct Frames {
    buffer: BytesMut,
}

impl Frames {
    fn extend(&mut self, data: &[u8]) {
        self.buffer.extend_from_slice(data);
    }

    /// The next whole message, if it has arrived.
    fn next_message<M: Message + Default>(&mut self) -> Result<Option<M>, EtcdError> {
        if self.buffer.len() < 5 {
            return Ok(None);
        }
        if self.buffer[0] != 0 {
            return Err(EtcdError::Garbled("a compressed message".to_owned()));
        }
        let length = u32::from_be_bytes([
            self.buffer[1],
            self.buffer[2],
            self.buffer[3],
            self.buffer[4],
        ]) as usize;
        if self.buffer.len() < 5 + length {
            return Ok(None);
        }
        self.buffer.advance(5);
        let message = self.buffer.split_to(length);
        M::decode(message.freeze())
            .map(Some)
            .map_err(|err| EtcdError::Garbled(err.to_string()))
    }
}

/// A request body: one message, or messages as they are sent (a stream).
#[derive(Debug)]
enum GrpcBody {
    Once(Option<Bytes>),
    Channel(mpsc::Receiver<Bytes>),
}

impl GrpcBody {
    fn once(message: &impl Message) -> GrpcBody {
        GrpcBody::Once(Some(frame(message)))
    }
}

impl Body for GrpcBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            GrpcBody::Once(message) => Poll::Ready(message.take().map(|m| Ok(Frame::data(m)))),
            GrpcBody::Channel(receiver) => receiver
                .poll_recv(cx)
                .map(|message| message.map(|m| Ok(Frame::data(m)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, GrpcBody::Once(None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/fulcrum/"), b"/fulcrum0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
    }

    #[test]
    fn frames_arrive_in_any_pieces() {
        let message = PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            lease: 7,
        };
        let bytes = [frame(&message), frame(&message)].concat();
        for split in 0..bytes.len() {
            let mut frames = Frames::default();
            frames.extend(&bytes[..split]);
            let mut got: Vec<PutRequest> = Vec::new();
            while let Some(m) = frames.next_message().unwrap() {
                got.push(m);
            }
            frames.extend(&bytes[split..]);
            while let Some(m) = frames.next_message().unwrap() {
                got.push(m);
            }
            assert_eq!(got, [message.clone(), message.clone()], "split at {split}");
        }
    }
}

/// Against a real etcd (Debian's `etcd-server`, installed by `.ci/run`), started on free
/// loopback ports in a temporary directory.
#[cfg(test)]
mod live {
    use std::process::{Child, Command, Stdio};

    use super::*;

    struct Server {
        child: Child,
        dir: std::path::PathBuf,
        client: SocketAddr,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.child.kill().ok();
            self.child.wait().ok();
            std::fs::remove_dir_all(&self.dir).ok();
        }
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    async fn etcd() -> Server {
        let dir = std::env::temp_dir().join(format!("fulcrum-etcd-unit-{}", free_port()));
        let (client, peer) = (free_port(), free_port());
        let child = Command::new("etcd")
            .args([
                "--name=unit",
                &format!("--data-dir={}", dir.display()),
                &format!("--listen-client-urls=http://127.0.0.1:{client}"),
                &format!("--advertise-client-urls=http://127.0.0.1:{client}"),
                &format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
                &format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"),
                &format!("--initial-cluster=unit=http://127.0.0.1:{peer}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd runs (apt-get install -y etcd-server)");
        let server = Server {
            child,
            dir,
            client: SocketAddr::from(([127, 0, 0, 1], client)),
        };
        let etcd = Etcd::new(vec![server.client]);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while etcd.list(b"/").await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "etcd did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    #[tokio::test]
    async fn puts_lists_watches_and_leases() {
        let server = etcd().await;
        let etcd = Etcd::new(vec![SocketAddr::from(([127, 0, 0, 1], 1)), server.client]);
        let (revision, kvs) = etcd.list(b"/f/").await.unwrap();
        assert!(kvs.is_empty());
        let mut watch = etcd.watch(b"/f/", revision + 1).await.unwrap();
        etcd.put(b"/f/a", b"1", 0).await.unwrap();
        let lease = etcd.grant(Duration::from_secs(1)).await.unwrap();
        etcd.put(b"/f/b", b"2", lease).await.unwrap();
        assert!(etcd.keep_alive(lease).await.unwrap());
        let (_, kvs) = etcd.list(b"/f/").await.unwrap();
        let keys: Vec<&[u8]> = kvs.iter().map(|kv| kv.key.as_slice()).collect();
        assert_eq!(keys, [&b"/f/a"[..], b"/f/b"]);
        assert_eq!(kvs[1].lease, lease);
        let mut events = Vec::new();
        while events.len() < 2 {
            let response = watch.next().await.unwrap();
            events.extend(
                response
                    .events
                    .into_iter()
                    .map(|e| (e.kind, e.kv.unwrap().key)),
            );
        }
        assert_eq!(events, [(0, b"/f/a".to_vec()), (0, b"/f/b".to_vec())]);
        // The lease runs out: etcd deletes its key and says so.
        loop {
            let response = watch.next().await.unwrap();
            if let Some(event) = response.events.first() {
                assert_eq!(
                    (event.kind, &event.kv.as_ref().unwrap().key[..]),
                    (1, &b"/f/b"[..])
                );
                break;
            }
        }
        assert!(!etcd.keep_alive(lease).await.unwrap(), "the lease is gone");
        assert!(etcd.delete(b"/f/a").await.unwrap());
        assert!(etcd.list(b"/f/").await.unwrap().1.is_empty());
        let lease = etcd.grant(Duration::from_secs(60)).await.unwrap();
        etcd.put(b"/f/c", b"3", lease).await.unwrap();
        etcd.revoke(lease).await.unwrap();
        assert!(etcd.list(b"/f/").await.unwrap().1.is_empty());
    }
}
