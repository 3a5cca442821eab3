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
//!             .filter(|v| v.counted && v.minutes == config.minutes)
//!             .map(|v| Grant::once(v.handle, reward))
//!             .collect()
//!     }
//! }
//!
//! drops_plugin_sdk::export_rule!(After);
//! ```
//!
//! Build with `cargo build --release --target wasm32-unknown-unknown` and copy
//! the `.wasm` into the host's `rules/plugins/` directory.

// The generated bindings name this crate by its public path so that the
// `export_rule!` macro works from plugin crates; this makes that path resolve here too.
extern crate self as drops_plugin_sdk;

use serde::de::DeserializeOwned;

/// Generated bindings for the `drops:rules@0.2.0` world.
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
pub use bindings::exports::drops::rules::rule::{Campaign, GameState, Grant, Heartbeat, HeartbeatVerdict, Viewer};

/// The interface version this SDK builds plugins for.
pub const INTERFACE_VERSION: &str = "0.2.0";

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
}

/// Time-based tiers, shared by rules that grant on watch-time.
pub mod tiers {
    use serde::Deserialize;

    use crate::{Campaign, Grant, Viewer};

    /// One tier: `minutes` of campaign watch-time earns `reward`.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Tier {
        pub minutes: u32,
        pub reward: String,
    }

    /// Checks `config.tiers`: at least one, each at least a minute, each reward the campaign's.
    pub fn validate(tiers: &[Tier], campaign: &Campaign) -> Result<(), String> {
        if tiers.is_empty() {
            return Err("config.tiers: at least one tier is needed".into());
        }
        for (i, tier) in tiers.iter().enumerate() {
            if tier.minutes == 0 {
                return Err(format!("config.tiers[{i}].minutes: must be at least 1"));
            }
            campaign.reward_index(&tier.reward).map_err(|e| format!("config.tiers[{i}].reward: {e}"))?;
        }
        Ok(())
    }

    /// Grants each tier's reward the first time a viewer's watch-time reaches
    /// it. A tier is reached by the minute that crosses it; earlier minutes
    /// were judged by earlier calls, so each tier is granted once.
    pub fn grants(tiers: &[Tier], campaign: &Campaign, viewers: &[Viewer]) -> Vec<Grant> {
        let tiers: Vec<(u32, u32)> =
            tiers.iter().filter_map(|t| campaign.reward_index(&t.reward).ok().map(|r| (t.minutes, r))).collect();
        let mut grants = Vec::new();
        for viewer in viewers.iter().filter(|v| v.counted) {
            for &(minutes, reward) in &tiers {
                if viewer.minutes == minutes {
                    grants.push(Grant::once(viewer.handle, reward));
                }
            }
        }
        grants
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
    #[cfg(target_arch = "wasm32")]
    bindings::drops::rules::host::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    let _ = (level, message);
}

/// The id of a viewer of the current event, fetched from the host on demand.
/// In native tests it comes from [`testing::set_viewer_ids`].
pub fn viewer_id(handle: u32) -> Option<String> {
    #[cfg(target_arch = "wasm32")]
    return bindings::drops::rules::host::viewer_id(handle);
    #[cfg(not(target_arch = "wasm32"))]
    testing::VIEWER_IDS.with(|ids| ids.borrow().get(handle as usize).cloned())
}

/// Per-campaign state the host keeps for the rule (streaks, counters).
///
/// State is replayed with the events it follows from, so a rule that keeps
/// state stays deterministic. Writes of a call that fails are discarded.
/// In native tests the state is an in-memory map per thread ([`testing::clear_state`]).
pub mod state {
    use serde::de::DeserializeOwned;
    use serde::Serialize;

    /// The value stored under `key`.
    pub fn get(key: &str) -> Option<Vec<u8>> {
        #[cfg(target_arch = "wasm32")]
        return crate::bindings::drops::rules::host::state_get(key);
        #[cfg(not(target_arch = "wasm32"))]
        crate::testing::STATE.with(|s| s.borrow().get(key).cloned())
    }

    /// Stores `value` under `key` (keys up to 256 bytes, values up to 64 KiB).
    pub fn set(key: &str, value: &[u8]) -> Result<(), String> {
        #[cfg(target_arch = "wasm32")]
        return crate::bindings::drops::rules::host::state_set(key, value);
        #[cfg(not(target_arch = "wasm32"))]
        {
            crate::testing::STATE.with(|s| s.borrow_mut().insert(key.to_string(), value.to_vec()));
            Ok(())
        }
    }

    /// Removes `key`.
    pub fn delete(key: &str) {
        #[cfg(target_arch = "wasm32")]
        crate::bindings::drops::rules::host::state_delete(key);
        #[cfg(not(target_arch = "wasm32"))]
        crate::testing::STATE.with(|s| s.borrow_mut().remove(key));
    }

    /// The JSON value stored under `key`, if present and of type `T`.
    pub fn get_json<T: DeserializeOwned>(key: &str) -> Option<T> {
        get(key).and_then(|bytes| serde_json::from_slice(&bytes).ok())
    }

    /// Stores `value` as JSON under `key`.
    pub fn set_json<T: Serialize>(key: &str, value: &T) -> Result<(), String> {
        let bytes = serde_json::to_vec(value).map_err(|e| e.to_string())?;
        set(key, &bytes)
    }
}

