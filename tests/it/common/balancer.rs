//! A TCP load balancer in front of several orgsplit replicas, behaving like
//! a Kubernetes Service: it polls each backend's `/readyz` (the readiness
//! probe) and sends each new connection to the next ready backend, round
//! robin. A connection stays with its backend until one side closes it, as
//! kube-proxy's connections do; a backend that refuses the connection is
//! skipped for the next one.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

pub struct Balancer {
    pub addr: SocketAddr,
    backends: Arc<Vec<Backend>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

struct Backend {
    addr: SocketAddr,
    ready: AtomicBool,
    /// Connections sent to it, for the test to see both were used.
    connections: AtomicUsize,
}

impl Balancer {
    pub async fn start(backends: &[SocketAddr]) -> Self {
        let backends: Arc<Vec<Backend>> = Arc::new(
            backends
                .iter()
                .map(|&addr| Backend {
                    addr,
                    ready: AtomicBool::new(false),
                    connections: AtomicUsize::new(0),
                })
                .collect(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let probe = {
            let backends = backends.clone();
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(1))
                    .build()
                    .unwrap();
                loop {
                    for b in backends.iter() {
                        let ok = client
                            .get(format!("http://{}/readyz", b.addr))
                            .send()
                            .await
                            .is_ok_and(|r| r.status().is_success());
                        b.ready.store(ok, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        };
        let serve = {
            let backends = backends.clone();
            tokio::spawn(async move {
                let next = AtomicUsize::new(0);
                loop {
                    let Ok((mut inbound, _)) = listener.accept().await else {
                        continue;
                    };
                    let start = next.fetch_add(1, Ordering::Relaxed);
                    let backends = backends.clone();
                    tokio::spawn(async move {
                        // Only ready backends, from the round-robin
                        // position; with none, the connection is closed, as
                        // by a Service with no ready endpoint.
                        let n = backends.len();
                        let order = (0..n)
                            .map(|i| &backends[(start + i) % n])
                            .filter(|b| b.ready.load(Ordering::Relaxed));
                        for b in order {
                            if let Ok(mut outbound) = TcpStream::connect(b.addr).await {
                                b.connections.fetch_add(1, Ordering::Relaxed);
                                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound)
                                    .await;
                                return;
                            }
                        }
                        // No backend: the client sees the connection closed.
                    });
                }
            })
        };
        Self {
            addr,
            backends,
            tasks: vec![probe, serve],
        }
    }

    /// Whether the backend at `addr` is ready as the balancer last saw it.
    pub fn is_ready(&self, addr: SocketAddr) -> bool {
        self.backends
            .iter()
            .any(|b| b.addr == addr && b.ready.load(Ordering::Relaxed))
    }

    /// Connections each backend was given, in the order given to `start`.
    pub fn connections(&self) -> Vec<usize> {
        self.backends
            .iter()
            .map(|b| b.connections.load(Ordering::Relaxed))
            .collect()
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
