//! Judging one event: count watch-time, ask each matching campaign's plugin,
//! turn its answer into grants or into a failure for the circuit breaker.
//! Pure apart from the plugin calls: the same events from the same state
//! give the same grants, which is what crash recovery and `replay` rely on.

use std::collections::HashMap;
use std::sync::Arc;

use super::entitlements::{self, Deciders, Lookups};
use super::state::State;
use crate::domain::{
    EntitlementDecision, Event, GameStateEvent, GrantOrigin, Heartbeat, InboxEvent, NewGrant, ViewerList,
    REASON_WATCHING,
};
use crate::plugins::{PluginError, PluginRuntime, WitGameState, WitGrant, WitHeartbeat, WitViewers};
use crate::rules::{LoadedCampaign, RuleSet};
use crate::store::Seen;

/// Grants this many or more are handed to [`Evaluation::flush`] as they
/// are made: a heartbeat that grants ten million viewers never holds them all.
const FLUSH_GRANTS: usize = 1 << 16;

/// Where grants go while a batch is still being evaluated: the engine's
/// grant writer, which stores them as evaluation goes on (and holds
/// evaluation back when it falls behind, so memory stays bounded).
pub type GrantFlush = tokio::sync::mpsc::Sender<Vec<NewGrant>>;

/// What evaluating a batch of events produced.
#[derive(Debug, Default)]
pub struct Evaluation {
    /// Grants made and not yet handed to `flush`.
    pub grants: Vec<NewGrant>,
    /// Where full pages of grants go as they are made (none: they stay in `grants`).
    pub flush: Option<GrantFlush>,
    pub viewer_minutes: u64,
    pub plugin_errors: u64,
    /// What became of EventSub entitlements.
    pub entitlements: Vec<EntitlementDecision>,
    /// The entitlements decided in this batch, as the store will know them.
    pub seen: HashMap<String, Seen>,
    /// Per Twitch user, the entitlements left open in this batch: (id, first inbox event).
    pub(super) open: HashMap<String, Vec<(String, i64)>>,
}

impl Evaluation {
    /// Hands the grants made so far to `flush` once there is a page of them.
    /// Waits while the grant writer is behind; if it is gone (the engine is
    /// stopping), the grants stay here.
    fn flush_full(&mut self) {
        if self.grants.len() < FLUSH_GRANTS {
            return;
        }
        if let Some(flush) = &self.flush {
            if let Err(unsent) = flush.blocking_send(std::mem::take(&mut self.grants)) {
                self.grants = unsent.0;
                self.flush = None;
            }
        }
    }

    /// Adds an entitlement's decision; later events of the batch see it.
    pub(super) fn decided(&mut self, decision: EntitlementDecision) {
        let seen = Seen {
            first_seq: decision.first_seq,
            decided_seq: decision.seq,
            awaiting: decision.decision.is_open(),
            account: decision.account.clone(),
        };
        if seen.awaiting {
            let e = &decision.entitlement;
            self.open.entry(e.user_id.clone()).or_default().push((e.entitlement_id.clone(), decision.first_seq));
        }
        self.seen.insert(decision.entitlement.entitlement_id.clone(), seen);
        self.entitlements.push(decision);
    }
}

/// Evaluates one event against the rule set, updating the engine's state.
/// `lookups` is what the store knew of the batch's viewers and entitlements.
pub fn evaluate(
    state: &mut State,
    rules: &RuleSet,
    runtime: &PluginRuntime,
    event: &InboxEvent,
    lookups: &Lookups,
    out: &mut Evaluation,
) {
    state.latest_arrival_ms = state.latest_arrival_ms.max(event.received_at_ms);
    match &event.event {
        Event::Heartbeat(hb) => {
            state.broadcasters.saw_heartbeat(event.seq, event.received_at_ms, hb);
            for campaign in rules.matching(hb) {
                if !state.breakers.is_paused(&campaign.def.id) {
                    evaluate_heartbeat(state, campaign, runtime, event.seq, hb, out);
                }
            }
        }
        Event::GameState(change) => {
            evaluate_game_state(state, rules, runtime, event.seq, event.received_at_ms, change, out)
        }
        Event::Entitlement(e) => {
            entitlements::arrived(state, &Deciders::All(rules), runtime, event.seq, e, lookups, out)
        }
        Event::Linked(linked) => {
            entitlements::linked(state, &Deciders::All(rules), runtime, event.seq, linked, lookups, out)
        }
    }
}

