//! Simulated game servers for `drops-host simulate`: one E2 connection per
//! broadcaster, full state on connect, then a delta per simulated minute
//! (levels, boss kills), within the E2 rate limit; told to reconnect, they
//! come back and send full state again.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::domain::merge_patch;

/// What a game server needs to connect.
#[derive(Debug, Clone)]
pub struct GameServer {
    /// `ws://host:port/e2`.
    pub url: String,
    /// An app token (sent without any prefix).
    pub token: String,
    pub client_id: String,
    pub game_id: String,
    /// The broadcaster's Twitch user id.
    pub broadcaster: String,
    /// Messages allowed per window, and the window (the host's E2 limits).
    pub messages_per_window: u32,
    pub window: Duration,
}

/// What a game server's connection saw.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct GameServerReport {
    pub messages: u64,
    pub acks: u64,
    pub errors: u64,
    pub reconnects: u64,
    /// Deltas merged into a later one to stay within the rate limit.
    pub coalesced: u64,
}

/// The full state a simulated match starts with.
pub fn initial_state() -> Value {
    json!({"level": 1, "scene": "arena", "boss_defeated": false, "boss_kills": 0})
}

/// The delta of simulated minute `minute` for channel `channel`: the level
/// moves every minute, and every `boss_every` minutes (staggered by channel)
/// the boss falls, to stand up again the minute after.
pub fn delta_for(minute: u32, channel: u32, boss_every: u32, kills_so_far: u32) -> Value {
    let mut delta = json!({"level": 1 + minute});
    if boss_every > 0 {
        let phase = (minute + channel) % boss_every;
        if phase == boss_every - 1 {
            delta["boss_defeated"] = json!(true);
            delta["boss_kills"] = json!(kills_so_far + 1);
        } else if phase == 0 && minute > 0 {
            delta["boss_defeated"] = json!(false);
        }
    }
    delta
}

impl GameServer {
    /// Runs until `deltas` closes: connects, sends each delta (merging
    /// deltas that would break the rate limit into the next one), then disconnects.
    pub async fn run(self, mut deltas: mpsc::Receiver<Value>) -> GameServerReport {
        let mut report = GameServerReport::default();
        let mut state = initial_state();
        let mut pending: Option<Value> = None;
        'connection: loop {
            let Ok((mut ws, _)) = tokio_tungstenite::connect_async(&self.url).await else {
                report.errors += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            };
            let mut pacer = Pacer::new(self.messages_per_window, self.window);
            let connect = json!({"type": "connect", "token": self.token, "client_id": self.client_id,
                "game_id": self.game_id, "broadcaster_ids": [self.broadcaster], "data": state});
            pacer.take();
            match exchange(&mut ws, &connect, &mut report).await {
                Answer::Ack => {}
                Answer::Reconnect(after) => {
                    tokio::time::sleep(after).await;
                    continue 'connection;
                }
                Answer::Closed => return report,
            }
            loop {
                let next = if pending.is_some() && pacer.ready() {
                    None
                } else {
                    tokio::select! {
                        d = deltas.recv() => match d {
                            Some(d) => Some(d),
                            None if pending.is_none() => {
                                let _ = exchange(&mut ws, &json!({"type": "disconnect"}), &mut report).await;
                                return report;
                            }
                            None => { pacer.wait().await; None }
                        },
                        _ = pacer.wait(), if pending.is_some() => None,
                    }
                };
                if let Some(delta) = next {
                    merge_patch(&mut state, &delta);
                    match pending.as_mut() {
                        Some(p) => {
                            merge_patch(p, &delta);
                            report.coalesced += 1;
                        }
                        None => pending = Some(delta),
                    }
                }
                if !pacer.ready() {
                    continue;
                }
                let Some(delta) = pending.take() else { continue };
                pacer.take();
                match exchange(&mut ws, &json!({"type": "delta", "data": delta}), &mut report).await {
                    Answer::Ack => {}
                    Answer::Reconnect(after) => {
                        // The host lost nothing it acknowledged; full state on reconnect covers the rest.
                        tokio::time::sleep(after).await;
                        continue 'connection;
                    }
                    Answer::Closed => return report,
                }
            }
        }
    }
}

enum Answer {
    Ack,
    Reconnect(Duration),
    Closed,
}

/// Sends one message and waits for the host's answer to it.
async fn exchange<S>(ws: &mut S, message: &Value, report: &mut GameServerReport) -> Answer
where
    S: futures_util::Sink<Message>
        + futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
        + Unpin,
{
    report.messages += 1;
    if ws.send(Message::text(message.to_string())).await.is_err() {
        return Answer::Reconnect(Duration::from_secs(1));
    }
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                let answer: Value = serde_json::from_str(&text).unwrap_or_default();
                match answer["type"].as_str() {
                    Some("ack") => {
                        report.acks += 1;
                        return Answer::Ack;
                    }
                    Some("reconnect") => {
                        report.reconnects += 1;
                        let ms = answer["reconnect_after_ms"].as_u64().unwrap_or(1000);
                        return Answer::Reconnect(Duration::from_millis(ms));
                    }
                    _ => {
                        report.errors += 1;
                        eprintln!("simulate: e2 error: {text}");
                        return Answer::Ack;
                    }
                }
            }
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) => return Answer::Closed,
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_))) | Err(_) => return Answer::Reconnect(Duration::from_secs(1)),
        }
    }
}

/// Keeps a connection within the host's fixed-window rate limit. The host's
/// window starts when it receives the first message, a little after this
/// side's, so this side's window is a little longer to stay inside it.
struct Pacer {
    limit: u32,
    window: Duration,
    started: Instant,
    sent: u32,
}

impl Pacer {
    fn new(limit: u32, window: Duration) -> Pacer {
        Pacer { limit: limit.max(1), window: window + Duration::from_millis(500), started: Instant::now(), sent: 0 }
    }

    fn roll(&mut self) {
        if self.started.elapsed() >= self.window {
            self.started = Instant::now();
            self.sent = 0;
        }
    }

    fn ready(&mut self) -> bool {
        self.roll();
        self.sent < self.limit
    }

    fn take(&mut self) {
        self.roll();
        self.sent += 1;
    }

    async fn wait(&mut self) {
        if !self.ready() {
            tokio::time::sleep(self.window.saturating_sub(self.started.elapsed())).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bosses_fall_on_schedule_and_stand_up_again() {
        let deltas: Vec<Value> = (0..6).map(|m| delta_for(m, 0, 3, 0)).collect();
        assert_eq!(deltas[2]["boss_defeated"], json!(true));
        assert_eq!(deltas[3]["boss_defeated"], json!(false));
        assert_eq!(deltas[5]["boss_defeated"], json!(true));
        assert!(deltas[0].get("boss_defeated").is_none());
        assert_eq!(delta_for(1, 1, 3, 4)["boss_kills"], json!(5), "channels are staggered");
    }

    #[test]
    fn the_pacer_holds_the_window() {
        let mut pacer = Pacer::new(2, Duration::from_secs(60));
        assert!(pacer.ready());
        pacer.take();
        pacer.take();
        assert!(!pacer.ready());
    }
}
