//! What the engine knows about each broadcaster (by game account id): the
//! latest E2 game state and when it last changed, and who is watching now
//! (the linked viewers of the latest heartbeat). Checkpointed like
//! watch-time, so both survive a restart.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value;

use crate::domain::{changed_keys, GameStateEvent, Heartbeat, Minute, Publisher, Update, ViewerList};
use crate::store::{GameStateRow, WatcherRow};

#[derive(Debug, Clone)]
struct GameState {
    twitch_user_id: String,
    state: Value,
    changed_minute: u32,
}

#[derive(Debug, Clone)]
struct Watching {
    seq: i64,
    minute: u32,
    arrived_ms: i64,
    viewers: Arc<ViewerList>,
}

/// A change a message made to a broadcaster's game state.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub previous: Value,
    pub current: Value,
    /// Top-level keys that differ; never empty.
    pub changed: Vec<String>,
}

/// Per-broadcaster game state and viewers.
#[derive(Debug)]
pub struct Broadcasters {
    game: HashMap<String, GameState>,
    watching: HashMap<String, Watching>,
    dirty_game: HashSet<String>,
    dirty_watching: HashSet<String>,
    /// Broadcasters whose viewers were let go since the last checkpoint.
    gone_watching: HashSet<String>,
    /// A heartbeat that arrived at most this long before a change says who watches.
    watching_window_ms: i64,
    /// Largest merged state kept; a message that would pass it is not applied.
    max_state_bytes: usize,
}

impl Broadcasters {
    /// No broadcasters yet; a heartbeat says who watches for `watching_window_ms`.
    pub fn new(watching_window_ms: i64, max_state_bytes: usize) -> Broadcasters {
        Broadcasters {
            game: HashMap::new(),
            watching: HashMap::new(),
            dirty_game: HashSet::new(),
            dirty_watching: HashSet::new(),
            gone_watching: HashSet::new(),
            watching_window_ms,
            max_state_bytes,
        }
    }

    /// Rebuilds from checkpoint rows; a state that no longer parses starts empty.
    pub fn restore(
        watching_window_ms: i64,
        max_state_bytes: usize,
        game: Vec<GameStateRow>,
        watchers: Vec<(WatcherRow, Heartbeat)>,
    ) -> Broadcasters {
        let mut out = Broadcasters::new(watching_window_ms, max_state_bytes);
        for row in game {
            let state = serde_json::from_str(&row.state).unwrap_or_else(|_| Value::Object(Default::default()));
            let entry = GameState { twitch_user_id: row.twitch_user_id, state, changed_minute: row.changed_minute };
            out.game.insert(row.broadcaster_id, entry);
        }
        for (row, heartbeat) in watchers {
            let watching = Watching {
                seq: row.inbox_seq,
                minute: row.minute,
                arrived_ms: row.received_at_ms,
                viewers: heartbeat.viewer_list,
            };
            out.watching.insert(row.broadcaster_id, watching);
        }
        out
    }

    /// Notes a heartbeat: its viewers are who watches the broadcaster now,
    /// unless a newer minute is known already (a late report).
    pub fn saw_heartbeat(&mut self, seq: i64, arrived_ms: i64, heartbeat: &Heartbeat) {
        let minute = heartbeat.minute().0;
        let broadcaster = &heartbeat.broadcaster.0;
        if self.watching.get(broadcaster).is_some_and(|w| w.minute > minute) {
            return;
        }
        let watching = Watching { seq, minute, arrived_ms, viewers: heartbeat.viewer_list.clone() };
        self.watching.insert(broadcaster.clone(), watching);
        self.dirty_watching.insert(broadcaster.clone());
        self.gone_watching.remove(broadcaster);
    }

    /// Lets go of the viewers of broadcasters whose latest heartbeat arrived
    /// longer than the watching window before `now_ms` (the newest arrival
    /// the engine has judged, so a replay prunes alike): they can no longer
    /// be anyone's "watching now", and a channel that went offline would
    /// otherwise keep its last viewer list forever. Returns how many went.
    pub fn prune(&mut self, now_ms: i64) -> usize {
        let window = self.watching_window_ms;
        let gone: Vec<String> =
            self.watching.iter().filter(|(_, w)| now_ms - w.arrived_ms > window).map(|(b, _)| b.clone()).collect();
        for broadcaster in &gone {
            self.watching.remove(broadcaster);
            self.dirty_watching.remove(broadcaster);
            self.gone_watching.insert(broadcaster.clone());
        }
        gone.len()
    }

    /// Broadcasters whose latest heartbeat's viewers are held.
    pub fn watching_count(&self) -> usize {
        self.watching.len()
    }

