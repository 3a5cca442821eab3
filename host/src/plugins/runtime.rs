//! The wasmtime side of plugins: turning a `.wasm` into a checked, compiled
//! component, and calling it in a fresh, limited instance per evaluation.
//!
//! Plugins are built for `wasm32-unknown-unknown` and componentized here
//! (`wit-component`), so they import nothing but the rules world: no WASI, so
//! no files, network, environment or clock by construction. A fresh instance
//! per call means no state leaks between events and a trap poisons nothing.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimits, Trap};

use super::bindings::{
    drops::rules::host, Campaign, GameState, Grant, Heartbeat, HeartbeatVerdict, Level, Rules, RulesPre, Viewer,
};
use super::limits::{self, MAX_LOG_BYTES, MAX_LOG_LINES};
use super::{HOST_IMPORT, INTERFACE_VERSION, RULE_EXPORT};
use crate::config::PluginSettings;
use crate::engine::campaign_state::{CampaignKv, Overlay};
use crate::ingest::heartbeat::ViewerList;

/// Instances alive at once: the engine's call, reload validations, `plugin check`.
const POOL_SLOTS: u32 = 64;

/// How often the epoch ticks; call deadlines are counted in ticks.
const EPOCH_TICK: Duration = Duration::from_millis(1);

/// SHA-256 of a plugin's bytes, in hex: the identity of a plugin version.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PluginHash(pub String);

impl PluginHash {
    /// Hashes plugin bytes.
    pub fn of(bytes: &[u8]) -> PluginHash {
        PluginHash(hex::encode(Sha256::digest(bytes)))
    }
}

impl fmt::Display for PluginHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a plugin could not be loaded or a call failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PluginError {
    #[error("not a WebAssembly module or component")]
    NotWasm,
    #[error("could not make a component of the module (was it built with drops-plugin-sdk?): {0}")]
    Componentize(String),
    #[error("imports `{0}`, which the host does not provide (plugins may import only {HOST_IMPORT})")]
    ForbiddenImport(String),
    #[error("built for interface drops:rules@{found}, but this host supports drops:rules@{supported}")]
    WrongVersion { found: String, supported: &'static str },
    #[error("does not export {RULE_EXPORT}")]
    MissingExport,
    #[error("does not compile: {0}")]
    Compile(String),
    #[error("used up its CPU budget of {0} fuel")]
    CpuBudget(u64),
    #[error("ran past its wall-clock deadline of {0} ms")]
    Timeout(u64),
    #[error("exceeded its memory limit: {0}")]
    OutOfMemory(String),
    #[error("trapped: {0}")]
    Trap(String),
    #[error("rejected the input: {0}")]
    Rejected(String),
    #[error("returned a bad answer: {0}")]
    BadOutput(String),
}

/// A loaded, validated plugin version.
pub struct Plugin {
    /// File stem (`watch-time-tiers`).
    pub name: String,
    /// SHA-256 of the bytes it was loaded from.
    pub hash: PluginHash,
    /// The bytes, kept for the version history (plugins are tens of KB).
    pub bytes: Arc<[u8]>,
    pre: RulesPre<CallState>,
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin").field("name", &self.name).field("hash", &self.hash).finish()
    }
}

/// What one call's store holds.
pub struct CallState {
    limits: StoreLimits,
    viewers: Arc<ViewerList>,
    /// The campaign's state, moved in for the call and back out after it.
    state: CampaignKv,
    /// The call's writes, applied to `state` only if the call succeeds.
    overlay: Overlay,
    plugin: Arc<str>,
    campaign: String,
    log_lines: u32,
}

impl host::Host for CallState {
    fn log(&mut self, level: Level, message: String) {
        self.log_lines += 1;
        if self.log_lines > MAX_LOG_LINES {
            return;
        }
        let mut message = message;
        if message.len() > MAX_LOG_BYTES {
            let mut cut = MAX_LOG_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let (plugin, campaign) = (&*self.plugin, &*self.campaign);
        match level {
            Level::Debug => tracing::debug!(plugin, campaign, "{message}"),
            Level::Info => tracing::info!(plugin, campaign, "{message}"),
            Level::Warn => tracing::warn!(plugin, campaign, "{message}"),
            Level::Error => tracing::error!(plugin, campaign, "{message}"),
        }
    }

    fn viewer_id(&mut self, handle: u32) -> Option<String> {
        self.viewers.get(handle as usize).map(String::from)
    }

    fn state_get(&mut self, key: String) -> Option<Vec<u8>> {
        self.overlay.get(&self.state, &key)
    }

    fn state_set(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        self.overlay.set(key, value)
    }

    fn state_delete(&mut self, key: String) {
        self.overlay.delete(key)
    }
}

/// A hook's answer, whose grants the host checks.
trait Answer {
    fn grants(&self) -> &[Grant];
}

impl Answer for HeartbeatVerdict {
    fn grants(&self) -> &[Grant] {
        &self.grants
    }
}

impl Answer for Vec<Grant> {
    fn grants(&self) -> &[Grant] {
        self
    }
}

/// Compiles and runs plugins; one per host.
pub struct PluginRuntime {
    engine: Engine,
    linker: Linker<CallState>,
    settings: PluginSettings,
    ticker_stop: Arc<AtomicBool>,
}

impl PluginRuntime {
    /// Sets up the engine and starts the epoch ticker that enforces deadlines.
    pub fn new(settings: PluginSettings) -> Result<PluginRuntime, PluginError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.consume_fuel(true);
        config.max_wasm_stack(512 << 10);
        // A fresh instance per call is affordable only from a pool: slots are
        // reused and memory is reset copy-on-write instead of mapped anew.
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(POOL_SLOTS)
            .total_core_instances(POOL_SLOTS)
            .total_memories(POOL_SLOTS)
            .total_tables(POOL_SLOTS)
            .max_memory_size(usize::try_from(settings.max_memory_bytes).unwrap_or(usize::MAX));
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| PluginError::Compile(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        Rules::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |s| s)
            .map_err(|e| PluginError::Compile(e.to_string()))?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        let (weak, stop) = (engine.weak(), ticker_stop.clone());
        std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(|e| PluginError::Compile(format!("epoch thread: {e}")))?;
        Ok(PluginRuntime { engine, linker, settings, ticker_stop })
    }

