//! `GET /e2`: the E2 game-state websocket. Enforces the E2 guide's rules
//! (token form and kind, allowlist, account links, rate, idle deadline,
//! message sizes), stores each accepted message in the inbox, then answers
//! with an ack. The protocol is written down in `docs/e2-protocol.md`.
//!
//! [`protocol`] is the wire format, [`tokens`] checks tokens, [`auth`]
//! decides who a connection publishes for, [`session`] runs one connection;
//! this module holds what connections share.

pub mod auth;
pub mod protocol;
pub mod session;
pub mod tokens;

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use futures_util::FutureExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use protocol::{close, PROTOCOL_VERSION};
use session::{reconnect, Connection};
use tokens::TokenVerifier;

use crate::config::E2Settings;
use crate::health::Liveness;
use crate::store::Store;
use crate::telemetry::live;

/// What the E2 endpoint shares between connections.
pub struct E2Hub {
    pub settings: E2Settings,
    pub verifier: TokenVerifier,
    pub store: Arc<Store>,
    /// Whether the engine still judges what is stored.
    pub liveness: Arc<Liveness>,
    /// Cancelled at shutdown: every connection is told to reconnect.
    pub stop: CancellationToken,
    /// Connection tasks, waited for at shutdown so no accepted message is cut off.
    pub tasks: TaskTracker,
    connections: AtomicUsize,
}

impl E2Hub {
    /// The hub for these settings.
    pub fn new(settings: E2Settings, store: Arc<Store>, liveness: Arc<Liveness>, stop: CancellationToken) -> E2Hub {
        let verifier = TokenVerifier::from_settings(&settings);
        E2Hub { settings, verifier, store, liveness, stop, tasks: TaskTracker::new(), connections: AtomicUsize::new(0) }
    }
}

/// `GET /e2`: upgrades to a websocket, or tells the client to come back later.
pub async fn upgrade(State(hub): State<Arc<E2Hub>>, ws: WebSocketUpgrade) -> Response {
    // Frames far beyond the largest message are cut off by the websocket
    // layer itself; moderately oversized ones get a `message_too_large` answer.
    let max_frame = hub.settings.max_full_bytes.max(hub.settings.max_delta_bytes).saturating_mul(4).max(64 << 10);
    ws.max_message_size(max_frame).max_frame_size(max_frame).on_upgrade(move |socket| async move {
        let tracker = hub.tasks.clone();
        tracker.track_future(connection(hub, socket)).await
    })
}

async fn connection(hub: Arc<E2Hub>, mut socket: WebSocket) {
    let slot = Slot::take(&hub);
    if slot.held > hub.settings.max_connections || hub.stop.is_cancelled() || hub.liveness.stopped().is_some() {
        let code = if hub.stop.is_cancelled() { close::RESTART } else { close::TRY_AGAIN_LATER };
        reconnect(&hub, &mut socket, code).await;
        return;
    }
    // A bug reached by one client's input must not end the others' connections
    // or leak this one's slot: the panic stays in this task, the slot is freed by `Drop`.
    let served = AssertUnwindSafe(Connection::new(&hub).run(&mut socket)).catch_unwind().await;
    if served.is_err() {
        metrics::counter!("drops_e2_connection_panics_total").increment(1);
        tracing::error!("e2 connection task panicked; the connection is closed, the others go on");
    }
    // The slot is given back first: a closed connection no longer publishes,
    // and a client that never answers the close must not keep a game server
    // out for the linger's second. The linger itself is bounded in time.
    drop(slot);
    linger(&mut socket).await;
}

/// How long a closed connection waits for the client's close frame.
const LINGER: std::time::Duration = std::time::Duration::from_secs(1);

/// Finishes the close handshake: reads (and drops) what the client still
/// sends until its close frame, for at most [`LINGER`]. Closing the socket
/// with frames unread makes the kernel send a reset, and the client would
/// lose the error and close frame that say why (`rate_limited`).
async fn linger(socket: &mut WebSocket) {
    let _ = tokio::time::timeout(LINGER, async {
        while let Some(Ok(frame)) = socket.recv().await {
            if matches!(frame, axum::extract::ws::Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// One of `e2.max_connections`, given back on every path out of a
/// connection, a panic included.
struct Slot<'a> {
    hub: &'a E2Hub,
    held: usize,
}

impl<'a> Slot<'a> {
    fn take(hub: &'a E2Hub) -> Slot<'a> {
        let held = hub.connections.fetch_add(1, Ordering::SeqCst) + 1;
        live::e2_connections(held);
        Slot { hub, held }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let held = self.hub.connections.fetch_sub(1, Ordering::SeqCst) - 1;
        live::e2_connections(held);
    }
}
