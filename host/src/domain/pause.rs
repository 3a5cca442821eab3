//! The record of a campaign paused by its circuit breaker.

use serde::Serialize;

/// Why and since when a campaign is paused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Paused {
    /// First inbox event not evaluated for the campaign.
    pub since_seq: i64,
    /// The plugin version that failed.
    pub plugin_hash: String,
    /// The campaign revision that failed.
    pub campaign_revision: String,
    /// The last failure.
    pub reason: String,
}
