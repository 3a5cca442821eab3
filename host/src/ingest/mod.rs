//! Where events enter: VHS heartbeats over HTTP, E2 game state over a websocket.

pub mod auth;
pub mod body;
pub mod e2;
pub mod e2_auth;
pub mod game_state;
pub mod heartbeat;
pub mod vhs;
