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
}
