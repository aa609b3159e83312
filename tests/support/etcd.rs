//! A real etcd for the tests (Debian's `etcd-server`, installed by `.ci/run`), on free loopback
//! ports with its data in a temporary directory; `etcdctl` (Debian's `etcd-client`) to write to
//! it as a service registering itself would; and a TCP relay in front of it that a test can cut,
//! to take one Fulcrum instance away from etcd while the others stay.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::proxy::TempDir;

/// A running etcd; stopped when dropped.
pub struct EtcdServer {
    pub addr: SocketAddr,
    peer: u16,
    dir: TempDir,
    child: Option<Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl EtcdServer {
    pub fn start() -> EtcdServer {
        // Another test may take a port between its choice and etcd's bind: choose again.
        for _ in 0..5 {
            let mut etcd = EtcdServer {
                addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
                peer: free_port(),
                dir: TempDir::new(),
                child: None,
            };
            if etcd.try_run() {
                return etcd;
            }
        }
        panic!("etcd did not start (is etcd-server installed?)");
    }

    /// Stops etcd (its data stays, for `resume`).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }

    /// Starts etcd again on the same ports and data.
    pub fn resume(&mut self) {
        assert!(self.try_run(), "etcd did not start again on {}", self.addr);
    }

    /// Starts etcd; false if it exited (a port was taken).
    fn try_run(&mut self) -> bool {
        let (client, peer) = (self.addr.port(), self.peer);
        let child = Command::new("etcd")
            .args([
                "--name=test",
                &format!("--data-dir={}", self.dir.path().join("data").display()),
                &format!("--listen-client-urls=http://127.0.0.1:{client}"),
                &format!("--advertise-client-urls=http://127.0.0.1:{client}"),
                &format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
                &format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"),
                &format!("--initial-cluster=test=http://127.0.0.1:{peer}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd runs (apt-get install -y etcd-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.ctl(&["get", "/ready"]).status.success() {
            let exited = self
                .child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited {
                self.child = None;
                return false;
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not start on {}",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    }

    /// Runs `etcdctl` against this etcd; its output.
    pub fn ctl(&self, args: &[&str]) -> std::process::Output {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints=http://{}", self.addr))
            .arg("--dial-timeout=1s")
            .args(args)
            .output()
            .expect("etcdctl runs (apt-get install -y etcd-client)")
    }

    /// `etcdctl put key value`.
    pub fn put(&self, key: &str, value: &str) {
        let output = self.ctl(&["put", key, value]);
        assert!(output.status.success(), "{output:?}");
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP relay to `target` on a loopback port, which can be cut and restored.
pub struct Relay {
    pub addr: SocketAddr,
    target: SocketAddr,
    tasks: Option<JoinSet<()>>,
}

impl Relay {
    pub async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut relay = Relay {
            addr: listener.local_addr().unwrap(),
            target,
            tasks: None,
        };
        relay.serve(listener);
        relay
    }

    fn serve(&mut self, listener: TcpListener) {
        let target = self.target;
        let mut tasks = JoinSet::new();
        let connections = Arc::new(tokio::sync::Mutex::new(JoinSet::new()));
        let held = Arc::clone(&connections);
        tasks.spawn(async move {
            // Dropping the relay's tasks drops this one, and with it every connection relayed.
            let _held = held;
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                connections.lock().await.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        tokio::io::copy_bidirectional(&mut client, &mut server)
                            .await
                            .ok();
                    }
                });
            }
        });
        self.tasks = Some(tasks);
    }

    /// Closes every relayed connection and refuses new ones.
    pub fn cut(&mut self) {
        self.tasks = None;
    }

    /// Relays again, on the same port.
    pub async fn restore(&mut self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }
}
