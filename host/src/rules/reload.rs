//! Hot reload: watch the rules directory and swap in a new [`RuleSet`].
//!
//! The watch is on the directories, not the files: editors that save by
//! writing a temp file and renaming it over the old one would silence a watch
//! on the file itself. Events are debounced (several arrive per save), the new
//! set is built off the request path, reusing unchanged plugins by hash, and
//! swapped in whole; a set identical to the one in force (a touch, a rewrite
//! of the same bytes) is not swapped. The engine takes the set once per batch
//! of events, so every event is judged by exactly one set.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecursiveMode, Watcher};
use tokio_util::sync::CancellationToken;

use super::RuleSet;
use crate::plugins::PluginRuntime;

/// Quiet time after the last file event before reloading.
pub const DEBOUNCE: Duration = Duration::from_millis(50);

/// What a reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// A new set is in force.
    Swapped,
    /// The files hold what is already in force.
    Unchanged,
}

/// Watches and reloads the rules directory.
pub struct Reloader {
    pub dir: PathBuf,
    pub runtime: Arc<PluginRuntime>,
    pub rules: Arc<ArcSwap<RuleSet>>,
}

impl Reloader {
    /// Watches until `stop`. Fails only if the directory cannot be watched.
    pub async fn run(self, stop: CancellationToken) -> notify::Result<()> {
        for sub in ["campaigns", "plugins"] {
            std::fs::create_dir_all(self.dir.join(sub)).map_err(notify::Error::io)?;
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<Event>| match event {
            Ok(event) if changes_content(&event.kind) => {
                let _ = tx.send(());
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("rules watch: {e}"),
        })?;
        watcher.watch(&self.dir, RecursiveMode::Recursive)?;
        tracing::info!(dir = %self.dir.display(), "watching rules for changes");
        loop {
            tokio::select! {
                event = rx.recv() => if event.is_none() { return Ok(()) },
                _ = stop.cancelled() => return Ok(()),
            }
            while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
            self.reload_now().await;
        }
    }

    /// Reloads now; returns what happened.
    pub async fn reload_now(&self) -> ReloadOutcome {
        let started = Instant::now();
        let previous = self.rules.load_full();
        let (dir, runtime, old) = (self.dir.clone(), self.runtime.clone(), previous.clone());
        let next = match tokio::task::spawn_blocking(move || RuleSet::reload(&dir, &runtime, &old)).await {
            Ok(next) => next,
            Err(e) => {
                tracing::error!("rules reload task failed: {e}");
                metrics::counter!("drops_rules_reloads_total", "outcome" => "failed").increment(1);
                return ReloadOutcome::Unchanged;
            }
        };
        if next.fingerprint() == previous.fingerprint() {
            metrics::counter!("drops_rules_reloads_total", "outcome" => "unchanged").increment(1);
            return ReloadOutcome::Unchanged;
        }
        let errors = next.errors().len();
        self.rules.store(Arc::new(next));
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        metrics::counter!("drops_rules_reloads_total", "outcome" => "swapped").increment(1);
        metrics::histogram!("drops_rules_reload_seconds").record(ms / 1000.0);
        tracing::info!(errors, "rules reloaded in {ms:.1} ms");
        ReloadOutcome::Swapped
    }
}

/// Whether an event can change a file's content or presence. Opens, reads and
/// closes after reading are left out: reloading reads the files itself.
fn changes_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}
