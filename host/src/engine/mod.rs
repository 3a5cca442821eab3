//! The engine: reads the inbox in order, counts watch-time, asks each
//! matching campaign's plugin for grants, and stores them.
//!
//! Invariants: events are evaluated in inbox order, each exactly once per
//! state; grants are stored before the checkpoint that covers their event, and
//! are deduplicated by key, so replaying from a checkpoint after a crash
//! rebuilds the same state and adds no grant twice.
//!
//! [`state`] is what is kept between checkpoints, [`evaluate`] judges one
//! event, [`task`] runs the loop on [`worker`]'s thread, [`recording`] writes and reads the event
//! recording that `replay` takes.

pub mod breaker;
pub mod broadcasters;
pub mod checkpoint;
pub mod entitlements;
pub mod evaluate;
pub mod link_sweep;
pub mod partition;
pub mod recording;
pub mod state;
pub mod task;
pub mod viewer_table;
pub mod watch_time;
pub mod worker;

pub use entitlements::Lookups;
pub use evaluate::{evaluate, Evaluation};
pub use state::{Judgement, State};
pub use task::{Engine, EngineError, EngineOptions, PausedCampaigns};
