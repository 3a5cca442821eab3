//! drops-host: Twitch Drops rewards decided by WebAssembly rule plugins.
//!
//! The data's path is the module layout: [`ingest`] (VHS heartbeats in) →
//! [`engine`] (watch-time, campaign matching) → [`plugins`] (the rules) →
//! [`store`] (inbox, grants) → [`manifests`] (Twitch's grant files), with
//! [`api`] beside them and [`app`] starting it all.

pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod demo;
pub mod engine;
pub mod ingest;
pub mod manifests;
pub mod plugins;
pub mod replay;
pub mod rules;
pub mod scaffold;
pub mod simulate;
pub mod store;
pub mod telemetry;
