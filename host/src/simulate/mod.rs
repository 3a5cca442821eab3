//! `drops-host simulate`: sends VHS traffic the way Twitch does, and E2
//! game state the way game servers do.
//!
//! Every simulated minute, one report per live channel; a report that fails
//! (non-2xx, error or timeout) is retried up to three times with the same `id`
//! and `retries` counting up; after four failures the rest of that minute's
//! reports are dropped, as Twitch does. With `--e2-token`, each channel's
//! broadcaster also has a game server publishing its state ([`game_server`]).

pub mod ack_latency;
pub mod eventsub;
pub mod game_server;
pub mod twitch_upload;

use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::stream::{self, StreamExt};
use serde::Serialize;
use tokio::sync::mpsc;

use game_server::{GameServer, GameServerReport};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Options of `drops-host simulate`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// Base URL of the host (reports go to <target>/vhs). Several hosts
    /// behind no load balancer: comma-separated; reports are spread over
    /// them in turn and a retry goes to the next one, as behind a balancer.
    #[arg(long)]
    pub target: String,
    /// VHS shared secret (sent as /vhs/{token}).
    #[arg(long, env = "DROPS_HOST_VHS__TOKEN")]
    pub token: Option<String>,
    /// Live channels.
    #[arg(long, default_value_t = 3)]
    pub channels: u32,
    /// Linked viewers per channel.
    #[arg(long, default_value_t = 20)]
    pub viewers: u32,
    /// Viewers watching every channel at once (multi-window farming), on top of --viewers.
    #[arg(long, default_value_t = 5)]
    pub multi_viewers: u32,
    /// Simulated minutes to send.
    #[arg(long, default_value_t = 10)]
    pub minutes: u32,
    /// Simulated minutes per real minute: 1 is real time, 60 sends a minute every second.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Game name reported.
    #[arg(long, default_value = "GameName")]
    pub game: String,
    /// Time of the first minute (RFC 3339); default: so that the last minute is now.
    #[arg(long)]
    pub start: Option<String>,
    /// Prefix of broadcaster ids (broadcaster-0, broadcaster-1, ...).
    #[arg(long, default_value = "broadcaster-")]
    pub broadcaster_prefix: String,
    /// Prefix of viewer ids (viewer-0-0, ..., viewer-multi-0, ...).
    #[arg(long, default_value = "viewer-")]
    pub viewer_prefix: String,
    /// A different N gives a different, reproducible set of viewers
    /// (viewer-s<N>-0-0, ...): fresh viewers to test a changed rule on, without
    /// resetting the campaign. 0: the plain ids.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Send every Nth report twice, as Twitch does when an answer is lost (0: never).
    #[arg(long, default_value_t = 0)]
    pub redeliver_every: u32,
    /// Reports in flight at once (Twitch sends one at a time; raise it for load tests).
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Per-try timeout in seconds (Twitch's is 15).
    #[arg(long, default_value_t = 15)]
    pub timeout_secs: u64,
    /// Print a line per minute.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub verbose: bool,
    /// E2 app token: when set, each channel's broadcaster gets a game server
    /// publishing its game state over `<target>/e2`.
    #[arg(long)]
    pub e2_token: Option<String>,
    /// Client id the game servers publish as.
    #[arg(long, default_value = "demo-client-id")]
    pub e2_client_id: String,
    /// Twitch game id the game servers publish for.
    #[arg(long, default_value = "demo-game-id")]
    pub e2_game_id: String,
    /// The last N channels' games sit idle on a menu: connected, but their
    /// state never changes (the farming trick `active-play-only` defeats).
    #[arg(long, default_value_t = 0)]
    pub idle_channels: u32,
    /// A boss falls in each broadcaster's game every this many minutes (0: never).
    #[arg(long, default_value_t = 10)]
    pub boss_every: u32,
    /// E2 messages per window and window length in seconds (the host's limits).
    #[arg(long, default_value_t = 60)]
    pub e2_messages_per_window: u32,
    #[arg(long, default_value_t = 60)]
    pub e2_window_secs: u64,
    /// Admin token: registers the account links of the simulated broadcasters
    /// (Twitch user `twitch-<broadcaster>` is game account `<broadcaster>`) first.
    #[arg(long, env = "DROPS_HOST_ADMIN__TOKEN")]
    pub admin_token: Option<String>,
    /// Append the id of every report the host acknowledged to this file, one
    /// per line (crash tests check each one is stored).
    #[arg(long)]
    pub acked_log: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub eventsub: eventsub::EventSubArgs,
}

