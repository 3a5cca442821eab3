//! The accept loop: axum's `serve` sets no timer in hyper, so a client that
//! never finishes its headers holds a connection forever. This loop serves
//! HTTP/1.1 only (Twitch and E2's websocket upgrade need nothing else) with
//! hyper's header-read deadline, which runs whenever a connection waits for
//! a request head: from the moment it is accepted (a socket that sends
//! nothing), and between keep-alive requests. It caps the connections served
//! at once (the rest wait in the kernel's backlog) and bounds graceful shutdown.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use futures_util::FutureExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// The limits of the HTTP listener.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// A request's headers must arrive within this (slow-header clients are cut off).
    pub header_timeout: Duration,
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// After shutdown starts, requests in flight get this long to finish.
    pub shutdown_timeout: Duration,
}

/// Serves `router` on `listener` until `stop`, then drains for at most `shutdown_timeout`.
pub async fn serve(listener: TcpListener, router: Router, limits: ServerLimits, stop: CancellationToken) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let connections = TaskTracker::new();
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = stop.cancelled() => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let service = router.clone().map_request(|request: axum::http::Request<Incoming>| request.map(Body::new));
        let connection =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service)).with_upgrades();
        let stop = stop.clone();
        connections.spawn(async move {
            let mut connection = pin!(connection);
            let mut stopping = pin!(stop.cancelled().fuse());
            loop {
                tokio::select! {
                    served = connection.as_mut() => {
                        if let Err(e) = served {
                            tracing::debug!("connection ended: {e}");
                        }
                        break;
                    }
                    _ = &mut stopping => connection.as_mut().graceful_shutdown(),
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(limits.shutdown_timeout, connections.wait()).await.is_err() {
        tracing::warn!(
            open = connections.len(),
            "requests still in flight after {:?}; shutting down without them",
            limits.shutdown_timeout
        );
    }
}
