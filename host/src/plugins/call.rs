//! Calling a plugin: a fresh, limited instance per evaluation from the pool,
//! so no state leaks between events and a trap poisons nothing. The answer's
//! grants are checked and the call's state writes kept only if it succeeds.

use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use wasmtime::{Store, Trap};

use super::error::PluginError;
use super::host::{CallBudget, CallState};
use super::limits::{self, CallLimits, HostBytesExceeded, ImportRefused, MemoryLimitExceeded, MAX_ERROR_BYTES};
use super::load::Plugin;
use super::runtime::{PluginRuntime, EPOCH_TICK};
use super::state::CampaignKv;
use super::wit::{
    Campaign, Entitlement, EntitlementVerdict, GameState, Grant, Heartbeat, HeartbeatVerdict, Rules, Viewers,
};
use crate::domain::{cut, ViewerList};

/// A hook's answer, whose grants the host checks.
trait Answer {
    fn grants(&self) -> &[Grant];

    fn grants_mut(&mut self) -> &mut [Grant];

    /// Whether two parts of one decision say the same beyond their grants.
    fn agrees_with(&self, _other: &Self) -> bool {
        true
    }

    /// Makes the handles of a part's grants count from the start of the event.
    fn shift_handles(&mut self, first: u32) {
        for grant in self.grants_mut() {
            grant.viewer += first;
        }
    }

    /// Checks the answer against the call's input and the host's limits.
    fn check(&self, viewers: usize, rewards: usize) -> Result<(), String> {
        limits::check_grants(self.grants(), viewers, rewards)
    }

    /// Bytes the answer carries into the host beyond its fixed-size fields.
    fn bytes(&self) -> usize {
        self.grants().iter().map(|g| g.key.as_ref().map_or(0, String::len)).sum()
    }
}

impl Answer for HeartbeatVerdict {
    fn grants(&self) -> &[Grant] {
        &self.grants
    }

    fn grants_mut(&mut self) -> &mut [Grant] {
        &mut self.grants
    }

    fn agrees_with(&self, other: &Self) -> bool {
        self.count_minutes == other.count_minutes
    }
}

impl Answer for Vec<Grant> {
    fn grants(&self) -> &[Grant] {
        self
    }

    fn grants_mut(&mut self) -> &mut [Grant] {
        self
    }
}

impl Answer for EntitlementVerdict {
    fn grants(&self) -> &[Grant] {
        &[]
    }

    fn grants_mut(&mut self) -> &mut [Grant] {
        &mut []
    }

    fn check(&self, _viewers: usize, _rewards: usize) -> Result<(), String> {
        match self {
            EntitlementVerdict::Deliver(items) => limits::check_items(items),
            EntitlementVerdict::Refuse(_) => Ok(()),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            EntitlementVerdict::Deliver(items) => items.iter().map(|i| i.id.len() + 4).sum(),
            EntitlementVerdict::Refuse(reason) => reason.len(),
        }
    }
}

impl PluginRuntime {
    /// Runs the plugin's config check for a campaign.
    pub fn validate_config(&self, plugin: &Plugin, campaign: &Campaign) -> Result<(), PluginError> {
        let mut store = self.store(plugin, &campaign.id, (Arc::default(), 0..0), CampaignKv::default());
        let rules = self.instantiate(plugin, &mut store)?;
        rules
            .drops_rules_rule()
            .call_validate_config(&mut store, campaign)
            .map_err(|e| self.classify(e, 0))?
            .map_err(|e| PluginError::Rejected(cut(e, MAX_ERROR_BYTES)))
    }

    /// Decides one heartbeat for a campaign, in a fresh instance per call of
    /// at most `plugins.max_viewers_per_call` viewers. The campaign's state
    /// changes only if every call succeeds.
    pub fn on_heartbeat(
        &self,
        plugin: &Plugin,
        campaign: &Campaign,
        heartbeat: &Heartbeat,
        viewers: &Viewers,
        ids: Arc<ViewerList>,
        state: &mut CampaignKv,
    ) -> Result<HeartbeatVerdict, PluginError> {
        let mut parts = self.in_parts(
            viewers,
            ids,
            state,
            |part, store, rules| rules.drops_rules_rule().call_on_heartbeat(store, campaign, heartbeat, part),
            plugin,
            campaign,
        )?;
        // The parts agree on count-minutes (checked in `in_parts`): the first speaks for all.
        let mut verdict = parts.next().unwrap_or(HeartbeatVerdict { count_minutes: true, grants: Vec::new() });
        for part in parts {
            verdict.grants.extend(part.grants);
        }
        Ok(verdict)
    }

    /// Decides the grants for a game-state change and campaign, in a fresh
    /// instance per call of at most `plugins.max_viewers_per_call` viewers.
    pub fn on_game_state(
        &self,
        plugin: &Plugin,
        campaign: &Campaign,
        change: &GameState,
        viewers: &Viewers,
        ids: Arc<ViewerList>,
        state: &mut CampaignKv,
    ) -> Result<Vec<Grant>, PluginError> {
        let parts = self.in_parts(
            viewers,
            ids,
            state,
            |part, store, rules| rules.drops_rules_rule().call_on_game_state(store, campaign, change, part),
            plugin,
            campaign,
        )?;
        Ok(parts.flatten().collect())
    }

