//! WebAssembly rule plugins: a self-contained host for the rules interface.
//!
//! [`wit`] binds the interface (one module per version), [`load`] turns bytes
//! into a checked plugin, [`host`] implements the imports a plugin may use
//! over the per-call [`state`], [`call`] runs one sandboxed, limited call,
//! [`limits`] holds the limits, [`runtime`] the one wasmtime engine, and
//! [`cache`] the compiled plugins kept on disk.

pub mod cache;
pub mod call;
pub mod error;
pub mod host;
pub mod limits;
pub mod load;
pub mod runtime;
pub mod state;
pub mod wit;

pub use error::PluginError;
pub use load::{Plugin, PluginHash};
pub use runtime::{CallTrace, PluginRuntime};
pub use state::{CampaignKv, ENTRY_OVERHEAD_BYTES};
pub use wit::{
    Campaign as WitCampaign, Entitlement as WitEntitlement, EntitlementVerdict as WitEntitlementVerdict,
    GameState as WitGameState, Grant as WitGrant, Heartbeat as WitHeartbeat, Item as WitItem, Viewers as WitViewers,
    VERSION as INTERFACE_VERSION,
};
