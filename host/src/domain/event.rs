//! What the inbox holds, in the order the engine evaluates it.

use super::entitlement::{Entitlement, Linked};
use super::game_state::GameStateEvent;
use super::heartbeat::Heartbeat;

/// Who watches (VHS), what happens in the game (E2), and what Twitch
/// granted (EventSub entitlements).
#[derive(Debug)]
pub enum Event {
    Heartbeat(Heartbeat),
    GameState(GameStateEvent),
    Entitlement(Box<Entitlement>),
    /// A viewer with entitlements awaiting a link linked a game account.
    Linked(Box<Linked>),
}

/// An event with its place in the inbox.
#[derive(Debug)]
pub struct InboxEvent {
    pub seq: i64,
    /// When the host stored it, in unix milliseconds (the host's clock).
    pub received_at_ms: i64,
    pub event: Event,
}
