//! `drops-host replay`: recorded events through the rules, in memory, nothing
//! delivered. Prints the grants per campaign and reward, or each grant
//! (`--json`, `--grants-out`); compares them with what a live host granted
//! (`--diff-against`, printing only the differences), or with what a
//! candidate plugin or campaign file would grant from the same events
//! (`--candidate`, who gains and who loses a reward).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::config::Settings;
use crate::domain::InboxEvent;
use crate::engine::recording::{parse_line, InForce, Line};
use crate::engine::{evaluate, Evaluation, Judgement, Lookups, State};
use crate::plugins::PluginRuntime;
use crate::rules::RuleSet;

/// Most grants read from a live host or an export to compare with.
const MAX_COMPARED_GRANTS: usize = 10_000_000;

/// What `drops-host replay` is asked for.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// Rules directory (campaigns/*.toml, plugins/*.wasm).
    #[arg(long)]
    pub rules: PathBuf,
    /// The recording: one event per line.
    #[arg(long)]
    pub events: PathBuf,
    /// Config file of the host whose traffic this is (default: ./drops-host.toml if it exists).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print every grant as a JSON line (campaign_id, reward_id, user_id, grant_key) instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also write every grant, as JSON lines, to this file.
    #[arg(long)]
    pub grants_out: Option<PathBuf>,
    /// Compare with what a live host granted: its base URL (read through
    /// GET /v1/grants with --admin-token), or a file of its grants (the JSON
    /// array GET /v1/grants answers, or JSON lines as --grants-out writes).
    /// Prints only the differences; exits 1 when there are some, like diff.
    #[arg(long)]
    pub diff_against: Option<String>,
    /// The live host's admin token, for --diff-against URL.
    #[arg(long, env = "DROPS_HOST_ADMIN__TOKEN")]
    pub admin_token: Option<String>,
    /// Replay the same events again with a candidate in place of one rules
    /// file, and print who would gain and who would lose a reward:
    /// NAME=FILE.wasm replaces plugin NAME, NAME=FILE.toml campaign file NAME.
    #[arg(long)]
    pub candidate: Option<String>,
    /// Judge each event by the campaign revisions and plugin versions that
    /// were in force for it when it was recorded (read from the database of
    /// --config), not by the rules folder's.
    #[arg(long, requires = "config")]
    pub as_recorded: bool,
}

/// A grant as replays compare them: what makes it unique.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GrantKey {
    pub campaign_id: String,
    pub reward_id: String,
    pub user_id: String,
    #[serde(default)]
    pub grant_key: String,
}

impl std::fmt::Display for GrantKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.campaign_id, self.reward_id, self.user_id)?;
        if !self.grant_key.is_empty() {
            write!(f, " (key {})", self.grant_key)?;
        }
        Ok(())
    }
}

/// Where the host keeps its dry runs' files (`<data_dir>/dry-runs`): a run
/// killed with the process leaves its folder, and the next start empties it.
pub fn dry_runs_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("dry-runs")
}

/// Most gained or lost grants a dry run lists (it counts them all).
const MAX_LISTED_CHANGES: usize = 200;

/// What a candidate plugin would grant from recorded events, beside what the
/// plugin version in force grants from the same events (`POST /v1/replay`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DryRun {
    /// The candidate replaced this plugin.
    pub plugin: String,
    pub events_read: u64,
    pub duplicates: u64,
    /// Grants per campaign and reward, with the live version and with the candidate.
    pub rewards: Vec<RewardComparison>,
    /// Grants the candidate makes that the live version does not (at most 200 listed).
    pub gained: Vec<GrantKey>,
    pub gained_total: usize,
    /// Grants the live version makes that the candidate does not (at most 200 listed).
    pub lost: Vec<GrantKey>,
    pub lost_total: usize,
    /// Plugin calls that failed, with the live version and with the candidate.
    pub live_errors: u64,
    pub candidate_errors: u64,
}

/// One reward's grants in a [`DryRun`].
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RewardComparison {
    pub campaign_id: String,
    pub reward_id: String,
    pub live: u64,
    pub candidate: u64,
}

