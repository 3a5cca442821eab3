//! A grant a rule decided, before it is stored.

use std::sync::Arc;

/// The reason Twitch shows for grants made for watching.
pub const REASON_WATCHING: &str = "watching";

/// What every grant of one plugin call shares: the campaign, the event and
/// the versions that decided. Held once per call, so a heartbeat that grants
/// ten million viewers holds ten million ids, not ten million copies of this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantOrigin {
    pub campaign_id: String,
    pub broadcaster_id: String,
    pub game: String,
    pub client_id: String,
    pub reason: &'static str,
    pub campaign_revision: String,
    pub plugin_hash: String,
    pub inbox_seq: i64,
    pub event_minute: u32,
}

/// A grant decided by a rule, unique by (campaign, reward, user, key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewGrant {
    pub origin: Arc<GrantOrigin>,
    pub reward_id: Arc<str>,
    pub user_id: Box<str>,
    /// Empty for once-only grants; the rule's key for repeatable ones.
    pub grant_key: Box<str>,
}

impl NewGrant {
    /// The campaign it is of.
    pub fn campaign_id(&self) -> &str {
        &self.origin.campaign_id
    }
}