    /// Loads plugin bytes (a core module built with the SDK, or a component),
    /// checks its imports and exports, compiles and pre-instantiates it.
    pub fn load(&self, name: &str, bytes: &[u8]) -> Result<Plugin, PluginError> {
        let hash = PluginHash::of(bytes);
        let component_bytes = if wasmparser::Parser::is_component(bytes) {
            bytes.to_vec()
        } else if wasmparser::Parser::is_core_wasm(bytes) {
            check_core_imports(bytes)?;
            wit_component::ComponentEncoder::default()
                .module(bytes)
                .and_then(|e| e.validate(true).encode())
                .map_err(|e| PluginError::Componentize(format!("{e:#}")))?
        } else {
            return Err(PluginError::NotWasm);
        };
        let component =
            Component::new(&self.engine, &component_bytes).map_err(|e| PluginError::Compile(format!("{e:#}")))?;
        check_component_interface(&self.engine, &component)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .and_then(RulesPre::new)
            .map_err(|e| PluginError::Compile(format!("{e:#}")))?;
        Ok(Plugin { name: name.to_string(), hash, bytes: Arc::from(bytes), pre })
    }

    /// Runs the plugin's config check for a campaign.
    pub fn validate_config(&self, plugin: &Plugin, campaign: &Campaign) -> Result<(), PluginError> {
        let mut store = self.store(plugin, &campaign.id, Arc::default(), CampaignKv::default(), 0);
        let rules = self.instantiate(plugin, &mut store)?;
        rules
            .drops_rules_rule()
            .call_validate_config(&mut store, campaign)
            .map_err(|e| self.classify(e, 0))?
            .map_err(PluginError::Rejected)
    }

    /// Decides one heartbeat for a campaign, in a fresh instance. The
    /// campaign's state changes only if the call succeeds.
    pub fn on_heartbeat(
        &self,
        plugin: &Plugin,
        campaign: &Campaign,
        heartbeat: &Heartbeat,
        viewers: &[Viewer],
        ids: Arc<ViewerList>,
        state: &mut CampaignKv,
    ) -> Result<HeartbeatVerdict, PluginError> {
        self.call(plugin, campaign, viewers.len(), ids, state, |rules, store| {
            rules.drops_rules_rule().call_on_heartbeat(store, campaign, heartbeat, viewers)
        })
    }

    /// Decides the grants for a game-state change and campaign, in a fresh instance.
    pub fn on_game_state(
        &self,
        plugin: &Plugin,
        campaign: &Campaign,
        change: &GameState,
        viewers: &[Viewer],
        ids: Arc<ViewerList>,
        state: &mut CampaignKv,
    ) -> Result<Vec<Grant>, PluginError> {
        self.call(plugin, campaign, viewers.len(), ids, state, |rules, store| {
            rules.drops_rules_rule().call_on_game_state(store, campaign, change, viewers)
        })
    }

    /// One limited call in a fresh instance: checks the grants in its answer
    /// and keeps its state writes only if it succeeds.
    fn call<T: Answer>(
        &self,
        plugin: &Plugin,
        campaign: &Campaign,
        viewer_count: usize,
        ids: Arc<ViewerList>,
        state: &mut CampaignKv,
        invoke: impl FnOnce(&Rules, &mut Store<CallState>) -> wasmtime::Result<Result<T, String>>,
    ) -> Result<T, PluginError> {
        let started = Instant::now();
        let mut store = self.store(plugin, &campaign.id, ids, std::mem::take(state), viewer_count);
        let result = self
            .instantiate(plugin, &mut store)
            .and_then(|rules| invoke(&rules, &mut store).map_err(|e| self.classify(e, viewer_count)))
            .and_then(|r| r.map_err(PluginError::Rejected))
            .and_then(|answer| {
                limits::check_grants(answer.grants(), viewer_count, campaign.rewards.len())
                    .map_err(PluginError::BadOutput)?;
                Ok(answer)
            });
        let data = store.into_data();
        *state = data.state;
        if result.is_ok() {
            state.apply(data.overlay);
        }
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::counter!("drops_plugin_calls_total", "plugin" => plugin.name.clone(), "outcome" => outcome)
            .increment(1);
        metrics::histogram!("drops_plugin_eval_seconds", "plugin" => plugin.name.clone())
            .record(started.elapsed().as_secs_f64());
        result
    }