/// Why a dry run could not be made: the input's fault (a bad recording or
/// plugin, named) or the host's.
#[derive(Debug, thiserror::Error)]
pub enum DryRunError {
    #[error("{field}: {message}")]
    Input { field: &'static str, message: String },
    #[error(transparent)]
    Host(#[from] anyhow::Error),
}

/// Replays `events` with the rules in `rules_dir`, then again with
/// `candidate` (a `.wasm` file) in place of plugin `plugin`, in memory:
/// nothing is stored or delivered. The rules' copy with the candidate is
/// made under `scratch`. Blocking: run it off the executor; it stops at the
/// next event once `cancel` is set.
pub fn dry_run(
    settings: &Settings,
    rules_dir: &Path,
    events: &Path,
    (plugin, candidate): (&str, &Path),
    scratch: &Path,
    cancel: &AtomicBool,
) -> Result<DryRun, DryRunError> {
    let input = |field, e: anyhow::Error| DryRunError::Input { field, message: format!("{e:#}") };
    let runtime = PluginRuntime::new(settings.plugins.clone()).map_err(anyhow::Error::from)?;
    let live_rules = load_rules(rules_dir, &runtime)?;
    if !live_rules.plugins().contains_key(plugin) {
        return Err(DryRunError::Input { field: "plugin_name", message: format!("no plugin `{plugin}` is in force") });
    }
    let live = replay_events(settings, &live_rules, &runtime, events, false, None, Some(cancel))
        .map_err(|e| input("events", e))?;
    let (dir, _) = rules_with(rules_dir, plugin, candidate, scratch)?;
    // The copy goes whatever happens next.
    let dir = RemovedOnDrop(dir);
    let candidate_rules = load_rules(&dir.0, &runtime);
    drop(dir);
    let candidate_rules = candidate_rules.map_err(|e| input("plugin", e))?;
    let with_candidate = replay_events(settings, &candidate_rules, &runtime, events, false, None, Some(cancel))
        .map_err(|e| input("events", e))?;
    let mut rewards: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for g in &live.grants {
        rewards.entry((g.campaign_id.clone(), g.reward_id.clone())).or_default().0 += 1;
    }
    for g in &with_candidate.grants {
        rewards.entry((g.campaign_id.clone(), g.reward_id.clone())).or_default().1 += 1;
    }
    let gained: Vec<&GrantKey> = with_candidate.grants.difference(&live.grants).collect();
    let lost: Vec<&GrantKey> = live.grants.difference(&with_candidate.grants).collect();
    Ok(DryRun {
        plugin: plugin.to_string(),
        events_read: live.events_read,
        duplicates: live.duplicates,
        rewards: rewards
            .into_iter()
            .map(|((campaign_id, reward_id), (live, candidate))| RewardComparison {
                campaign_id,
                reward_id,
                live,
                candidate,
            })
            .collect(),
        gained_total: gained.len(),
        lost_total: lost.len(),
        gained: gained.into_iter().take(MAX_LISTED_CHANGES).cloned().collect(),
        lost: lost.into_iter().take(MAX_LISTED_CHANGES).cloned().collect(),
        live_errors: live.errors,
        candidate_errors: with_candidate.errors,
    })
}

/// A folder removed when this goes out of scope, unwinding included.
struct RemovedOnDrop(PathBuf);

impl Drop for RemovedOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Rebuilds the rules a recording's `rules_in_force` note names.
type RulesLoader = dyn Fn(&[InForce]) -> anyhow::Result<RuleSet>;

/// What one pass over the recording made.
#[derive(Debug, Default)]
struct Outcome {
    grants: BTreeSet<GrantKey>,
    events_read: u64,
    duplicates: u64,
    minutes: u64,
    errors: u64,
    entitlements: BTreeMap<&'static str, u64>,
}

/// Runs `drops-host replay`. The plugin limits, circuit breaker and watching
/// window come from the host's settings, so the replay decides as it did.
pub async fn run(args: &ReplayArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(args.config.as_deref())?;
    let live = match &args.diff_against {
        Some(source) => Some(live_grants(source, args.admin_token.as_deref()).await?),
        None => None,
    };
    let store = match args.as_recorded {
        true => Some(Arc::new(crate::store::Store::connect(&settings.database_url()).await?)),
        false => None,
    };
    let args = args.clone();
    tokio::task::spawn_blocking(move || replay(&settings, &args, live, store)).await?
}

fn replay(
    settings: &Settings,
    args: &ReplayArgs,
    live: Option<BTreeSet<GrantKey>>,
    store: Option<Arc<crate::store::Store>>,
) -> anyhow::Result<ExitCode> {
    let runtime = Arc::new(PluginRuntime::new(settings.plugins.clone())?);
    let rules = load_rules(&args.rules, &runtime)?;
    let as_recorded = store.map(|store| {
        let runtime = runtime.clone();
        move |in_force: &[InForce]| rules_as_recorded(&store, &runtime, in_force)
    });
    let loader = as_recorded.as_ref().map(|f| f as &RulesLoader);
    let outcome = replay_events(settings, &rules, &runtime, &args.events, !args.json, loader, None)?;
    if args.json {
        let mut out = std::io::stdout().lock();
        for g in &outcome.grants {
            serde_json::to_writer(&mut out, g)?;
            writeln!(out)?;
        }
    } else {
        print_summary(&outcome);
    }
    if let Some(path) = &args.grants_out {
        let mut file = std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        );
        for g in &outcome.grants {
            serde_json::to_writer(&mut file, g)?;
            writeln!(file)?;
        }
        file.flush()?;
    }
    let mut code = ExitCode::SUCCESS;
    if let Some(live) = live {
        let only_replay: Vec<&GrantKey> = outcome.grants.difference(&live).collect();
        let only_live: Vec<&GrantKey> = live.difference(&outcome.grants).collect();
        for g in &only_replay {
            println!("+ {g}   (the replay grants it; the live host did not)");
        }
        for g in &only_live {
            println!("- {g}   (the live host granted it; the replay does not)");
        }
        println!(
            "diff: {} only in the replay, {} only on the live host, {} in both",
            only_replay.len(),
            only_live.len(),
            outcome.grants.len() - only_replay.len()
        );
        if !only_replay.is_empty() || !only_live.is_empty() {
            code = ExitCode::from(1);
        }
    }
    if let Some(candidate) = &args.candidate {
        if let Some(note) = same_as_baseline(&args.rules, candidate) {
            println!("{note}");
        }
        let (dir, what) = candidate_rules(&args.rules, candidate)?;
        let result = load_rules(&dir, &runtime).and_then(|rules| {
            println!("candidate {what}:");
            replay_events(settings, &rules, &runtime, &args.events, false, None, None)
        });
        let _ = std::fs::remove_dir_all(&dir);
        let with_candidate = result?;
        let gains: Vec<&GrantKey> = with_candidate.grants.difference(&outcome.grants).collect();
        let loses: Vec<&GrantKey> = outcome.grants.difference(&with_candidate.grants).collect();
        for g in &gains {
            println!("+ {g}   (gains it with the candidate)");
        }
        for g in &loses {
            println!("- {g}   (loses it with the candidate)");
        }
        println!(
            "candidate: {} grants gained, {} lost, {} unchanged ({} plugin errors, against {})",
            gains.len(),
            loses.len(),
            outcome.grants.len() - loses.len(),
            with_candidate.errors,
            outcome.errors
        );
    }
    Ok(code)
}

/// The rules of `dir`; an error when any file failed to load or no campaign did.
fn load_rules(dir: &Path, runtime: &PluginRuntime) -> anyhow::Result<RuleSet> {
    anyhow::ensure!(dir.is_dir(), "--rules {}: not a directory", dir.display());
    let rules = RuleSet::load(dir, runtime);
    for err in rules.errors() {
        eprintln!("not loaded: {}: {}", err.file.display(), err.error);
    }
    let first = rules.errors().first().map(|e| format!(" ({}: {})", file_name(&e.file), e.error)).unwrap_or_default();
    anyhow::ensure!(
        rules.errors().is_empty(),
        "{} rules file(s) failed to load{first}: a replay would not decide as the host does",
        rules.errors().len(),
    );
    anyhow::ensure!(!rules.campaigns().is_empty(), "{}: no campaign (campaigns/*.toml) to replay", dir.display());
    Ok(rules)
}

/// A file's name without its folder (the folder may be a temporary copy).
fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// A warning when the candidate is byte for byte the file it replaces: the
/// comparison would be of a version with itself. It happens after `plugin
/// watch --host` or an upload, which write the new version into the rules
/// folder the replay reads as its baseline.
fn same_as_baseline(rules: &Path, candidate: &str) -> Option<String> {
    let (name, file) = candidate.split_once('=')?;
    let extension = Path::new(file).extension()?.to_str()?;
    let folder = if extension == "wasm" { "plugins" } else { "campaigns" };
    let baseline = std::fs::read(rules.join(folder).join(format!("{name}.{extension}"))).ok()?;
    let candidate = std::fs::read(file).ok()?;
    (baseline == candidate).then(|| {
        format!(
            "note: the candidate {file} is the very version in {}/{folder}/{name}.{extension} (sha256 {}…): \
             this compares it with itself. Installed it already? Replay with --as-recorded to compare with \
             the versions the live host used, or put the version before back in the rules folder \
             (GET /v1/plugins/{name}/versions/HASH gives its bytes).",
            rules.display(),
            &crate::plugins::PluginHash::of(&baseline).0[..12]
        )
    })
}

/// A copy of `rules` with the candidate in place: `NAME=FILE.wasm` or
/// `NAME=FILE.toml`. Returns the copy's folder and what was replaced.
fn candidate_rules(rules: &Path, candidate: &str) -> anyhow::Result<(PathBuf, String)> {
    let (name, file) = candidate.split_once('=').context("--candidate: write NAME=FILE.wasm or NAME=FILE.toml")?;
    rules_with(rules, name, Path::new(file), &std::env::temp_dir())
}

/// A copy of `rules` with `file` in place of plugin or campaign `name`, in a new folder under `under`.
fn rules_with(rules: &Path, name: &str, file: &Path, under: &Path) -> anyhow::Result<(PathBuf, String)> {
    let ok_name = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    anyhow::ensure!(ok_name, "--candidate: `{}` is not a plugin or campaign name", name.escape_debug());
    let (folder, extension) = match file.extension().and_then(|e| e.to_str()) {
        Some("wasm") => ("plugins", "wasm"),
        Some("toml") => ("campaigns", "toml"),
        _ => anyhow::bail!("--candidate: {} is neither a .wasm plugin nor a .toml campaign file", file.display()),
    };
    let target = rules.join(folder).join(format!("{name}.{extension}"));
    anyhow::ensure!(target.exists(), "--candidate: {} does not exist: nothing to compare with", target.display());
    let dir = under.join(format!("drops-replay-{}", uuid::Uuid::new_v4().simple()));
    let copied = copy_with(rules, &dir, folder, name, extension, file);
    if copied.is_err() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    copied?;
    Ok((dir, format!("{folder}/{name}.{extension} from {}", file.display())))
}

/// Copies `rules` into `dir`, with `file` as `folder/name.extension`.
fn copy_with(rules: &Path, dir: &Path, folder: &str, name: &str, extension: &str, file: &Path) -> anyhow::Result<()> {
    for sub in ["plugins", "campaigns"] {
        std::fs::create_dir_all(dir.join(sub))?;
        let Ok(entries) = std::fs::read_dir(rules.join(sub)) else { continue };
        for entry in entries.flatten() {
            std::fs::copy(entry.path(), dir.join(sub).join(entry.file_name()))?;
        }
    }
    std::fs::copy(file, dir.join(folder).join(format!("{name}.{extension}")))
        .with_context(|| format!("--candidate: reading {}", file.display()))?;
    Ok(())
}

/// The grants of a live host (base URL) or of a file of its grants.
async fn live_grants(source: &str, token: Option<&str>) -> anyhow::Result<BTreeSet<GrantKey>> {
    if !(source.starts_with("http://") || source.starts_with("https://")) {
        let text = std::fs::read_to_string(source).with_context(|| format!("--diff-against: reading {source}"))?;
        let grants: Vec<GrantKey> = if text.trim_start().starts_with('[') {
            serde_json::from_str(&text)
                .with_context(|| format!("--diff-against {source}: not a JSON array of grants"))?
        } else {
            text.lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .map(|(i, l)| {
                    serde_json::from_str(l).with_context(|| format!("--diff-against {source}: line {}", i + 1))
                })
                .collect::<anyhow::Result<_>>()?
        };
        anyhow::ensure!(grants.len() <= MAX_COMPARED_GRANTS, "--diff-against: more than {MAX_COMPARED_GRANTS} grants");
        return Ok(grants.into_iter().collect());
    }
    let token = token.context("--diff-against URL needs --admin-token (or DROPS_HOST_ADMIN__TOKEN)")?;
    #[derive(Deserialize)]
    struct Page {
        id: i64,
        #[serde(flatten)]
        grant: GrantKey,
    }
    let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(60)).build()?;
    let mut grants = BTreeSet::new();
    let mut after = 0i64;
    loop {
        let url = format!("{}/v1/grants?limit=100000&after_id={after}", source.trim_end_matches('/'));
        let answer = http.get(&url).bearer_auth(token).send().await.with_context(|| format!("GET {url}"))?;
        let status = answer.status();
        anyhow::ensure!(status.is_success(), "GET {url}: {status}: {}", answer.text().await.unwrap_or_default());
        let page: Vec<Page> = answer.json().await.with_context(|| format!("GET {url}: not a list of grants"))?;
        let Some(last) = page.last().map(|g| g.id) else { break };
        after = last;
        grants.extend(page.into_iter().map(|p| p.grant));
        anyhow::ensure!(grants.len() <= MAX_COMPARED_GRANTS, "--diff-against: more than {MAX_COMPARED_GRANTS} grants");
    }
    Ok(grants)
}

