//! `GET /e2`: the E2 game-state websocket. Enforces the E2 guide's rules
//! (token form and kind, allowlist, account links, rate, idle deadline,
//! message sizes), stores each accepted message in the inbox, then answers
//! with an ack. The protocol is written down in `docs/e2-protocol.md`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::e2_auth::{TokenError, TokenVerifier};
use super::game_state::{GameStateEvent, Publisher, Update};
use crate::api::AppState;
use crate::config::{E2Settings, TokenKind};
use crate::store::Store;

/// The protocol version `docs/e2-protocol.md` describes.
pub const PROTOCOL_VERSION: u32 = 1;

/// Close codes (also in `docs/e2-protocol.md`).
pub mod close {
    /// The client said `disconnect`.
    pub const NORMAL: u16 = 1000;
    /// The host is shutting down; reconnect after the delay given.
    pub const RESTART: u16 = 1012;
    /// The host is overloaded or its storage is away; reconnect after the delay given.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// Token refused: `token_prefix`, `invalid_token`.
    pub const UNAUTHORIZED: u16 = 4001;
    /// Not allowed to publish: `broadcaster_ids_required`, `broadcaster_ids_forbidden`,
    /// `not_allowlisted`, `broadcaster_not_linked`.
    pub const FORBIDDEN: u16 = 4003;
    /// `idle_timeout`.
    pub const IDLE: u16 = 4008;
    /// `rate_limited`.
    pub const RATE_LIMITED: u16 = 4029;
}

/// What the E2 endpoint shares between connections.
pub struct E2Hub {
    pub settings: E2Settings,
    pub verifier: TokenVerifier,
    pub store: Arc<Store>,
    pub inbox_notify: Arc<Notify>,
    /// Cancelled at shutdown: every connection is told to reconnect.
    pub stop: CancellationToken,
    /// Connection tasks, waited for at shutdown so no accepted message is cut off.
    pub tasks: TaskTracker,
    connections: AtomicUsize,
}

impl E2Hub {
    /// The hub for these settings.
    pub fn new(settings: E2Settings, store: Arc<Store>, inbox_notify: Arc<Notify>, stop: CancellationToken) -> E2Hub {
        let verifier = TokenVerifier::from_settings(&settings);
        E2Hub {
            settings,
            verifier,
            store,
            inbox_notify,
            stop,
            tasks: TaskTracker::new(),
            connections: AtomicUsize::new(0),
        }
    }
}

/// A message from a game server or client.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientMessage {
    #[serde(rename = "type")]
    kind: Kind,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    game_id: Option<String>,
    #[serde(default)]
    broadcaster_ids: Option<Vec<String>>,
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Connect,
    Delta,
    Refresh,
    Flush,
    Disconnect,
}

/// A message to the client.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ServerMessage<'a> {
    Ack {
        #[serde(skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    },
    Error {
        code: &'a str,
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    },
    Reconnect {
        reconnect_after_ms: u64,
    },
}

/// A broken rule: the error code, what to tell the client, and whether the
/// connection ends (with which close code) or only the message is dropped.
#[derive(Debug)]
struct Violation {
    code: &'static str,
    message: String,
    close: Option<u16>,
}

impl Violation {
    fn drop(code: &'static str, message: impl Into<String>) -> Violation {
        Violation { code, message: message.into(), close: None }
    }

    fn close(code: &'static str, message: impl Into<String>, close: u16) -> Violation {
        Violation { code, message: message.into(), close: Some(close) }
    }
}

/// What an accepted message asks of the connection.
enum Next {
    Continue,
    Disconnect,
    /// Storage is away: ask the client to come back and send full state again.
    Reconnect,
}

/// Who an authenticated connection publishes for.
struct Session {
    publishers: Vec<Publisher>,
    client_id: String,
    game_id: String,
    authoritative: bool,
}

/// `GET /e2`: upgrades to a websocket, or tells the client to come back later.
pub async fn upgrade(State(app): State<Arc<AppState>>, ws: WebSocketUpgrade) -> Response {
    let hub = app.e2.clone();
    // Frames far beyond the largest message are cut off by the websocket
    // layer itself; moderately oversized ones get a `message_too_large` answer.
    let max_frame = hub.settings.max_full_bytes.max(hub.settings.max_delta_bytes).saturating_mul(4).max(64 << 10);
    ws.max_message_size(max_frame).max_frame_size(max_frame).on_upgrade(move |socket| async move {
        let tracker = hub.tasks.clone();
        tracker.track_future(connection(hub, socket)).await
    })
}

