//! The real proxy, started in-process on 127.0.0.1:0 from a TOML text, or as the real binary.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fulcrum::config::Config;
use fulcrum::server::Server;
use fulcrum::state::State;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A proxy served by this test's runtime; stops (gracefully) when dropped.
pub struct TestProxy {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestProxy {
    /// Starts the proxy on `config`, whose `[server] listen` is replaced by 127.0.0.1:0.
    pub async fn start(config: &str) -> TestProxy {
        let text = format!("[server]\nlisten = \"127.0.0.1:0\"\n{config}");
        let config = Config::parse(&text, Path::new("test.toml"))
            .unwrap_or_else(|err| panic!("test config must be valid: {err}\n{text}"));
        let state = State::build(&config, 1).into_shared();
        let server = Server::bind(&config.server.listen, state)
            .await
            .expect("bind proxy");
        let addr = server.local_addrs()[0];
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            rx.await.ok();
        }));
        TestProxy {
            addr,
            shutdown: Some(tx),
            task: Some(task),
        }
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

/// The `fulcrum` binary, run as an operator would; killed when dropped.
pub struct BinaryProxy {
    pub addr: SocketAddr,
    pub child: Child,
    _dir: TempDir,
}

impl BinaryProxy {
    /// Writes `config` (with `listen` on port 0) to a file and runs `fulcrum --config FILE`,
    /// returning once it logs the address it listens on.
    pub fn start(config: &str) -> BinaryProxy {
        let dir = TempDir::new();
        let path = dir.path().join("proxy.toml");
        std::fs::write(
            &path,
            format!("[server]\nlisten = \"127.0.0.1:0\"\n{config}"),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_fulcrum"))
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("run the fulcrum binary");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("address=").nth(1) {
                    tx.send(addr.trim().parse::<SocketAddr>().ok()).ok();
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .ok()
            .flatten()
            .expect("fulcrum logs the address it listens on");
        BinaryProxy {
            addr,
            child,
            _dir: dir,
        }
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