/// Evaluates one event for one campaign alone (a campaign catching up after
/// a pause). Game-state changes are not evaluated again: the state before
/// them is gone by then.
pub fn evaluate_for(
    state: &mut State,
    campaign: &LoadedCampaign,
    runtime: &PluginRuntime,
    event: &InboxEvent,
    lookups: &Lookups,
    out: &mut Evaluation,
) {
    let only = Deciders::Only(campaign);
    match &event.event {
        Event::Heartbeat(hb) if campaign.matches(hb) => {
            evaluate_heartbeat(state, campaign, runtime, event.seq, hb, out)
        }
        Event::Entitlement(e) => entitlements::arrived(state, &only, runtime, event.seq, e, lookups, out),
        Event::Linked(linked) => entitlements::linked(state, &only, runtime, event.seq, linked, lookups, out),
        Event::Heartbeat(_) | Event::GameState(_) => {}
    }
}

/// Evaluates one heartbeat for one campaign: the plugin decides, on the
/// viewers' progress as it would be, whether the minutes count and what to
/// grant; the outcome also feeds the campaign's circuit breaker.
fn evaluate_heartbeat(
    state: &mut State,
    campaign: &LoadedCampaign,
    runtime: &PluginRuntime,
    seq: i64,
    hb: &Heartbeat,
    out: &mut Evaluation,
) {
    let minute = hb.minute();
    let campaign_id = &campaign.def.id;
    let tentative = state.watch_time.tentative(campaign_id, hb.viewer_list.iter(), minute.0);
    let viewers = WitViewers::from_progress(tentative.iter().map(|(progress, counted)| (progress.minutes, counted)));
    let wit_hb = WitHeartbeat {
        broadcaster: hb.broadcaster.0.clone(),
        game: hb.game.0.clone(),
        minute: minute.0,
        viewers_reported: hb.viewers.min(u32::MAX as u64) as u32,
        state_changed: state.broadcasters.state_changed(&hb.broadcaster.0),
    };
    let span = tracing::debug_span!("evaluate", heartbeat = %hb.id, broadcaster = %hb.broadcaster, campaign = %campaign_id, plugin = %campaign.plugin.hash);
    let _enter = span.enter();
    let kv = state.campaign_kv(campaign_id);
    let verdict = runtime.on_heartbeat(&campaign.plugin, &campaign.wit, &wit_hb, &viewers, hb.viewer_list.clone(), kv);
    let grants = verdict.map(|verdict| {
        if verdict.count_minutes {
            out.viewer_minutes += state.watch_time.commit(campaign_id, &tentative);
        }
        verdict.grants
    });
    let made = Made { seq, broadcaster: &hb.broadcaster.0, minute: minute.0, viewers: &hb.viewer_list };
    settle(state, campaign, made, grants, out);
}

