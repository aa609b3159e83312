//! Hot reload: every trigger, invalid configs, state carried across, listeners, and reloads
//! under load without a failed request.

mod support;

use std::time::{Duration, Instant};

use fulcrum::Options;
use support::{Backend, BinaryProxy, Http, TestProxy, admin, pool, until_served_by, wait_until};

const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n";

#[tokio::test]
async fn admin_reload_switches_to_the_new_backends() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let proxy = TestProxy::start(&(pool("web", "round_robin", &[&a]) + ADMIN)).await;
    let http = Http::to(proxy.addr);
    assert_eq!(http.get("/").await.backend(), "a");

    proxy.rewrite(&(pool("web", "round_robin", &[&b]) + ADMIN));
    let reply = admin(proxy.admin.unwrap(), "POST", "/reload", None, None).await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    assert_eq!(reply.json["generation"], 2);
    for _ in 0..5 {
        assert_eq!(
            http.get("/").await.backend(),
            "b",
            "new requests use the new config at once"
        );
    }
}

#[tokio::test]
async fn sighup_reloads_the_binary() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let proxy = BinaryProxy::start(&pool("web", "round_robin", &[&a]));
    let http = Http::to(proxy.addr);
    assert_eq!(http.get("/").await.backend(), "a");
    proxy.edit_config(&a.addr.to_string(), &b.addr.to_string());
    proxy.signal("HUP");
    until_served_by(&http, "b", Duration::from_secs(5)).await;
    assert!(proxy.logged("config reloaded"), "a reload is logged");
}

/// The proxy on the config file at `path` (in `dir`), watching it for changes.
async fn watching(dir: support::TempDir, path: &std::path::Path) -> TestProxy {
    let options = Options {
        watch_config: true,
        ..Options::default()
    };
    TestProxy::start_file(dir, path, options).await
}

