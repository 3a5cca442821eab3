//! Logs (`tracing`, to stderr) and metrics (Prometheus, served at `/metrics`),
//! and the live figures the console reads ([`live`]).

pub mod latency;
pub mod live;

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// How log lines look.
#[derive(Debug, Clone, Copy, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the log subscriber; `RUST_LOG` overrides the default levels.
pub fn init_logs(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,wasmtime=warn,cranelift_codegen=warn,tower_http=warn"));
    // Colours only for a person at a terminal: a log file or a collector gets plain text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Plugin calls take microseconds; everything else that is timed, milliseconds to seconds.
const PLUGIN_SECONDS: &[f64] = &[0.00001, 0.00003, 0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1];
const SECONDS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Fuel per call: the default budget is 10^8.
const FUEL: &[f64] = &[1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

/// Installs the global metrics recorder (once per process) and describes every metric.
pub fn init_metrics() -> Option<PrometheusHandle> {
    // Histograms with buckets, not summaries: Grafana's histogram_quantile
    // aggregates buckets across hosts, which quantiles cannot be.
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full("drops_plugin_eval_seconds".into()), PLUGIN_SECONDS)
        .ok()?
        .set_buckets_for_metric(Matcher::Full("drops_plugin_fuel".into()), FUEL)
        .ok()?
        .set_buckets_for_metric(Matcher::Full("drops_inbox_commit_jobs".into()), &[1.0, 4.0, 16.0, 64.0, 256.0, 1024.0])
        .ok()?
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)
        .ok()?
        .install_recorder()
        .ok()?;
    describe_metrics();
    Some(handle)
}

/// What each metric means, as `# HELP` lines: one table, so a new metric
/// without a description stands out in review (and `promtool check metrics`
/// fails the end-to-end test).
fn describe_metrics() {
    for &(name, unit, help) in COUNTERS {
        describe_counter!(name, unit, help);
    }
    for &(name, unit, help) in GAUGES {
        describe_gauge!(name, unit, help);
    }
    for &(name, unit, help) in HISTOGRAMS {
        describe_histogram!(name, unit, help);
    }
}

/// A metric's name, unit and help text.
type Description = (&'static str, Unit, &'static str);
use Unit::{Bytes, Count, Seconds};

const COUNTERS: &[Description] = &[
    ("drops_vhs_requests_total", Count, "VHS requests answered, by outcome (accepted or the refusal's reason)"),
    ("drops_vhs_busy_total", Count, "VHS requests refused because too many bodies or signed bytes were in flight"),
    ("drops_vhs_heartbeats_total", Count, "VHS heartbeats received, by outcome (accepted, duplicate)"),
    ("drops_e2_messages_total", Count, "E2 messages received, by outcome (accepted or the refusal's code)"),
    ("drops_e2_connection_panics_total", Count, "E2 connections ended by a panic in their handler"),
    ("drops_e2_state_too_large_total", Count, "E2 game states dropped for exceeding the kept-state bound"),
    ("drops_eventsub_entitlements_total", Count, "EventSub entitlements received, by outcome (accepted, duplicate)"),
    ("drops_eventsub_revocations_total", Count, "EventSub subscription revocations received from Twitch"),
    ("drops_engine_watch_time_seconds_total", Seconds, "Watch time the engine counted for viewers of campaigns"),
    ("drops_engine_stopped_total", Count, "Times the engine stopped on an error it could not retry"),
    ("drops_engine_checkpoint_bytes_total", Bytes, "Compressed watch-time segment bytes checkpoints wrote"),
    ("drops_grants_total", Count, "Grants stored (each grant once)"),
    ("drops_plugin_errors_total", Count, "Plugin calls that failed, over all plugins"),
    ("drops_plugin_calls_total", Count, "Plugin calls, by plugin, version and outcome (ok or the error's kind)"),
    ("drops_breaker_opened_total", Count, "Times a campaign's circuit breaker paused it, by campaign"),
    ("drops_breaker_backlog_dropped_total", Count, "Events a paused campaign dropped from its bounded backlog"),
    ("drops_entitlements_decided_total", Count, "EventSub entitlements decided by the rules, by outcome"),
    ("drops_entitlement_sweep_announced_total", Count, "Entitlements announced again by the link sweep"),
    ("drops_links_put_total", Count, "Account links stored through the admin API"),
    ("drops_console_logins_total", Count, "Console logins, by outcome (accepted, refused)"),
    ("drops_rules_reloads_total", Count, "Rules reloads, by outcome (swapped, unchanged, failed)"),
    ("drops_manifests_written_total", Count, "Entitlement manifest files written"),
    ("drops_manifest_users_total", Count, "Users written into manifests"),
    ("drops_manifest_uploads_total", Count, "Manifest upload attempts, by outcome (uploaded, retry, failed)"),
    ("drops_manifest_users_uploaded_total", Count, "Users in manifests Twitch accepted"),
    ("drops_sink_grants_delivered_total", Count, "Grants a sink acknowledged, by sink"),
    ("drops_sink_items_delivered_total", Count, "EventSub items a sink acknowledged, by sink"),
    ("drops_sink_failures_total", Count, "Failed sink deliveries, by sink"),
    ("drops_fulfil_answers_total", Count, "Twitch's answers to FULFILLED updates, by outcome"),
    ("drops_fulfil_failures_total", Count, "FULFILLED update calls that failed"),
    ("drops_reconciled_entitlements_total", Count, "Entitlements found by reconciliation that EventSub had not sent"),
    ("drops_twitch_tokens_total", Count, "App access tokens fetched from Twitch"),
    ("drops_twitch_token_refusals_total", Count, "App access token requests Twitch refused"),
    ("drops_twitch_rate_limited_total", Count, "Twitch API answers of 429 (rate limited)"),
    ("drops_cluster_leases_taken_total", Count, "Leases this host took, by role"),
];

