//! The command line as an operator uses it: `--check`, startup errors, signals.

mod support;

use std::process::{Command, Output};

use support::TempDir;

fn fulcrum(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .expect("run the fulcrum binary")
}

fn write_config(dir: &TempDir, text: &str) -> String {
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn check_accepts_the_shipped_config() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/proxy.toml");
    let output = fulcrum(&["--config", shipped, "--check"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn check_names_file_line_and_value() {
    let dir = TempDir::new();
    let path = write_config(
        &dir,
        "[pool.web]\n\nstrategy = \"fastest\"\nbackends = [{ address = \"127.0.0.1:9001\" }]\n",
    );
    let output = fulcrum(&["--config", &path, "--check"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "{path}:3: unknown strategy \"fastest\", expected one of round_robin, weighted, least_connections, random"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn missing_file_is_a_clear_error() {
    let output = fulcrum(&["--config", "/nonexistent/proxy.toml", "--check"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("/nonexistent/proxy.toml: cannot read"),
        "{stderr}"
    );
}

#[test]
fn startup_with_a_bad_config_fails_with_the_same_message() {
    let dir = TempDir::new();
    let path = write_config(
        &dir,
        "[pool.web]\nbackends = [{ address = \"127.0.0.1:9001\", weight = 0 }]\n",
    );
    let output = fulcrum(&["--config", &path]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("{path}:2:")), "{stderr}");
    assert!(stderr.contains("weight 0 is invalid"), "{stderr}");
}

#[test]
fn unbindable_listen_address_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = TempDir::new();
    let path = write_config(
        &dir,
        &format!(
            "[server]\nlisten = \"{}\"\n[pool.web]\nbackends = [{{ address = \"127.0.0.1:9001\" }}]\n",
            taken.local_addr().unwrap()
        ),
    );
    let output = fulcrum(&["--config", &path]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot listen on"), "{stderr}");
    assert!(
        stderr.contains(&format!("{path}: cannot start")),
        "the file is named: {stderr}"
    );
    assert_eq!(
        stderr.matches("cannot listen on").count(),
        1,
        "said once: {stderr}"
    );
}

/// What `--check` accepts must start, as with `nginx -t`: what would fail at startup, or serve
/// nonsense, is caught by the check, with file, line and key.
#[test]
fn check_catches_what_would_fail_at_startup() {
    let dir = TempDir::new();
    support::tls::write_cert(dir.path(), "site", &["a.test"]);
    let pool = "[pool.web]\nbackends = [{ address = \"127.0.0.1:9001\" }]\n";
    let tls = |listen: &str| {
        format!(
            "[tls]\nlisten = \"{listen}\"\n[[tls.certificates]]\nhosts = [\"a.test\"]\ncert = \"site.pem\"\nkey = \"site.key\"\n"
        )
    };
    let cases = [
        (
            format!(
                "[server]\nlisten = \"127.0.0.1:18999\"\n{pool}{}",
                tls("127.0.0.1:18999")
            ),
            ":6: tls.listen: 127.0.0.1:18999 collides with server.listen",
        ),
        (
            format!(
                "[server]\nlisten = \"127.0.0.1:18999\"\n{pool}[admin]\nlisten = \"127.0.0.1:18999\"\n"
            ),
            ":6: admin.listen: 127.0.0.1:18999 collides with a proxy listener",
        ),
        (
            format!("[server]\nredirect_https = true\n{pool}"),
            ":2: server.redirect_https = true needs a [tls] listener",
        ),
        (
            format!("{pool}[log]\naccess_path = \"/nonexistent-dir/access.log\"\n"),
            ":4: log.access_path: directory /nonexistent-dir does not exist",
        ),
        (
            format!("{pool}[timeouts]\nclient_idle = \"18446744073709551615ms\"\n"),
            ":4: timeouts.client_idle: \"18446744073709551615ms\" is too large",
        ),
    ];
    for (config, expect) in cases {
        let path = write_config(&dir, &config);
        let output = fulcrum(&["--config", &path, "--check"]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{config}\n{stderr}");
        assert!(stderr.contains(&format!("{path}{expect}")), "{stderr}");
    }
    let path = write_config(
        &dir,
        &format!(
            "[server]\nredirect_https = true\n{pool}{}",
            tls("127.0.0.1:18998")
        ),
    );
    let output = fulcrum(&["--config", &path, "--check"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A route's faults, as `--check` reports them: file, line and key.
#[test]
fn check_names_route_faults() {
    let dir = TempDir::new();
    let pools = "[pool.web]\nbackends = [{ address = \"127.0.0.1:9001\" }]\n[pool.canary]\n";
    let cases = [
        (
            "[[route]]\npath_regex = \"^/users/(\"\npool = \"web\"\n",
            ":5: route path_regex \"^/users/(\" does not compile",
        ),
        (
            "[[route]]\nsplit = [{ pool = \"web\", weight = 0 }, { pool = \"canary\", weight = 0 }]\n",
            ":5: route split weights sum to 0",
        ),
        (
            "[[route]]\npool = \"web\"\nredirect = { to = \"/new\" }\n",
            ":6: a route takes exactly one of pool, split, redirect and respond; this one has pool \
             and redirect",
        ),
        (
            "[[route]]\npool = \"web\"\nrequest_headers = { set = { \"x-a\" = \"{hostname}\" } }\n",
            ":6: route request_headers.x-a: \"{hostname}\": unknown template variable {hostname}",
        ),
        (
            "[[route]]\npool = \"web\"\nrate_limit = { key = \"ip\", rate = \"10/s\" }\n",
            ":6: route rate_limit key = \"ip\"",
        ),
    ];
    for (route, expect) in cases {
        let path = write_config(&dir, &format!("{pools}{route}"));
        let output = fulcrum(&["--config", &path, "--check"]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{route}\n{stderr}");
        assert!(stderr.contains(&format!("{path}{expect}")), "{stderr}");
    }
}