async fn connection(hub: Arc<E2Hub>, mut socket: WebSocket) {
    let held = hub.connections.fetch_add(1, Ordering::SeqCst) + 1;
    metrics::gauge!("drops_e2_connections").set(held as f64);
    if held > hub.settings.max_connections || hub.stop.is_cancelled() {
        let code = if hub.stop.is_cancelled() { close::RESTART } else { close::TRY_AGAIN_LATER };
        reconnect(&hub, &mut socket, code).await;
    } else {
        Connection::new(&hub).run(&mut socket).await;
    }
    let held = hub.connections.fetch_sub(1, Ordering::SeqCst) - 1;
    metrics::gauge!("drops_e2_connections").set(held as f64);
}

struct Connection<'a> {
    hub: &'a E2Hub,
    id: String,
    session: Option<Session>,
    messages: u64,
    window_start: Instant,
    in_window: u32,
}

impl<'a> Connection<'a> {
    fn new(hub: &'a E2Hub) -> Connection<'a> {
        Connection {
            hub,
            id: uuid::Uuid::new_v4().to_string(),
            session: None,
            messages: 0,
            window_start: Instant::now(),
            in_window: 0,
        }
    }

    async fn run(&mut self, socket: &mut WebSocket) {
        let idle = Duration::from_secs(self.hub.settings.idle_timeout_secs.max(1));
        let mut deadline = Instant::now() + idle;
        loop {
            let frame = tokio::select! {
                frame = socket.recv() => frame,
                _ = tokio::time::sleep_until(deadline) => {
                    let v = Violation::close(
                        "idle_timeout",
                        format!("no message for {} s (the idle deadline)", idle.as_secs()),
                        close::IDLE,
                    );
                    self.refuse(socket, v, None).await;
                    return;
                }
                _ = self.hub.stop.cancelled() => {
                    reconnect(self.hub, socket, close::RESTART).await;
                    return;
                }
            };
            let text = match frame {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Binary(_))) => {
                    let v = Violation::drop("malformed", "messages are JSON text frames, not binary");
                    self.refuse(socket, v, None).await;
                    continue;
                }
                // Pings are answered by the websocket layer; they are not game data.
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Close(_))) | None => return,
                Some(Err(e)) => {
                    tracing::debug!(connection = %self.id, "e2 connection ended: {e}");
                    return;
                }
            };
            deadline = Instant::now() + idle;
            if let Err(v) = self.count_against_rate() {
                self.refuse(socket, v, None).await;
                return;
            }
            match self.handle(&text).await {
                Ok((seq, next)) => {
                    metrics::counter!("drops_e2_messages_total", "outcome" => "accepted").increment(1);
                    match next {
                        Next::Reconnect => {
                            reconnect(self.hub, socket, close::TRY_AGAIN_LATER).await;
                            return;
                        }
                        Next::Continue | Next::Disconnect => {
                            if send(socket, &ServerMessage::Ack { seq }).await.is_err() {
                                return;
                            }
                        }
                    }
                    if matches!(next, Next::Disconnect) {
                        let _ = socket.send(close_frame(close::NORMAL, "disconnect")).await;
                        return;
                    }
                }
                Err((seq, v)) => {
                    let ends = v.close.is_some();
                    self.refuse(socket, v, seq).await;
                    if ends {
                        return;
                    }
                }
            }
        }
    }

    /// One-minute fixed window, as E2 counts: every message type counts.
    fn count_against_rate(&mut self) -> Result<(), Violation> {
        let window = Duration::from_secs(self.hub.settings.window_secs.max(1));
        if self.window_start.elapsed() >= window {
            self.window_start = Instant::now();
            self.in_window = 0;
        }
        self.in_window += 1;
        let limit = self.hub.settings.messages_per_window;
        if self.in_window > limit {
            return Err(Violation::close(
                "rate_limited",
                format!("at most {limit} messages per {} s window", window.as_secs()),
                close::RATE_LIMITED,
            ));
        }
        Ok(())
    }

    async fn handle(&mut self, text: &str) -> Result<(Option<u64>, Next), (Option<u64>, Violation)> {
        let settings = &self.hub.settings;
        if text.len() > settings.max_full_bytes {
            let v = Violation::drop(
                "message_too_large",
                format!(
                    "message is {} bytes; connect and refresh may be at most {}",
                    text.len(),
                    settings.max_full_bytes
                ),
            );
            return Err((None, v));
        }
        let de = &mut serde_json::Deserializer::from_str(text);
        let msg: ClientMessage = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = super::body::json_field(&e);
            let field = if field.is_empty() { field } else { format!("field `{field}`: ") };
            (None, Violation::drop("malformed", format!("{field}{}", e.inner())))
        })?;
        let seq = msg.seq;
        self.handle_message(msg, text.len()).await.map(|next| (seq, next)).map_err(|v| (seq, v))
    }

    async fn handle_message(&mut self, msg: ClientMessage, size: usize) -> Result<Next, Violation> {
        let settings = &self.hub.settings;
        if msg.kind == Kind::Delta && size > settings.max_delta_bytes {
            return Err(Violation::drop(
                "message_too_large",
                format!("delta is {size} bytes; a delta may be at most {}", settings.max_delta_bytes),
            ));
        }
        if msg.kind == Kind::Disconnect {
            return Ok(Next::Disconnect);
        }
        if msg.kind == Kind::Connect {
            if self.session.is_some() {
                return Err(Violation::drop("malformed", "already connected: send `refresh` for full state"));
            }
            let session = self.authenticate(&msg).await?;
            self.session = Some(session);
        } else if self.session.is_none() {
            return Err(Violation::drop("not_connected", "send `connect` (with token and full state) first"));
        }
        let update = match msg.kind {
            Kind::Connect | Kind::Refresh => Update::Full,
            Kind::Delta => Update::Patch,
            Kind::Flush => return Ok(Next::Continue),
            Kind::Disconnect => return Ok(Next::Disconnect),
        };
        let data = match msg.data {
            Some(data @ Value::Object(_)) => data,
            Some(_) => return Err(Violation::drop("malformed", "field `data`: must be a JSON object")),
            None if update == Update::Patch => return Err(Violation::drop("malformed", "field `data`: missing")),
            None => Value::Object(Default::default()),
        };
        self.store(update, data).await
    }

    async fn authenticate(&self, msg: &ClientMessage) -> Result<Session, Violation> {
        let unauthorized = |code, message: String| Violation::close(code, message, close::UNAUTHORIZED);
        let forbidden = |code, message: String| Violation::close(code, message, close::FORBIDDEN);
        let token = msg.token.as_deref().unwrap_or_default();
        if token.is_empty() {
            return Err(unauthorized("invalid_token", "field `token`: missing".into()));
        }
        for prefix in ["bearer ", "oauth "] {
            if token.len() >= prefix.len() && token[..prefix.len()].eq_ignore_ascii_case(prefix) {
                let prefix = &token[..prefix.len() - 1];
                return Err(unauthorized(
                    "token_prefix",
                    format!("field `token`: send the token alone, without the `{prefix}` prefix"),
                ));
            }
        }
        let client_id = required(&msg.client_id, "client_id")?;
        let game_id = required(&msg.game_id, "game_id")?;
        let info = match self.hub.verifier.verify(token).await {
            Ok(info) => info,
            Err(TokenError::Unavailable(e)) => {
                tracing::warn!("e2 token check failed: {e}");
                return Err(Violation::close(
                    "unavailable",
                    "cannot check tokens right now; reconnect later",
                    close::TRY_AGAIN_LATER,
                ));
            }
            Err(e) => return Err(unauthorized("invalid_token", format!("field `token`: {e}"))),
        };
        if info.client_id != client_id {
            return Err(unauthorized(
                "invalid_token",
                format!("field `token`: issued to client `{}`, not `{client_id}`", info.client_id),
            ));
        }
        let allowed = self.hub.settings.allowlist.iter().any(|p| p.client_id == client_id && p.game_id == game_id);
        if !allowed {
            return Err(forbidden(
                "not_allowlisted",
                format!("client `{client_id}` is not allowlisted to publish for game `{game_id}`"),
            ));
        }
        let ids = msg.broadcaster_ids.as_deref();
        let broadcasters: Vec<String> = match (info.kind, ids) {
            (TokenKind::App, Some(ids)) if !ids.is_empty() => ids.to_vec(),
            (TokenKind::App, _) => {
                return Err(forbidden(
                    "broadcaster_ids_required",
                    "field `broadcaster_ids`: an app token must name the broadcasters it publishes for".into(),
                ))
            }
            (TokenKind::User, Some(_)) => {
                return Err(forbidden(
                    "broadcaster_ids_forbidden",
                    "field `broadcaster_ids`: a user token publishes only for its own user; leave it out".into(),
                ))
            }
            (TokenKind::User, None) => match info.user_id {
                Some(user) => vec![user],
                None => return Err(unauthorized("invalid_token", "field `token`: user token without a user".into())),
            },
        };
        let mut publishers = Vec::with_capacity(broadcasters.len());
        let mut unlinked = Vec::new();
        for id in broadcasters {
            match self.hub.store.link_of(&id).await {
                Ok(Some(account_id)) => publishers.push(Publisher { twitch_user_id: id, account_id }),
                Ok(None) => unlinked.push(id),
                Err(e) => {
                    tracing::warn!("e2 link lookup failed: {e}");
                    return Err(Violation::close(
                        "unavailable",
                        "storage unavailable; reconnect later",
                        close::TRY_AGAIN_LATER,
                    ));
                }
            }
        }
        if !unlinked.is_empty() {
            return Err(forbidden(
                "broadcaster_not_linked",
                format!("broadcasters not linked to this game: {}", unlinked.join(", ")),
            ));
        }
        publishers.sort_by(|a, b| a.twitch_user_id.cmp(&b.twitch_user_id));
        publishers.dedup();
        Ok(Session { publishers, client_id, game_id, authoritative: info.kind == TokenKind::App })
    }

    async fn store(&mut self, update: Update, data: Value) -> Result<Next, Violation> {
        let Some(session) = &self.session else {
            return Err(Violation::drop("not_connected", "send `connect` first"));
        };
        self.messages += 1;
        let event = GameStateEvent {
            id: format!("{}:{}", self.id, self.messages),
            broadcasters: session.publishers.clone(),
            client_id: session.client_id.clone(),
            game_id: session.game_id.clone(),
            update,
            data,
            received_at_ms: crate::store::now_ms(),
            authoritative: session.authoritative,
        };
        match self.hub.store.insert_game_state(&event).await {
            Ok(()) => {
                self.hub.inbox_notify.notify_one();
                Ok(Next::Continue)
            }
            Err(e) => {
                tracing::warn!(connection = %self.id, "e2 message not stored: {e}");
                Ok(Next::Reconnect)
            }
        }
    }

    async fn refuse(&self, socket: &mut WebSocket, v: Violation, seq: Option<u64>) {
        metrics::counter!("drops_e2_messages_total", "outcome" => v.code).increment(1);
        tracing::info!(connection = %self.id, code = v.code, "e2 message refused: {}", v.message);
        let _ = send(socket, &ServerMessage::Error { code: v.code, message: v.message, seq }).await;
        if let Some(code) = v.close {
            let _ = socket.send(close_frame(code, v.code)).await;
        }
    }
}

fn required(value: &Option<String>, field: &str) -> Result<String, Violation> {
    match value.as_deref() {
        Some(v) if !v.trim().is_empty() => Ok(v.to_string()),
        _ => Err(Violation::drop("malformed", format!("field `{field}`: missing"))),
    }
}

async fn send(socket: &mut WebSocket, message: &ServerMessage<'_>) -> Result<(), axum::Error> {
    let text = serde_json::to_string(message).unwrap_or_default();
    socket.send(Message::Text(Utf8Bytes::from(text))).await
}

async fn reconnect(hub: &E2Hub, socket: &mut WebSocket, code: u16) {
    let _ = send(socket, &ServerMessage::Reconnect { reconnect_after_ms: hub.settings.reconnect_after_ms }).await;
    let _ = socket.send(close_frame(code, "reconnect")).await;
}

fn close_frame(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from(reason.to_string()) }))
}
