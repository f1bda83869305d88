//! The accept loop. Our own instead of `axum::serve` for three reasons: a
//! fault can reset a connection (SO_LINGER 0, then close: the peer sees RST),
//! stopping the server drops every connection at once, stalled ones too, and a
//! restart (a fault too) does that, refuses connections for a while, then
//! listens again on the same address with everything stored kept, as a
//! restarted process would.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tower::ServiceExt;

/// Lets a request ask for its connection to be reset.
#[derive(Clone)]
pub struct ConnControl(Arc<Notify>);

impl ConnControl {
    pub fn reset(&self) {
        self.0.notify_one();
    }
}

/// A server that can be stopped, and restarted on the same address.
pub struct Server {
    addr: SocketAddr,
    router: Router,
    /// The running accept loop and the flag that stops it and its connections.
    running: Mutex<Option<(watch::Sender<bool>, JoinHandle<()>)>>,
    stopped: AtomicBool,
}

impl Server {
    pub fn start(listener: TcpListener, router: Router) -> std::io::Result<Arc<Self>> {
        let addr = listener.local_addr()?;
        let server = Arc::new(Self { addr, router, running: Mutex::new(None), stopped: AtomicBool::new(false) });
        server.run(listener);
        Ok(server)
    }

    fn run(&self, listener: TcpListener) {
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(serve(listener, self.router.clone(), rx));
        *self.running.lock() = Some((tx, task));
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving for good: every connection, stalled ones included, is dropped.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        if let Some((tx, _)) = self.running.lock().take() {
            let _ = tx.send(true);
        }
    }

    /// Drops every connection and the listening socket (requests in flight get no answer,
    /// new connections are refused), waits `down`, then listens again on the same address.
    pub async fn restart(&self, down: Duration) {
        let Some((tx, task)) = self.running.lock().take() else { return };
        let _ = tx.send(true);
        let _ = task.await;
        tracing::info!(addr = %self.addr, ?down, "restarting: down");
        tokio::time::sleep(down).await;
        let mut tries = 0;
        while !self.stopped.load(Ordering::SeqCst) {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => {
                    self.run(listener);
                    tracing::info!(addr = %self.addr, "restarted: serving again");
                    return;
                }
                Err(e) if tries < 100 => {
                    tries += 1;
                    tracing::debug!("cannot listen again yet: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => {
                    tracing::error!(addr = %self.addr, "cannot listen again after a restart: {e}");
                    return;
                }
            }
        }
    }
}

/// Serves `router` on `listener` until `shutdown` turns true.
pub async fn serve(listener: TcpListener, router: Router, mut shutdown: watch::Receiver<bool>) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                },
            },
            _ = stopped(&mut shutdown) => return,
        };
        let _ = stream.set_nodelay(true);
        let fd = stream.as_raw_fd();
        let reset = Arc::new(Notify::new());
        let ctl = ConnControl(reset.clone());
        let router = router.clone();
        let svc = tower::service_fn(move |mut req: Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ctl.clone());
            router.clone().oneshot(req.map(axum::body::Body::new))
        });
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc));
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {},
                _ = reset.notified() => abort_with_rst(fd),
                _ = stopped(&mut shutdown) => {},
            }
        });
    }
}

/// Resolves once the shutdown flag is set (or its sender is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    loop {
        let stop = *rx.borrow_and_update();
        if stop || rx.changed().await.is_err() {
            return;
        }
    }
}

/// Sets SO_LINGER to zero so that closing the socket sends RST instead of FIN.
/// Called while the connection (and so the fd) is still alive.
fn abort_with_rst(fd: RawFd) {
    // SAFETY: the connection future owning `fd` is pinned in the caller and not yet dropped.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let sock = socket2::SockRef::from(&fd);
    let _ = sock.set_linger(Some(Duration::ZERO));
}
