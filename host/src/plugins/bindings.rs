//! Host bindings for the `drops:rules@0.2.0` world (plugin-sdk/wit/rules.wit).

wasmtime::component::bindgen!({
    path: "../plugin-sdk/wit",
    world: "rules",
});

pub use drops::rules::host::Level;
pub use exports::drops::rules::rule::{Campaign, GameState, Grant, Heartbeat, HeartbeatVerdict, Viewer};
