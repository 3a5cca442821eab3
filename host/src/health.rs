//! Whether the host can still keep its promises. Ingest acknowledges an
//! event only because the engine will judge it; once the engine has stopped,
//! ingest answers 503 (Twitch and game servers retry, perhaps at a healthy
//! host), `/readyz` fails, and the process exits non-zero after draining.

use std::sync::OnceLock;

/// Set once, when a task the host cannot work without has stopped.
#[derive(Debug, Default)]
pub struct Liveness {
    stopped: OnceLock<String>,
}

impl Liveness {
    /// Records that the host can no longer serve, and why (the first reason wins).
    pub fn stop(&self, reason: impl Into<String>) {
        let _ = self.stopped.set(reason.into());
    }

    /// Why the host can no longer serve, if it cannot.
    pub fn stopped(&self) -> Option<&str> {
        self.stopped.get().map(String::as_str)
    }
}
