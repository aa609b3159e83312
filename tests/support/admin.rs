//! A client for the admin API.

use std::net::SocketAddr;

use http::Request;
use http_body_util::BodyExt;
use serde_json::Value;

use super::client::TestBody;

/// An admin API reply: status and JSON body (`Null` when empty).
#[derive(Debug)]
pub struct AdminReply {
    pub status: u16,
    pub json: Value,
}

/// Calls the admin API at `addr`.
pub async fn admin(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> AdminReply {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let body: TestBody =
        http_body_util::Full::new(bytes::Bytes::from(body.unwrap_or("").to_owned())).boxed();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<TestBody>();
    let response = client
        .request(request.body(body).unwrap())
        .await
        .expect("the admin API answers");
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("admin replies are JSON: {bytes:?}"))
    };
    AdminReply { status, json }
}
