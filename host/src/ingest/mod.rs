//! Where events enter: VHS heartbeats over HTTP ([`vhs`]), E2 game state
//! over a websocket ([`e2`]). Both check what they are sent against the
//! domain's rules and store it in the inbox before they acknowledge it.

pub mod e2;
pub mod vhs;
