//! A Twitch Drops entitlement, as EventSub's `drop.entitlement.grant`
//! delivers it: Twitch counted the watch time, a viewer earned a drop, and
//! the studio decides what it is worth in its game.

use serde::{Deserialize, Serialize};

/// Longest value of any entitlement field, in bytes (Twitch's ids are far shorter).
pub const MAX_ENTITLEMENT_FIELD_BYTES: usize = 256;

/// One entitlement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entitlement {
    /// Twitch's entitlement id: the deduplication key, and what is marked FULFILLED.
    pub entitlement_id: String,
    /// The EventSub event's id (one per entitlement in a batch).
    pub event_id: String,
    pub organization_id: String,
    pub category_id: String,
    pub category_name: String,
    pub campaign_id: String,
    /// The viewer's Twitch user id.
    pub user_id: String,
    pub user_login: String,
    pub user_name: String,
    pub benefit_id: String,
    /// When Twitch created it (RFC 3339, as sent).
    pub created_at: String,
}
