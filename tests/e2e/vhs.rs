//! Heartbeats in, time-based grants and manifest files out, on both backends.

use std::collections::BTreeSet;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::helpers::{heartbeat, plugin_path, tiers_campaign, Backend, HostConfig, TestHost};

const WINDOW: (&str, &str) = ("2026-11-01T10:00:00Z", "2026-11-01T11:00:00Z");

fn at(minute: i32) -> String {
    let t = time::OffsetDateTime::parse(WINDOW.0, &time::format_description::well_known::Rfc3339).unwrap()
        + time::Duration::minutes(minute as i64);
    t.format(&time::format_description::well_known::Rfc3339).unwrap()
}

fn campaigns() -> Vec<(String, String)> {
    vec![
        ("tiers".into(), tiers_campaign("camp-tiers", "GameName", WINDOW, &[], &[(2, "bronze"), (3, "silver")])),
        ("official".into(), tiers_campaign("camp-official", "GameName", WINDOW, &["b-official"], &[(1, "badge")])),
    ]
}

async fn story(backend: Backend) {
    let Some(mut host) = TestHost::spawn(backend, HostConfig { campaigns: campaigns(), ..Default::default() }).await
    else {
        return;
    };
    let send = |id: &str, broadcaster: &str, game: &str, minute: i32, viewers: &[&str]| {
        heartbeat(id, broadcaster, game, &at(minute), viewers)
    };
    let mut reports = vec![
        // Minute 0: `farmer` watches two channels at once; it earns one minute.
        send("m0-b1", "b-1", "GameName", 0, &["v1", "v2", "farmer"]),
        send("m0-b2", "b-2", "GameName", 0, &["v3", "farmer"]),
        send("m0-off", "b-official", "GameName", 0, &["v4"]),
        send("m1-b1", "b-1", "GameName", 1, &["v1", "v2", "farmer"]),
        send("m1-b2", "b-2", "GameName", 1, &["v3", "farmer"]),
        send("m2-b1", "b-1", "GameName", 2, &["v1"]),
        send("m2-b2", "b-2", "GameName", 2, &["v3"]),
    ];
    for m in 0..4 {
        // Another game, a game name differing only in case, and minutes outside the window.
        reports.push(send(&format!("other-{m}"), "b-3", "OtherGame", m, &["v5"]));
        reports.push(send(&format!("case-{m}"), "b-4", "gamename", m, &["v6"]));
        reports.push(send(&format!("early-{m}"), "b-1", "GameName", m - 10, &["v7"]));
        reports.push(send(&format!("late-{m}"), "b-1", "GameName", m + 60, &["v7"]));
    }
    for report in &reports {
        let (status, body) = host.post_vhs(None, report).await;
        assert_eq!((status, body), (200, json!({"accepted": 1, "duplicates": 0})), "{report}");
    }
    // Twitch retries a report whose answer it did not get: same id, retries counting up.
    let mut retry = reports[3].clone();
    retry["retries"] = json!(1);
    assert_eq!(host.post_vhs(None, &retry).await, (200, json!({"accepted": 0, "duplicates": 1})));
    // A batch: one new report and one already stored.
    let batch = json!([send("m3-b1", "b-1", "GameName", 3, &[]), reports[0].clone()]);
    assert_eq!(host.post_vhs(None, &batch).await, (200, json!({"accepted": 1, "duplicates": 1})));

    let manifests = host.wait_for_manifests(5).await;
    let grants = host.grants().await;
    let made: BTreeSet<(String, String, String)> = grants
        .iter()
        .map(|g| {
            (
                g["campaign_id"].as_str().unwrap().into(),
                g["reward_id"].as_str().unwrap().into(),
                g["user_id"].as_str().unwrap().into(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String, String)> = [
        ("camp-tiers", "bronze", "v1"),
        ("camp-tiers", "bronze", "v2"),
        ("camp-tiers", "bronze", "farmer"),
        ("camp-tiers", "bronze", "v3"),
        ("camp-tiers", "silver", "v1"),
        ("camp-tiers", "silver", "v3"),
        ("camp-official", "badge", "v4"),
    ]
    .iter()
    .map(|(c, r, u)| (c.to_string(), r.to_string(), u.to_string()))
    .collect();
    assert_eq!(made, expected);
    assert_eq!(grants.len(), expected.len(), "no grant twice");

    // Every grant names the plugin version and campaign revision that made it.
    let plugin_hash = hex::encode(Sha256::digest(std::fs::read(plugin_path("watch-time-tiers")).unwrap()));
    let tiers_revision = hex::encode(Sha256::digest(campaigns()[0].1.as_bytes()));
    for g in &grants {
        assert_eq!(g["plugin_hash"], json!(plugin_hash));
        assert_eq!(g["reason"], json!("watching"));
        if g["campaign_id"] == "camp-tiers" {
            assert_eq!(g["campaign_revision"], json!(tiers_revision));
        }
        assert!(g["manifest_id"].is_string(), "every grant is in a manifest: {g}");
    }

    // Manifest files: one per (campaign, client, game, broadcaster, reward, reason), Twitch's format exactly.
    let files = host.manifest_files();
    assert_eq!(files.len(), 5, "{files:?}");
    let mut contents: Vec<Value> = files.iter().map(|(_, v)| v.clone()).collect();
    contents.sort_by_key(|v| format!("{}{}{}", v["campaign_id"], v["item_id"], v["broadcaster_id"]));
    let manifest = |campaign: &str, broadcaster: &str, item: &str, users: &[&str]| {
        json!({"campaign_id": campaign, "client_id": "client-e2e", "game_watched": "GameName",
               "broadcaster_id": broadcaster, "item_id": item, "reason": "watching", "users": users})
    };
    assert_eq!(
        contents,
        vec![
            manifest("camp-official", "b-official", "badge", &["v4"]),
            manifest("camp-tiers", "b-1", "bronze", &["v1", "v2", "farmer"]),
            manifest("camp-tiers", "b-2", "bronze", &["v3"]),
            manifest("camp-tiers", "b-1", "silver", &["v1"]),
            manifest("camp-tiers", "b-2", "silver", &["v3"]),
        ]
    );
    for (name, _) in &files {
        let id = name.trim_end_matches(".json");
        assert!(uuid::Uuid::parse_str(id).is_ok() && id.len() <= 64, "manifest id {id}");
        assert!(manifests.iter().any(|m| m["id"] == json!(id)));
    }

    // After a clean stop and start nothing changes: no grant or manifest is made again.
    host.stop();
    let (minutes, events) = host.database_totals().await;
    // v1 3, v2 2, farmer 2, v3 3, v4 1 in camp-tiers; v4 1 in camp-official.
    assert_eq!((minutes, events), (12, 24));
    host.restart();
    assert_eq!(host.post_vhs(None, &reports[6]).await, (200, json!({"accepted": 0, "duplicates": 1})));
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(host.grants().await.len(), expected.len());
    assert_eq!(host.manifest_files().len(), 5);
    host.stop();
}

#[tokio::test]
async fn heartbeats_become_grants_and_manifests_on_sqlite() {
    story(Backend::Sqlite).await;
}

#[tokio::test]
async fn heartbeats_become_grants_and_manifests_on_postgres() {
    story(Backend::Postgres).await;
}
