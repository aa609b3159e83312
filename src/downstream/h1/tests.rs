use std::future::poll_fn;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::exchange::{Next, Serving, serve};
use super::input::Input;
use crate::body::ClientBody;
use crate::body::upgrade::OnUpgrade;
use crate::http1::head::Limits;

const LIMITS: Limits = Limits {
    max_head: 8192,
    max_fields: 100,
    max_line: 4096,
};

const SERVING: Serving<'static> = Serving {
    draining: &|| false,
    date: || *b"Sun, 06 Nov 1994 08:49:37 GMT",
    send_limit: Duration::from_secs(5),
    discard_limit: Duration::from_secs(5),
};

/// Echoes the method, target and body (with its trailers) of each request.
async fn echo(request: Request<ClientBody>) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let text = match body.collect().await {
        Ok(collected) => {
            let trailers = collected
                .trailers()
                .map(|t| format!(" trailers={t:?}"))
                .unwrap_or_default();
            format!(
                "{} {} body={:?}{trailers}",
                parts.method,
                parts.uri,
                collected.to_bytes()
            )
        }
        Err(error) => format!("body error: {error}"),
    };
    Response::new(Full::new(Bytes::from(text)))
}

/// Serves one connection as the server's loop does, calling `echo`.
async fn run(stream: DuplexStream) {
    let mut input = Input::new(stream);
    loop {
        let head = loop {
            match input.take_head(&LIMITS) {
                Ok(Some(head)) => break head,
                Ok(None) => {}
                Err(error) => {
                    let text = format!(
                        "HTTP/1.1 {} x\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
                        error.status().as_u16()
                    );
                    input.stream.write_all(text.as_bytes()).await.ok();
                    return;
                }
            }
            match poll_fn(|cx| input.poll_fill(cx)).await {
                Ok(true) => {}
                _ => return,
            }
        };
        match serve(&mut input, head, echo, SERVING).await {
            Next::KeepAlive => continue,
            Next::Close { .. } | Next::Reset => break,
            Next::Switch(_) => unreachable!("echo never switches"),
        }
    }
    input.stream.shutdown().await.ok();
}