/// The Twitch user id simulated for a broadcaster's game account.
pub fn twitch_user_of(broadcaster: &str) -> String {
    format!("twitch-{broadcaster}")
}

/// Totals of a run.
#[derive(Debug, Default, Clone, Serialize)]
pub struct SimulateReport {
    pub reports: u64,
    pub tries: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub failed: u64,
    /// Reports not sent because an earlier one of the same minute failed.
    pub skipped: u64,
    pub viewer_minutes: u64,
    pub elapsed_secs: f64,
    /// Acknowledged tries' latency in milliseconds: median and 99th percentile.
    pub ack_p50_ms: f64,
    pub ack_p99_ms: f64,
    /// What the game servers saw, summed.
    pub e2: GameServerReport,
    /// Boss kills the game servers published.
    pub boss_kills: u64,
    /// What the EventSub part sent.
    pub eventsub: eventsub::EventSubReport,
}

#[derive(Serialize)]
struct Report<'a> {
    broadcaster: String,
    broadcast_id: u64,
    viewers: u64,
    viewer_list: &'a [String],
    game: &'a str,
    version: u32,
    id: String,
    time: String,
    retries: u32,
}

#[derive(serde::Deserialize)]
struct Answer {
    accepted: u64,
    duplicates: u64,
}

/// The viewer ids of each simulated channel.
pub fn channel_viewers(args: &SimulateArgs) -> Vec<Vec<String>> {
    let prefix = match args.seed {
        0 => args.viewer_prefix.clone(),
        seed => format!("{}s{seed}-", args.viewer_prefix),
    };
    (0..args.channels)
        .map(|c| {
            (0..args.viewers)
                .map(|v| format!("{prefix}{c}-{v}"))
                .chain((0..args.multi_viewers).map(|v| format!("{prefix}multi-{v}")))
                .collect()
        })
        .collect()
}

impl SimulateArgs {
    /// The hosts' base URLs (`--target`, comma-separated).
    pub fn targets(&self) -> impl Iterator<Item = &str> {
        self.target.split(',').map(|t| t.trim().trim_end_matches('/')).filter(|t| !t.is_empty())
    }
}