fn print_summary(outcome: &Outcome) {
    let mut table: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for g in &outcome.grants {
        *table.entry((&g.campaign_id, &g.reward_id)).or_default() += 1;
    }
    println!("{:<40} {:<32} {:>10}", "campaign", "reward", "grants");
    for ((campaign, reward), n) in &table {
        println!("{campaign:<40} {reward:<32} {n:>10}");
    }
    println!(
        "{} events ({} duplicates), {} viewer-minutes counted, {} grants, {} plugin errors",
        outcome.events_read,
        outcome.duplicates,
        outcome.minutes,
        outcome.grants.len(),
        outcome.errors
    );
    if !outcome.entitlements.is_empty() {
        let outcomes: Vec<String> = outcome.entitlements.iter().map(|(status, n)| format!("{n} {status}")).collect();
        println!("entitlements: {}", outcomes.join(", "));
    }
}

/// The rules a recording says were in force, rebuilt from the campaign
/// texts and plugin versions the host kept in its database.
fn rules_as_recorded(
    store: &crate::store::Store,
    runtime: &PluginRuntime,
    in_force: &[InForce],
) -> anyhow::Result<RuleSet> {
    let handle = tokio::runtime::Handle::current();
    let dir = std::env::temp_dir().join(format!("drops-as-recorded-{}", uuid::Uuid::new_v4().simple()));
    let built = (|| {
        std::fs::create_dir_all(dir.join("campaigns"))?;
        std::fs::create_dir_all(dir.join("plugins"))?;
        for (i, c) in in_force.iter().enumerate() {
            let short = |h: &str| h.chars().take(12).collect::<String>();
            let text = handle.block_on(store.campaign_revision_text(&c.revision))?.with_context(|| {
                format!(
                    "campaign {} revision {}… is not in the database (recorded before the host kept campaign texts?)",
                    c.campaign_id,
                    short(&c.revision)
                )
            })?;
            let bytes = handle.block_on(store.plugin_bytes(&c.plugin, &c.plugin_hash))?.with_context(|| {
                format!("plugin {} version {}… is not in the database", c.plugin, short(&c.plugin_hash))
            })?;
            anyhow::ensure!(
                !c.plugin.is_empty() && c.plugin.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_'),
                "a recorded plugin name is not a file name: `{}`",
                c.plugin.escape_debug()
            );
            std::fs::write(dir.join("campaigns").join(format!("recorded-{i}.toml")), text)?;
            std::fs::write(dir.join("plugins").join(format!("{}.wasm", c.plugin)), bytes)?;
        }
        load_rules(&dir, runtime)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    built
}

/// One pass over the recording with `rules`; with `as_recorded`, the rules
/// each `rules_in_force` note names replace them from that note on.
fn replay_events(
    settings: &Settings,
    rules: &RuleSet,
    runtime: &PluginRuntime,
    events: &Path,
    notes: bool,
    as_recorded: Option<&RulesLoader>,
    cancel: Option<&AtomicBool>,
) -> anyhow::Result<Outcome> {
    let mut recorded_rules: Option<RuleSet> = None;
    let file = std::fs::File::open(events).with_context(|| format!("opening {}", events.display()))?;
    let total_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    // Only a replay that notes its progress (the command's) draws a bar.
    let mut progress = Progress::new(if notes { total_bytes } else { 0 });
    let mut state = State::new(&Judgement::from_settings(settings));
    let here = runtime.fingerprint();
    let mut noted: Option<String> = None;
    let mut seen_ids = HashSet::new();
    let mut outcome = Outcome::default();
    // A recording holds no account links: entitlements wait for the recorded link events.
    let mut lookups = Lookups::default();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            anyhow::bail!("cancelled at line {}", i + 1);
        }
        progress.advance(line.len() as u64 + 1);
        if line.trim().is_empty() {
            continue;
        }
        let recorded = match parse_line(&line).map_err(|e| anyhow::anyhow!("line {}: {e}", i + 1))? {
            Line::Event(recorded) => recorded,
            Line::RecordedUnder(recorded) => {
                if let Some(note) = runtime_note(i + 2, recorded, &here, &mut noted).filter(|_| notes) {
                    println!("{note}");
                }
                continue;
            }
            Line::RulesInForce(in_force) => {
                if let Some(load) = as_recorded {
                    let set = load(&in_force).with_context(|| format!("line {}: the rules in force", i + 1))?;
                    if notes {
                        let names: Vec<String> = in_force
                            .iter()
                            .map(|c| format!("{} ({}…)", c.campaign_id, &c.plugin_hash[..12.min(c.plugin_hash.len())]))
                            .collect();
                        println!("line {}: as recorded: {}", i + 1, names.join(", "));
                    }
                    recorded_rules = Some(set);
                }
                continue;
            }
        };
        outcome.events_read += 1;
        if !seen_ids.insert(recorded.dedup_id) {
            outcome.duplicates += 1;
            continue;
        }
        let mut out = Evaluation::default();
        let seq = outcome.events_read as i64;
        let event = InboxEvent { seq, received_at_ms: recorded.received_at_ms, event: recorded.event };
        evaluate(&mut state, recorded_rules.as_ref().unwrap_or(rules), runtime, &event, &lookups, &mut out);
        outcome.minutes += out.viewer_minutes;
        for d in &out.entitlements {
            *outcome.entitlements.entry(d.decision.status()).or_default() += 1;
        }
        // What was decided is known to the events after it, as the store makes it known to the host.
        lookups.seen.extend(out.seen.drain());
        outcome.errors += out.plugin_errors;
        outcome.grants.extend(out.grants.into_iter().map(|g| GrantKey {
            campaign_id: g.origin.campaign_id.clone(),
            reward_id: g.reward_id.to_string(),
            user_id: g.user_id.into(),
            grant_key: g.grant_key.into(),
        }));
    }
    progress.finish();
    Ok(outcome)
}

