//! A real DNS server for the tests: dnsmasq (Debian's `dnsmasq-base`, installed by `.ci/run`) on
//! a free loopback port, authoritative for `*.test`, answering from files the test writes.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::proxy::TempDir;

/// A running dnsmasq; stopped when dropped.
pub struct Dnsmasq {
    pub addr: SocketAddr,
    dir: TempDir,
    child: Option<Child>,
}

impl Dnsmasq {
    /// Starts dnsmasq answering A records from `hosts` (`/etc/hosts` lines) and the records of
    /// `conf` (dnsmasq config lines such as `srv-host=...` or `host-record=...`), with a TTL of
    /// one second. Any other name under `.test` is NXDOMAIN.
    pub fn start(hosts: &str, conf: &str) -> Dnsmasq {
        let mut dns = Dnsmasq {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir: TempDir::new(),
            child: None,
        };
        dns.write("hosts", hosts);
        // Another test may take the port between its choice and dnsmasq's bind: choose again.
        for _ in 0..5 {
            dns.addr.set_port(free_port());
            if dns.try_run(conf) {
                return dns;
            }
        }
        panic!("dnsmasq did not start (is dnsmasq-base installed?)");
    }

    /// Replaces the A records; dnsmasq rereads them on SIGHUP.
    pub fn set_hosts(&self, hosts: &str) {
        self.write("hosts", hosts);
        self.signal("HUP");
    }

    /// Restarts dnsmasq on the same port with other config records (it reads them only at start).
    pub fn restart(&mut self, conf: &str) {
        self.stop();
        for _ in 0..5 {
            if self.try_run(conf) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("dnsmasq did not start again on {}", self.addr);
    }

    /// Stops answering.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }

    /// Starts dnsmasq; false if it exited (its port was taken).
    fn try_run(&mut self, conf: &str) -> bool {
        self.write("dnsmasq.conf", conf);
        let path = |name: &str| self.dir.path().join(name).display().to_string();
        let child = Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                &format!("--conf-file={}", path("dnsmasq.conf")),
                &format!("--port={}", self.addr.port()),
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                &format!("--addn-hosts={}", path("hosts")),
                "--local=/test/",
                "--local-ttl=1",
                "--user=root",
                "--pid-file=",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq runs (apt-get install -y dnsmasq-base)");
        self.child = Some(child);
        if self.wait_until_answering() {
            return true;
        }
        self.stop();
        false
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dir.path().join(name), text).unwrap();
    }

    fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("dnsmasq is running").id();
        let status = Command::new("kill")
            .args([&format!("-{name}"), &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Asks for `ready.test` until an answer (NXDOMAIN) comes back; false if dnsmasq exits.
    fn wait_until_answering(&mut self) -> bool {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let query = [
            0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 5, b'r', b'e', b'a', b'd', b'y', 4, b't',
            b'e', b's', b't', 0, 0, 1, 0, 1,
        ];
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut answer = [0; 512];
        while Instant::now() < deadline {
            socket.send_to(&query, self.addr).ok();
            if socket.recv_from(&mut answer).is_ok() {
                return true;
            }
            let exited = self
                .child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited {
                return false;
            }
        }
        panic!("dnsmasq did not answer on {} within 10 s", self.addr);
    }
}

/// A port free for both UDP and TCP on 127.0.0.1 (dnsmasq binds both).
fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("a free UDP port");
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}