    /// Broadcasters let go since the last checkpoint (their stored rows go too).
    pub fn gone(&self) -> Vec<String> {
        self.gone_watching.iter().cloned().collect()
    }

    /// The minute the broadcaster's game state last changed, if it has any.
    pub fn state_changed(&self, broadcaster: &str) -> Option<u32> {
        self.game.get(broadcaster).map(|g| g.changed_minute)
    }

    /// The broadcaster's current game state, if any.
    pub fn state(&self, broadcaster: &str) -> Option<&Value> {
        self.game.get(broadcaster).map(|g| &g.state)
    }

    /// Where a game-state message that arrived at `arrived_ms` falls on the
    /// broadcast's own timeline: E2 messages carry no time, and heartbeats
    /// name the minute watched, which may lag the host's clock (Twitch's
    /// delivery, retries, a simulation running faster than real time). So a
    /// change is placed at the minute of the broadcaster's latest heartbeat
    /// when that arrived within the watching window, else at its arrival.
    pub fn broadcast_minute(&self, broadcaster: &str, arrived_ms: i64) -> u32 {
        match self.recent(broadcaster, arrived_ms) {
            Some(w) => w.minute,
            None => Minute::of_ms(arrived_ms).0,
        }
    }

    fn recent(&self, broadcaster: &str, at_ms: i64) -> Option<&Watching> {
        self.watching.get(broadcaster).filter(|w| (at_ms - w.arrived_ms).abs() <= self.watching_window_ms)
    }

    /// Applies a message to one broadcaster's state at `minute` (see
    /// [`Broadcasters::broadcast_minute`]); `None` when nothing changed (a
    /// redelivered delta, the same full state sent again after a reconnect).
    pub fn apply(&mut self, publisher: &Publisher, event: &GameStateEvent, minute: u32) -> Option<Change> {
        let empty = Value::Object(Default::default());
        let previous = self.game.get(&publisher.account_id).map_or(empty, |g| g.state.clone());
        let current = event.apply(&previous);
        // States are JSON objects (ingest refuses anything else), so equal
        // top-level values mean equal states.
        let changed = changed_keys(&previous, &current);
        if changed.is_empty() {
            return None;
        }
        // A full state was bounded at ingest; only patches can grow it, so only they pay for the measure.
        let size = if event.update == Update::Patch { current.to_string().len() } else { 0 };
        if size > self.max_state_bytes {
            metrics::counter!("drops_e2_state_too_large_total").increment(1);
            tracing::warn!(broadcaster = %publisher.account_id, size, max = self.max_state_bytes,
                "game state message not applied: the merged state would pass e2.max_full_bytes");
            return None;
        }
        let entry = GameState {
            twitch_user_id: publisher.twitch_user_id.clone(),
            state: current.clone(),
            changed_minute: minute,
        };
        self.game.insert(publisher.account_id.clone(), entry);
        self.dirty_game.insert(publisher.account_id.clone());
        Some(Change { previous, current, changed })
    }

    /// Who is watching the broadcaster at `at_ms` (host clock): the latest
    /// heartbeat's viewers, if it arrived within the watching window.
    pub fn watching_now(&self, broadcaster: &str, at_ms: i64) -> Option<Arc<ViewerList>> {
        self.recent(broadcaster, at_ms).map(|w| w.viewers.clone())
    }

    /// Rows changed since the last [`Broadcasters::clear_dirty`].
    pub fn dirty_rows(&self) -> (Vec<GameStateRow>, Vec<WatcherRow>) {
        let game = self
            .dirty_game
            .iter()
            .filter_map(|b| {
                let g = self.game.get(b)?;
                Some(GameStateRow {
                    broadcaster_id: b.clone(),
                    twitch_user_id: g.twitch_user_id.clone(),
                    state: g.state.to_string(),
                    changed_minute: g.changed_minute,
                })
            })
            .collect();
        let watching = self
            .dirty_watching
            .iter()
            .filter_map(|b| {
                let w = self.watching.get(b)?;
                Some(WatcherRow {
                    broadcaster_id: b.clone(),
                    inbox_seq: w.seq,
                    minute: w.minute,
                    received_at_ms: w.arrived_ms,
                })
            })
            .collect();
        (game, watching)
    }

