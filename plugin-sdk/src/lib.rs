//! Write drops-host reward rules as plain Rust functions.
//!
//! A rule is a type implementing [`Rule`]: a serde config type and a function
//! from one heartbeat (with the viewers' progress in the campaign) to grants.
//! [`export_rule!`] turns it into a plugin the host can load.
//!
//! ```ignore
//! use drops_plugin_sdk::{Campaign, Grant, Heartbeat, Rule, Viewer};
//!
//! #[derive(serde::Deserialize)]
//! struct Config { minutes: u32, reward: String }
//!
//! struct After;
//!
//! impl Rule for After {
//!     type Config = Config;
//!
//!     fn validate(config: &Config, campaign: &Campaign) -> Result<(), String> {
//!         campaign.reward_index(&config.reward).map(|_| ())
//!     }
//!
//!     fn on_heartbeat(config: &Config, campaign: &Campaign, _: &Heartbeat, viewers: &[Viewer]) -> Vec<Grant> {
//!         let Ok(reward) = campaign.reward_index(&config.reward) else { return Vec::new() };
//!         viewers
//!             .iter()
//!             // `>=`: a grant made once is stored once, and a viewer who passed
//!             // the goal on a minute the rule ignored still gets it.
//!             .filter(|v| v.minutes >= config.minutes)
//!             .map(|v| Grant::once(v.handle, reward))
//!             .collect()
//!     }
//! }
//!
//! drops_plugin_sdk::export_rule!(After);
//! ```
//!
//! Build with `cargo build --profile plugin --target wasm32-unknown-unknown`
//! (the size profile `drops-host plugin new` writes), test with `drops-host
//! plugin test .`, and install with `drops-host plugin watch . --rules DIR`
//! (docs/plugin-guide.md).

// The generated bindings name this crate by its public path so that the
// `export_rule!` macro works from plugin crates; this makes that path resolve here too.
extern crate self as drops_plugin_sdk;

use serde::de::DeserializeOwned;

/// Generated bindings for the rules world (`wit/rules.wit`).
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "rules",
        pub_export_macro: true,
        export_macro_name: "__export_rules",
        default_bindings_module: "drops_plugin_sdk::bindings",
        runtime_path: "drops_plugin_sdk::__wit_bindgen::rt",
        // Rules compare grants in their tests.
        additional_derives: [PartialEq],
    });
}

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

pub use bindings::drops::rules::host::Level;
pub use bindings::exports::drops::rules::rule::{
    Campaign, Entitlement, EntitlementVerdict, GameState, Grant, Heartbeat, HeartbeatVerdict, Item,
};

/// The interface version this SDK builds plugins for: the one place the SDK
/// writes it (a test checks it against `wit/rules.wit`).
pub const INTERFACE_VERSION: &str = "0.4.0";

/// A linked viewer of the event and their progress in the campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Viewer {
    /// Index of the viewer in the call; pass it back in a grant.
    pub handle: u32,
    /// Campaign watch-time in minutes. In `on_heartbeat` it includes this
    /// heartbeat's minute when that minute is new for the viewer.
    pub minutes: u32,
    /// True when this heartbeat's minute is new for the viewer (not already
    /// counted from another channel or a retry); always false in `on_game_state`.
    pub counted: bool,
}

/// Rebuilds the viewers from the flat lists they cross the boundary as, in
/// one pass (the lists themselves arrive without a per-element copy).
#[doc(hidden)]
pub fn __viewers(flat: bindings::exports::drops::rules::rule::Viewers) -> Vec<Viewer> {
    let counted = |i: usize| flat.counted.get(i / 32).is_some_and(|word| word & (1 << (i % 32)) != 0);
    flat.minutes
        .iter()
        .enumerate()
        .map(|(i, &minutes)| Viewer { handle: i as u32, minutes, counted: counted(i) })
        .collect()
}

pub mod arena;
pub mod state;
mod sys;

#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
pub mod tiers;

/// A reward rule: a config type and its decisions for heartbeats (time-based
/// rewards) and game-state changes (event-based rewards). Every hook but the
/// config type has a default, so a rule implements only what it uses.
pub trait Rule {
    /// The campaign's `[rule] config` table, deserialized.
    type Config: DeserializeOwned;

    /// Checks a config beyond its shape; the error should name the field.
    fn validate(_config: &Self::Config, _campaign: &Campaign) -> Result<(), String> {
        Ok(())
    }

