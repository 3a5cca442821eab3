//! WebAssembly rule plugins: loading, sandbox limits and calls.

pub mod bindings;
pub mod limits;
pub mod runtime;

pub use bindings::{
    Campaign as WitCampaign, GameState as WitGameState, Grant as WitGrant, Heartbeat as WitHeartbeat,
    HeartbeatVerdict as WitVerdict, Viewer as WitViewer,
};
pub use runtime::{Plugin, PluginError, PluginHash, PluginRuntime};

/// The interface version this host implements.
pub const INTERFACE_VERSION: &str = "0.2.0";
/// The interface a plugin must export.
pub const RULE_EXPORT: &str = "drops:rules/rule@0.2.0";
/// The only interface a plugin may import.
pub const HOST_IMPORT: &str = "drops:rules/host@0.2.0";
