//! The wasmtime engine every plugin runs in: one per host, configured for
//! fuel, an epoch backstop and a pool of instance slots.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::cache::ArtifactCache;
use super::error::PluginError;
use super::host::CallState;
use super::wit::Rules;
use crate::config::PluginSettings;

/// Instances alive at once: the engine's call, reload validations, `plugin check`.
const POOL_SLOTS: u32 = 64;

/// The wasmtime this host runs plugins with (a test checks it against
/// Cargo.lock). Fuel counts may change between versions, so it is recorded
/// with rule history and recordings, and `replay` says when it differs.
pub const WASMTIME_VERSION: &str = "48.0.8";

/// Bytes of each pool slot's linear memory reset in place rather than
/// returned to the kernel after a call.
const KEEP_RESIDENT_BYTES: usize = 4 << 20;

/// How often the epoch ticks; call deadlines are counted in ticks.
pub(super) const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Compiles and runs plugins; one per host.
pub struct PluginRuntime {
    pub(super) engine: Engine,
    pub(super) linker: Linker<CallState>,
    pub(super) settings: PluginSettings,
    /// Where compiled plugins are kept, if anywhere.
    pub(super) cache: Option<ArtifactCache>,
    ticker_stop: Arc<AtomicBool>,
    /// What the calls made so far did, when traced (`plugin run`).
    pub(super) traces: Option<std::sync::Mutex<Vec<CallTrace>>>,
}

/// What one traced call did: its log lines, the fuel it burnt and its time.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CallTrace {
    pub logs: Vec<String>,
    pub fuel_used: u64,
    pub fuel_budget: u64,
    pub micros: u64,
}

impl PluginRuntime {
    /// Sets up the engine and starts the epoch ticker that enforces deadlines.
    pub fn new(settings: PluginSettings) -> Result<PluginRuntime, PluginError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.consume_fuel(true);
        config.max_wasm_stack(512 << 10);
        // One call at a time per store: the component model's concurrency
        // machinery would only add set-up to every instantiation.
        config.concurrency_support(false);
        // A fresh instance per call is affordable only from a pool: slots are
        // reused and memory is reset copy-on-write instead of mapped anew.
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(POOL_SLOTS)
            .total_core_instances(POOL_SLOTS)
            .total_memories(POOL_SLOTS)
            .total_tables(POOL_SLOTS)
            .max_memory_size(usize::try_from(settings.max_memory_bytes).unwrap_or(usize::MAX))
            // A call dirties a few pages (stack, heap, the lifted lists).
            // Resetting only those (found with PAGEMAP_SCAN, Linux 6.7+) and
            // keeping them mapped spares every call the madvise and the page
            // faults that would bring them back; see docs/BENCHMARKS.md.
            .pagemap_scan(wasmtime::Enabled::Auto)
            .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
            .table_keep_resident(64 << 10);
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
        Ok(PluginRuntime { engine, linker, settings, cache: None, ticker_stop, traces: None })
    }

    /// Keeps every call's log lines, fuel and time, for [`PluginRuntime::take_traces`].
    pub fn traced(mut self) -> PluginRuntime {
        self.traces = Some(std::sync::Mutex::new(Vec::new()));
        self
    }

    /// The traces of the calls made since the last take.
    pub fn take_traces(&self) -> Vec<CallTrace> {
        self.traces
            .as_ref()
            .map(|t| std::mem::take(&mut *t.lock().unwrap_or_else(|e| e.into_inner())))
            .unwrap_or_default()
    }

    /// Keeps compiled plugins in `dir`, so none is compiled twice.
    pub fn with_cache(mut self, dir: &std::path::Path) -> PluginRuntime {
        self.cache = Some(ArtifactCache::new(dir, &self.engine));
        self
    }

    /// What a verdict can depend on besides the plugin, its config and the
    /// events: the wasmtime version (fuel counts) and the limits.
    pub fn fingerprint(&self) -> String {
        let p = &self.settings;
        format!(
            "wasmtime {WASMTIME_VERSION}; fuel {}+{}/viewer; memory {} B; host bytes {}+{}/viewer; state {} B; {} viewers/call",
            p.max_call_fuel,
            p.max_call_fuel_per_viewer,
            p.max_memory_bytes,
            p.max_call_host_bytes,
            p.max_call_host_bytes_per_viewer,
            p.max_campaign_state_bytes,
            self.viewers_per_call()
        )
    }

    /// The fuel budget of a call with `viewers` viewers.
    pub fn fuel_budget(&self, viewers: usize) -> u64 {
        let allowance = (viewers as u64).saturating_mul(self.settings.max_call_fuel_per_viewer);
        self.settings.max_call_fuel.max(1).saturating_add(allowance)
    }

    /// The bytes a call with `viewers` viewers may send the host.
    pub fn host_bytes_budget(&self, viewers: usize) -> u64 {
        let allowance = (viewers as u64).saturating_mul(self.settings.max_call_host_bytes_per_viewer);
        self.settings.max_call_host_bytes.max(1).saturating_add(allowance)
    }

    /// The wall-clock deadline of a call with `viewers` viewers, in milliseconds.
    pub fn deadline_ms(&self, viewers: usize) -> u64 {
        let allowance = (viewers as u64).saturating_mul(self.settings.max_call_ns_per_viewer) / 1_000_000;
        self.settings.max_call_ms.max(1).saturating_add(allowance)
    }
}

impl Drop for PluginRuntime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recorded_wasmtime_version_is_the_one_built_in() {
        let lock = include_str!("../../../Cargo.lock");
        let entry = format!("name = \"wasmtime\"\nversion = \"{WASMTIME_VERSION}\"");
        assert!(lock.contains(&entry), "Cargo.lock has another wasmtime than WASMTIME_VERSION");
    }

    #[test]
    fn the_fingerprint_names_the_version_and_the_limits() {
        let runtime = PluginRuntime::new(PluginSettings { max_call_fuel: 1234, ..Default::default() }).unwrap();
        let fingerprint = runtime.fingerprint();
        assert!(fingerprint.starts_with(&format!("wasmtime {WASMTIME_VERSION}; fuel 1234+")), "{fingerprint}");
    }
}
