//! Consistent hashing through the real proxy (every key source, replica fallback, the admin
//! route lookup) and the sticky-session cookie life cycle.

mod support;

use std::collections::HashMap;

use support::{Backend, Http, TestProxy, admin, empty, pool, pool_with_backups};

const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n";

async fn five() -> Vec<Backend> {
    let mut backends = Vec::new();
    for name in ["b1", "b2", "b3", "b4", "b5"] {
        backends.push(Backend::start(name).await);
    }
    backends
}

fn hash_pool(backends: &[Backend], key: &str) -> String {
    let refs: Vec<&Backend> = backends.iter().collect();
    pool("cache", "consistent_hash", &refs).replace(
        "backends = [",
        &format!("hash_key = \"{key}\"\nbackends = ["),
    )
}

/// Sends `request` built for key `i` and returns who served it.
async fn served(http: &Http, request: http::Request<support::TestBody>) -> String {
    let reply = http.send(request).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.backend().to_owned()
}

fn get(path: &str) -> http::request::Builder {
    http::Request::get(path)
}

#[tokio::test]
async fn every_key_source_keeps_a_key_on_one_backend_and_spreads_keys() {
    let backends = five().await;
    type Build = fn(usize) -> http::Request<support::TestBody>;
    let sources: [(&str, Build); 4] = [
        ("header:x-user-id", |i| {
            get("/")
                .header("x-user-id", format!("user-{i}"))
                .body(empty())
                .unwrap()
        }),
        ("cookie:session", |i| {
            get("/")
                .header("cookie", format!("a=1; session=s{i}"))
                .body(empty())
                .unwrap()
        }),
        ("query:user", |i| {
            get(&format!("/items?user={i}&page=2"))
                .body(empty())
                .unwrap()
        }),
        ("path", |i| {
            get(&format!("/objects/{i}")).body(empty()).unwrap()
        }),
    ];
    for (source, build) in sources {
        let proxy = TestProxy::start(&hash_pool(&backends, source)).await;
        let http = Http::to(proxy.addr);
        let mut homes = HashMap::new();
        for i in 0..200 {
            let first = served(&http, build(i)).await;
            let again = served(&http, build(i)).await;
            assert_eq!(first, again, "{source}: key {i} moved between two requests");
            *homes.entry(first).or_insert(0) += 1;
        }
        assert_eq!(
            homes.len(),
            5,
            "{source}: 200 keys reach all five backends: {homes:?}"
        );
        for (backend, count) in &homes {
            assert!(
                (14..=70).contains(count),
                "{source}: {backend} got {count} of 200 keys"
            );
        }
    }
}

#[tokio::test]
async fn client_ip_key_pins_a_client() {
    let backends = five().await;
    let proxy = TestProxy::start(&hash_pool(&backends, "client_ip")).await;
    let http = Http::to(proxy.addr);
    let first = served(&http, get("/").body(empty()).unwrap()).await;
    for _ in 0..10 {
        assert_eq!(served(&http, get("/x").body(empty()).unwrap()).await, first);
    }
}

#[tokio::test]
async fn requests_without_the_key_are_spread() {
    let backends = five().await;
    let proxy = TestProxy::start(&hash_pool(&backends, "header:x-user-id")).await;
    let http = Http::to(proxy.addr);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..100 {
        seen.insert(served(&http, get("/").body(empty()).unwrap()).await);
    }
    assert!(
        seen.len() >= 4,
        "keyless requests spread like random: {seen:?}"
    );
}

/// An empty key (`x-user-id:`, `sid=`, `?uid=`) is no key, as in nginx's `hash` and HAProxy's
/// `balance hdr`: otherwise every anonymous client would land on the one backend "" hashes to.
#[tokio::test]
async fn requests_with_an_empty_key_are_spread() {
    let backends = five().await;
    type Build = fn() -> http::Request<support::TestBody>;
    let sources: [(&str, Build); 3] = [
        ("header:x-user-id", || {
            get("/").header("x-user-id", "").body(empty()).unwrap()
        }),
        ("cookie:sid", || {
            get("/")
                .header("cookie", "sid=; a=1")
                .body(empty())
                .unwrap()
        }),
        ("query:uid", || get("/?uid=&page=2").body(empty()).unwrap()),
    ];
    for (source, build) in sources {
        let proxy = TestProxy::start(&hash_pool(&backends, source)).await;
        let http = Http::to(proxy.addr);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..100 {
            seen.insert(served(&http, build()).await);
        }
        assert!(seen.len() >= 4, "{source}: empty keys spread: {seen:?}");
    }
}