/// The config file rewritten (renamed over, as editors save) while the file `beside`, when
/// given, is written in the same directory every 20 ms: the proxy moves from `a` to `b`.
async fn a_rewrite_reloads(beside: Option<&str>) {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let options = Options {
        watch_config: true,
        ..Options::default()
    };
    let proxy = TestProxy::start_with(&pool("web", "round_robin", &[&a]), options).await;
    let http = Http::to(proxy.addr);
    assert_eq!(http.get("/").await.backend(), "a");
    let writer = beside.map(|name| {
        let noise = proxy.config_path().with_file_name(name);
        tokio::spawn(async move {
            // For at most 10 s: ten times in each 200 ms quiet period.
            for _ in 0..500 {
                std::fs::write(&noise, b"a line\n").unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    });
    proxy.rewrite(&pool("web", "round_robin", &[&b]));
    until_served_by(&http, "b", Duration::from_secs(5)).await;
    assert_eq!(proxy.control.status().generation, 2);
    if let Some(writer) = writer {
        writer.abort();
    }
}

#[tokio::test]
async fn atomic_rename_of_the_config_file_is_picked_up() {
    a_rewrite_reloads(None).await;
}

/// `proxy.toml -> LINK/proxy.toml`, `LINK -> v1`; then `LINK` swapped to `v2` by a rename, as
/// Kubernetes and `ln -sfn` swap it: the proxy must move from `v1`'s backend to `v2`'s.
async fn swapping_the_link_reloads(link: &str) {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let dir = support::TempDir::new();
    let root = dir.path().to_path_buf();
    for (version, backend) in [("v1", &a), ("v2", &b)] {
        std::fs::create_dir(root.join(version)).unwrap();
        let text = support::with_listen(&pool("web", "round_robin", &[backend]));
        std::fs::write(root.join(version).join("proxy.toml"), text).unwrap();
    }
    std::os::unix::fs::symlink("v1", root.join(link)).unwrap();
    std::os::unix::fs::symlink(format!("{link}/proxy.toml"), root.join("proxy.toml")).unwrap();
    let path = root.join("proxy.toml");
    let proxy = watching(dir, &path).await;
    let http = Http::to(proxy.addr);
    assert_eq!(http.get("/").await.backend(), "a");
    let swap = format!("{link}_tmp");
    std::os::unix::fs::symlink("v2", root.join(&swap)).unwrap();
    std::fs::rename(root.join(&swap), root.join(link)).unwrap();
    until_served_by(&http, "b", Duration::from_secs(5)).await;
}

#[tokio::test]
async fn symlink_swap_of_the_config_is_picked_up() {
    // Kubernetes ConfigMap layout: proxy.toml -> ..data/proxy.toml, ..data -> a versioned dir.
    swapping_the_link_reloads("..data").await;
}

/// A config reached through a directory link that `ln -sfn` swaps (`current`) reloads too.
#[tokio::test]
async fn a_swapped_directory_link_on_the_config_path_reloads() {
    swapping_the_link_reloads("current").await;
}

#[tokio::test]
async fn invalid_reload_keeps_serving_the_old_config_and_reports_why() {
    let a = Backend::start("a").await;
    let proxy = TestProxy::start(&(pool("web", "round_robin", &[&a]) + ADMIN)).await;
    let admin_addr = proxy.admin.unwrap();
    let broken = (pool("web", "round_robin", &[&a]) + ADMIN).replace("round_robin", "fastest");
    proxy.rewrite(&broken);

    let reply = admin(admin_addr, "POST", "/reload", None, None).await;
    assert_eq!(reply.status, 422);
    let error = reply.json["error"].as_str().unwrap();
    assert!(
        error.contains("proxy.toml:4: unknown strategy \"fastest\""),
        "{error}"
    );

    assert_eq!(
        Http::to(proxy.addr).get("/").await.backend(),
        "a",
        "the old config still serves"
    );
    let status = admin(admin_addr, "GET", "/status", None, None).await.json;
    assert_eq!(status["generation"], 1);
    assert!(
        status["last_reload_error"]
            .as_str()
            .unwrap()
            .contains("fastest"),
        "{status}"
    );

    // A good reload clears the error.
    proxy.rewrite(&(pool("web", "random", &[&a]) + ADMIN));
    assert_eq!(
        admin(admin_addr, "POST", "/reload", None, None)
            .await
            .status,
        200
    );
    let status = admin(admin_addr, "GET", "/status", None, None).await.json;
    assert!(status["last_reload_error"].is_null());
    assert_eq!(
        status["pools"]["web"]["strategy"], "random",
        "a strategy change applies"
    );
}

#[tokio::test]
async fn invalid_reload_is_logged_at_warn_by_the_binary() {
    let a = Backend::start("a").await;
    let proxy = BinaryProxy::start(&pool("web", "round_robin", &[&a]));
    proxy.edit_config("round_robin", "fastest");
    proxy.signal("HUP");
    let started = Instant::now();
    while !proxy.logged("reload rejected") {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the rejected reload is logged"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(proxy.logged("unknown strategy"), "the log says why");
    assert_eq!(Http::to(proxy.addr).get("/").await.backend(), "a");
}

#[tokio::test]
async fn a_backend_marked_down_stays_down_across_a_reload_that_keeps_it() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let health = "[pool.web.health]\npath = \"/healthz\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\nunhealthy_after = 1\nhealthy_after = 3\n";
    let config = pool("web", "round_robin", &[&a, &b]) + health + ADMIN;
    let proxy = TestProxy::start(&config).await;
    let admin_addr = proxy.admin.unwrap();
    a.set_health(500);
    let down = || async {
        admin(admin_addr, "GET", "/status", None, None).await.json["pools"]["web"]["backends"][0]["health"]
            == "unhealthy"
    };
    let started = Instant::now();
    while !down().await {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a is marked unhealthy"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.set_health(200); // it would need 3 passes (300ms) to come back
    proxy.rewrite(&config.replace("round_robin", "least_connections"));
    assert_eq!(
        admin(admin_addr, "POST", "/reload", None, None)
            .await
            .status,
        200
    );
    assert!(down().await, "right after the reload, a is still unhealthy");
    let http = Http::to(proxy.addr);
    let served = a.served();
    for _ in 0..4 {
        assert_eq!(http.get("/").await.backend(), "b");
    }
    assert_eq!(a.served(), served);
}

fn free_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[tokio::test]
async fn changed_listen_address_is_bound_and_a_bind_failure_keeps_the_old_one() {
    let a = Backend::start("a").await;
    let first = free_port();
    let config = |listen: std::net::SocketAddr| {
        format!("[server]\nlisten = \"{listen}\"\n") + &pool("web", "round_robin", &[&a]) + ADMIN
    };
    let dir = support::TempDir::new();
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, config(first)).unwrap();
    let proxy = TestProxy::start_file(dir, &path, Options::default()).await;
    let admin_addr = proxy.admin.unwrap();
    assert_eq!(proxy.addr, first);

    let second = free_port();
    std::fs::write(&path, config(second)).unwrap();
    assert_eq!(
        admin(admin_addr, "POST", "/reload", None, None)
            .await
            .status,
        200
    );
    assert_eq!(
        Http::to(second).get("/").await.backend(),
        "a",
        "the new address serves"
    );
    assert!(
        tokio::net::TcpStream::connect(first).await.is_err(),
        "the old address is closed"
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std::fs::write(&path, config(taken.local_addr().unwrap())).unwrap();
    let reply = admin(admin_addr, "POST", "/reload", None, None).await;
    assert_eq!(reply.status, 422, "a bind failure is a reload error");
    assert!(
        reply.json["error"]
            .as_str()
            .unwrap()
            .contains("cannot listen on")
    );
    assert_eq!(
        Http::to(second).get("/").await.backend(),
        "a",
        "the old listener keeps serving"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_load_lose_no_request() {
    let backends = [
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    ];
    let configs: Vec<String> = [
        ("round_robin", vec![0, 1]),
        ("least_connections", vec![1, 2]),
        ("weighted", vec![0, 1, 2]),
        ("random", vec![2]),
        ("round_robin", vec![0, 2]),
    ]
    .into_iter()
    .map(|(strategy, members)| {
        let chosen: Vec<&Backend> = members.iter().map(|&i| &backends[i]).collect();
        pool("web", strategy, &chosen)
    })
    .collect();
    let proxy = TestProxy::start(&configs[0]).await;

    let load = support::Load::start(proxy.addr, 16, 200);
    for reload in 1..=20 {
        wait_until("more load between reloads", Duration::from_secs(10), || {
            load.done() >= reload * 120
        })
        .await;
        proxy.rewrite(&configs[reload % configs.len()]);
        proxy.control.reload().await.expect("every config is valid");
    }
    let (done, failures) = load.finish().await;
    assert_eq!(proxy.control.status().generation, 21);
    assert_eq!(done, 16 * 200);
    assert!(
        failures.is_empty(),
        "{} of 3200 failed, e.g. {:?}",
        failures.len(),
        failures.first()
    );
}

#[tokio::test]
async fn editing_the_target_of_a_symlinked_config_in_another_directory_reloads() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let dir = support::TempDir::new();
    let (etc, real) = (dir.path().join("etc"), dir.path().join("real"));
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::create_dir_all(&real).unwrap();
    let target = real.join("fulcrum.toml");
    std::fs::write(
        &target,
        support::with_listen(&pool("web", "round_robin", &[&a])),
    )
    .unwrap();
    std::os::unix::fs::symlink(&target, etc.join("proxy.toml")).unwrap();
    let path = etc.join("proxy.toml");
    let proxy = watching(dir, &path).await;
    let http = Http::to(proxy.addr);
    assert_eq!(http.get("/").await.backend(), "a");
    // An editor's save: a new file beside the target, renamed over it.
    let temporary = real.join(".fulcrum.toml.swp");
    std::fs::write(
        &temporary,
        support::with_listen(&pool("web", "round_robin", &[&b])),
    )
    .unwrap();
    std::fs::rename(&temporary, &target).unwrap();
    until_served_by(&http, "b", Duration::from_secs(5)).await;
}

/// Another file written often in the config's directory (an access log under load) must not hold
/// a reload back: only events on the config file count toward its quiet period.
#[tokio::test]
async fn a_file_written_beside_the_config_does_not_hold_its_reload_back() {
    a_rewrite_reloads(Some("access.log")).await;
}
