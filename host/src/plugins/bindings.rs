//! Host bindings for the `drops:rules@0.1.0` world (plugin-sdk/wit/rules.wit).

wasmtime::component::bindgen!({
    path: "../plugin-sdk/wit",
    world: "rules",
});

pub use drops::rules::host::Level;
pub use exports::drops::rules::rule::{Campaign, Grant, Heartbeat, Viewer};
