//! The accept loop. Our own instead of `axum::serve` for two reasons: a
//! fault can reset a connection (SO_LINGER 0, then close: the peer sees RST),
//! and stopping the server drops every connection at once, stalled ones too.

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tower::ServiceExt;

/// Lets a request ask for its connection to be reset.
#[derive(Clone)]
pub struct ConnControl(Arc<Notify>);

impl ConnControl {
    pub fn reset(&self) {
        self.0.notify_one();
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