#[tokio::test]
async fn a_dead_home_sends_its_keys_to_the_same_replica_and_they_return() {
    let mut backends = five().await;
    let outlier = "[pool.cache.outlier]\nbase_ejection = \"200ms\"\nmax_ejection = \"200ms\"\n";
    let config = hash_pool(&backends, "header:x-user-id") + outlier + ADMIN;
    let proxy = TestProxy::start(&config).await;
    let http = Http::to(proxy.addr);
    let request = |i: usize| {
        get("/")
            .header("x-user-id", format!("user-{i}"))
            .body(empty())
            .unwrap()
    };
    let mut homes = Vec::new();
    for i in 0..100 {
        homes.push(served(&http, request(i)).await);
    }
    // The admin API shows where key 0 lives; its home must be what the proxy used.
    let route = admin(
        proxy.admin.unwrap(),
        "GET",
        "/pools/cache/route?key=user-0&n=3",
        None,
        None,
    )
    .await;
    assert_eq!(route.status, 200, "{:?}", route.json);
    let replicas: Vec<String> = route.json["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["address"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(replicas.len(), 3);
    let victim_index = backends.iter().position(|b| b.name() == homes[0]).unwrap();
    assert_eq!(
        replicas[0],
        backends[victim_index].addr.to_string(),
        "home first"
    );

    let victim = backends.remove(victim_index);
    let (victim_name, victim_addr) = (victim.name().to_owned(), victim.addr);
    victim.stop();
    let replica_name = backends
        .iter()
        .find(|b| b.addr.to_string() == replicas[1])
        .unwrap()
        .name()
        .to_owned();
    for round in 0..2 {
        for (i, home) in homes.iter().enumerate() {
            let now = served(&http, request(i)).await;
            if *home == victim_name {
                if i == 0 {
                    assert_eq!(
                        now, replica_name,
                        "key 0 goes to its first replica (round {round})"
                    );
                }
            } else {
                assert_eq!(now, *home, "key {i} of a live backend moved");
            }
        }
    }

    // The home comes back on its address: once its ejection ends, its keys return to it.
    let revived = Backend::serve(
        "revived",
        tokio::net::TcpListener::bind(victim_addr).await.unwrap(),
    );
    let started = std::time::Instant::now();
    while served(&http, request(0)).await != revived.name() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "key 0 never returned home"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for (i, home) in homes.iter().enumerate() {
        if *home == victim_name {
            assert_eq!(
                served(&http, request(i)).await,
                "revived",
                "key {i} returns home"
            );
        }
    }
}

#[tokio::test]
async fn sticky_cookie_is_set_honoured_repinned_and_forgeries_ignored() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let config = pool("app", "round_robin", &[&a, &b])
        + "[pool.app.sticky]\ncookie = \"fulcrum_affinity\"\nmax_age = \"1h\"\n"
        + "same_site = \"Strict\"\n"
        + ADMIN;
    let proxy = TestProxy::start(&config).await;
    let http = Http::to(proxy.addr);

    let first = http.get("/").await;
    let set = first.headers["set-cookie"].to_str().unwrap().to_owned();
    assert!(set.starts_with("fulcrum_affinity="), "{set}");
    assert!(
        set.contains("; Max-Age=3600") && set.contains("; HttpOnly"),
        "{set}"
    );
    assert!(set.ends_with("; SameSite=Strict"), "{set}");
    assert!(
        !set.contains(&a.addr.port().to_string()),
        "the cookie reveals no address: {set}"
    );
    let cookie = set.split(';').next().unwrap().to_owned();
    let home = first.backend().to_owned();

    for _ in 0..6 {
        let reply = http
            .send(get("/").header("cookie", &cookie).body(empty()).unwrap())
            .await;
        assert_eq!(reply.backend(), home, "the cookie pins the client");
        assert!(
            !reply.headers.contains_key("set-cookie"),
            "no new cookie while pinned"
        );
    }

    let forged = http
        .send(
            get("/")
                .header("cookie", "fulcrum_affinity=0123456789abcdef")
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(forged.status, 200);
    assert!(
        forged.headers.contains_key("set-cookie"),
        "a forged value is treated as absent"
    );

    // The pinned backend goes away: balanced normally, and the cookie moves to the new backend.
    let (home_backend, other) = if home == "a" { (&a, "b") } else { (&b, "a") };
    let path = format!("/pools/app/backends/{}/drain", home_backend.addr);
    assert_eq!(
        admin(proxy.admin.unwrap(), "POST", &path, None, None)
            .await
            .status,
        200
    );
    let moved = http
        .send(get("/").header("cookie", &cookie).body(empty()).unwrap())
        .await;
    assert_eq!(moved.backend(), other);
    let repinned = moved.headers["set-cookie"].to_str().unwrap();
    assert_ne!(
        repinned.split(';').next().unwrap(),
        cookie,
        "the cookie is reset to the new backend"
    );
    let new_cookie = repinned.split(';').next().unwrap().to_owned();
    let after = http
        .send(
            get("/")
                .header("cookie", &new_cookie)
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(after.backend(), other);
}

#[tokio::test]
async fn affinity_survives_a_reload_that_keeps_the_backend() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let c = Backend::start("c").await;
    let sticky = "[pool.app.sticky]\n";
    let config = pool("app", "round_robin", &[&a, &b]) + sticky + ADMIN;
    let proxy = TestProxy::start(&config).await;
    let http = Http::to(proxy.addr);
    let first = http.get("/").await;
    let cookie = first.cookie();
    let home = first.backend().to_owned();
    proxy.rewrite(&(pool("app", "least_connections", &[&a, &b, &c]) + sticky + ADMIN));
    proxy.control.reload().await.unwrap();
    for _ in 0..4 {
        let reply = http
            .send(get("/").header("cookie", &cookie).body(empty()).unwrap())
            .await;
        assert_eq!(reply.backend(), home);
    }
}

#[tokio::test]
async fn route_lookup_agrees_with_the_proxy_for_escaped_query_keys() {
    let backends = five().await;
    let proxy = TestProxy::start(&(hash_pool(&backends, "query:user") + ADMIN)).await;
    let http = Http::to(proxy.addr);
    for i in 0..20 {
        let served_by = served(
            &http,
            get(&format!("/?user=u{i}%40example.com"))
                .body(empty())
                .unwrap(),
        )
        .await;
        let route = admin(
            proxy.admin.unwrap(),
            "GET",
            &format!("/pools/cache/route?key=u{i}%40example.com"),
            None,
            None,
        )
        .await;
        let address = route.json["backend"].as_str().unwrap().to_owned();
        let expected = backends
            .iter()
            .find(|b| b.name() == served_by)
            .unwrap()
            .addr
            .to_string();
        assert_eq!(address, expected, "key u{i}@example.com");
    }
    // An empty key lives nowhere: requests carrying one are spread.
    let route = admin(
        proxy.admin.unwrap(),
        "GET",
        "/pools/cache/route?key=",
        None,
        None,
    )
    .await;
    assert_eq!(route.status, 400, "{:?}", route.json);
}

#[tokio::test]
async fn a_sticky_client_pinned_to_a_backup_fails_back_to_the_primary() {
    let a = Backend::start("a").await;
    let spare = Backend::start("spare").await;
    let config =
        pool_with_backups("app", "round_robin", &[&a], &[&spare]) + "[pool.app.sticky]\n" + ADMIN;
    let proxy = TestProxy::start(&config).await;
    let api = proxy.admin.unwrap();
    let http = Http::to(proxy.addr);
    let drain = format!("/pools/app/backends/{}/drain", a.addr);
    assert_eq!(admin(api, "POST", &drain, None, None).await.status, 200);
    let on_backup = http.get("/").await;
    assert_eq!(on_backup.backend(), "spare");
    let cookie = on_backup.cookie();
    let enable = format!("/pools/app/backends/{}/enable", a.addr);
    assert_eq!(admin(api, "POST", &enable, None, None).await.status, 200);
    let back = http
        .send(get("/").header("cookie", &cookie).body(empty()).unwrap())
        .await;
    assert_eq!(back.backend(), "a", "failback beats affinity to a backup");
    assert!(
        back.headers.contains_key("set-cookie"),
        "the cookie is re-pinned to the primary"
    );
}
