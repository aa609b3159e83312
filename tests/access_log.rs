//! The access log: one line per completed request with every field, JSON or common format, to a
//! file or standard output, reopened on SIGUSR1.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use serde_json::Value;
use support::{Backend, BinaryProxy, Http, TestProxy, pool, refusing_address, wait_until};

/// The lines of `path` so far (none when it does not exist yet).
fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Waits until `path` has `n` lines, then checks that no more arrive.
async fn exactly(path: &Path, n: usize) -> Vec<String> {
    wait_until(
        &format!("{n} access log lines"),
        Duration::from_secs(10),
        || lines(path).len() >= n,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let all = lines(path);
    assert_eq!(all.len(), n, "one line per request: {all:#?}");
    all
}

fn log_config(dir: &Path, format: &str) -> (String, PathBuf) {
    let path = dir.join("access.log");
    let config = format!(
        "[log]\naccess = \"{format}\"\naccess_path = \"{}\"\n",
        path.display()
    );
    (config, path)
}

#[tokio::test]
async fn json_lines_carry_every_field_one_per_request() {
    let a = Backend::start("a").await;
    let dir = support::TempDir::new();
    let (log, path) = log_config(dir.path(), "json");
    let config = pool("web", "round_robin", &[&a])
        + "[[route]]\nhost = \"shop.example\"\npool = \"web\"\n"
        + &log;
    let proxy = TestProxy::start(&config).await;
    let http = Http::to(proxy.addr);

    let reply = http
        .send(
            Request::get("/items/7?color=red&size=2")
                .header("host", "shop.example")
                .header("x-request-id", "trace-me-42")
                .body(support::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, 200);
    let upload = http_body_util::Full::new(Bytes::from_static(b"0123456789"))
        .map_err(|never| match never {})
        .boxed();
    let reply = http
        .send(
            Request::post("/upload")
                .header("host", "shop.example")
                .body(upload)
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, 200);
    let reply = http.get_host("elsewhere.example", "/nothing").await;
    assert_eq!(reply.status, 404);

    let lines = exactly(&path, 3).await;
    let entries: Vec<Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).expect("each line is one JSON object"))
        .collect();
    let get = &entries[0];
    assert_eq!(get["method"], "GET");
    assert_eq!(get["host"], "shop.example");
    assert_eq!(get["path"], "/items/7?color=red&size=2");
    assert_eq!(get["query"], "color=red&size=2");
    assert_eq!(get["protocol"], "HTTP/1.1");
    assert_eq!(get["status"], 200);
    assert_eq!(get["pool"], "web");
    assert_eq!(get["backend"], a.addr.to_string());
    assert_eq!(get["attempts"], 1);
    assert_eq!(get["request_bytes"], 0);
    assert_eq!(
        get["response_bytes"], 1,
        "the backend answers its name, \"a\""
    );
    assert_eq!(get["request_id"], "trace-me-42", "the client's request id");
    assert!(get["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(get["time"].as_str().unwrap().ends_with('Z'));
    assert!(get["duration"].as_f64().unwrap() >= get["upstream_time"].as_f64().unwrap());

    let post = &entries[1];
    assert_eq!(post["method"], "POST");
    assert_eq!(post["request_bytes"], 10);
    assert_eq!(
        post["request_id"].as_str().unwrap().len(),
        32,
        "a generated id"
    );
    assert_eq!(
        post["request_id"].as_str().unwrap(),
        a.requests()[1].headers["x-request-id"],
        "the id in the log is the one the backend got"
    );

    let unrouted = &entries[2];
    assert_eq!(unrouted["status"], 404);
    assert_eq!(unrouted["pool"], "");
    assert_eq!(unrouted["backend"], "");
    assert_eq!(unrouted["attempts"], 0);
    assert_eq!(unrouted["upstream_time"], Value::Null);
}

#[tokio::test]
async fn retried_requests_log_their_attempts_and_last_backend() {
    let live = Backend::start("live").await;
    let dead = refusing_address().await;
    let dir = support::TempDir::new();
    let (log, path) = log_config(dir.path(), "json");
    let config = format!(
        "[pool.web]\nstrategy = \"round_robin\"\nretries = 1\n\
         backends = [{{ address = \"{dead}\" }}, {{ address = \"{}\" }}]\n{log}",
        live.addr
    );
    let proxy = TestProxy::start(&config).await;
    let http = Http::to(proxy.addr);
    for _ in 0..20 {
        assert_eq!(http.get("/").await.status, 200);
    }
    let entries: Vec<Value> = exactly(&path, 20)
        .await
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert!(
        entries
            .iter()
            .all(|e| e["backend"] == live.addr.to_string())
    );
    assert!(
        entries.iter().any(|e| e["attempts"] == 2),
        "the dead backend's turns are retried: {entries:#?}"
    );
}

#[tokio::test]
async fn common_format_is_ncsa() {
    let a = Backend::start("a").await;
    let dir = support::TempDir::new();
    let (log, path) = log_config(dir.path(), "common");
    let proxy = TestProxy::start(&(pool("web", "round_robin", &[&a]) + &log)).await;
    assert_eq!(Http::to(proxy.addr).get("/x?y=1").await.status, 200);
    let line = exactly(&path, 1).await.remove(0);
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(line.ends_with("] \"GET /x?y=1 HTTP/1.1\" 200 1"), "{line}");
}

#[tokio::test]
async fn log_off_writes_nothing() {
    let a = Backend::start("a").await;
    let dir = support::TempDir::new();
    let (log, path) = log_config(dir.path(), "off");
    let proxy = TestProxy::start(&(pool("web", "round_robin", &[&a]) + &log)).await;
    assert_eq!(Http::to(proxy.addr).get("/").await.status, 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!path.exists(), "access = \"off\" opens no file");
}

#[tokio::test]
async fn the_binary_logs_json_to_stdout_by_default_and_reopens_on_sigusr1() {
    let a = Backend::start("a").await;
    let on_stdout = BinaryProxy::start(&(pool("web", "round_robin", &[&a]) + "[log]\n"));
    assert_eq!(Http::to(on_stdout.addr).get("/first").await.status, 200);
    wait_until("a JSON line on stdout", Duration::from_secs(10), || {
        on_stdout
            .stdout
            .lock()
            .unwrap()
            .iter()
            .any(|line| serde_json::from_str::<Value>(line).is_ok_and(|v| v["path"] == "/first"))
    })
    .await;
    drop(on_stdout);

    let dir = support::TempDir::new();
    let (log, path) = log_config(dir.path(), "json");
    let proxy = BinaryProxy::start(&(pool("web", "round_robin", &[&a]) + &log));
    let http = Http::to(proxy.addr);
    assert_eq!(http.get("/before").await.status, 200);
    exactly(&path, 1).await;
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&path, &rotated).unwrap();
    proxy.signal("USR1");
    wait_until("the reopen is logged", Duration::from_secs(10), || {
        proxy.logged("reopening the access log")
    })
    .await;
    assert_eq!(http.get("/after").await.status, 200);
    let after = exactly(&path, 1).await;
    assert!(after[0].contains("\"/after\""), "{after:?}");
    assert_eq!(lines(&rotated).len(), 1, "the rotated file keeps its line");
}

#[tokio::test]
async fn lines_still_queued_are_written_before_the_binary_exits() {
    let a = Backend::start("a").await;
    let dir = support::TempDir::new();
    let (log, path) = log_config(dir.path(), "json");
    let mut proxy = BinaryProxy::start(&(pool("web", "round_robin", &[&a]) + &log));
    let http = Http::to(proxy.addr);
    for _ in 0..5 {
        assert_eq!(http.get("/").await.status, 200);
    }
    drop(http);
    proxy.signal("TERM");
    let status = tokio::task::spawn_blocking(move || proxy.child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "a graceful stop: {status:?}");
    assert_eq!(
        lines(&path).len(),
        5,
        "every request's line, none lost at exit"
    );
}

#[tokio::test]
async fn a_client_that_leaves_before_the_answer_is_logged_and_counted_as_499() {
    let a = Backend::start("a").await;
    let dir = support::TempDir::new();
    let (log, path) = log_config(dir.path(), "json");
    let config = pool("web", "round_robin", &[&a]) + "[admin]\nlisten = \"127.0.0.1:0\"\n" + &log;
    let proxy = TestProxy::start(&config).await;
    let gave_up = tokio::time::timeout(
        Duration::from_millis(200),
        Http::to(proxy.addr).try_get("/sleep/1500"),
    )
    .await;
    assert!(gave_up.is_err(), "the client gives up before the answer");
    let line = exactly(&path, 1).await.remove(0);
    let entry: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["status"], 499, "{entry}");
    assert_eq!(entry["backend"], a.addr.to_string());
    // As nginx's $upstream_response_time: the backend was waited on until the client left.
    let waited = entry["upstream_time"].as_f64();
    assert!(waited.is_some_and(|t| t >= 0.1), "{entry}");
    let m = support::scrape(proxy.admin.unwrap()).await;
    let labels = [
        ("pool", "web"),
        ("backend", &*a.addr.to_string()),
        ("code", "499"),
    ];
    assert_eq!(m.value("fulcrum_requests_total", &labels), 1.0);
}