/// Evaluates a game-state message: applies it to each broadcaster's state
/// and, where it changed something, asks every campaign it concerns.
fn evaluate_game_state(
    state: &mut State,
    rules: &RuleSet,
    runtime: &PluginRuntime,
    seq: i64,
    arrived_ms: i64,
    event: &GameStateEvent,
    out: &mut Evaluation,
) {
    for publisher in &event.broadcasters {
        let broadcaster = &publisher.account_id;
        let minute = state.broadcasters.broadcast_minute(broadcaster, arrived_ms);
        let Some(change) = state.broadcasters.apply(publisher, event, minute) else { continue };
        let watching = state.broadcasters.watching_now(broadcaster, arrived_ms).unwrap_or_default();
        let wit_change = WitGameState {
            broadcaster: broadcaster.clone(),
            twitch_user_id: publisher.twitch_user_id.clone(),
            game_id: event.game_id.clone(),
            minute,
            previous: change.previous.to_string(),
            current: change.current.to_string(),
            changed: change.changed,
            authoritative: event.authoritative,
        };
        for campaign in rules.matching_game_state(event, broadcaster) {
            let campaign_id = &campaign.def.id;
            if state.breakers.is_paused(campaign_id) {
                continue;
            }
            let viewers = WitViewers::from_progress(
                watching.iter().map(|id| (state.watch_time.progress(campaign_id, id).minutes, false)),
            );
            let span = tracing::debug_span!("evaluate", game_state = %event.id, broadcaster = %broadcaster, campaign = %campaign_id, plugin = %campaign.plugin.hash);
            let _enter = span.enter();
            let kv = state.campaign_kv(campaign_id);
            let grants =
                runtime.on_game_state(&campaign.plugin, &campaign.wit, &wit_change, &viewers, watching.clone(), kv);
            let made = Made { seq, broadcaster, minute, viewers: &watching };
            settle(state, campaign, made, grants, out);
        }
    }
}

/// The event a call's grants come from.
struct Made<'a> {
    seq: i64,
    broadcaster: &'a str,
    minute: u32,
    viewers: &'a ViewerList,
}

/// Records a call's grants, or its failure, and tells the circuit breaker.
fn settle(
    state: &mut State,
    campaign: &LoadedCampaign,
    made: Made<'_>,
    grants: Result<Vec<WitGrant>, PluginError>,
    out: &mut Evaluation,
) {
    let campaign_id = &campaign.def.id;
    match grants {
        Ok(grants) => {
            state.breakers.success(campaign_id);
            let origin = Arc::new(GrantOrigin {
                campaign_id: campaign_id.clone(),
                broadcaster_id: made.broadcaster.to_string(),
                // Twitch's manifests name the game as VHS reports it.
                game: campaign.def.game.clone(),
                client_id: campaign.def.client_id.clone(),
                reason: REASON_WATCHING,
                campaign_revision: campaign.revision.clone(),
                plugin_hash: campaign.plugin.hash.0.clone(),
                inbox_seq: made.seq,
                event_minute: made.minute,
            });
            let rewards: Vec<Arc<str>> = campaign.wit.rewards.iter().map(|r| Arc::from(r.as_str())).collect();
            for g in grants {
                out.grants.push(new_grant(&origin, &rewards, &made, g));
                out.flush_full();
            }
        }
        Err(err) => fail(state, campaign, made.seq, err, out),
    }
}

/// Counts a failed plugin call against the campaign's circuit breaker.
pub(super) fn fail(state: &mut State, campaign: &LoadedCampaign, seq: i64, err: PluginError, out: &mut Evaluation) {
    let campaign_id = &campaign.def.id;
    out.plugin_errors += 1;
    tracing::warn!(campaign = %campaign_id, plugin = %campaign.plugin.name, "plugin call failed: {err}");
    let (hash, revision) = (&campaign.plugin.hash.0, &campaign.revision);
    // The reason is stored and shown: bounded, and without NUL.
    let reason = crate::domain::cut(err.to_string(), 2048);
    if state.breakers.failure(campaign_id, seq, hash, revision, reason) {
        metrics::counter!("drops_breaker_opened_total", "campaign" => campaign_id.clone()).increment(1);
        tracing::error!(campaign = %campaign_id, plugin = %campaign.plugin.name, plugin_hash = %hash,
            "circuit breaker open: campaign paused until a new plugin version or campaign revision; its events are kept");
    }
}

fn new_grant(origin: &Arc<GrantOrigin>, rewards: &[Arc<str>], made: &Made<'_>, g: WitGrant) -> NewGrant {
    // Both indexes were checked against the call's input by the runtime.
    NewGrant {
        origin: origin.clone(),
        reward_id: rewards.get(g.reward as usize).cloned().unwrap_or_else(|| Arc::from("")),
        user_id: made.viewers.get(g.viewer as usize).unwrap_or_default().into(),
        grant_key: g.key.unwrap_or_default().into(),
    }
}
