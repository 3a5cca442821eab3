//! `drops-host ack-latency`: how long Twitch waits for each acknowledgement
//! when it sends one channel's report at a time, beside the two floors no
//! host can beat on this machine: an append + fdatasync of the same body on
//! the same disk, and an HTTP round trip to `/healthz`. All three are
//! measured in the same run so that the comparison holds on a noisy machine.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Measures sequential acknowledgement latency against its floors.
#[derive(Debug, clap::Args)]
pub struct AckLatencyArgs {
    /// The host's base URL (http://127.0.0.1:8080).
    #[arg(long)]
    pub target: String,
    /// The VHS path token, when the host is configured with one.
    #[arg(long, env = "DROPS_HOST_VHS__TOKEN")]
    pub token: Option<String>,
    /// Viewers in each heartbeat.
    #[arg(long, default_value_t = 1000)]
    pub viewers: u32,
    /// Heartbeats to send, one at a time over one keep-alive connection.
    #[arg(long, default_value_t = 300)]
    pub requests: u32,
    /// Distinct channels the heartbeats cycle through.
    #[arg(long, default_value_t = 100)]
    pub channels: u32,
    /// A folder on the host's disk (its data_dir) for the fdatasync floor.
    #[arg(long)]
    pub floor_dir: PathBuf,
    /// Print the figures as one JSON object as well.
    #[arg(long)]
    pub json: bool,
}