const GAUGES: &[Description] = &[
    ("drops_e2_connections", Count, "Game-server websocket connections open now"),
    ("drops_engine_inbox_seq", Count, "The last inbox sequence number the engine has judged, by partition"),
    (
        "drops_engine_checkpoint_seq",
        Count,
        "The inbox sequence number the last committed checkpoint covers, by partition",
    ),
    ("drops_engine_lag_events", Count, "Inbox sequence numbers stored but not yet judged, by partition"),
    ("drops_engine_lag_seconds", Seconds, "Age of the oldest stored event the engine has not judged, by partition"),
    ("drops_engine_broadcasters_watching", Count, "Broadcasters with viewers in the watching window"),
    ("drops_engine_viewer_ids", Count, "Viewer ids the engine's watch-time table holds"),
    ("drops_engine_paused_backlog_events", Count, "Events held for paused campaigns"),
    ("drops_campaigns_paused", Count, "Campaigns paused by their circuit breaker"),
    ("drops_rules_campaigns", Count, "Campaigns loaded"),
    ("drops_rules_load_errors", Count, "Rules files that failed to load"),
    ("drops_manifests", Count, "Manifests by status"),
    ("drops_manifest_oldest_undelivered_age_seconds", Seconds, "Age of the oldest manifest not yet uploaded"),
    ("drops_sink_pending_grants", Count, "Grants a sink has not yet acknowledged, by sink"),
    ("drops_sink_oldest_pending_age_seconds", Seconds, "Age of the oldest grant a sink has not acknowledged"),
    ("drops_entitlements_awaiting_link", Count, "EventSub entitlements waiting for an account link"),
    ("drops_entitlements_to_deliver", Count, "EventSub entitlements decided but not yet delivered to the game"),
    ("drops_entitlements_to_fulfil", Count, "EventSub entitlements delivered but not yet FULFILLED on Twitch"),
    ("drops_cluster_hosts", Count, "Hosts sharing this database that renewed their leases recently"),
    ("drops_cluster_roles_held", Count, "Roles (engine partitions, manifests, sinks) this host runs"),
];

const HISTOGRAMS: &[Description] = &[
    ("drops_ingest_ack_seconds", Seconds, "From a request or message arriving to its acknowledgement, by source"),
    ("drops_vhs_read_seconds", Seconds, "Reading, checking and parsing a VHS body"),
    ("drops_vhs_store_seconds", Seconds, "Storing a VHS report's heartbeats"),
    ("drops_inbox_commit_seconds", Seconds, "One inbox commit (a group of ingest writes)"),
    ("drops_inbox_commit_jobs", Count, "Ingest writes grouped into one inbox commit"),
    ("drops_e2_decision_seconds", Seconds, "From an E2 message's arrival to its grants being stored"),
    ("drops_plugin_eval_seconds", Seconds, "One plugin call, by plugin and version"),
    ("drops_plugin_fuel", Count, "Fuel (wasm instructions, roughly) one plugin call burnt, by plugin and version"),
    ("drops_plugin_compile_seconds", Seconds, "Compiling a plugin version"),
    ("drops_rules_reload_seconds", Seconds, "Loading and swapping in a changed rules folder"),
    (
        "drops_engine_checkpoint_seconds",
        Seconds,
        "Writing one checkpoint, from taking it to its commit (evaluation goes on)",
    ),
    (
        "drops_engine_checkpoint_pause_seconds",
        Seconds,
        "Evaluation paused while a checkpoint copied and encoded what changed",
    ),
    (
        "drops_engine_restore_seconds",
        Seconds,
        "Loading a partition's checkpoint at start or takeover, segments applied",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_the_dashboard_charts_is_described() {
        let described: Vec<&str> = COUNTERS.iter().chain(GAUGES).chain(HISTOGRAMS).map(|d| d.0).collect();
        let dashboard = include_str!("../../../docs/grafana-dashboard.json");
        let mut charted = 0;
        for (at, _) in dashboard.match_indices("drops_") {
            let name: String = dashboard[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            let base = name.strip_suffix("_bucket").unwrap_or(&name);
            assert!(described.contains(&base), "the dashboard charts {name}, which no metric is");
            charted += 1;
        }
        assert!(charted > 20, "{charted}");
    }
}