    /// Whether a heartbeat's new minutes count toward the campaign's
    /// watch-time. When it says no, [`Rule::on_heartbeat`] sees every viewer's
    /// progress as it was before the heartbeat, and the host stores that.
    fn minutes_count(_config: &Self::Config, _campaign: &Campaign, _heartbeat: &Heartbeat) -> bool {
        true
    }

    /// Decides the grants for one heartbeat of a campaign.
    fn on_heartbeat(
        _config: &Self::Config,
        _campaign: &Campaign,
        _heartbeat: &Heartbeat,
        _viewers: &[Viewer],
    ) -> Vec<Grant> {
        Vec::new()
    }

    /// Decides the grants for a change of a broadcaster's game state; `viewers`
    /// are the ones watching that broadcaster now, with their progress.
    fn on_game_state(
        _config: &Self::Config,
        _campaign: &Campaign,
        _change: &GameState,
        _viewers: &[Viewer],
    ) -> Vec<Grant> {
        Vec::new()
    }

    /// Decides the in-game items for a Twitch Drops entitlement of the
    /// campaign (EventSub), once its viewer has a linked game account. An
    /// `Err` is a failed call, not a decision: its state writes are dropped
    /// and the entitlement is decided again later (a refusal is final).
    fn on_entitlement(
        _config: &Self::Config,
        _campaign: &Campaign,
        _entitlement: &Entitlement,
    ) -> Result<EntitlementVerdict, String> {
        Ok(EntitlementVerdict::Refuse("this rule decides no entitlements".to_string()))
    }
}

impl Item {
    /// `quantity` of item `id`.
    pub fn new(id: impl Into<String>, quantity: u32) -> Self {
        Item { id: id.into(), quantity }
    }
}

impl GameState {
    /// The state before the change (`{}` when there was none).
    pub fn previous_value(&self) -> serde_json::Value {
        serde_json::from_str(&self.previous).unwrap_or_default()
    }

    /// The state after the change.
    pub fn current_value(&self) -> serde_json::Value {
        serde_json::from_str(&self.current).unwrap_or_default()
    }

    /// Whether top-level `key` changed.
    pub fn changed(&self, key: &str) -> bool {
        self.changed.iter().any(|k| k == key)
    }
}

impl Campaign {
    /// Builds a campaign description, mostly for native tests of rules.
    pub fn new(id: &str, rewards: &[&str], config: &str) -> Self {
        Campaign {
            id: id.to_string(),
            rewards: rewards.iter().map(|r| r.to_string()).collect(),
            config: config.to_string(),
        }
    }

    /// The index of a reward id, or an error naming it.
    pub fn reward_index(&self, reward: &str) -> Result<u32, String> {
        self.rewards
            .iter()
            .position(|r| r == reward)
            .map(|i| i as u32)
            .ok_or_else(|| format!("reward `{reward}` is not one of the campaign's rewards"))
    }
}

impl Grant {
    /// A grant made at most once per (campaign, reward, viewer).
    pub fn once(viewer: u32, reward: u32) -> Self {
        Grant { viewer, reward, key: None }
    }

    /// A repeatable grant, made once per distinct key.
    pub fn repeatable(viewer: u32, reward: u32, key: impl Into<String>) -> Self {
        Grant { viewer, reward, key: Some(key.into()) }
    }
}

/// Writes a line to the host's log. Does nothing outside a host.
pub fn log(level: Level, message: &str) {
    sys::log(level, message)
}

/// The id of a viewer of the current event, fetched from the host on demand.
/// In native tests it comes from [`testing::set_viewer_ids`].
pub fn viewer_id(handle: u32) -> Option<String> {
    sys::viewer_id(handle)
}

/// Parses the campaign's config for rule `R`, naming the bad field on error.
pub fn parse_config<R: Rule>(campaign: &Campaign) -> Result<R::Config, String> {
    serde_json::from_str(&campaign.config).map_err(|e| format!("config: {e}"))
}

#[doc(hidden)]
pub fn __validate<R: Rule>(campaign: Campaign) -> Result<(), String> {
    sys::install_panic_hook();
    let config = parse_config::<R>(&campaign)?;
    R::validate(&config, &campaign)
}

