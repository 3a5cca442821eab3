//! Calling a plugin: a fresh, limited instance per evaluation from the pool,
//! so no state leaks between events and a trap poisons nothing. The answer's
//! grants are checked and the call's state writes kept only if it succeeds.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::{Store, Trap};

use super::error::PluginError;
use super::host::{CallBudget, CallState};
use super::limits::{self, CallLimits, HostBytesExceeded, ImportRefused, MemoryLimitExceeded, MAX_ERROR_BYTES};
use super::load::Plugin;
use super::runtime::{PluginRuntime, EPOCH_TICK};
use super::state::CampaignKv;
use super::wit::{Campaign, GameState, Grant, Heartbeat, HeartbeatVerdict, Rules, Viewer};
use crate::domain::{cut, ViewerList};

/// A hook's answer, whose grants the host checks.
trait Answer {
    fn grants(&self) -> &[Grant];

    /// Bytes the answer carries into the host beyond its fixed-size fields.
    fn bytes(&self) -> usize {
        self.grants().iter().map(|g| g.key.as_ref().map_or(0, String::len)).sum()
    }
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

impl PluginRuntime {
    /// Runs the plugin's config check for a campaign.
    pub fn validate_config(&self, plugin: &Plugin, campaign: &Campaign) -> Result<(), PluginError> {
        let mut store = self.store(plugin, &campaign.id, Arc::default(), CampaignKv::default(), 0);
        let rules = self.instantiate(plugin, &mut store)?;
        rules
            .drops_rules_rule()
            .call_validate_config(&mut store, campaign)
            .map_err(|e| self.classify(e, 0))?
            .map_err(|e| PluginError::Rejected(cut(e, MAX_ERROR_BYTES)))
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
            .and_then(|answer| {
                // The answer crossed into the host too: its error string or grant keys count.
                let bytes = match &answer {
                    Ok(answer) => answer.bytes(),
                    Err(message) => message.len(),
                };
                let budget = store.data().host_budget;
                store.data_mut().charge(bytes).map_err(|_| PluginError::HostBudget(budget))?;
                answer.map_err(|e| PluginError::Rejected(cut(e, MAX_ERROR_BYTES)))
            })
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

    fn store(
        &self,
        plugin: &Plugin,
        campaign: &str,
        viewers: Arc<ViewerList>,
        state: CampaignKv,
        viewer_count: usize,
    ) -> Store<CallState> {
        let limits = CallLimits::new(self.settings.max_memory_bytes);
        let budget = CallBudget {
            host_bytes: self.host_bytes_budget(viewer_count),
            campaign_state_bytes: usize::try_from(self.settings.max_campaign_state_bytes).unwrap_or(usize::MAX),
        };
        let lifted_at_most = usize::try_from(budget.host_bytes).unwrap_or(usize::MAX);
        let call = CallState::new(limits, budget, &plugin.name, campaign, viewers, state);
        let mut store = Store::new(&self.engine, call);
        store.limiter(|s| &mut s.limits);
        // wasmtime copies strings and lists out of the guest before our
        // budget can count them (grant keys aliasing one big string); its own
        // copy limit, set to the same budget, bounds what is lifted.
        store.set_hostcall_fuel(lifted_at_most);
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
        if let Some(oom) = err.chain().find_map(|e| e.downcast_ref::<MemoryLimitExceeded>()) {
            return PluginError::OutOfMemory(oom.to_string());
        }
        if let Some(over) = err.chain().find_map(|e| e.downcast_ref::<HostBytesExceeded>()) {
            return PluginError::HostBudget(over.budget);
        }
        if let Some(refused) = err.chain().find_map(|e| e.downcast_ref::<ImportRefused>()) {
            return PluginError::BadOutput(refused.0.clone());
        }
        match err.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => PluginError::CpuBudget(self.fuel_budget(viewers)),
            Some(Trap::Interrupt) => PluginError::Timeout(self.deadline_ms(viewers)),
            Some(trap) => PluginError::Trap(trap.to_string()),
            None => PluginError::Trap(cut(format!("{err:#}"), MAX_ERROR_BYTES)),
        }
    }
}