/// Longest runtime description a note quotes from a recording (the file may come from anywhere).
const MAX_NOTED_BYTES: usize = 512;

/// What to say when the events from `line` on were judged under `recorded`
/// while this replay runs under `here`: once per change, never repeating the
/// last note, and quoting at most [`MAX_NOTED_BYTES`] of the recording.
fn runtime_note(line: usize, recorded: String, here: &str, noted: &mut Option<String>) -> Option<String> {
    let recorded = crate::domain::cut(recorded, MAX_NOTED_BYTES);
    if recorded == here || noted.as_deref() == Some(recorded.as_str()) {
        return None;
    }
    let note = format!(
        "note: the events from line {line} on were judged under {recorded}; this replay runs under {here}: \
         a verdict that ran out of fuel or memory, or near a limit, may differ"
    );
    *noted = Some(recorded);
    Some(note)
}

/// A progress bar on stderr, drawn only when stderr is a terminal.
struct Progress {
    total: u64,
    done: u64,
    shown: u64,
    enabled: bool,
}

impl Progress {
    fn new(total: u64) -> Progress {
        use std::io::IsTerminal;
        Progress { total, done: 0, shown: 0, enabled: std::io::stderr().is_terminal() && total > 1 << 20 }
    }

    fn advance(&mut self, bytes: u64) {
        self.done += bytes;
        let percent = (self.done * 100).checked_div(self.total).unwrap_or(100).min(100);
        if self.enabled && percent > self.shown {
            self.shown = percent;
            let bar = "#".repeat((percent / 2) as usize);
            eprint!("\r[{bar:<50}] {percent:>3}% of {} MB", self.total >> 20);
        }
    }

    fn finish(&self) {
        if self.enabled {
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runtime_change_is_noted_once_and_a_hostile_description_is_cut() {
        let mut noted = None;
        assert_eq!(runtime_note(1, "wasmtime 1".into(), "wasmtime 1", &mut noted), None);
        let note = runtime_note(2, "wasmtime 0".into(), "wasmtime 1", &mut noted).unwrap();
        assert!(note.contains("line 2 on were judged under wasmtime 0"), "{note}");
        assert_eq!(runtime_note(9, "wasmtime 0".into(), "wasmtime 1", &mut noted), None, "noted already");
        let huge = "é".repeat(1 << 20);
        let note = runtime_note(10, huge, "wasmtime 1", &mut noted).unwrap();
        assert!(note.len() < 1024, "{} bytes", note.len());
    }
}
