//! The real proxy, started in-process on 127.0.0.1:0 from a TOML text, or as the real binary.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fulcrum::{App, Config, Control, Options};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A proxy served by this test's runtime from a config file in a temporary directory; stops
/// (gracefully) when dropped.
pub struct TestProxy {
    pub addr: SocketAddr,
    /// The first TLS listener, when `[tls]` is configured.
    pub tls_addr: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub control: Control,
    pub dir: TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestProxy {
    /// Starts the proxy on `config`, with `[server] listen = "127.0.0.1:0"` put in front.
    pub async fn start(config: &str) -> TestProxy {
        TestProxy::start_with(config, Options::default()).await
    }

    /// Starts the proxy on `config` (prefixed as `start` does) with these options.
    pub async fn start_with(config: &str, options: Options) -> TestProxy {
        let dir = TempDir::new();
        let path = dir.path().join("proxy.toml");
        std::fs::write(&path, with_listen(config)).unwrap();
        TestProxy::start_file(dir, &path, options).await
    }

    /// Starts the proxy on the config file at `path` (kept as written) inside `dir`.
    pub async fn start_file(dir: TempDir, path: &Path, options: Options) -> TestProxy {
        let config =
            Config::load(path).unwrap_or_else(|err| panic!("test config must be valid: {err}"));
        let app = App::start(config, options).await.expect("start the proxy");
        let addr = app.local_addrs().await[0];
        let tls_addr = app.local_tls_addrs().await.first().copied();
        let admin = app.admin_addr();
        let control = app.control().clone();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run(async {
            rx.await.ok();
        }));
        TestProxy {
            addr,
            tls_addr,
            admin,
            control,
            dir,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// The config file's path.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("proxy.toml")
    }

    /// Replaces the config file atomically (write a temporary file, rename it over), as editors
    /// and deploy tools do; `config` is prefixed as in `start`.
    pub fn rewrite(&self, config: &str) {
        let temporary = self.dir.path().join(".proxy.toml.new");
        std::fs::write(&temporary, with_listen(config)).unwrap();
        std::fs::rename(&temporary, self.config_path()).unwrap();
    }

    /// Stops accepting and waits for the drain to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            tx.send(()).ok();
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task ends cleanly");
        }
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// `config` with a `[server]` table listening on port 0 in front (or `listen` added to the
/// `[server]` table it has).
/// `config` listening on port 0, and with the access log off unless it has a `[log]` table (the
/// default, JSON on standard output, would fill the test output).
pub fn with_listen(config: &str) -> String {
    let config = if config.contains("[log]") {
        config.to_owned()
    } else {
        format!("{config}\n[log]\naccess = \"off\"\n")
    };
    if config.contains("[server]") {
        config.replacen("[server]", "[server]\nlisten = \"127.0.0.1:0\"", 1)
    } else {
        format!("[server]\nlisten = \"127.0.0.1:0\"\n{config}")
    }
}

/// The `fulcrum` binary, run as an operator would; killed when dropped.
pub struct BinaryProxy {
    pub addr: SocketAddr,
    pub child: Child,
    pub dir: TempDir,
    /// Every line the proxy has logged so far.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// Every line it has written to standard output (the access log, by default).
    pub stdout: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl BinaryProxy {
    /// Writes `config` (with `listen` on port 0) to a file and runs `fulcrum --config FILE`,
    /// returning once it logs the address it listens on.
    pub fn start(config: &str) -> BinaryProxy {
        let dir = TempDir::new();
        let path = dir.path().join("proxy.toml");
        std::fs::write(&path, with_listen(config)).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_fulcrum"))
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run the fulcrum binary");
        let stdout = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let written = std::sync::Arc::clone(&stdout);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                written.lock().unwrap().push(line);
            }
        });
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains(" listening ")
                    && let Some(addr) = line.split("address=").nth(1)
                {
                    tx.send(addr.trim().parse::<SocketAddr>().ok()).ok();
                }
                lines.lock().unwrap().push(line);
            }
        });
        let Some(addr) = rx.recv_timeout(Duration::from_secs(20)).ok().flatten() else {
            // Not left running after the test fails.
            child.kill().ok();
            child.wait().ok();
            panic!("fulcrum logs the address it listens on");
        };
        BinaryProxy {
            addr,
            child,
            dir,
            log,
            stdout,
        }
    }

    /// Rewrites the config file in place, replacing `from` with `to`.
    pub fn edit_config(&self, from: &str, to: &str) {
        let path = self.dir.path().join("proxy.toml");
        let text = std::fs::read_to_string(&path).unwrap().replace(from, to);
        std::fs::write(&path, text).unwrap();
    }

    /// Sends the proxy a signal by name (`HUP`, `TERM`, ...).
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args([format!("-{name}").as_str(), &pid])
            .status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -{name} {pid}");
    }

    /// Whether any logged line contains `text`.
    pub fn logged(&self, text: &str) -> bool {
        self.log
            .lock()
            .unwrap()
            .iter()
            .any(|line| line.contains(text))
    }

    /// Resident memory of the proxy process now, in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// Peak resident memory of the proxy process so far, in KiB (`VmHWM`).
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status")
    }
}

impl Drop for BinaryProxy {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// A directory removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "fulcrum-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}
