//! Hot reload: watch the rules directory and swap in a new [`RuleSet`].
//!
//! The watch is on the directories, not the files: editors that save by
//! writing a temp file and renaming it over the old one would silence a watch
//! on the file itself. Events are debounced (several arrive per save), the new
//! set is built off the request path, reusing unchanged plugins by hash, and
//! swapped in whole; a set identical to the one in force (a touch, a rewrite
//! of the same bytes) is not swapped. The engine takes the set once per batch
//! of events, so every event is judged by exactly one set. Reloads (from the
//! watcher and from the admin API) run one at a time.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecursiveMode, Watcher as _};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::mirror::RulesMirror;
use super::{LoadedCampaign, RuleSet, RulesError};

/// A campaign file installed through the admin API.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct LoadedCampaignView {
    /// The campaign's `id`.
    pub id: String,
    /// SHA-256 of the file: the revision its grants name.
    pub revision: String,
}
use crate::files::write_atomically;
use crate::plugins::{PluginHash, PluginRuntime};
use crate::store::{RuleHistoryEntry, Store};

/// Quiet time after the last file event before reloading.
pub const DEBOUNCE: Duration = Duration::from_millis(50);

/// A live watch on the rules directory and its (undebounced) change events.
pub struct Watch {
    _watcher: notify::RecommendedWatcher,
    events: tokio::sync::mpsc::UnboundedReceiver<()>,
}

/// Watches and reloads the rules directory.
pub struct Reloader {
    pub dir: PathBuf,
    pub runtime: Arc<PluginRuntime>,
    pub rules: Arc<ArcSwap<RuleSet>>,
    /// Where the history of versions is recorded.
    pub store: Arc<Store>,
    lock: Mutex<()>,
    /// Swapped-in sets, recorded in order by a task of their own: a reload
    /// never waits for the database (a long checkpoint holds its writer).
    history: tokio::sync::mpsc::UnboundedSender<HistoryJob>,
    /// Counts reloads, for the rules mirror (a changed file here is published).
    reloads: tokio::sync::watch::Sender<u64>,
    /// Set when rules are shared with other hosts: an upload is published
    /// before it is acknowledged.
    pub mirror: std::sync::OnceLock<Arc<RulesMirror>>,
}

/// What the history task is asked.
enum HistoryJob {
    /// Record a swapped-in set.
    Record(Arc<RuleSet>),
    /// Answer once everything asked before is recorded.
    Flush(tokio::sync::oneshot::Sender<()>),
}

