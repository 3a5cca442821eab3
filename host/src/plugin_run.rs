//! `drops-host plugin run`: one event through one plugin, in a fresh sandbox
//! with the host's default limits, for a designer at a terminal (or a
//! script, `--json`): the verdict, the grants with viewer and reward ids,
//! the plugin's log lines, the fuel it burnt and its time.

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::domain::{Entitlement, Heartbeat, ViewerList};
use crate::plugins::{
    CallTrace, CampaignKv, Plugin, PluginRuntime, WitCampaign, WitEntitlement, WitEntitlementVerdict, WitGameState,
    WitGrant, WitHeartbeat, WitViewers,
};
use crate::rules::LoadedCampaign;

/// Largest event file read.
const MAX_EVENT_BYTES: usize = 64 << 20;

/// A game-state change as `plugin run` takes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GameStateInput {
    broadcaster: String,
    #[serde(default)]
    twitch_user_id: String,
    #[serde(default)]
    game_id: String,
    #[serde(default)]
    minute: u32,
    #[serde(default = "empty_object")]
    previous: serde_json::Value,
    current: serde_json::Value,
    #[serde(default = "yes")]
    authoritative: bool,
}

fn empty_object() -> serde_json::Value {
    serde_json::json!({})
}

fn yes() -> bool {
    true
}

/// What one run produced, as `--json` prints it.
#[derive(Debug, Default, Serialize)]
pub struct RunReport {
    /// `heartbeat`, `game_state` or `entitlement`.
    pub event: &'static str,
    /// Heartbeats: whether the minutes count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count_minutes: Option<bool>,
    pub grants: Vec<RunGrant>,
    /// Entitlements: the items to deliver, or why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<Vec<crate::domain::DeliveredItem>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// The call's failure, if it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub logs: Vec<String>,
    pub fuel_used: u64,
    pub fuel_budget: u64,
    pub micros: u64,
}

