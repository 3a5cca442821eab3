//! `drops-host plugin test DIR`: one test runner for rules in every language
//! (Shopify's `function-runner` is the model). DIR is a plugin's folder (a
//! Cargo crate or a TypeScript package); it is built, then each case in
//! `DIR/tests/cases/*.json` is run through the built plugin in the host's own
//! sandbox, exactly as the host would call it, and compared with what the
//! case expects. A failing case prints what differs; any failure exits non-zero.
//!
//! A case:
//! ```json
//! {
//!   "description": "a viewer crossing 30 minutes earns bronze",
//!   "campaign": "../../campaign.toml",
//!   "minutes": { "v1": 29 },
//!   "state": { "key": "value before the call" },
//!   "event": { "...": "a heartbeat, game-state change or entitlement, as `plugin run` takes it" },
//!   "expect": { "count_minutes": true, "grants": [{ "viewer": "v1", "reward": "bronze" }] }
//! }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use serde::Deserialize;

use crate::plugin_build::PluginPackage;
use crate::plugin_run::{decide, RunReport};
use crate::plugins::{CampaignKv, PluginRuntime};
use crate::rules::LoadedCampaign;

/// Largest case file read.
const MAX_CASE_BYTES: u64 = 64 << 20;
/// Most cases in one folder.
const MAX_CASES: usize = 10_000;

/// One test case.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    #[serde(default)]
    description: String,
    /// The campaign file, relative to the case file.
    campaign: PathBuf,
    /// Viewers' watch-time before the event.
    #[serde(default)]
    minutes: HashMap<String, u32>,
    /// The campaign's rule state before the call (UTF-8 values).
    #[serde(default)]
    state: BTreeMap<String, String>,
    event: serde_json::Value,
    expect: Expect,
}

/// What the call must give. Absent fields are not checked, except `grants`
/// (none expected when absent) and `error` (the call must succeed).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    count_minutes: Option<bool>,
    #[serde(default)]
    grants: Vec<ExpectedGrant>,
    items: Option<Vec<ExpectedItem>>,
    refused: Option<String>,
    /// The call fails with a message containing this.
    error: Option<String>,
    /// Keys the call must leave with these values (`null`: absent).
    state: Option<BTreeMap<String, Option<String>>>,
}

#[derive(Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord, Clone)]
#[serde(deny_unknown_fields)]
struct ExpectedGrant {
    viewer: String,
    reward: String,
    #[serde(default)]
    key: Option<String>,
}

#[derive(Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord, Clone)]
#[serde(deny_unknown_fields)]
struct ExpectedItem {
    id: String,
    quantity: u32,
}

