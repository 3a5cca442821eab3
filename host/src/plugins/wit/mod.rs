//! The rules interface as this host speaks it. One module per interface
//! version, in the manner of Zed's `wasm_host/wit`: when the interface
//! changes, a new `since_vX_Y_Z` module binds it beside the old one.

mod since_v0_2_0;

pub use since_v0_2_0::*;
