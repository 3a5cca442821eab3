//! One E2 connection: the receive loop with its idle deadline and rate
//! window, each message checked against the protocol's rules, stored in the
//! inbox, then acknowledged.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use serde_json::Value;
use tokio::time::Instant;

use super::auth::{self, Session};
use super::protocol::{close, ClientMessage, Kind, ServerMessage, Violation};
use super::E2Hub;
use crate::domain::{cut, now_ms, GameStateEvent, Update};
use crate::http::json_field;
use crate::telemetry::live::{self, Source};

/// What an accepted message asks of the connection.
enum Next {
    Continue,
    Disconnect,
    /// Storage is away: ask the client to come back and send full state again.
    Reconnect,
}

/// A connection's state.
pub(super) struct Connection<'a> {
    hub: &'a E2Hub,
    id: String,
    session: Option<Session>,
    messages: u64,
    window_start: Instant,
    in_window: u32,
}

impl<'a> Connection<'a> {
    /// A new, unauthenticated connection.
    pub(super) fn new(hub: &'a E2Hub) -> Connection<'a> {
        Connection {
            hub,
            id: uuid::Uuid::new_v4().to_string(),
            session: None,
            messages: 0,
            window_start: Instant::now(),
            in_window: 0,
        }
    }

    /// Serves the connection until it ends.
    pub(super) async fn run(&mut self, socket: &mut WebSocket) {
        let idle = Duration::from_secs(self.hub.settings.idle_timeout_secs.max(1));
        let connect_within = Duration::from_secs(self.hub.settings.connect_timeout_secs.max(1));
        // Frames before `connect` do not buy time: an anonymous socket holds a
        // slot for `connect_timeout_secs` at most, whatever it sends.
        let connect_by = Instant::now() + connect_within;
        let mut deadline = Instant::now() + idle;
        loop {
            let wake = if self.session.is_none() { deadline.min(connect_by) } else { deadline };
            let frame = tokio::select! {
                frame = socket.recv() => frame,
                _ = tokio::time::sleep_until(wake) => {
                    let v = if self.session.is_none() && Instant::now() >= connect_by {
                        Violation::close(
                            "connect_timeout",
                            format!("no successful `connect` within {} s", connect_within.as_secs()),
                            close::IDLE,
                        )
                    } else {
                        Violation::close(
                            "idle_timeout",
                            format!("no message for {} s (the idle deadline)", idle.as_secs()),
                            close::IDLE,
                        )
                    };
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
                    // Counted like any message: a flood of binary frames is a flood.
                    if let Err(v) = self.count_against_rate() {
                        self.refuse(socket, v, None).await;
                        return;
                    }
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
            let arrived = Instant::now();
            deadline = arrived + idle;
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
                            live::acknowledged(Source::E2, 1, 0, arrived.elapsed());
                        }
                    }
                    if matches!(next, Next::Disconnect) {
                        let _ = send_frame(socket, close_frame(close::NORMAL, "disconnect")).await;
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
            let field = json_field(&e);
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
        let update = match msg.kind {
            Kind::Disconnect => return Ok(Next::Disconnect),
            Kind::Connect => {
                if self.session.is_some() {
                    return Err(Violation::drop("malformed", "already connected: send `refresh` for full state"));
                }
                self.session = Some(auth::authenticate(self.hub, &msg).await?);
                Some(Update::Full)
            }
            Kind::Refresh => Some(Update::Full),
            Kind::Delta => Some(Update::Patch),
            // A barrier and keep-alive: acknowledged once connected, nothing stored.
            Kind::Flush => None,
        };
        let Some(session) = &self.session else {
            return Err(Violation::drop("not_connected", "send `connect` (with token and full state) first"));
        };
        let Some(update) = update else { return Ok(Next::Continue) };
        let data = match msg.data {
            Some(data @ Value::Object(_)) => data,
            Some(_) => return Err(Violation::drop("malformed", "field `data`: must be a JSON object")),
            None if update == Update::Patch => return Err(Violation::drop("malformed", "field `data`: missing")),
            None => Value::Object(Default::default()),
        };
        self.messages += 1;
        let event = GameStateEvent {
            id: format!("{}:{}", self.id, self.messages),
            broadcasters: session.publishers.clone(),
            client_id: session.client_id.clone(),
            game_id: session.game_id.clone(),
            update,
            data,
            received_at_ms: now_ms(),
            authoritative: session.authoritative,
        };
        Ok(self.store(&event).await)
    }

    /// Stores an accepted message; the ack follows only once it is committed.
    async fn store(&self, event: &GameStateEvent) -> Next {
        if let Some(reason) = self.hub.liveness.stopped() {
            tracing::warn!(connection = %self.id, "e2 message not stored: {reason}");
            return Next::Reconnect;
        }
        match self.hub.store.insert_game_state(event).await {
            Ok(()) => Next::Continue,
            Err(e) => {
                tracing::warn!(connection = %self.id, "e2 message not stored: {e}");
                Next::Reconnect
            }
        }
    }

    async fn refuse(&self, socket: &mut WebSocket, v: Violation, seq: Option<u64>) {
        metrics::counter!("drops_e2_messages_total", "outcome" => v.code).increment(1);
        live::refused(Source::E2, v.code);
        // Messages quote what the client sent: cut, so a 100 KB value is neither echoed nor logged.
        let message = cut(v.message, MAX_ERROR_MESSAGE_BYTES);
        tracing::info!(connection = %self.id, code = v.code, "e2 message refused: {message}");
        let _ = send(socket, &ServerMessage::Error { code: v.code, message, seq }).await;
        if let Some(code) = v.close {
            let _ = send_frame(socket, close_frame(code, v.code)).await;
        }
    }
}

/// Longest error message sent back (and logged).
const MAX_ERROR_MESSAGE_BYTES: usize = 300;

/// How long one frame may take to go out: a client that stops reading must
/// not hold its connection (and slot) past every deadline.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) async fn send(socket: &mut WebSocket, message: &ServerMessage<'_>) -> Result<(), axum::Error> {
    let text = serde_json::to_string(message).unwrap_or_default();
    send_frame(socket, Message::Text(Utf8Bytes::from(text))).await
}

async fn send_frame(socket: &mut WebSocket, frame: Message) -> Result<(), axum::Error> {
    match tokio::time::timeout(SEND_TIMEOUT, socket.send(frame)).await {
        Ok(sent) => sent,
        Err(_) => Err(axum::Error::new("the client did not read its answers in time")),
    }
}

pub(super) async fn reconnect(hub: &E2Hub, socket: &mut WebSocket, code: u16) {
    let _ = send(socket, &ServerMessage::Reconnect { reconnect_after_ms: hub.settings.reconnect_after_ms }).await;
    let _ = send_frame(socket, close_frame(code, "reconnect")).await;
}

pub(super) fn close_frame(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from(reason.to_string()) }))
}