/// Helpers for testing rules natively with `cargo test`.
#[cfg(not(target_arch = "wasm32"))]
pub mod testing {
    use std::cell::RefCell;
    use std::collections::HashMap;

    use crate::{GameState, Heartbeat, Viewer};

    thread_local! {
        pub(crate) static STATE: RefCell<HashMap<String, Vec<u8>>> = RefCell::new(HashMap::new());
        pub(crate) static VIEWER_IDS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    }

    /// Empties the state map of this thread.
    pub fn clear_state() {
        STATE.with(|s| s.borrow_mut().clear());
    }

    /// Sets the ids `viewer_id(handle)` answers with on this thread.
    pub fn set_viewer_ids(ids: &[&str]) {
        VIEWER_IDS.with(|v| *v.borrow_mut() = ids.iter().map(|s| s.to_string()).collect());
    }

    /// A heartbeat of `broadcaster` in `game` at unix minute `minute`, with no game state.
    pub fn heartbeat(broadcaster: &str, game: &str, minute: u32) -> Heartbeat {
        Heartbeat {
            broadcaster: broadcaster.into(),
            game: game.into(),
            minute,
            viewers_reported: 0,
            state_changed: None,
        }
    }

    /// A game-state change of `broadcaster` at unix minute `minute`, from an
    /// app token, with the changed top-level keys worked out as the host does.
    pub fn game_state(broadcaster: &str, minute: u32, previous: &str, current: &str) -> GameState {
        let (before, after): (serde_json::Value, serde_json::Value) =
            (serde_json::from_str(previous).unwrap_or_default(), serde_json::from_str(current).unwrap_or_default());
        let empty = serde_json::Map::new();
        let (b, a) = (before.as_object().unwrap_or(&empty), after.as_object().unwrap_or(&empty));
        let mut changed: Vec<String> = b.keys().chain(a.keys()).filter(|k| b.get(*k) != a.get(*k)).cloned().collect();
        changed.sort();
        changed.dedup();
        GameState {
            broadcaster: broadcaster.into(),
            twitch_user_id: format!("twitch-{broadcaster}"),
            game_id: "game".into(),
            minute,
            previous: previous.into(),
            current: current.into(),
            changed,
            authoritative: true,
        }
    }

    /// Viewers watching now (handles 0..) with the given campaign minutes, as `on-game-state` gets them.
    pub fn watching(minutes: &[u32]) -> Vec<Viewer> {
        minutes.iter().enumerate().map(|(i, &m)| Viewer { handle: i as u32, minutes: m, counted: false }).collect()
    }

    /// Viewers with handles 0.. and the given campaign minutes, all counted.
    pub fn viewers(minutes: &[u32]) -> Vec<Viewer> {
        minutes.iter().enumerate().map(|(i, &m)| Viewer { handle: i as u32, minutes: m, counted: true }).collect()
    }
}

/// Parses the campaign's config for rule `R`, naming the bad field on error.
pub fn parse_config<R: Rule>(campaign: &Campaign) -> Result<R::Config, String> {
    serde_json::from_str(&campaign.config).map_err(|e| format!("config: {e}"))
}

#[doc(hidden)]
pub fn __validate<R: Rule>(campaign: Campaign) -> Result<(), String> {
    install_panic_hook();
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
    install_panic_hook();
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
    install_panic_hook();
    let config = parse_config::<R>(&campaign)?;
    Ok(R::on_game_state(&config, &campaign, &change, &viewers))
}

/// Panics abort a wasm32-unknown-unknown module with the message lost, so the
/// hook sends it to the host's log first.
fn install_panic_hook() {
    #[cfg(target_arch = "wasm32")]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            std::panic::set_hook(Box::new(|info| log(Level::Error, &format!("panic: {info}"))));
        });
    }
}

/// Exports a [`Rule`] implementation as the plugin's rule.
#[macro_export]
macro_rules! export_rule {
    ($rule:ty) => {
        #[doc(hidden)]
        pub struct __DropsRuleExport;

        impl $crate::bindings::exports::drops::rules::rule::Guest for __DropsRuleExport {
            fn validate_config(campaign: $crate::Campaign) -> ::core::result::Result<(), ::std::string::String> {
                $crate::__validate::<$rule>(campaign)
            }

            fn on_heartbeat(
                campaign: $crate::Campaign,
                heartbeat: $crate::Heartbeat,
                viewers: ::std::vec::Vec<$crate::Viewer>,
            ) -> ::core::result::Result<$crate::HeartbeatVerdict, ::std::string::String> {
                $crate::decide_heartbeat::<$rule>(campaign, heartbeat, viewers)
            }

            fn on_game_state(
                campaign: $crate::Campaign,
                change: $crate::GameState,
                viewers: ::std::vec::Vec<$crate::Viewer>,
            ) -> ::core::result::Result<::std::vec::Vec<$crate::Grant>, ::std::string::String> {
                $crate::decide_game_state::<$rule>(campaign, change, viewers)
            }
        }

        // Export names such as `drops:rules/rule@0.2.0#on-heartbeat` only link
        // on wasm; natively the rule stays a plain, testable Rust type.
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::__export_rules!(__DropsRuleExport with_types_in $crate::bindings);
    };
}
