//! Deciding Twitch Drops entitlements (EventSub): the campaign with the
//! entitlement's campaign id asks its rule's `on-entitlement` hook which
//! in-game items the viewer's linked game account gets. A viewer with no
//! link yet is kept `awaiting_link`, and decided when a link event
//! ([`Linked`]) arrives, however much later.
//!
//! Each entitlement is decided once. The store says what it already knows of
//! each entitlement (its first and deciding inbox events): an entitlement
//! met again after it was decided is a duplicate and skipped, while the
//! replay of its own deciding event (after a crash, from the checkpoint
//! before it) calls the rule again, so the rules' state (daily caps, items
//! received) is rebuilt, and the stored decision does not change. The
//! rebuilt state matches the first only as far as the rule set and the
//! rule's answer are the same on replay: a campaign revised in between, or
//! a call that failed on its wall-clock deadline one time and not the
//! other, can make the rules' state differ from the stored decisions.
//!
//! Open entitlements (awaiting a link, failed, or unmatched) are decided
//! again by link events: after `PUT /v1/links`, after the engine stores one
//! whose viewer was linked meanwhile, and by the periodic sweep
//! ([`super::link_sweep`]).

use std::collections::HashMap;

use super::evaluate::{fail, Evaluation};
use super::state::State;
use crate::domain::{cut, Decision, DeliveredItem, Entitlement, EntitlementDecision, Event, InboxEvent, Linked};
use crate::plugins::{PluginRuntime, WitEntitlement, WitEntitlementVerdict};
use crate::rules::{LoadedCampaign, RuleSet};
use crate::store::Seen;

/// Longest refusal reason kept.
const MAX_REASON_BYTES: usize = 1024;

/// What the store knew before a batch of events: account links and
/// entitlements already stored. Empty for `replay`, which has no store:
/// there every viewer is unlinked until a link event.
#[derive(Debug, Default)]
pub struct Lookups {
    /// Twitch user id → game account id.
    pub links: HashMap<String, String>,
    /// Entitlement id → what is stored of it.
    pub seen: HashMap<String, Seen>,
    /// Twitch user id → their open entitlements (awaiting a link, or
    /// failed): (entitlement id, the inbox event that brought it).
    pub open: HashMap<String, Vec<(String, i64)>>,
}

impl Lookups {
    /// The Twitch user ids and entitlement ids `events` need looked up.
    pub fn wanted(events: &[InboxEvent]) -> (Vec<String>, Vec<&str>) {
        let (mut users, mut ids) = (Vec::new(), Vec::new());
        for event in events {
            match &event.event {
                Event::Entitlement(e) => {
                    users.push(e.user_id.clone());
                    ids.push(e.entitlement_id.as_str());
                }
                Event::Linked(linked) => ids.extend(linked.entitlements.iter().map(|e| e.entitlement_id.as_str())),
                Event::Heartbeat(_) | Event::GameState(_) => {}
            }
        }
        users.sort_unstable();
        users.dedup();
        (users, ids)
    }
}

/// The campaigns an entitlement can be decided by.
pub(super) enum Deciders<'a> {
    /// Every campaign in force (the engine's ordinary pass).
    All(&'a RuleSet),
    /// One campaign catching up after its circuit breaker closed.
    Only(&'a LoadedCampaign),
}

impl Deciders<'_> {
    /// The campaign for `campaign_id`, if one decides it (and whether to
    /// record that none does: only in the ordinary pass).
    fn find(&self, campaign_id: &str) -> Result<Option<&LoadedCampaign>, ()> {
        match self {
            Deciders::All(rules) => Ok(rules.campaign(campaign_id).map(|c| &**c).filter(|c| c.def.enabled)),
            Deciders::Only(campaign) if campaign.def.id == campaign_id => Ok(Some(*campaign).filter(|c| c.def.enabled)),
            Deciders::Only(_) => Err(()),
        }
    }
}

/// An entitlement arrived from EventSub (or reconciliation).
pub(super) fn arrived(
    state: &mut State,
    deciders: &Deciders<'_>,
    runtime: &PluginRuntime,
    seq: i64,
    e: &Entitlement,
    lookups: &Lookups,
    out: &mut Evaluation,
) {
    if !state.owns(&e.campaign_id) {
        return;
    }
    let account = match known(&e.entitlement_id, lookups, out) {
        None => lookups.links.get(&e.user_id).cloned(),
        // Stored by an earlier event: a redelivery.
        Some(seen) if seen.first_seq < seq => return,
        // This event decided it: a replay decides it again, for the same account.
        Some(seen) if !seen.awaiting && seen.decided_seq == seq => seen.account.clone(),
        // A later link event decided it: here it waited.
        Some(seen) if !seen.awaiting => return,
        Some(_) => lookups.links.get(&e.user_id).cloned(),
    };
    // A viewer's entitlements are decided in the order they arrived (a
    // conditional drop depends on the one before): one that an older open
    // entitlement of theirs is still waiting for waits too, and the link
    // event that follows decides both, in order.
    let account = account.filter(|_| !waits_behind(e, seq, lookups, out));
    decide(state, deciders, runtime, (seq, seq), e, account, out);
}

