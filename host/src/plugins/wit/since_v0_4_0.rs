//! Bindings for `drops:rules@0.4.0` (plugin-sdk/wit/rules.wit): viewers as
//! flat lists of numbers, which both sides copy whole, and the
//! `on-entitlement` hook of Twitch's current Drops. Plugins built for an
//! older interface are refused with both versions named (see `load`).

/// The interface version, written once for the host; the names built from it follow.
macro_rules! version {
    () => {
        "0.4.0"
    };
}

/// The interface version this host implements.
pub const VERSION: &str = version!();
/// The interface a plugin must export.
pub const RULE_EXPORT: &str = concat!("drops:rules/rule@", version!());
/// The only interface a plugin may import.
pub const HOST_IMPORT: &str = concat!("drops:rules/host@", version!());

/// The interface's WIT text, as this host was built with it.
pub const RULES_WIT: &str = include_str!("../../../../plugin-sdk/wit/rules.wit");

wasmtime::component::bindgen!({
    path: "../plugin-sdk/wit",
    world: "rules",
    // Every import may fail the call: that is how a plugin that sends the
    // host more than its budget is stopped, deterministically.
    imports: { default: trappable },
});

pub use drops::rules::host::{self as host_interface, Level};
pub use exports::drops::rules::rule::{
    Campaign, Entitlement, EntitlementVerdict, GameState, Grant, Heartbeat, HeartbeatVerdict, Item, Viewers,
};

#[cfg(test)]
mod tests {
    #[test]
    fn the_wit_file_declares_this_version() {
        let wit = include_str!("../../../../plugin-sdk/wit/rules.wit");
        assert!(wit.contains(&format!("package drops:rules@{};", super::VERSION)), "rules.wit and VERSION disagree");
    }
}