    /// The fuel budget of a call with `viewers` viewers.
    pub fn fuel_budget(&self, viewers: usize) -> u64 {
        let allowance = (viewers as u64).saturating_mul(self.settings.max_call_fuel_per_viewer);
        self.settings.max_call_fuel.max(1).saturating_add(allowance)
    }

    /// The wall-clock deadline of a call with `viewers` viewers, in milliseconds.
    pub fn deadline_ms(&self, viewers: usize) -> u64 {
        let allowance = (viewers as u64).saturating_mul(self.settings.max_call_ns_per_viewer) / 1_000_000;
        self.settings.max_call_ms.max(1).saturating_add(allowance)
    }

    fn store(
        &self,
        plugin: &Plugin,
        campaign: &str,
        viewers: Arc<ViewerList>,
        state: CampaignKv,
        viewer_count: usize,
    ) -> Store<CallState> {
        let state = CallState {
            limits: limits::store_limits(self.settings.max_memory_bytes),
            viewers,
            state,
            overlay: Overlay::default(),
            plugin: Arc::from(plugin.name.as_str()),
            campaign: campaign.to_string(),
            log_lines: 0,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        // Fuel is the CPU limit that decides; the epoch deadline only backs it
        // up in wall time. Without a deadline set before the first call, the
        // store traps at once.
        let _ = store.set_fuel(self.fuel_budget(viewer_count));
        store.set_epoch_deadline(self.deadline_ms(viewer_count) / EPOCH_TICK.as_millis() as u64 + 1);
        store.epoch_deadline_trap();
        store
    }

    fn instantiate(&self, plugin: &Plugin, store: &mut Store<CallState>) -> Result<Rules, PluginError> {
        plugin.pre.instantiate(store).map_err(|e| self.classify(e, 0))
    }

    /// Turns a wasmtime error into what went wrong in the plugin's terms.
    fn classify(&self, err: wasmtime::Error, viewers: usize) -> PluginError {
        match err.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => PluginError::CpuBudget(self.fuel_budget(viewers)),
            Some(Trap::Interrupt) => PluginError::Timeout(self.deadline_ms(viewers)),
            Some(trap) => PluginError::Trap(trap.to_string()),
            // With trap_on_grow_failure the limiter's refusal is a plain error, not a Trap.
            None if format!("{err:#}").contains("memory") => PluginError::OutOfMemory(format!("{err:#}")),
            None => PluginError::Trap(format!("{err:#}")),
        }
    }
}

impl Drop for PluginRuntime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// Refuses a core module that imports anything outside the rules world (WASI
/// included), naming the import, before wit-component gives a vaguer error.
fn check_core_imports(bytes: &[u8]) -> Result<(), PluginError> {
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| PluginError::Compile(e.to_string()))?;
        if let wasmparser::Payload::ImportSection(reader) = payload {
            for import in reader.into_imports() {
                let import = import.map_err(|e| PluginError::Compile(e.to_string()))?;
                let module = import.module;
                if module != HOST_IMPORT && !module.starts_with("[export]") && module != "$root" {
                    return Err(check_version(module)
                        .unwrap_or_else(|| PluginError::ForbiddenImport(format!("{module}#{}", import.name))));
                }
            }
        }
    }
    Ok(())
}

/// A `drops:rules/...@X` name with another version X.
fn check_version(name: &str) -> Option<PluginError> {
    let rest = name.strip_prefix("drops:rules/")?;
    let (_, version) = rest.split_once('@')?;
    (version != INTERFACE_VERSION)
        .then(|| PluginError::WrongVersion { found: version.to_string(), supported: INTERFACE_VERSION })
}

fn check_component_interface(engine: &Engine, component: &Component) -> Result<(), PluginError> {
    let ty = component.component_type();
    for (name, _) in ty.imports(engine) {
        if name != HOST_IMPORT {
            return Err(check_version(name).unwrap_or_else(|| PluginError::ForbiddenImport(name.to_string())));
        }
    }
    let mut found = None;
    for (name, _) in ty.exports(engine) {
        if name == RULE_EXPORT {
            return Ok(());
        }
        if let Some(err) = check_version(name) {
            found = Some(err);
        }
    }
    Err(found.unwrap_or(PluginError::MissingExport))
}
