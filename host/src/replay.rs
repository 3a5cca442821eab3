//! `drops-host replay`: recorded events through the rules, in memory, nothing delivered.

use std::collections::{BTreeMap, HashSet};
use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use crate::config::Settings;
use crate::domain::InboxEvent;
use crate::engine::recording::{parse_line, Line};
use crate::engine::{evaluate, Evaluation, Judgement, State};
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
    let mut warned = HashSet::new();
    let mut seen_ids = HashSet::new();
    let mut made = HashSet::new();
    let mut table: BTreeMap<(String, String), u64> = BTreeMap::new();
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
                if recorded != here && warned.insert(recorded.clone()) {
                    println!(
                        "note: the events from line {} on were judged under {recorded}; this replay runs under {here}: \
                         a verdict that ran out of fuel or memory, or near a limit, may differ",
                        i + 2
                    );
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
            &mut out,
        );
        minutes += out.viewer_minutes;
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
    Ok(())
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
