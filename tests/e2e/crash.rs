//! SIGKILL while heartbeats are flowing: after restarts, watch-time and grants
//! equal those of an uninterrupted run, and every grant is in exactly one manifest.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::{heartbeat, tiers_campaign, Backend, HostConfig, TestHost};

pub(crate) fn workload() -> Vec<Value> {
    let mut reports = Vec::new();
    for minute in 0..30i64 {
        let t = time::OffsetDateTime::parse("2026-11-02T08:00:00Z", &time::format_description::well_known::Rfc3339)
            .unwrap()
            + time::Duration::minutes(minute);
        let time = t.format(&time::format_description::well_known::Rfc3339).unwrap();
        for channel in 0..4 {
            let mut viewers: Vec<String> = (0..40)
                .filter(|v| (v + minute) % 5 != 0) // viewers come and go
                .map(|v| format!("v-{channel}-{v}"))
                .collect();
            viewers.extend((0..10).map(|v| format!("shared-{v}")));
            let refs: Vec<&str> = viewers.iter().map(String::as_str).collect();
            reports.push(heartbeat(
                &format!("r-{minute}-{channel}"),
                &format!("b-{channel}"),
                "GameName",
                &time,
                &refs,
            ));
        }
    }
    reports
}

pub(crate) fn config() -> HostConfig {
    let window = ("2026-11-02T00:00:00Z", "2026-11-03T00:00:00Z");
    // Rules' state must survive too: a daily cap of 7 on the official channel.
    let capped = format!(
        "id = \"camp-capped\"\nname = \"capped\"\ngame = \"GameName\"\nclient_id = \"c\"\nstarts_at = \"{}\"\n\
         ends_at = \"{}\"\n[[rewards]]\nid = \"early\"\n[rule]\nplugin = \"official-channels-only\"\n\
         config = {{ channels = [\"b-0\"], minutes = 5, reward = \"early\", daily_cap = 7 }}\n",
        window.0, window.1
    );
    HostConfig {
        campaigns: vec![
            ("c".into(), tiers_campaign("camp-crash", "GameName", window, &[], &[(10, "r10"), (20, "r20")])),
            ("capped".into(), capped),
        ],
        extra_plugins: vec!["official-channels-only"],
        ..Default::default()
    }
}

/// What a run leaves behind.
struct Outcome {
    grants: BTreeSet<(String, String)>,
    minutes: i64,
    events: usize,
    rule_state: Vec<(String, String, Vec<u8>)>,
}

/// Sends every report until it is acknowledged; SIGKILLs the host while the
/// report at each kill point is in flight, and restarts it.
async fn run(backend: Backend, kill_points: &[usize]) -> Option<Outcome> {
    let mut host = TestHost::spawn(backend, config()).await?;
    for (i, report) in workload().iter().enumerate() {
        if kill_points.contains(&i) {
            let (client, url, body) = (host.client.clone(), format!("{}/vhs", host.base), report.clone());
            let in_flight = tokio::spawn(async move { client.post(url).json(&body).send().await });
            tokio::time::sleep(Duration::from_millis(2)).await;
            host.kill();
            let _ = in_flight.await;
            host.restart();
        }
        loop {
            let (status, _) = host.post_vhs(None, report).await;
            if status == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Grants appear once the engine has caught up; wait until they stop changing.
    let mut last = usize::MAX;
    loop {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let n = host.grants().await.len();
        if n == last {
            break;
        }
        last = n;
    }
    let manifests = host.wait_for_manifests(1).await;
    let grants: BTreeSet<(String, String)> = host
        .grants()
        .await
        .iter()
        .map(|g| (g["reward_id"].as_str().unwrap().to_string(), g["user_id"].as_str().unwrap().to_string()))
        .collect();
    // Every grant in exactly one manifest file.
    let mut in_files = Vec::new();
    for (_, file) in host.manifest_files() {
        for user in file["users"].as_array().unwrap() {
            in_files.push((file["item_id"].as_str().unwrap().to_string(), user.as_str().unwrap().to_string()));
        }
    }
    let unique: BTreeSet<_> = in_files.iter().cloned().collect();
    assert_eq!(in_files.len(), unique.len(), "a grant appears in two manifests");
    assert_eq!(unique, grants, "manifest files hold exactly the grants");
    assert_eq!(manifests.len(), host.manifest_files().len());
    if std::env::var_os("SHOW_CRASH_LOG").is_some() {
        eprintln!("{}", host.log());
    }
    host.stop();
    let (minutes, events) = host.database_totals().await;
    Some(Outcome { grants, minutes, events: events as usize, rule_state: host.campaign_state().await })
}

async fn crash_equals_uninterrupted(backend: Backend) {
    let Some(clean) = run(backend, &[]).await else { return };
    let Some(crashed) = run(backend, &[17, 55, 56, 90]).await else { return };
    assert_eq!(clean.events, 120, "every report stored once");
    assert_eq!(crashed.events, 120, "every report stored once");
    assert_eq!(crashed.minutes, clean.minutes, "watch-time after crashes equals the uninterrupted run");
    assert_eq!(crashed.grants, clean.grants, "grants after crashes equal the uninterrupted run");
    assert!(!clean.rule_state.is_empty());
    assert!(crashed.rule_state == clean.rule_state, "rules' state after crashes equals the uninterrupted run");
    // 4 channels x 40 viewers (each absent 6 of 30 minutes) and 10 shared: all reach 20
    // minutes; and the official channel's daily cap of 7.
    assert_eq!(clean.grants.len(), (4 * 40 + 10) * 2 + 7);
}

#[tokio::test]
async fn sigkill_loses_nothing_and_duplicates_nothing_on_sqlite() {
    crash_equals_uninterrupted(Backend::Sqlite).await;
}

#[tokio::test]
async fn sigkill_loses_nothing_and_duplicates_nothing_on_postgres() {
    crash_equals_uninterrupted(Backend::Postgres).await;
}