    /// Decides the items for one entitlement of a campaign, in a fresh
    /// instance; the items are checked against the host's limits.
    pub fn on_entitlement(
        &self,
        plugin: &Plugin,
        campaign: &Campaign,
        entitlement: &Entitlement,
        state: &mut CampaignKv,
    ) -> Result<EntitlementVerdict, PluginError> {
        self.call(plugin, campaign, (Arc::default(), 0..0), state, |rules, store| {
            rules.drops_rules_rule().call_on_entitlement(store, campaign, entitlement)
        })
    }

    /// Calls `invoke` once per part of at most `max_viewers_per_call`
    /// viewers, with handles counted from 0 in each part, and returns the
    /// answers with handles counted from the start of the event again.
    /// State writes are kept only if every call succeeds.
    fn in_parts<T: Answer>(
        &self,
        viewers: &Viewers,
        ids: Arc<ViewerList>,
        state: &mut CampaignKv,
        invoke: impl Fn(&Viewers, &mut Store<CallState>, &Rules) -> wasmtime::Result<Result<T, String>>,
        plugin: &Plugin,
        campaign: &Campaign,
    ) -> Result<std::vec::IntoIter<T>, PluginError> {
        let total = viewers.minutes.len();
        let per_call = self.viewers_per_call();
        if total <= per_call {
            let answer =
                self.call(plugin, campaign, (ids, 0..total), state, |rules, store| invoke(viewers, store, rules))?;
            return Ok(vec![answer].into_iter());
        }
        let mut working = state.clone();
        let mut answers = Vec::with_capacity(total.div_ceil(per_call));
        for first in (0..total).step_by(per_call) {
            let range = first..(first + per_call).min(total);
            let part = Viewers {
                minutes: viewers.minutes[range.clone()].to_vec(),
                counted: viewers.counted.get(first / 32..range.end.div_ceil(32)).unwrap_or_default().to_vec(),
            };
            let mut answer = self.call(plugin, campaign, (ids.clone(), range), &mut working, |rules, store| {
                invoke(&part, store, rules)
            })?;
            if answers.first().is_some_and(|first: &T| !first.agrees_with(&answer)) {
                // A failed decision: none of the parts' state writes are kept.
                return Err(PluginError::BadOutput("the calls for one heartbeat disagreed on count-minutes".into()));
            }
            answer.shift_handles(first as u32);
            answers.push(answer);
        }
        *state = working;
        Ok(answers.into_iter())
    }

    /// Viewers in one call: the setting, rounded down to whole words of the `counted` bitset.
    pub(super) fn viewers_per_call(&self) -> usize {
        let setting = usize::try_from(self.settings.max_viewers_per_call).unwrap_or(usize::MAX);
        (setting / 32 * 32).max(32)
    }

    /// One limited call in a fresh instance: checks the grants in its answer
    /// and keeps its state writes only if it succeeds.
    fn call<T: Answer>(
        &self,
        plugin: &Plugin,
        campaign: &Campaign,
        viewers: (Arc<ViewerList>, Range<usize>),
        state: &mut CampaignKv,
        invoke: impl FnOnce(&Rules, &mut Store<CallState>) -> wasmtime::Result<Result<T, String>>,
    ) -> Result<T, PluginError> {
        let started = Instant::now();
        let viewer_count = viewers.1.len();
        let mut store = self.store(plugin, &campaign.id, viewers, std::mem::take(state));
        if self.traces.is_some() {
            store.data_mut().logs = Some(Vec::new());
        }
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
                answer.check(viewer_count, campaign.rewards.len()).map_err(PluginError::BadOutput)?;
                Ok(answer)
            });
        let fuel_budget = self.fuel_budget(viewer_count);
        let fuel = fuel_budget.saturating_sub(store.get_fuel().unwrap_or(0));
        if let Some(traces) = &self.traces {
            let trace = super::runtime::CallTrace {
                logs: store.data_mut().logs.take().unwrap_or_default(),
                fuel_used: fuel,
                fuel_budget,
                micros: started.elapsed().as_micros() as u64,
            };
            traces.lock().unwrap_or_else(|e| e.into_inner()).push(trace);
        }
        let data = store.into_data();
        *state = data.state;
        if result.is_ok() {
            state.apply(data.overlay);
        }
        plugin.metrics.record(result.as_ref().map(|_| ()), started.elapsed(), fuel);
        result
    }

    fn store(
        &self,
        plugin: &Plugin,
        campaign: &str,
        viewers: (Arc<ViewerList>, Range<usize>),
        state: CampaignKv,
    ) -> Store<CallState> {
        let viewer_count = viewers.1.len();
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
