//! `drops-host replay`: recorded events through the rules, in memory, nothing delivered.

use std::collections::{BTreeMap, HashSet};
use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use crate::config::Settings;
use crate::domain::InboxEvent;
use crate::engine::recording::{parse_line, Line};
use crate::engine::{evaluate, Evaluation, Judgement, Lookups, State};
use crate::plugins::PluginRuntime;
use crate::rules::RuleSet;

/// Runs the replay and prints grants per campaign and reward. The plugin
/// limits, circuit breaker and watching window come from `settings`, as in
/// the host whose traffic is replayed, so the replay decides as it did.
pub fn run(settings: &Settings, rules_dir: &Path, events: &Path) -> anyhow::Result<()> {
    let runtime = Arc::new(PluginRuntime::new(settings.plugins.clone())?);
    let rules = RuleSet::load(rules_dir, &runtime);
    for err in rules.errors() {
        println!("not loaded: {}: {}", err.file.display(), err.error);
    }
    let file = std::fs::File::open(events).with_context(|| format!("opening {}", events.display()))?;
    let total_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut progress = Progress::new(total_bytes);
    let mut state = State::new(&Judgement::from_settings(settings));
    let here = runtime.fingerprint();
    let mut noted: Option<String> = None;
    let mut seen_ids = HashSet::new();
    let mut made = HashSet::new();
    let mut table: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut entitlements: BTreeMap<&'static str, u64> = BTreeMap::new();
    // A recording holds no account links: entitlements wait for the recorded link events.
    let mut lookups = Lookups::default();
    let (mut events_read, mut duplicates, mut minutes, mut errors) = (0u64, 0u64, 0u64, 0u64);
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        progress.advance(line.len() as u64 + 1);
        if line.trim().is_empty() {
            continue;
        }
        let recorded = match parse_line(&line).map_err(|e| anyhow::anyhow!("line {}: {e}", i + 1))? {
            Line::Event(recorded) => recorded,
            Line::RecordedUnder(recorded) => {
                if let Some(note) = runtime_note(i + 2, recorded, &here, &mut noted) {
                    println!("{note}");
                }
                continue;
            }
        };
        events_read += 1;
        if !seen_ids.insert(recorded.dedup_id) {
            duplicates += 1;
            continue;
        }
        let mut out = Evaluation::default();
        evaluate(
            &mut state,
            &rules,
            &runtime,
            &InboxEvent { seq: events_read as i64, received_at_ms: recorded.received_at_ms, event: recorded.event },
            &lookups,
            &mut out,
        );
        minutes += out.viewer_minutes;
        for d in &out.entitlements {
            *entitlements.entry(d.decision.status()).or_default() += 1;
        }
        // What was decided is known to the events after it, as the store makes it known to the host.
        lookups.seen.extend(out.seen.drain());
        errors += out.plugin_errors;
        for g in out.grants {
            if made.insert((g.campaign_id.clone(), g.reward_id.clone(), g.user_id.clone(), g.grant_key.clone())) {
                *table.entry((g.campaign_id, g.reward_id)).or_default() += 1;
            }
        }
    }
    progress.finish();
    println!("{:<40} {:<32} {:>10}", "campaign", "reward", "grants");
    for ((campaign, reward), n) in &table {
        println!("{campaign:<40} {reward:<32} {n:>10}");
    }
    println!(
        "{events_read} events ({duplicates} duplicates), {minutes} viewer-minutes counted, {} grants, {errors} plugin errors",
        table.values().sum::<u64>()
    );
    if !entitlements.is_empty() {
        let outcomes: Vec<String> = entitlements.iter().map(|(status, n)| format!("{n} {status}")).collect();
        println!("entitlements: {}", outcomes.join(", "));
    }
    Ok(())
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