/// Sends `parts`, each in its own write after a pause, and reads until the server closes.
async fn exchange(parts: &[&[u8]]) -> String {
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let task = tokio::spawn(run(server));
    for part in parts {
        // The server may close before taking everything: that is part of the answer.
        client.write_all(part).await.ok();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Read until the server closes, or has sent nothing more for a while (a client closing
    // first would drop its last request, as nginx does).
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n)) =
        tokio::time::timeout(Duration::from_millis(300), client.read(&mut buf)).await
    {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    drop(client);
    task.await.unwrap();
    String::from_utf8(out)
        .unwrap()
        .replace("date: Sun, 06 Nov 1994 08:49:37 GMT\r\n", "")
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let out = exchange(&[b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /c HTTP/1.1\r\n\r\n"]).await;
    assert_eq!(
        out,
        "HTTP/1.1 200 OK\r\ncontent-length: 15\r\n\r\nGET /a body=b\"\"\
         HTTP/1.1 200 OK\r\ncontent-length: 19\r\n\r\nPOST /b body=b\"abc\"\
         HTTP/1.1 200 OK\r\ncontent-length: 15\r\n\r\nGET /c body=b\"\""
    );
}

#[tokio::test]
async fn a_head_and_a_body_in_any_pieces_are_the_same_request() {
    let request: &[u8] = b"PUT /u HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\nGET /next HTTP/1.1\r\n\r\n";
    let whole = exchange(&[request]).await;
    assert!(
        whole.contains("PUT /u body=b\"abcde\" trailers={\"x-t\": \"1\"}"),
        "{whole}"
    );
    assert!(whole.contains("GET /next"), "{whole}");
    let bytes: Vec<&[u8]> = request.chunks(1).collect();
    assert_eq!(exchange(&bytes).await, whole);
    let sevens: Vec<&[u8]> = request.chunks(7).collect();
    assert_eq!(exchange(&sevens).await, whole);
}

#[tokio::test]
async fn a_malformed_chunk_fails_the_body_and_closes() {
    let out = exchange(&[
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET /never HTTP/1.1\r\n\r\n",
    ])
    .await;
    assert!(out.contains("body error: invalid chunked body"), "{out}");
    assert!(out.contains("connection: close"), "{out}");
    assert!(!out.contains("/never"), "{out}");
}

#[tokio::test]
async fn http_1_0_without_keep_alive_closes_and_with_it_stays() {
    let out = exchange(&[b"GET / HTTP/1.0\r\n\r\nGET /again HTTP/1.0\r\n\r\n"]).await;
    assert_eq!(out.matches("HTTP/1.1 200").count(), 1, "{out}");
    assert!(out.contains("connection: close"));
    let out =
        exchange(&[b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /again HTTP/1.0\r\n\r\n"])
            .await;
    assert_eq!(out.matches("HTTP/1.1 200").count(), 2, "{out}");
    assert!(out.contains("connection: keep-alive"));
}

#[tokio::test]
async fn expect_continue_is_answered_when_the_body_is_asked_for() {
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let task = tokio::spawn(run(server));
    client
        .write_all(b"POST /e HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        .await
        .unwrap();
    let mut interim = [0u8; 25];
    client.read_exact(&mut interim).await.unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    client.write_all(b"hello").await.unwrap();
    let mut out = vec![0u8; 1024];
    let n = client.read(&mut out).await.unwrap();
    let out = String::from_utf8_lossy(&out[..n]);
    assert!(out.contains("POST /e body=b\"hello\""), "{out}");
    drop(client);
    task.await.unwrap();
}

#[tokio::test]
async fn a_body_already_begun_gets_no_100_continue_whatever_its_framing() {
    for body in [
        "Content-Length: 5\r\n\r\nhello",
        "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        // Only part of it: the client has started sending all the same.
        "Transfer-Encoding: chunked\r\n\r\n5\r\nhel",
    ] {
        let request = format!("POST /e HTTP/1.1\r\nExpect: 100-continue\r\n{body}");
        let rest: &[u8] = if body.ends_with("hel") {
            b"lo\r\n0\r\n\r\n"
        } else {
            b""
        };
        let out = exchange(&[request.as_bytes(), rest]).await;
        assert!(!out.contains("100 Continue"), "{body:?}: {out}");
        assert!(out.contains("POST /e body=b\"hello\""), "{body:?}: {out}");
    }
}

/// Answers 404 without reading the body.
async fn ignore(_: Request<ClientBody>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::NOT_FOUND)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// Serves requests on `server` with `ignore` as the server's loop does, until a request closes
/// the connection: whether each kept it.
async fn serve_ignoring(server: DuplexStream, serving: Serving<'static>) -> Vec<bool> {
    let mut input = Input::new(server);
    let mut nexts = Vec::new();
    loop {
        let head = loop {
            if let Some(head) = input.take_head(&LIMITS).unwrap() {
                break head;
            }
            if !poll_fn(|cx| input.poll_fill(cx)).await.unwrap_or(false) {
                return nexts;
            }
        };
        let keep = matches!(
            serve(&mut input, head, ignore, serving).await,
            Next::KeepAlive
        );
        nexts.push(keep);
        if !keep {
            return nexts;
        }
    }
}

#[tokio::test]
async fn a_body_never_read_is_dropped_and_the_next_request_served_however_it_came() {
    // Each body comes whole behind its head, in pieces after the answer, or a byte at a time.
    let requests: [&[u8]; 3] = [
        b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
        b"POST /b HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
        b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    ];
    let later: [&[u8]; 3] = [b"", b"hello", b"5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"];
    for bytewise in [false, true] {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let task = tokio::spawn(serve_ignoring(server, SERVING));
        for (head, body) in requests.iter().zip(later) {
            client.write_all(head).await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
            let pieces: Vec<&[u8]> = match bytewise {
                true => body.chunks(1).collect(),
                false => vec![body],
            };
            for piece in pieces {
                client.write_all(piece).await.unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        client.write_all(b"GET /d HTTP/1.1\r\n\r\n").await.unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&out).matches("404").count().eq(&4) {
            let n = client.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&out));
            out.extend_from_slice(&buf[..n]);
        }
        assert!(!String::from_utf8_lossy(&out).contains("connection: close"));
        drop(client);
        assert_eq!(task.await.unwrap(), [true; 4], "bytewise: {bytewise}");
    }
}

#[tokio::test]
async fn a_body_too_large_to_drop_or_that_never_comes_closes_the_connection() {
    // Declared larger than what is dropped: closed at once, and said so.
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let task = tokio::spawn(serve_ignoring(server, SERVING));
    let head = format!(
        "POST /a HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        super::reader::DISCARD_LIMIT + 1
    );
    client.write_all(head.as_bytes()).await.unwrap();
    let mut out = String::new();
    client.read_to_string(&mut out).await.unwrap();
    assert!(out.contains("connection: close"), "{out}");
    assert_eq!(task.await.unwrap(), [false]);

    // Never sent: the connection closes once the wait for it is over.
    let serving = Serving {
        discard_limit: Duration::from_millis(50),
        ..SERVING
    };
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let task = tokio::spawn(serve_ignoring(server, serving));
    client
        .write_all(b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
        .await
        .unwrap();
    assert_eq!(task.await.unwrap(), [false]);
}

#[tokio::test]
async fn an_upgrade_hands_the_connection_over_after_the_101() {
    async fn switch(mut request: Request<ClientBody>) -> Response<Full<Bytes>> {
        let upgrade = request
            .extensions_mut()
            .remove::<OnUpgrade>()
            .expect("an upgrade request");
        tokio::spawn(async move {
            let mut upgraded = upgrade.wait().await.expect("switched");
            let mut early = [0u8; 5];
            upgraded.read_exact(&mut early).await.unwrap();
            assert_eq!(&early, b"early", "what came after the head is read first");
            upgraded.write_all(b"tunnel").await.unwrap();
        });
        Response::builder()
            .status(101)
            .header("connection", "upgrade")
            .header("upgrade", "ws")
            .body(Full::new(Bytes::new()))
            .unwrap()
    }
    let (mut client, server) = tokio::io::duplex(1 << 16);
    tokio::spawn(async move {
        let mut input = Input::new(server);
        let head = loop {
            if let Some(head) = input.take_head(&LIMITS).unwrap() {
                break head;
            }
            assert!(poll_fn(|cx| input.poll_fill(cx)).await.unwrap());
        };
        match serve(&mut input, head, switch, SERVING).await {
            Next::Switch(promise) => {
                let upgraded =
                    crate::body::upgrade::Upgraded::new(input.take_read(), input.stream, ());
                promise.send(upgraded).ok();
            }
            other => panic!("{other:?}"),
        }
    });
    client
        .write_all(b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: ws\r\n\r\nearly")
        .await
        .unwrap();
    let mut out = vec![0u8; 1024];
    let mut text = String::new();
    while !text.ends_with("tunnel") {
        let n = client.read(&mut out).await.unwrap();
        assert!(n > 0, "{text}");
        text.push_str(std::str::from_utf8(&out[..n]).unwrap());
    }
    assert!(
        text.starts_with(
            "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: ws\r\n"
        ),
        "{text}"
    );
}
