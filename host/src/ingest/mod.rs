//! Where events enter: VHS heartbeats over HTTP.

pub mod auth;
pub mod body;
pub mod heartbeat;
pub mod vhs;