/// Runs the simulation and prints what was sent and how the host answered.
pub async fn run(args: &SimulateArgs) -> anyhow::Result<SimulateReport> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(args.timeout_secs)).build()?;
    let urls: Vec<String> = args
        .targets()
        .map(|target| match &args.token {
            Some(token) => format!("{target}/vhs/{token}"),
            None => format!("{target}/vhs"),
        })
        .collect();
    anyhow::ensure!(!urls.is_empty(), "--target: give at least one host URL");
    let mut latencies_us: Vec<u64> = Vec::new();
    let start = match &args.start {
        Some(s) => OffsetDateTime::parse(s, &Rfc3339).context("--start is not an RFC 3339 time")?,
        None => OffsetDateTime::now_utc() - time::Duration::minutes(args.minutes as i64),
    };
    let viewers = channel_viewers(args);
    let broadcasters: Vec<String> = (0..args.channels).map(|c| format!("{}{c}", args.broadcaster_prefix)).collect();
    if let Some(admin) = &args.admin_token {
        register_links(&client, args.targets().next().unwrap_or_default(), admin, &broadcasters).await?;
    }
    let first_target = args.targets().next().unwrap_or_default().to_string();
    let mut eventsub_report =
        eventsub::play(&client, &first_target, args.admin_token.as_deref(), &args.eventsub).await?;
    let (game_servers, servers) = start_game_servers(args, &broadcasters);
    let mut kills = vec![0u32; broadcasters.len()];
    let tick = Duration::from_secs_f64(60.0 / args.speed.max(0.001));
    let began = Instant::now();
    let mut total = SimulateReport::default();
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    for minute in 0..args.minutes {
        let minute_began = Instant::now();
        let at = (start + time::Duration::minutes(minute as i64)).format(&Rfc3339)?;
        let reports = (0..args.channels as usize).map(|c| {
            let first = minute as usize * args.channels as usize + c;
            let report = Report {
                broadcaster: format!("{}{c}", args.broadcaster_prefix),
                broadcast_id: 27_388_295_120 + c as u64,
                viewers: viewers[c].len() as u64 + 3,
                viewer_list: &viewers[c],
                game: &args.game,
                version: 1,
                id: format!("{run_id}-{minute}-{c}"),
                time: at.clone(),
                retries: 0,
            };
            let twice = args.redeliver_every > 0
                && (minute as usize * args.channels as usize + c) % args.redeliver_every as usize == 0;
            (report, twice, first)
        });
        // Twitch stops a minute's remaining reports once one fails four times.
        let reports: Vec<_> = reports.collect();
        let mut results: Vec<MinuteResult> = Vec::new();
        let mut pending = reports.into_iter();
        let mut line = SimulateReport::default();
        loop {
            let chunk: Vec<_> = pending.by_ref().take(args.concurrency.max(1)).collect();
            if chunk.is_empty() {
                break;
            }
            let done: Vec<MinuteResult> = stream::iter(chunk)
                .map(|(report, twice, first)| send_with_retries(&client, &urls, first, report, twice))
                .buffer_unordered(args.concurrency.max(1))
                .collect()
                .await;
            let failed = done.iter().any(|r| r.failed);
            results.extend(done);
            if failed {
                line.skipped = pending.len() as u64;
                break;
            }
        }
        if let Some(path) = &args.acked_log {
            let ids: String = results.iter().filter_map(|r| r.acked.as_ref()).map(|id| format!("{id}\n")).collect();
            use std::io::Write;
            let mut log = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
            log.write_all(ids.as_bytes())?;
            // Flushed before the next minute: an id is written only after its acknowledgement.
            log.sync_data()?;
        }
        for r in &results {
            latencies_us.extend(&r.latencies_us);
            line.reports += 1;
            line.tries += r.tries;
            line.accepted += r.accepted;
            line.duplicates += r.duplicates;
            line.failed += r.failed as u64;
            line.viewer_minutes += if r.failed { 0 } else { r.viewers };
        }
        if args.verbose {
            println!(
                "simulate: minute {:>3} ({at}): {} reports, {} accepted, {} duplicates, {} retries, {} failed, {} skipped",
                minute + 1,
                line.reports,
                line.accepted,
                line.duplicates,
                line.tries - line.reports,
                line.failed,
                line.skipped
            );
        }
        total.reports += line.reports;
        total.tries += line.tries;
        total.accepted += line.accepted;
        total.duplicates += line.duplicates;
        total.failed += line.failed;
        total.skipped += line.skipped;
        total.viewer_minutes += line.viewer_minutes;
        // Game state follows the minute's heartbeats, so the viewers are known when a boss falls.
        let active = args.channels.saturating_sub(args.idle_channels) as usize;
        for (c, server) in game_servers.iter().enumerate().take(active) {
            let delta = game_server::delta_for(minute, c as u32, args.boss_every, kills[c]);
            if delta.get("boss_kills").is_some() {
                kills[c] += 1;
                total.boss_kills += 1;
            }
            let _ = server.send(delta).await;
        }
        if minute + 1 < args.minutes {
            tokio::time::sleep(tick.saturating_sub(minute_began.elapsed())).await;
        }
    }
    drop(game_servers);
    for server in servers {
        if let Ok(r) = server.await {
            total.e2.messages += r.messages;
            total.e2.acks += r.acks;
            total.e2.errors += r.errors;
            total.e2.reconnects += r.reconnects;
            total.e2.coalesced += r.coalesced;
        }
    }
    if let (Some(admin), Some(_)) = (&args.admin_token, &args.eventsub.eventsub_secret) {
        eventsub_report.linked_late = eventsub::link_late(&client, &first_target, admin, &args.eventsub).await?;
    }
    total.eventsub = eventsub_report;
    total.elapsed_secs = began.elapsed().as_secs_f64();
    latencies_us.sort_unstable();
    let percentile = |p: f64| {
        let i = ((latencies_us.len() as f64 * p).ceil() as usize).clamp(1, latencies_us.len().max(1)) - 1;
        latencies_us.get(i).map_or(0.0, |us| *us as f64 / 1000.0)
    };
    total.ack_p50_ms = percentile(0.50);
    total.ack_p99_ms = percentile(0.99);
    if args.e2_token.is_some() {
        println!(
            "simulate: game servers sent {} E2 messages ({:.0}/s, {} boss kills): {} acknowledged, {} errors, {} reconnects, {} merged to stay within the rate limit",
            total.e2.messages,
            total.e2.messages as f64 / total.elapsed_secs.max(1e-9),
            total.boss_kills,
            total.e2.acks,
            total.e2.errors,
            total.e2.reconnects,
            total.e2.coalesced
        );
    }
    if args.eventsub.eventsub_secret.is_some() {
        let e = &total.eventsub;
        println!(
            "simulate: EventSub sent {} entitlements in {} notifications ({} redelivered messages, {} duplicate entitlements, {} failed); {} viewers linked first, {} linked late",
            e.entitlements, e.notifications, e.redeliveries, e.duplicate_entitlements, e.failed, e.linked_first, e.linked_late
        );
    }
    println!(
        "simulate: sent {} reports in {:.1} s ({} tries, {:.0}/s): host accepted {}, {} duplicates, {} failed; {} viewer-minutes ({:.0}/s); acknowledged in p50 {:.2} ms, p99 {:.2} ms",
        total.reports,
        total.elapsed_secs,
        total.tries,
        total.reports as f64 / total.elapsed_secs.max(1e-9),
        total.accepted,
        total.duplicates,
        total.failed,
        total.viewer_minutes,
        total.viewer_minutes as f64 / total.elapsed_secs.max(1e-9),
        total.ack_p50_ms,
        total.ack_p99_ms
    );
    Ok(total)
}

