//! A grant a rule decided, before it is stored.

/// The reason Twitch shows for grants made for watching.
pub const REASON_WATCHING: &str = "watching";

/// A grant decided by a rule, unique by (campaign, reward, user, key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewGrant {
    pub campaign_id: String,
    pub reward_id: String,
    pub user_id: String,
    /// Empty for once-only grants; the rule's key for repeatable ones.
    pub grant_key: String,
    pub broadcaster_id: String,
    pub game: String,
    pub client_id: String,
    pub reason: &'static str,
    pub campaign_revision: String,
    pub plugin_hash: String,
    pub inbox_seq: i64,
    pub event_minute: u32,
}