/// Requests refused before they could be served, by hyper's parser (400, 431) or for a head
/// that did not arrive in time (408), are logged and counted too, as nginx logs them: probes
/// and slow clients must show in the log and on dashboards.
#[tokio::test]
async fn requests_refused_unparsed_or_unfinished_are_logged_and_counted() {
    let a = Backend::start("a").await;
    let dir = support::TempDir::new();
    let (log, path) = log_config(dir.path(), "json");
    let config = pool("web", "round_robin", &[&a])
        + "[limits]\nmax_header_bytes = \"16KiB\"\n"
        + "[timeouts]\nrequest_header = \"300ms\"\n"
        + "[admin]\nlisten = \"127.0.0.1:0\"\n"
        + &log;
    let proxy = TestProxy::start(&config).await;
    let garbage = support::raw(proxy.addr, b"GARBAGE\r\n\r\n").await;
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage}");
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "a".repeat(40_000)
    );
    let too_large = support::raw(proxy.addr, big.as_bytes()).await;
    assert!(too_large.starts_with("HTTP/1.1 431"), "{too_large}");
    let slow = support::raw(proxy.addr, b"GET / HTTP/1.1\r\nHost: a\r\n").await;
    assert!(slow.starts_with("HTTP/1.1 408"), "{slow}");

    let mut statuses: Vec<u64> = exactly(&path, 3)
        .await
        .iter()
        .map(|line| {
            let entry: Value = serde_json::from_str(line).unwrap();
            assert_eq!(entry["method"], "-", "{entry}");
            assert_eq!(entry["pool"], "", "{entry}");
            entry["status"].as_u64().unwrap()
        })
        .collect();
    statuses.sort();
    assert_eq!(statuses, [400, 408, 431]);
    let m = support::scrape(proxy.admin.unwrap()).await;
    for code in ["400", "408", "431"] {
        let labels = [("pool", ""), ("backend", ""), ("code", code)];
        assert_eq!(m.value("fulcrum_requests_total", &labels), 1.0, "{code}");
    }
    assert!(a.requests().is_empty(), "nothing reached the backend");
}