/// Registers `twitch-<broadcaster>` → `<broadcaster>` links through the admin API.
async fn register_links(
    client: &reqwest::Client,
    target: &str,
    admin_token: &str,
    broadcasters: &[String],
) -> anyhow::Result<()> {
    let links: Vec<serde_json::Value> = broadcasters
        .iter()
        .map(|b| serde_json::json!({"twitch_user_id": twitch_user_of(b), "game_account_id": b}))
        .collect();
    let resp = client
        .put(format!("{}/v1/links", target.trim_end_matches('/')))
        .bearer_auth(admin_token)
        .json(&links)
        .send()
        .await
        .context("registering account links")?;
    anyhow::ensure!(resp.status().is_success(), "registering account links: {}", resp.text().await?);
    Ok(())
}

/// One game server per broadcaster when `--e2-token` is set: a sender for
/// its deltas and its task.
fn start_game_servers(
    args: &SimulateArgs,
    broadcasters: &[String],
) -> (Vec<mpsc::Sender<serde_json::Value>>, Vec<tokio::task::JoinHandle<GameServerReport>>) {
    let Some(token) = &args.e2_token else { return (Vec::new(), Vec::new()) };
    // Game servers connect to the first host (a websocket stays where it connected).
    let ws_base = args.targets().next().unwrap_or_default().replacen("http", "ws", 1);
    broadcasters
        .iter()
        .map(|b| {
            let (tx, rx) = mpsc::channel(1024);
            let server = GameServer {
                url: format!("{ws_base}/e2"),
                token: token.clone(),
                client_id: args.e2_client_id.clone(),
                game_id: args.e2_game_id.clone(),
                broadcaster: twitch_user_of(b),
                messages_per_window: args.e2_messages_per_window,
                window: Duration::from_secs(args.e2_window_secs),
            };
            (tx, tokio::spawn(server.run(rx)))
        })
        .unzip()
}

#[derive(Default)]
struct MinuteResult {
    tries: u64,
    accepted: u64,
    duplicates: u64,
    failed: bool,
    viewers: u64,
    /// The report's id, once the host acknowledged it.
    acked: Option<String>,
    /// How long each acknowledged try took, in microseconds.
    latencies_us: Vec<u64>,
}

