//! The bottom layer: what drops-host is about, with no I/O and no imports
//! from the rest of the crate. Ids and times, heartbeats and their viewer
//! lists, game state and its merge patch, inbox events, grants, account links
//! and the circuit breaker's pause record. Every other module builds on these;
//! none of these knows how it is stored, sent or evaluated.

pub mod entitlement;
pub mod event;
pub mod event_time;
pub mod game_state;
pub mod grant;
pub mod heartbeat;
pub mod ids;
pub mod link;
pub mod partition;
pub mod pause;
pub mod text;

pub use entitlement::{
    entitlement_status, Decision, DeliveredItem, Entitlement, EntitlementDecision, Linked, MAX_ENTITLEMENT_FIELD_BYTES,
    MAX_LINKED_ENTITLEMENTS,
};
pub use event::{Event, InboxEvent};
pub use event_time::{now_ms, EventTime, Minute};
pub use game_state::{changed_keys, merge_patch, GameStateEvent, Publisher, Update};
pub use grant::{GrantOrigin, NewGrant, REASON_WATCHING};
pub use heartbeat::{Heartbeat, ViewerList};
pub use ids::{check_id, Id, MAX_ID_LEN};
pub use link::AccountLink;
pub use partition::partition_of;
pub use pause::Paused;
pub use text::cut;
