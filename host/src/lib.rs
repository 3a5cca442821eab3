//! drops-host: Twitch Drops rewards decided by WebAssembly rule plugins.
//!
//! The module layout follows the data's path, and every module imports only
//! the layers below it (`docs/architecture.md` draws them):
//!
//! | layer | modules | what they own |
//! | --- | --- | --- |
//! | commands | [`cli`], [`app`], [`demo`], [`simulate`], [`replay`], [`scaffold`], [`plugin_build`], [`plugin_check`], [`plugin_run`], [`plugin_test`], [`plugin_watch`] | starting things |
//! | routers | [`api`] | one router: ingest, health, metrics, the admin API |
//! | edges and tasks | [`ingest`] (VHS, E2), [`engine`], [`manifests`], [`delivery`] | events in, judgement, files out, uploads |
//! | rules | [`rules`] | campaign files bound to plugins, hot reload |
//! | services | [`plugins`], [`store`], [`http`] | the sandbox, the database, HTTP errors |
//! | bottom | [`domain`], [`config`], [`files`], [`health`], [`secrets`], [`telemetry`] | what it is about; settings |
//!
//! Data flows: [`ingest`] stores VHS heartbeats and E2 game state in the
//! [`store`]'s inbox → the [`engine`] reads it in order, counts watch-time
//! and keeps each broadcaster's game state → it asks each campaign's
//! [`plugins`] rule (bound by [`rules`]) for grants → the [`store`] keeps
//! each grant once → [`manifests`] batches them into Twitch's files →
//! [`delivery`] uploads each file to Twitch, exactly once per manifest id.

pub mod api;
pub mod app;
pub mod cancel;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod delivery;
pub mod demo;
pub mod domain;
pub mod engine;
pub mod files;
pub mod health;
pub mod http;
pub mod ingest;
pub mod manifests;
pub mod plugin_build;
pub mod plugin_check;
pub mod plugin_run;
pub mod plugin_test;
pub mod plugin_watch;
pub mod plugins;
pub mod replay;
pub mod rules;
pub mod scaffold;
pub mod secrets;
pub mod simulate;
pub mod store;
pub mod telemetry;
#[cfg(test)]
mod test_values;