/// Runs a rule's heartbeat hooks as the host calls them; public so that
/// native tests see exactly what the host would get.
pub fn decide_heartbeat<R: Rule>(
    campaign: Campaign,
    heartbeat: Heartbeat,
    mut viewers: Vec<Viewer>,
) -> Result<HeartbeatVerdict, String> {
    sys::install_panic_hook();
    let config = parse_config::<R>(&campaign)?;
    let count_minutes = R::minutes_count(&config, &campaign, &heartbeat);
    if !count_minutes {
        // The host keeps the progress from before the heartbeat; show the rule the same.
        for v in &mut viewers {
            v.minutes = v.minutes.saturating_sub(u32::from(v.counted));
            v.counted = false;
        }
    }
    let grants = R::on_heartbeat(&config, &campaign, &heartbeat, &viewers);
    Ok(HeartbeatVerdict { count_minutes, grants })
}

/// Runs a rule's game-state hook as the host calls it.
pub fn decide_game_state<R: Rule>(
    campaign: Campaign,
    change: GameState,
    viewers: Vec<Viewer>,
) -> Result<Vec<Grant>, String> {
    sys::install_panic_hook();
    let config = parse_config::<R>(&campaign)?;
    Ok(R::on_game_state(&config, &campaign, &change, &viewers))
}

/// Runs a rule's entitlement hook as the host calls it.
pub fn decide_entitlement<R: Rule>(campaign: Campaign, entitlement: Entitlement) -> Result<EntitlementVerdict, String> {
    sys::install_panic_hook();
    let config = parse_config::<R>(&campaign)?;
    R::on_entitlement(&config, &campaign, &entitlement)
}

/// Exports a [`Rule`] implementation as the plugin's rule, allocating from
/// [`arena::Arena`]. `export_rule!(MyRule, own_allocator)` leaves the global
/// allocator to the plugin.
#[macro_export]
macro_rules! export_rule {
    ($rule:ty) => {
        $crate::export_rule!($rule, own_allocator);

        #[cfg(target_arch = "wasm32")]
        #[global_allocator]
        static __DROPS_ALLOCATOR: $crate::arena::Arena = $crate::arena::Arena::new();
    };
    ($rule:ty, own_allocator) => {
        #[doc(hidden)]
        pub struct __DropsRuleExport;

        impl $crate::bindings::exports::drops::rules::rule::Guest for __DropsRuleExport {
            fn validate_config(campaign: $crate::Campaign) -> ::core::result::Result<(), ::std::string::String> {
                $crate::__validate::<$rule>(campaign)
            }

            fn on_heartbeat(
                campaign: $crate::Campaign,
                heartbeat: $crate::Heartbeat,
                viewers: $crate::bindings::exports::drops::rules::rule::Viewers,
            ) -> ::core::result::Result<$crate::HeartbeatVerdict, ::std::string::String> {
                $crate::decide_heartbeat::<$rule>(campaign, heartbeat, $crate::__viewers(viewers))
            }

            fn on_game_state(
                campaign: $crate::Campaign,
                change: $crate::GameState,
                viewers: $crate::bindings::exports::drops::rules::rule::Viewers,
            ) -> ::core::result::Result<::std::vec::Vec<$crate::Grant>, ::std::string::String> {
                $crate::decide_game_state::<$rule>(campaign, change, $crate::__viewers(viewers))
            }

            fn on_entitlement(
                campaign: $crate::Campaign,
                entitlement: $crate::Entitlement,
            ) -> ::core::result::Result<$crate::EntitlementVerdict, ::std::string::String> {
                $crate::decide_entitlement::<$rule>(campaign, entitlement)
            }
        }

        // The interface's export names only link on wasm; natively the rule
        // stays a plain, testable Rust type.
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::__export_rules!(__DropsRuleExport with_types_in $crate::bindings);
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viewers_are_rebuilt_from_the_flat_lists() {
        let flat =
            bindings::exports::drops::rules::rule::Viewers { minutes: (0..40).collect(), counted: vec![0b101, 1 << 1] };
        let viewers = __viewers(flat);
        assert_eq!(viewers.len(), 40);
        assert_eq!(viewers[2], Viewer { handle: 2, minutes: 2, counted: true });
        let counted: Vec<u32> = viewers.iter().filter(|v| v.counted).map(|v| v.handle).collect();
        assert_eq!(counted, vec![0, 2, 33]);
    }

    #[test]
    fn the_wit_file_declares_this_version() {
        let wit = include_str!("../wit/rules.wit");
        assert!(wit.contains(&format!("package drops:rules@{};", super::INTERFACE_VERSION)));
    }
}
