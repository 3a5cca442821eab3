//! Helpers for testing rules natively with `cargo test`.

use std::cell::RefCell;
use std::collections::HashMap;

use crate::{GameState, Heartbeat, Viewer};

thread_local! {
    pub(crate) static STATE: RefCell<HashMap<String, Vec<u8>>> = RefCell::new(HashMap::new());
    pub(crate) static VIEWER_IDS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Empties the state map of this thread.
pub fn clear_state() {
    STATE.with(|s| s.borrow_mut().clear());
}

/// Sets the ids `viewer_id(handle)` answers with on this thread.
pub fn set_viewer_ids(ids: &[&str]) {
    VIEWER_IDS.with(|v| *v.borrow_mut() = ids.iter().map(|s| s.to_string()).collect());
}

/// A heartbeat of `broadcaster` in `game` at unix minute `minute`, with no game state.
pub fn heartbeat(broadcaster: &str, game: &str, minute: u32) -> Heartbeat {
    Heartbeat { broadcaster: broadcaster.into(), game: game.into(), minute, viewers_reported: 0, state_changed: None }
}

/// A game-state change of `broadcaster` at unix minute `minute`, from an
/// app token, with the changed top-level keys worked out as the host does.
pub fn game_state(broadcaster: &str, minute: u32, previous: &str, current: &str) -> GameState {
    let (before, after): (serde_json::Value, serde_json::Value) =
        (serde_json::from_str(previous).unwrap_or_default(), serde_json::from_str(current).unwrap_or_default());
    let empty = serde_json::Map::new();
    let (b, a) = (before.as_object().unwrap_or(&empty), after.as_object().unwrap_or(&empty));
    let mut changed: Vec<String> = b.keys().chain(a.keys()).filter(|k| b.get(*k) != a.get(*k)).cloned().collect();
    changed.sort();
    changed.dedup();
    GameState {
        broadcaster: broadcaster.into(),
        twitch_user_id: format!("twitch-{broadcaster}"),
        game_id: "game".into(),
        minute,
        previous: previous.into(),
        current: current.into(),
        changed,
        authoritative: true,
    }
}

/// Viewers watching now (handles 0..) with the given campaign minutes, as `on-game-state` gets them.
pub fn watching(minutes: &[u32]) -> Vec<Viewer> {
    minutes.iter().enumerate().map(|(i, &m)| Viewer { handle: i as u32, minutes: m, counted: false }).collect()
}

/// Viewers with handles 0.. and the given campaign minutes, all counted.
pub fn viewers(minutes: &[u32]) -> Vec<Viewer> {
    minutes.iter().enumerate().map(|(i, &m)| Viewer { handle: i as u32, minutes: m, counted: true }).collect()
}

/// An entitlement of `benefit` for the viewer linked to `account`, created at
/// `created_at` (seconds since the Unix epoch).
pub fn entitlement(id: &str, benefit: &str, account: &str, created_at: i64) -> crate::Entitlement {
    crate::Entitlement {
        id: id.into(),
        benefit_id: benefit.into(),
        campaign_id: "campaign".into(),
        category_id: "category".into(),
        user_id: format!("twitch-{account}"),
        user_login: format!("login-{account}"),
        created_at,
        account: account.into(),
    }
}
