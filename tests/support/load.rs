//! A bounded concurrent load loop: `clients` tasks, each sending `per_client` sequential GETs.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;

use super::client::Http;

/// A running load: how many requests finished, and every one that was not a 200.
pub struct Load {
    done: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    clients: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts `clients` keep-alive clients against `addr`, each sending `per_client` GETs of `/`.
    pub fn start(addr: SocketAddr, clients: usize, per_client: usize) -> Load {
        let done = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let clients = (0..clients)
            .map(|_| {
                let (done, failures) = (Arc::clone(&done), Arc::clone(&failures));
                tokio::spawn(async move {
                    let http = Http::to(addr);
                    for _ in 0..per_client {
                        let failure = match http.try_get("/").await {
                            Ok(reply) if reply.status == 200 => None,
                            Ok(reply) => Some(format!("{} {}", reply.status, reply.body)),
                            Err(error) => Some(error),
                        };
                        if let Some(failure) = failure {
                            failures.lock().unwrap().push(failure);
                        }
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        Load {
            done,
            failures,
            clients,
        }
    }

    /// Requests finished so far.
    pub fn done(&self) -> usize {
        self.done.load(Ordering::SeqCst)
    }

    /// Waits for every client; returns how many requests finished and the failures.
    pub async fn finish(self) -> (usize, Vec<String>) {
        for client in self.clients {
            client.await.expect("a load client does not panic");
        }
        let failures = self.failures.lock().unwrap().clone();
        (self.done.load(Ordering::SeqCst), failures)
    }
}