/// Sends a report (twice, when asked) until a host acknowledges it: the
/// first try to `urls[first % n]`, each retry and repeat to the next host.
async fn send_with_retries(
    client: &reqwest::Client,
    urls: &[String],
    first: usize,
    mut report: Report<'_>,
    twice: bool,
) -> MinuteResult {
    let mut result = MinuteResult { viewers: report.viewer_list.len() as u64, ..Default::default() };
    let sends = if twice { 2 } else { 1 };
    let mut next = first;
    for _ in 0..sends {
        report.retries = 0;
        let mut delivered = false;
        for attempt in 0..4u32 {
            report.retries = attempt;
            result.tries += 1;
            let url = &urls[next % urls.len().max(1)];
            next += 1;
            let sent = Instant::now();
            match client.post(url).json(&report).send().await {
                Ok(resp) if resp.status().is_success() => {
                    result.latencies_us.push(sent.elapsed().as_micros() as u64);
                    if let Ok(answer) = resp.json::<Answer>().await {
                        result.accepted += answer.accepted;
                        result.duplicates += answer.duplicates;
                    }
                    delivered = true;
                    result.acked = Some(report.id.clone());
                    break;
                }
                Ok(resp) => {
                    let status = resp.status();
                    let body = resp.text().await.unwrap_or_default();
                    eprintln!("simulate: {} answered {status}: {body}", report.id);
                }
                Err(e) => eprintln!("simulate: {} failed: {e}", report.id),
            }
        }
        if !delivered {
            result.failed = true;
            return result;
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::routing::post;
    use axum::{Json, Router};

    /// (report id, retries) of every try received.
    type Seen = Arc<Mutex<Vec<(String, u32)>>>;

    /// A VHS endpoint that fails the first `fail` tries of every report and records what it got.
    async fn flaky_host(fail: u32) -> (String, Seen) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route(
                "/vhs",
                post(|State((seen, fail)): State<(Seen, u32)>, Json(body): Json<serde_json::Value>| async move {
                    let id = body["id"].as_str().unwrap_or_default().to_string();
                    let retries = body["retries"].as_u64().unwrap_or(99) as u32;
                    seen.lock().unwrap().push((id, retries));
                    if retries < fail {
                        (StatusCode::INTERNAL_SERVER_ERROR, Json(serde_json::json!({"error": "down"})))
                    } else {
                        (StatusCode::OK, Json(serde_json::json!({"accepted": 1, "duplicates": 0})))
                    }
                }),
            )
            .with_state((seen.clone(), fail));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}"), seen)
    }

    fn args(target: String) -> SimulateArgs {
        SimulateArgs {
            target,
            token: None,
            channels: 2,
            viewers: 3,
            multi_viewers: 1,
            minutes: 2,
            speed: 1e6,
            game: "G".into(),
            start: Some("2026-11-01T10:00:00Z".into()),
            broadcaster_prefix: "b-".into(),
            viewer_prefix: "viewer-".into(),
            seed: 0,
            redeliver_every: 0,
            concurrency: 1,
            timeout_secs: 5,
            verbose: false,
            e2_token: None,
            e2_client_id: "client".into(),
            e2_game_id: "game".into(),
            boss_every: 0,
            idle_channels: 0,
            e2_messages_per_window: 60,
            e2_window_secs: 60,
            admin_token: None,
            acked_log: None,
            eventsub: eventsub::EventSubArgs {
                eventsub_secret: None,
                entitled_viewers: 0,
                drops_campaign: "c".into(),
                benefits: "b".into(),
                entitlements_per_message: 1,
            },
        }
    }

    #[tokio::test]
    async fn retries_keep_the_id_and_count_up() {
        let (url, seen) = flaky_host(2).await;
        let report = run(&args(url)).await.unwrap();
        assert_eq!((report.reports, report.tries, report.accepted, report.failed), (4, 12, 4, 0));
        let seen = seen.lock().unwrap().clone();
        let first: Vec<_> = seen.iter().filter(|(id, _)| id.ends_with("-0-0")).map(|(_, r)| *r).collect();
        assert_eq!(first, vec![0, 1, 2]);
        assert_eq!(report.viewer_minutes, 2 * 2 * 4);
    }

    #[tokio::test]
    async fn a_report_failing_four_times_is_dropped() {
        let (url, seen) = flaky_host(10).await;
        let report = run(&args(url)).await.unwrap();
        // Channel 0 fails four times each minute, so channel 1 is not sent that minute.
        assert_eq!((report.reports, report.tries, report.failed, report.skipped), (2, 8, 2, 2));
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.iter().filter(|(id, _)| id.ends_with("-0-0")).count(), 4);
        assert!(!seen.iter().any(|(id, _)| id.ends_with("-0-1")));
    }

    #[test]
    fn multi_viewers_are_in_every_channel() {
        let viewers = channel_viewers(&args(String::new()));
        assert!(viewers.iter().all(|v| v.contains(&"viewer-multi-0".to_string())));
        assert_eq!(viewers[0].len(), 4);
    }

    #[test]
    fn a_seed_or_a_prefix_gives_other_viewers_the_same_each_time() {
        let plain = channel_viewers(&args(String::new()));
        let seeded = SimulateArgs { seed: 7, viewer_prefix: "fan-".into(), ..args(String::new()) };
        let (a, b) = (channel_viewers(&seeded), channel_viewers(&seeded));
        assert_eq!(a, b, "reproducible");
        assert_eq!(a[0][0], "fan-s7-0-0");
        assert!(a.iter().flatten().all(|v| !plain.iter().flatten().any(|p| p == v)), "no viewer shared");
    }
}
