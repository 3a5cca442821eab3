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
    #[serde(default)]
    pub event_id: String,
    #[serde(default)]
    pub organization_id: String,
    #[serde(default)]
    pub category_id: String,
    #[serde(default)]
    pub category_name: String,
    pub campaign_id: String,
    /// The viewer's Twitch user id.
    pub user_id: String,
    #[serde(default)]
    pub user_login: String,
    #[serde(default)]
    pub user_name: String,
    pub benefit_id: String,
    /// When Twitch created it (RFC 3339, as sent).
    pub created_at: String,
}

/// A viewer linked a game account while entitlements of theirs were waiting
/// for one: the engine decides them now. The event carries the
/// entitlements, so their evaluation depends only on the inbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Linked {
    pub twitch_user_id: String,
    pub game_account_id: String,
    pub entitlements: Vec<Entitlement>,
}

/// Most entitlements one [`Linked`] event carries; more make several events.
pub const MAX_LINKED_ENTITLEMENTS: usize = 500;

/// An in-game item a rule decided to deliver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeliveredItem {
    pub id: String,
    pub quantity: u32,
}

/// What became of an entitlement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The viewer has no linked game account yet: kept until `PUT /v1/links` links them.
    AwaitingLink,
    /// No campaign of this host has the entitlement's campaign id.
    Unmatched(String),
    /// The rule delivers nothing, for this reason; the entitlement stays CLAIMED on Twitch.
    Refused(String),
    /// The rule's items, for the studio's sink; FULFILLED once the sink has them.
    Deliver(Vec<DeliveredItem>),
    /// The rule's call failed (trap, limits, bad output): not decided. Decided
    /// again when its campaign resumes after the breaker, or when the viewer's
    /// link is put again.
    Failed(String),
}

impl Decision {
    /// The stored status.
    pub fn status(&self) -> &'static str {
        match self {
            Decision::AwaitingLink => entitlement_status::AWAITING_LINK,
            Decision::Unmatched(_) => entitlement_status::UNMATCHED,
            Decision::Refused(_) => entitlement_status::REFUSED,
            Decision::Deliver(_) => entitlement_status::DELIVER,
            Decision::Failed(_) => entitlement_status::FAILED,
        }
    }

    /// Whether the entitlement is still to be decided (awaiting a link, or its rule failed).
    pub fn is_open(&self) -> bool {
        matches!(self, Decision::AwaitingLink | Decision::Failed(_))
    }
}

/// The stored statuses of an entitlement.
pub mod entitlement_status {
    pub const AWAITING_LINK: &str = "awaiting_link";
    pub const UNMATCHED: &str = "unmatched";
    pub const REFUSED: &str = "refused";
    pub const DELIVER: &str = "deliver";
    pub const FAILED: &str = "failed";
}

/// An entitlement's outcome, as the engine stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntitlementDecision {
    pub entitlement: Entitlement,
    /// The inbox event that brought the entitlement.
    pub first_seq: i64,
    /// The inbox event that decided it (the same for one left awaiting).
    pub seq: i64,
    pub account: Option<String>,
    pub decision: Decision,
    pub campaign_revision: String,
    pub plugin_hash: String,
}

impl Entitlement {
    /// `created_at` in seconds since the Unix epoch (0 when Twitch's time does not parse).
    pub fn created_at_secs(&self) -> i64 {
        time::OffsetDateTime::parse(&self.created_at, &time::format_description::well_known::Rfc3339)
            .map_or(0, |t| t.unix_timestamp())
    }
}
