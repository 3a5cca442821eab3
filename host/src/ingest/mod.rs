//! Where events enter: VHS heartbeats over HTTP ([`vhs`]), E2 game state
//! over a websocket ([`e2`]), Twitch's Drops entitlements over EventSub
//! ([`eventsub`]). Each checks what it is sent against the domain's rules
//! and stores it in the inbox before it acknowledges it.

pub mod e2;
pub mod eventsub;
pub mod vhs;
