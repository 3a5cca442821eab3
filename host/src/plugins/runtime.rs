//! The wasmtime engine every plugin runs in: one per host, configured for
//! fuel, an epoch backstop and a pool of instance slots.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::error::PluginError;
use super::host::CallState;
use super::wit::Rules;
use crate::config::PluginSettings;

/// Instances alive at once: the engine's call, reload validations, `plugin check`.
const POOL_SLOTS: u32 = 64;

/// How often the epoch ticks; call deadlines are counted in ticks.
pub(super) const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Compiles and runs plugins; one per host.
pub struct PluginRuntime {
    pub(super) engine: Engine,
    pub(super) linker: Linker<CallState>,
    pub(super) settings: PluginSettings,
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