/// Whether an older entitlement of the same viewer is still open.
fn waits_behind(e: &Entitlement, seq: i64, lookups: &Lookups, out: &Evaluation) -> bool {
    let stored = lookups.open.get(&e.user_id).into_iter().flatten();
    let this_batch = out.open.get(&e.user_id).into_iter().flatten();
    stored.chain(this_batch).any(|(id, first_seq)| {
        *first_seq < seq && *id != e.entitlement_id && out.seen.get(id).is_none_or(|s| s.awaiting)
    })
}

/// A viewer with entitlements awaiting a link linked a game account.
pub(super) fn linked(
    state: &mut State,
    deciders: &Deciders<'_>,
    runtime: &PluginRuntime,
    seq: i64,
    event: &Linked,
    lookups: &Lookups,
    out: &mut Evaluation,
) {
    for e in &event.entitlements {
        if !state.owns(&e.campaign_id) {
            continue;
        }
        let (first_seq, account) = match known(&e.entitlement_id, lookups, out) {
            Some(seen) if seen.awaiting => (seen.first_seq, event.game_account_id.clone()),
            Some(seen) if seen.decided_seq == seq => {
                (seen.first_seq, seen.account.clone().unwrap_or_else(|| event.game_account_id.clone()))
            }
            // Decided before: a second link event for the same news.
            Some(_) => continue,
            None => (seq, event.game_account_id.clone()),
        };
        decide(state, deciders, runtime, (first_seq, seq), e, Some(account), out);
    }
}

fn known<'a>(id: &str, lookups: &'a Lookups, out: &'a Evaluation) -> Option<&'a Seen> {
    out.seen.get(id).or_else(|| lookups.seen.get(id))
}

/// Decides one entitlement: no campaign, no account yet, or the rule's verdict.
fn decide(
    state: &mut State,
    deciders: &Deciders<'_>,
    runtime: &PluginRuntime,
    (first_seq, seq): (i64, i64),
    e: &Entitlement,
    account: Option<String>,
    out: &mut Evaluation,
) {
    let Ok(campaign) = deciders.find(&e.campaign_id) else { return };
    let record =
        |out: &mut Evaluation, account: Option<String>, decision: Decision, campaign: Option<&LoadedCampaign>| {
            let (campaign_revision, plugin_hash) =
                campaign.map_or((String::new(), String::new()), |c| (c.revision.clone(), c.plugin.hash.0.clone()));
            out.decided(EntitlementDecision {
                entitlement: e.clone(),
                first_seq,
                seq,
                account,
                decision,
                campaign_revision,
                plugin_hash,
            });
        };
    let Some(campaign) = campaign else {
        let why = format!("no enabled campaign with id `{}`", e.campaign_id);
        return record(out, account, Decision::Unmatched(why), None);
    };
    let Some(account) = account else {
        return record(out, None, Decision::AwaitingLink, Some(campaign));
    };
    let campaign_id = &campaign.def.id;
    if state.breakers.is_paused(campaign_id) {
        // Kept: decided when a new plugin version or revision closes the breaker.
        return;
    }
    let wit = WitEntitlement::of(e, &account);
    let span = tracing::debug_span!("evaluate", entitlement = %e.entitlement_id, campaign = %campaign_id, plugin = %campaign.plugin.hash);
    let _enter = span.enter();
    let kv = state.campaign_kv(campaign_id);
    match runtime.on_entitlement(&campaign.plugin, &campaign.wit, &wit, kv) {
        Ok(verdict) => {
            state.breakers.success(campaign_id);
            let decision = match verdict {
                WitEntitlementVerdict::Deliver(items) => Decision::Deliver(
                    items.into_iter().map(|i| DeliveredItem { id: i.id, quantity: i.quantity }).collect(),
                ),
                WitEntitlementVerdict::Refuse(reason) => Decision::Refused(cut(reason, MAX_REASON_BYTES)),
            };
            record(out, Some(account), decision, Some(campaign));
        }
        Err(err) => {
            let reason = cut(format!("the rule failed: {err}"), MAX_REASON_BYTES);
            record(out, Some(account), Decision::Failed(reason), Some(campaign));
            fail(state, campaign, seq, err, out);
        }
    }
}