    /// Forgets what changed, after a checkpoint saved it.
    pub fn clear_dirty(&mut self) {
        self.dirty_game.clear();
        self.dirty_watching.clear();
        self.gone_watching.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const WINDOW_MS: i64 = 120_000;

    fn event(update: Update, data: Value, minute: i64) -> GameStateEvent {
        GameStateEvent {
            id: format!("c:{minute}"),
            broadcasters: vec![publisher()],
            client_id: "client".into(),
            game_id: "game".into(),
            update,
            data,
            received_at_ms: minute * 60_000,
            authoritative: true,
        }
    }

    fn publisher() -> Publisher {
        Publisher { twitch_user_id: "t-1".into(), account_id: "b-1".into() }
    }

    #[test]
    fn only_real_changes_are_changes() {
        let mut b = Broadcasters::new(WINDOW_MS, 100_000);
        let full = event(Update::Full, json!({"level": 1, "boss_defeated": false}), 100);
        let change = b.apply(&publisher(), &full, 100).unwrap();
        assert_eq!(change.changed, ["boss_defeated", "level"]);
        assert_eq!(b.state_changed("b-1"), Some(100));
        assert!(b.apply(&publisher(), &event(Update::Full, full.data.clone(), 105), 105).is_none(), "reconnect");
        assert_eq!(b.state_changed("b-1"), Some(100));
        let kill = event(Update::Patch, json!({"boss_defeated": true}), 106);
        assert_eq!(b.apply(&publisher(), &kill, 106).unwrap().changed, ["boss_defeated"]);
        assert!(b.apply(&publisher(), &kill, 106).is_none(), "a redelivered delta changes nothing");
        assert_eq!(b.state("b-1"), Some(&json!({"level": 1, "boss_defeated": true})));
    }

    #[test]
    fn changes_fall_on_the_broadcast_timeline_and_see_recent_viewers() {
        let mut b = Broadcasters::new(WINDOW_MS, 100_000);
        let hb: Heartbeat = serde_json::from_value(json!({"id": "h", "broadcaster": "b-1", "game": "G",
            "time": "2026-11-01T10:00:00Z", "viewer_list": ["v1", "v2"]}))
        .unwrap();
        let arrived = 1_900_000_000_000;
        b.saw_heartbeat(1, arrived, &hb);
        // The heartbeat names a minute long before it arrived (a backfill, a fast simulation).
        assert_eq!(b.broadcast_minute("b-1", arrived + 60_000), hb.minute().0);
        assert_eq!(b.watching_now("b-1", arrived + 60_000).map(|v| v.len()), Some(2));
        assert!(b.watching_now("b-1", arrived + 121_000).is_none(), "older than the window");
        assert_eq!(b.broadcast_minute("b-1", arrived + 121_000), ((arrived + 121_000) / 60_000) as u32);
        assert!(b.watching_now("b-2", arrived).is_none());
    }

    #[test]
    fn deltas_cannot_grow_the_state_past_the_full_state_limit() {
        let mut b = Broadcasters::new(WINDOW_MS, 64);
        assert!(b.apply(&publisher(), &event(Update::Full, json!({"a": 1}), 1), 1).is_some());
        let big = event(Update::Patch, json!({"b": "x".repeat(100)}), 2);
        assert!(b.apply(&publisher(), &big, 2).is_none());
        assert_eq!(b.state("b-1"), Some(&json!({"a": 1})));
    }

    #[test]
    fn viewers_outside_the_window_are_let_go() {
        let mut b = Broadcasters::new(WINDOW_MS, 100_000);
        let hb = |id: &str, who: &str| -> Heartbeat {
            serde_json::from_value(json!({"id": id, "broadcaster": who, "game": "G",
                "time": "2026-11-01T10:00:00Z", "viewer_list": ["v1"]}))
            .unwrap()
        };
        b.saw_heartbeat(1, 0, &hb("h1", "b-1"));
        b.saw_heartbeat(2, 100_000, &hb("h2", "b-2"));
        assert_eq!(b.prune(WINDOW_MS), 0);
        assert_eq!(b.prune(WINDOW_MS + 1), 1);
        assert_eq!((b.watching_count(), b.gone()), (1, vec!["b-1".to_string()]));
        assert!(b.watching_now("b-1", WINDOW_MS).is_none());
        b.saw_heartbeat(3, 200_000, &hb("h3", "b-1"));
        assert!(b.gone().is_empty(), "back before the checkpoint: not gone");
    }

    #[test]
    fn dirty_rows_round_trip_through_restore() {
        let mut b = Broadcasters::new(WINDOW_MS, 100_000);
        b.apply(&publisher(), &event(Update::Full, json!({"level": 2}), 7), 7);
        let (game, watchers) = b.dirty_rows();
        assert_eq!(game.len(), 1);
        assert!(watchers.is_empty());
        let restored = Broadcasters::restore(WINDOW_MS, 100_000, game, Vec::new());
        assert_eq!(restored.state("b-1"), Some(&json!({"level": 2})));
        assert_eq!(restored.state_changed("b-1"), Some(7));
        b.clear_dirty();
        assert!(b.dirty_rows().0.is_empty());
    }
}