/// Builds the plugin in `dir` (or takes `plugin`) and runs its cases.
pub fn run(dir: &Path, plugin: Option<&Path>, cases: Option<&Path>) -> anyhow::Result<ExitCode> {
    let package = PluginPackage::describe(dir)?;
    let bytes = match plugin {
        Some(file) => std::fs::read(file).with_context(|| format!("reading {}", file.display()))?,
        None => package.build()?,
    };
    let cases_dir = cases.map(Path::to_path_buf).unwrap_or_else(|| package.dir.join("tests/cases"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&cases_dir)
        .with_context(|| format!("{}: no test cases there (each a .json file)", cases_dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    anyhow::ensure!(!files.is_empty(), "{}: no test cases there (each a .json file)", cases_dir.display());
    anyhow::ensure!(files.len() <= MAX_CASES, "{}: more than {MAX_CASES} cases", cases_dir.display());
    let runtime = PluginRuntime::new(Default::default())?.traced();
    let loaded = runtime.load(&package.name, &bytes).map_err(|e| anyhow::anyhow!("the plugin does not load: {e}"))?;
    let mut failed = 0;
    for file in &files {
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        match run_case(&runtime, &loaded, file) {
            Ok(differences) if differences.is_empty() => println!("ok      {name}"),
            Ok(differences) => {
                failed += 1;
                println!("FAILED  {name}");
                for line in differences {
                    println!("        {line}");
                }
            }
            Err(e) => {
                failed += 1;
                println!("FAILED  {name}: {e:#}");
            }
        }
        runtime.take_traces();
    }
    println!(
        "{} cases: {} passed, {failed} failed ({} `{}`, sha256 {}…)",
        files.len(),
        files.len() - failed,
        match package.language {
            crate::plugin_build::Language::TypeScript => "TypeScript",
            crate::plugin_build::Language::Rust { .. } => "Rust",
        },
        package.name,
        &crate::plugins::PluginHash::of(&bytes).0[..12]
    );
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Runs one case; the differences from what it expects (none: it passed).
fn run_case(runtime: &PluginRuntime, plugin: &crate::plugins::Plugin, file: &Path) -> anyhow::Result<Vec<String>> {
    use std::io::Read;
    let mut text = Vec::new();
    std::fs::File::open(file)
        .and_then(|f| f.take(MAX_CASE_BYTES + 1).read_to_end(&mut text))
        .with_context(|| format!("reading {}", file.display()))?;
    anyhow::ensure!(text.len() as u64 <= MAX_CASE_BYTES, "larger than {MAX_CASE_BYTES} bytes");
    let case: Case = serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(&text))
        .map_err(|e| anyhow::anyhow!("{}: {}", e.path(), e.inner()))?;
    let campaign_path = file.parent().unwrap_or(Path::new(".")).join(&case.campaign);
    let (def, _) = LoadedCampaign::parse(&campaign_path).map_err(|e| anyhow::anyhow!("campaign: {e}"))?;
    let wit = LoadedCampaign::wit_campaign(&def)?;
    if let Err(e) = runtime.validate_config(plugin, &wit) {
        return Ok(vec![format!("the plugin refuses {}'s config: {e}", campaign_path.display())]);
    }
    let mut state = CampaignKv::default();
    for (key, value) in &case.state {
        state.restore(key.clone(), value.as_bytes().to_vec());
    }
    let report = decide(runtime, plugin, &wit, &case.event, &case.minutes, &mut state)?;
    let mut differences = compare(&case.expect, &report);
    if let Some(expected) = &case.expect.state {
        for (key, want) in expected {
            let got = state.value(key).map(|v| String::from_utf8_lossy(v).into_owned());
            if &got != want {
                differences.push(format!("state `{key}`: expected {want:?}, got {got:?}"));
            }
        }
    }
    if !differences.is_empty() && !case.description.is_empty() {
        differences.insert(0, case.description.clone());
    }
    Ok(differences)
}

/// What differs between the expectation and the call's report.
fn compare(expect: &Expect, report: &RunReport) -> Vec<String> {
    let mut out = Vec::new();
    match (&expect.error, &report.error) {
        (None, Some(error)) => {
            out.push(format!("the call failed: {error}"));
            return out;
        }
        (Some(want), None) => out.push(format!("expected the call to fail with `{want}`, but it succeeded")),
        (Some(want), Some(error)) if !error.contains(want.as_str()) => {
            out.push(format!("expected the call to fail with `{want}`, but it failed with: {error}"))
        }
        _ => {}
    }
    if let (Some(want), Some(got)) = (expect.count_minutes, report.count_minutes) {
        if want != got {
            out.push(format!("count_minutes: expected {want}, got {got}"));
        }
    }
    let mut got: Vec<ExpectedGrant> = report
        .grants
        .iter()
        .map(|g| ExpectedGrant { viewer: g.viewer.clone(), reward: g.reward.clone(), key: g.key.clone() })
        .collect();
    got.sort();
    let mut want = expect.grants.clone();
    want.sort();
    for g in want.iter().filter(|g| !got.contains(g)) {
        out.push(format!("- grant {} {}{} expected, not made", g.viewer, g.reward, key_text(&g.key)));
    }
    for g in got.iter().filter(|g| !want.contains(g)) {
        out.push(format!("+ grant {} {}{} made, not expected", g.viewer, g.reward, key_text(&g.key)));
    }
    if let Some(want) = &expect.items {
        let mut got: Vec<ExpectedItem> =
            report.items.iter().flatten().map(|i| ExpectedItem { id: i.id.clone(), quantity: i.quantity }).collect();
        got.sort();
        let mut want = want.clone();
        want.sort();
        if got != want || report.items.is_none() {
            let show = |items: &[ExpectedItem]| {
                items.iter().map(|i| format!("{} x{}", i.id, i.quantity)).collect::<Vec<_>>().join(", ")
            };
            let got = match &report.refused {
                Some(reason) => format!("refused: {reason}"),
                None => show(&got),
            };
            out.push(format!("items: expected [{}], got [{got}]", show(&want)));
        }
    }
    if let Some(want) = &expect.refused {
        if report.refused.as_deref() != Some(want.as_str()) {
            out.push(format!("refused: expected `{want}`, got {:?}", report.refused));
        }
    }
    out
}

fn key_text(key: &Option<String>) -> String {
    key.as_ref().map(|k| format!(" (key {k})")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin_run::RunGrant;

    fn report(grants: &[(&str, &str)]) -> RunReport {
        RunReport {
            grants: grants
                .iter()
                .map(|(v, r)| RunGrant { viewer: v.to_string(), reward: r.to_string(), key: None })
                .collect(),
            ..Default::default()
        }
    }

    fn expect(json: serde_json::Value) -> Expect {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn grants_compare_as_sets_and_each_difference_is_a_line() {
        let want =
            expect(serde_json::json!({"grants": [{"viewer": "v2", "reward": "b"}, {"viewer": "v1", "reward": "b"}]}));
        assert!(compare(&want, &report(&[("v1", "b"), ("v2", "b")])).is_empty());
        let diff = compare(&want, &report(&[("v1", "b"), ("v3", "s")]));
        assert_eq!(diff, vec!["- grant v2 b expected, not made", "+ grant v3 s made, not expected"]);
    }

    #[test]
    fn a_failed_call_is_a_difference_unless_expected() {
        let failed = RunReport { error: Some("config.tiers: boom".into()), ..Default::default() };
        assert_eq!(compare(&expect(serde_json::json!({})), &failed), vec!["the call failed: config.tiers: boom"]);
        assert!(compare(&expect(serde_json::json!({"error": "boom"})), &failed).is_empty());
        let diff = compare(&expect(serde_json::json!({"error": "boom"})), &report(&[]));
        assert_eq!(diff, vec!["expected the call to fail with `boom`, but it succeeded"]);
    }

    #[test]
    fn unknown_fields_in_a_case_are_refused() {
        let err = serde_json::from_value::<Expect>(serde_json::json!({"grant": []})).unwrap_err();
        assert!(err.to_string().contains("grant"), "{err}");
    }
}