/// A grant named by its viewer and reward ids.
#[derive(Debug, Serialize)]
pub struct RunGrant {
    pub viewer: String,
    pub reward: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// Runs `event` (a file, or `-` for stdin) through `plugin` for the campaign
/// file `campaign`; `minutes` is the viewers' watch-time before the event.
pub fn run(
    plugin_file: &Path,
    campaign: &Path,
    event: &Path,
    minutes: &[String],
    json: bool,
) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(plugin_file).with_context(|| format!("reading {}", plugin_file.display()))?;
    let name = plugin_file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let runtime = PluginRuntime::new(Default::default())?.traced();
    let plugin =
        runtime.load(&name, &bytes).map_err(|e| anyhow::anyhow!("{}: not loadable: {e}", plugin_file.display()))?;
    let text = std::fs::read(campaign).with_context(|| format!("reading {}", campaign.display()))?;
    let (def, _) = LoadedCampaign::parse_bytes(&text).map_err(|e| anyhow::anyhow!("{}: {e}", campaign.display()))?;
    let wit = LoadedCampaign::wit_campaign(&def)?;
    runtime.validate_config(&plugin, &wit).map_err(|e| {
        anyhow::anyhow!(
            "{}: the plugin refuses the campaign's config: {e} (`plugin check --campaign` names the line)",
            campaign.display()
        )
    })?;
    runtime.take_traces();
    let progress = parse_minutes(minutes)?;
    let event = read_event(event)?;
    let mut state = CampaignKv::default();
    let mut report = decide(&runtime, &plugin, &wit, &event, &progress, &mut state)?;
    for trace in runtime.take_traces() {
        let CallTrace { logs, fuel_used, fuel_budget, micros } = trace;
        report.logs.extend(logs);
        report.fuel_used += fuel_used;
        report.fuel_budget += fuel_budget;
        report.micros += micros;
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report, plugin_file, &plugin.hash.0, &def.id);
    }
    Ok(if report.error.is_some() { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Runs one event (as `plugin run` reads it) through `plugin`; `progress` is
/// the viewers' watch-time before it. The report's logs and fuel are the
/// runtime's traces, which the caller takes.
pub(crate) fn decide(
    runtime: &PluginRuntime,
    plugin: &Plugin,
    wit: &WitCampaign,
    event: &serde_json::Value,
    progress: &HashMap<String, u32>,
    state: &mut CampaignKv,
) -> anyhow::Result<RunReport> {
    let mut report = RunReport::default();
    let reward = |g: &WitGrant| wit.rewards.get(g.reward as usize).cloned().unwrap_or_default();
    if event.get("viewer_list").is_some() {
        report.event = "heartbeat";
        let hb: Heartbeat = serde_path_to_error::deserialize(event)
            .map_err(|e| anyhow::anyhow!("event: {}: {}", e.path(), e.inner()))?;
        let viewers = WitViewers::from_progress(
            hb.viewer_list.iter().map(|v| (progress.get(v).copied().unwrap_or(0).saturating_add(1), true)),
        );
        let wit_hb =
            WitHeartbeat {
                broadcaster: hb.broadcaster.0.clone(),
                game: hb.game.0.clone(),
                minute: hb.minute().0,
                viewers_reported: hb.viewers.min(u32::MAX as u64) as u32,
                // Not part of a VHS post: the minute the broadcaster's E2 game
                // state last changed, as the host would know it.
                state_changed: match event.get("state_changed") {
                    None | Some(serde_json::Value::Null) => None,
                    Some(v) => Some(v.as_u64().and_then(|m| u32::try_from(m).ok()).context(
                        "event: state_changed: the minute (since the Unix epoch) the game state last changed",
                    )?),
                },
            };
        let ids = hb.viewer_list.clone();
        match runtime.on_heartbeat(plugin, wit, &wit_hb, &viewers, ids.clone(), state) {
            Ok(verdict) => {
                report.count_minutes = Some(verdict.count_minutes);
                report.grants = named(&verdict.grants, &ids, reward);
            }
            Err(e) => report.error = Some(e.to_string()),
        }
    } else if let Some(change) = event.get("game_state") {
        report.event = "game_state";
        let input: GameStateInput = serde_path_to_error::deserialize(change)
            .map_err(|e| anyhow::anyhow!("event: game_state.{}: {}", e.path(), e.inner()))?;
        let watching: Vec<String> = match event.get("viewers") {
            Some(v) => serde_json::from_value(v.clone()).context("event: viewers: a list of viewer ids")?,
            None => Vec::new(),
        };
        let empty = serde_json::Map::new();
        let (before, after) =
            (input.previous.as_object().unwrap_or(&empty), input.current.as_object().unwrap_or(&empty));
        let mut changed: Vec<String> =
            before.keys().chain(after.keys()).filter(|k| before.get(*k) != after.get(*k)).cloned().collect();
        changed.sort();
        changed.dedup();
        let wit_change = WitGameState {
            broadcaster: input.broadcaster,
            twitch_user_id: input.twitch_user_id,
            game_id: input.game_id,
            minute: input.minute,
            previous: input.previous.to_string(),
            current: input.current.to_string(),
            changed,
            authoritative: input.authoritative,
        };
        let ids: Arc<ViewerList> = Arc::new(watching.iter().cloned().collect());
        let viewers =
            WitViewers::from_progress(watching.iter().map(|v| (progress.get(v).copied().unwrap_or(0), false)));
        match runtime.on_game_state(plugin, wit, &wit_change, &viewers, ids.clone(), state) {
            Ok(grants) => report.grants = named(&grants, &ids, reward),
            Err(e) => report.error = Some(e.to_string()),
        }
    } else if let Some(data) = event.get("entitlement") {
        report.event = "entitlement";
        let e: Entitlement = serde_path_to_error::deserialize(data)
            .map_err(|e| anyhow::anyhow!("event: entitlement.{}: {}", e.path(), e.inner()))?;
        let account =
            event.get("account").and_then(|a| a.as_str()).context("event: account: the linked game account")?;
        let wit_e = WitEntitlement::of(&e, account);
        match runtime.on_entitlement(plugin, wit, &wit_e, state) {
            Ok(WitEntitlementVerdict::Deliver(items)) => {
                let items = items.into_iter().map(|i| crate::domain::DeliveredItem { id: i.id, quantity: i.quantity });
                report.items = Some(items.collect());
            }
            Ok(WitEntitlementVerdict::Refuse(reason)) => report.refused = Some(reason),
            Err(e) => report.error = Some(e.to_string()),
        }
    } else {
        anyhow::bail!(
            "event: not a heartbeat (`viewer_list`), a game-state change (`game_state`) or an entitlement (`entitlement`)"
        );
    }
    Ok(report)
}

fn named(grants: &[WitGrant], ids: &ViewerList, reward: impl Fn(&WitGrant) -> String) -> Vec<RunGrant> {
    grants
        .iter()
        .map(|g| RunGrant {
            viewer: ids.get(g.viewer as usize).unwrap_or_default().to_string(),
            reward: reward(g),
            key: g.key.clone(),
        })
        .collect()
}

/// `viewer=minutes` pairs.
pub(crate) fn parse_minutes(pairs: &[String]) -> anyhow::Result<HashMap<String, u32>> {
    pairs
        .iter()
        .map(|pair| {
            let (viewer, minutes) =
                pair.split_once('=').with_context(|| format!("--minutes `{pair}`: write VIEWER=MINUTES"))?;
            let minutes = minutes.parse().with_context(|| format!("--minutes `{pair}`: minutes must be a number"))?;
            Ok((viewer.to_string(), minutes))
        })
        .collect()
}

pub(crate) fn read_event(path: &Path) -> anyhow::Result<serde_json::Value> {
    use std::io::Read;
    let mut bytes = Vec::new();
    let limit = MAX_EVENT_BYTES as u64 + 1;
    if path == Path::new("-") {
        std::io::stdin().take(limit).read_to_end(&mut bytes).context("reading the event from stdin")?;
    } else {
        std::fs::File::open(path)
            .and_then(|f| f.take(limit).read_to_end(&mut bytes))
            .with_context(|| format!("reading {}", path.display()))?;
    }
    anyhow::ensure!(bytes.len() <= MAX_EVENT_BYTES, "the event is larger than {MAX_EVENT_BYTES} bytes");
    serde_json::from_slice(&bytes).context("the event is not JSON")
}

fn print_report(report: &RunReport, file: &Path, hash: &str, campaign: &str) {
    println!(
        "{} (sha256 {}…) for campaign {campaign}, one {}",
        file.display(),
        &hash[..12.min(hash.len())],
        report.event
    );
    if let Some(error) = &report.error {
        println!("the call failed: {error}");
    }
    if let Some(count) = report.count_minutes {
        println!("verdict: minutes {}", if count { "count" } else { "do not count" });
    }
    if report.event != "entitlement" {
        println!("grants: {}", report.grants.len());
        for g in &report.grants {
            match &g.key {
                Some(key) => println!("  {} {} (key {key})", g.viewer, g.reward),
                None => println!("  {} {}", g.viewer, g.reward),
            }
        }
    }
    if let Some(items) = &report.items {
        let items: Vec<String> = items.iter().map(|i| format!("{} x{}", i.id, i.quantity)).collect();
        println!("deliver: {}", items.join(", "));
    }
    if let Some(reason) = &report.refused {
        println!("refused: {reason}");
    }
    for line in &report.logs {
        println!("log {line}");
    }
    println!("fuel: {} of {}; {} µs", report.fuel_used, report.fuel_budget, report.micros);
}