impl Reloader {
    /// A reloader for the rule set in `rules`.
    /// Starts the task that records history; call it inside the runtime.
    pub fn new(dir: PathBuf, runtime: Arc<PluginRuntime>, rules: Arc<ArcSwap<RuleSet>>, store: Arc<Store>) -> Reloader {
        let (history, mut jobs) = tokio::sync::mpsc::unbounded_channel::<HistoryJob>();
        let (history_store, history_runtime) = (store.clone(), runtime.clone());
        tokio::spawn(async move {
            while let Some(job) = jobs.recv().await {
                match job {
                    HistoryJob::Record(set) => record_history(&history_store, &set, &history_runtime).await,
                    HistoryJob::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
        Reloader {
            dir,
            runtime,
            rules,
            store,
            lock: Mutex::new(()),
            history,
            reloads: tokio::sync::watch::Sender::new(0),
            mirror: std::sync::OnceLock::new(),
        }
    }

    /// A receiver that sees every later reload (swapped or not).
    pub fn swaps(&self) -> tokio::sync::watch::Receiver<u64> {
        self.reloads.subscribe()
    }

    /// Starts watching the rules directory. Call it before serving, so no
    /// change made after the first load can go unseen.
    pub fn watch(&self) -> notify::Result<Watch> {
        for sub in ["campaigns", "plugins"] {
            std::fs::create_dir_all(self.dir.join(sub)).map_err(notify::Error::io)?;
        }
        let (tx, events) = tokio::sync::mpsc::unbounded_channel();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<Event>| match event {
            Ok(event) if changes_content(&event.kind) => {
                let _ = tx.send(());
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("rules watch: {e}"),
        })?;
        watcher.watch(&self.dir, RecursiveMode::Recursive)?;
        tracing::info!(dir = %self.dir.display(), "watching rules for changes");
        Ok(Watch { _watcher: watcher, events })
    }

    /// Reloads on every (debounced) change until `stop`. Reloads once first:
    /// a file written between the first load and the watch is picked up.
    pub async fn run(self: Arc<Self>, mut watch: Watch, stop: CancellationToken) {
        self.reload_now().await;
        loop {
            tokio::select! {
                event = watch.events.recv() => if event.is_none() { return },
                _ = stop.cancelled() => return,
            }
            while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, watch.events.recv()).await {}
            self.reload_now().await;
        }
    }

    /// Reloads now.
    pub async fn reload_now(&self) {
        let _one_at_a_time = self.lock.lock().await;
        self.reload_locked().await
    }

    /// Validates a plugin version against every campaign that uses it, writes
    /// it into the rules directory and reloads; returns once it is serving.
    pub async fn install(&self, name: &str, bytes: Vec<u8>) -> Result<PluginHash, RulesError> {
        let one_at_a_time = self.lock.lock().await;
        let (dir, runtime, owned_name) = (self.dir.clone(), self.runtime.clone(), name.to_string());
        let hash = tokio::task::spawn_blocking(move || -> Result<PluginHash, RulesError> {
            let plugin = super::validate_plugin(&dir, &runtime, &owned_name, &bytes)?;
            let target = dir.join("plugins").join(format!("{owned_name}.wasm"));
            write_atomically(&target, &bytes).map_err(|source| RulesError::Io {
                what: "writing",
                path: target.clone(),
                source,
            })?;
            Ok(plugin.hash)
        })
        .await??;
        self.reload_locked().await;
        drop(one_at_a_time);
        self.publish_upload().await?;
        // The caller lists versions and rolls back next: they must be recorded.
        let (done, recorded) = tokio::sync::oneshot::channel();
        if self.history.send(HistoryJob::Flush(done)).is_ok() {
            let _ = recorded.await;
        }
        let rules = self.rules.load();
        match rules.plugins().get(name) {
            Some(p) if p.hash == hash => Ok(hash),
            _ => Err(RulesError::NotServing(
                rules
                    .errors()
                    .iter()
                    .find(|e| e.file.file_stem().is_some_and(|s| s == name))
                    .map(|e| e.error.clone())
                    .unwrap_or_else(|| "the new version did not take effect".into()),
            )),
        }
    }

    /// Validates a campaign file against the plugins in force (its plugin
    /// exists and accepts its config; its id is not another file's), writes
    /// it into the rules directory and reloads; returns once it is serving.
    pub async fn install_campaign(&self, name: &str, bytes: Vec<u8>) -> Result<LoadedCampaignView, RulesError> {
        let one_at_a_time = self.lock.lock().await;
        let (dir, runtime, rules) = (self.dir.clone(), self.runtime.clone(), self.rules.load_full());
        let file = format!("{name}.toml");
        let (target, view) = tokio::task::spawn_blocking(move || -> Result<_, RulesError> {
            let (def, revision) = LoadedCampaign::parse_bytes(&bytes)?;
            let target = dir.join("campaigns").join(&file);
            if let Some(other) = rules.campaigns().iter().find(|c| c.def.id == def.id && c.file != target) {
                return Err(RulesError::Campaign(format!(
                    "field `id`: `{}` is already used by {}",
                    def.id,
                    other.file.display()
                )));
            }
            let bound = LoadedCampaign::bind(&target, def, revision, rules.plugins(), &runtime)?;
            write_atomically(&target, &bytes).map_err(|source| RulesError::Io {
                what: "writing",
                path: target.clone(),
                source,
            })?;
            let view = LoadedCampaignView { id: bound.def.id.clone(), revision: bound.revision.clone() };
            Ok((target, view))
        })
        .await??;
        self.reload_locked().await;
        drop(one_at_a_time);
        self.publish_upload().await?;
        let rules = self.rules.load();
        match rules.campaigns().iter().find(|c| c.file == target) {
            Some(c) if c.revision == view.revision => Ok(view),
            _ => Err(RulesError::NotServing(
                rules
                    .errors()
                    .iter()
                    .find(|e| e.file == target)
                    .map(|e| e.error.clone())
                    .unwrap_or_else(|| "the new revision did not take effect".into()),
            )),
        }
    }

    /// Stores an upload for the other hosts before it is acknowledged.
    async fn publish_upload(&self) -> Result<(), RulesError> {
        if let Some(mirror) = self.mirror.get() {
            mirror.sync().await.map_err(|e| RulesError::Unpublished(e.to_string()))?;
            if !mirror.shared().await {
                return Err(RulesError::Unpublished(
                    "no host has published the rules to the database yet (set cluster.publish_rules on one host)"
                        .into(),
                ));
            }
        }
        Ok(())
    }

    async fn reload_locked(&self) {
        self.reloads.send_modify(|n| *n = n.wrapping_add(1));
        let started = Instant::now();
        let previous = self.rules.load_full();
        let (dir, runtime, old) = (self.dir.clone(), self.runtime.clone(), previous.clone());
        let next = match tokio::task::spawn_blocking(move || RuleSet::reload(&dir, &runtime, &old)).await {
            Ok(next) => next,
            Err(e) => {
                tracing::error!("rules reload task failed: {e}");
                metrics::counter!("drops_rules_reloads_total", "outcome" => "failed").increment(1);
                return;
            }
        };
        if next.fingerprint() == previous.fingerprint() {
            metrics::counter!("drops_rules_reloads_total", "outcome" => "unchanged").increment(1);
            return;
        }
        let errors = next.errors().len();
        let next = Arc::new(next);
        self.rules.store(next.clone());
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        metrics::counter!("drops_rules_reloads_total", "outcome" => "swapped").increment(1);
        metrics::histogram!("drops_rules_reload_seconds").record(ms / 1000.0);
        tracing::info!(errors, "rules reloaded in {ms:.1} ms");
        let _ = self.history.send(HistoryJob::Record(next));
    }
}

/// Records the plugin versions and campaign activations of a rule set.
/// History is for people; failing to write it never stops serving.
pub async fn record_history(store: &Store, rules: &RuleSet, runtime: &PluginRuntime) {
    let fingerprint = runtime.fingerprint();
    for plugin in rules.plugins().values() {
        if let Err(e) = store.record_plugin_version(&plugin.name, &plugin.hash.0, &plugin.bytes).await {
            tracing::warn!(plugin = %plugin.name, "plugin version not recorded: {e}");
        }
    }
    for c in rules.campaigns() {
        // The file as it is now, if it is still the revision in force (an
        // edit since is recorded when it loads).
        let text = std::fs::read(&c.file).ok().filter(|bytes| PluginHash::of(bytes).0 == c.revision);
        if let Some(text) = text.and_then(|bytes| String::from_utf8(bytes).ok()) {
            if let Err(e) = store.record_campaign_revision(&c.def.id, &c.revision, &text).await {
                tracing::warn!(campaign = %c.def.id, "campaign revision not recorded: {e}");
            }
        }
        let entry = RuleHistoryEntry {
            campaign_id: c.def.id.clone(),
            campaign_revision: c.revision.clone(),
            plugin_name: c.plugin.name.clone(),
            plugin_hash: c.plugin.hash.0.clone(),
            runtime: fingerprint.clone(),
            activated_at: 0,
        };
        if let Err(e) = store.record_activation(&entry).await {
            tracing::warn!(campaign = %c.def.id, "rule history not recorded: {e}");
        }
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