/// Percentiles of one series, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    /// Percentiles of `samples` (nearest rank); zeros when there are none.
    pub fn of(mut samples: Vec<Duration>) -> Percentiles {
        if samples.is_empty() {
            return Percentiles { p50: 0.0, p99: 0.0, max: 0.0, mean: 0.0 };
        }
        samples.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let rank = |p: f64| samples[((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1];
        let mean = samples.iter().map(|d| ms(*d)).sum::<f64>() / samples.len() as f64;
        Percentiles { p50: ms(rank(0.50)), p99: ms(rank(0.99)), max: ms(samples[samples.len() - 1]), mean }
    }
}

/// The run's figures.
#[derive(Debug, Serialize)]
pub struct AckLatencyReport {
    pub viewers: u32,
    pub requests: u32,
    pub body_bytes: usize,
    pub fsync_floor: Percentiles,
    pub http_floor: Percentiles,
    pub ack: Percentiles,
    pub channels_per_minute: f64,
    /// The issue's goal: p50 ≤ HTTP p50 + fsync p50 + 0.5 ms.
    pub p50_limit: f64,
    /// The issue's goal: p99 ≤ HTTP p99 + 4 × fsync p99.
    pub p99_limit: f64,
}

/// Runs the three measurements and prints them.
pub async fn run(args: &AckLatencyArgs) -> anyhow::Result<AckLatencyReport> {
    let base = args.target.trim_end_matches('/').to_string();
    let url = match &args.token {
        Some(token) => format!("{base}/vhs/{token}"),
        None => format!("{base}/vhs"),
    };
    // One connection, reused: Twitch keeps its connection alive between reports.
    let client = reqwest::Client::builder().pool_max_idle_per_host(1).timeout(Duration::from_secs(30)).build()?;
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let start = OffsetDateTime::now_utc() - time::Duration::minutes(i64::from(args.requests) + 1);
    let bodies = (0..args.requests)
        .map(|i| heartbeat_body(&run_id, i, args.channels.max(1), args.viewers, start))
        .collect::<anyhow::Result<Vec<Vec<u8>>>>()?;
    let body_bytes = bodies.first().map_or(0, Vec::len);

    let fsync_floor = fsync_floor(&args.floor_dir, &bodies)?;
    let mut http = Vec::with_capacity(args.requests as usize);
    for _ in 0..args.requests {
        let began = Instant::now();
        let resp = client.get(format!("{base}/healthz")).send().await.context("GET /healthz")?;
        resp.bytes().await?;
        http.push(began.elapsed());
    }
    let http_floor = Percentiles::of(http);

    let mut acks = Vec::with_capacity(bodies.len());
    for body in bodies {
        let began = Instant::now();
        let resp = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .context("POST /vhs")?;
        let status = resp.status();
        let text = resp.text().await?;
        anyhow::ensure!(status.is_success(), "the host answered {status}: {text}");
        acks.push(began.elapsed());
    }
    let ack = Percentiles::of(acks);
    let report = AckLatencyReport {
        viewers: args.viewers,
        requests: args.requests,
        body_bytes,
        fsync_floor,
        http_floor,
        ack,
        channels_per_minute: if ack.mean > 0.0 { 60_000.0 / ack.mean } else { 0.0 },
        p50_limit: http_floor.p50 + fsync_floor.p50 + 0.5,
        p99_limit: http_floor.p99 + 4.0 * fsync_floor.p99,
    };
    print(&report);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(report)
}

/// One channel's report of minute `i`, as Twitch would send it.
fn heartbeat_body(run: &str, i: u32, channels: u32, viewers: u32, start: OffsetDateTime) -> anyhow::Result<Vec<u8>> {
    let channel = i % channels;
    let minute = start + time::Duration::minutes(i64::from(i / channels));
    let viewer_list: Vec<String> = (0..viewers).map(|v| format!("viewer-{channel}-{v}")).collect();
    let body = serde_json::json!({
        "broadcaster": format!("latency-{channel}"),
        "broadcast_id": 27_388_295_120u64 + u64::from(channel),
        "viewers": viewers + 3,
        "viewer_list": viewer_list,
        "game": "GameName",
        "version": 1,
        "id": format!("{run}-{i}"),
        "time": minute.format(&Rfc3339)?,
        "retries": 0,
    });
    Ok(serde_json::to_vec(&body)?)
}

/// Appends each body to a file and fdatasyncs it, as a log with no other work would.
fn fsync_floor(dir: &std::path::Path, bodies: &[Vec<u8>]) -> anyhow::Result<Percentiles> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("ack-latency-floor-{}.log", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut samples = Vec::with_capacity(bodies.len());
    for body in bodies {
        let began = Instant::now();
        file.write_all(body)?;
        file.sync_data()?;
        samples.push(began.elapsed());
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok(Percentiles::of(samples))
}

fn print(r: &AckLatencyReport) {
    println!(
        "ack-latency: {} sequential heartbeats of {} viewers ({} bytes each), one keep-alive connection",
        r.requests, r.viewers, r.body_bytes
    );
    println!("{:<28} {:>9} {:>9} {:>9}", "ms", "p50", "p99", "max");
    for (name, p) in [
        ("append + fdatasync (floor)", r.fsync_floor),
        ("GET /healthz (floor)", r.http_floor),
        ("POST /vhs acknowledged", r.ack),
    ] {
        println!("{name:<28} {:>9.2} {:>9.2} {:>9.2}", p.p50, p.p99, p.max);
    }
    let verdict = |got: f64, limit: f64| if got <= limit { "met" } else { "missed" };
    println!(
        "goal p50 <= {:.2} ms: {}; goal p99 <= {:.2} ms: {}; {:.0} channels/minute at the mean",
        r.p50_limit,
        verdict(r.ack.p50, r.p50_limit),
        r.p99_limit,
        verdict(r.ack.p99, r.p99_limit),
        r.channels_per_minute
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let p = Percentiles::of(samples);
        assert_eq!((p.p50, p.p99, p.max), (50.0, 99.0, 100.0));
        assert_eq!(Percentiles::of(Vec::new()).max, 0.0);
    }

    #[test]
    fn bodies_cycle_through_channels_and_minutes() {
        let start = OffsetDateTime::UNIX_EPOCH;
        let body: serde_json::Value = serde_json::from_slice(&heartbeat_body("r", 5, 2, 3, start).unwrap()).unwrap();
        assert_eq!(body["broadcaster"], "latency-1");
        assert_eq!(body["time"], "1970-01-01T00:02:00Z");
        assert_eq!(body["viewer_list"].as_array().unwrap().len(), 3);
    }
}
