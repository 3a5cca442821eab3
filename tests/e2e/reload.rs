//! Hot reload: a new plugin version judges the next heartbeats, a broken file
//! changes nothing but an error, and a campaign edit takes effect, all without
//! a restart; every grant names the version that made it.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::helpers::{heartbeat, plugin_path, tiers_campaign, Backend, HostConfig, TestHost};

const WINDOW: (&str, &str) = ("2026-11-05T00:00:00Z", "2026-11-06T00:00:00Z");

fn campaign(tiers: &[(u32, &str)]) -> String {
    tiers_campaign("camp-reload", "GameName", WINDOW, &[], tiers)
}

/// The same rule with a different hash: a custom section appended to the module.
pub(crate) fn new_version(bytes: &[u8], tag: &str) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let payload = tag.as_bytes();
    out.push(0); // custom section
    out.push((1 + "drops-test".len() + payload.len()) as u8);
    out.push("drops-test".len() as u8);
    out.extend_from_slice(b"drops-test");
    out.extend_from_slice(payload);
    out
}

pub(crate) fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Writes a file the way deploy tools do: to a temp name, then renamed over.
fn write_by_rename(path: &std::path::Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn wait_for(host: &TestHost, what: &str, pred: impl Fn(&Value) -> bool) -> Duration {
    let started = Instant::now();
    loop {
        let view = host.admin_get("/campaigns").await;
        if pred(&view) {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(20), "waiting for {what}: {view}\n{}", host.log());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn grants_of(host: &TestHost, n: usize) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let grants = host.grants().await;
        if grants.len() >= n {
            return grants;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "expected {n} grants: {grants:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn rules_change_while_serving() {
    let tiers = [(1, "t1"), (2, "t2"), (3, "t3"), (4, "t4")];
    let config = HostConfig { campaigns: vec![("reload".into(), campaign(&tiers))], ..Default::default() };
    let Some(mut host) = TestHost::spawn(Backend::Sqlite, config).await else { return };
    let rules = host.dir.path().join("rules");
    let plugin_file = rules.join("plugins/watch-time-tiers.wasm");
    let original = std::fs::read(plugin_path("watch-time-tiers")).unwrap();
    let minute = |m: u32| format!("2026-11-05T10:{m:02}:00Z");
    let send = |m: u32| heartbeat(&format!("hb-{m}"), "b-1", "GameName", &minute(m), &["v1", "v2"]);

    for m in 0..2 {
        assert_eq!(host.post_vhs(None, &send(m)).await.0, 200);
    }
    let before = grants_of(&host, 4).await;
    assert!(before.iter().all(|g| g["plugin_hash"] == json!(sha(&original))));

    // A designer copies in a new build: the next heartbeats are judged by it.
    let v2 = new_version(&original, "v2");
    write_by_rename(&plugin_file, &v2);
    let latency = wait_for(&host, "new plugin version", |v| v["campaigns"][0]["plugin_hash"] == json!(sha(&v2))).await;
    eprintln!("reload latency (file renamed into place -> new version serving): {latency:?}");
    assert_eq!(host.post_vhs(None, &send(2)).await.0, 200);
    let after = grants_of(&host, 6).await;
    let t3: Vec<&Value> = after.iter().filter(|g| g["reward_id"] == "t3").collect();
    assert_eq!(t3.len(), 2);
    assert!(t3.iter().all(|g| g["plugin_hash"] == json!(sha(&v2))), "{t3:?}");

    // A broken build (truncated, then garbage) changes nothing but an error message.
    std::fs::write(&plugin_file, &v2[..v2.len() / 2]).unwrap();
    wait_for(&host, "the load error", |v| {
        v["errors"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["file"].as_str().unwrap_or("").ends_with("watch-time-tiers.wasm")))
    })
    .await;
    let view = host.admin_get("/campaigns").await;
    assert_eq!(view["campaigns"][0]["plugin_hash"], json!(sha(&v2)), "last good version keeps serving");
    assert_eq!(host.post_vhs(None, &send(3)).await.0, 200);
    let grants = grants_of(&host, 8).await;
    assert!(grants.iter().filter(|g| g["reward_id"] == "t4").all(|g| g["plugin_hash"] == json!(sha(&v2))));
    // A plugin with a forbidden import is refused the same way, naming the import.
    std::fs::write(&plugin_file, wat_importing_wasi()).unwrap();
    wait_for(&host, "the import error", |v| v["errors"].to_string().contains("wasi")).await;

    // Fixing the file and editing the campaign (a new tier) are both picked up.
    write_by_rename(&plugin_file, &v2);
    let edited = campaign(&[(1, "t1"), (2, "t2"), (3, "t3"), (4, "t4"), (5, "t5")]);
    write_by_rename(&rules.join("campaigns/reload.toml"), edited.as_bytes());
    wait_for(&host, "the edited campaign", |v| {
        v["campaigns"][0]["revision"] == json!(sha(edited.as_bytes()))
            && v["errors"].as_array().is_some_and(|e| e.is_empty())
    })
    .await;
    assert_eq!(host.post_vhs(None, &send(4)).await.0, 200);
    let grants = grants_of(&host, 10).await;
    let t5: Vec<&Value> = grants.iter().filter(|g| g["reward_id"] == "t5").collect();
    assert_eq!(t5.len(), 2);
    assert!(t5.iter().all(|g| g["campaign_revision"] == json!(sha(edited.as_bytes()))));

    // Deleting the campaign file ends the campaign: later heartbeats grant nothing.
    std::fs::remove_file(rules.join("campaigns/reload.toml")).unwrap();
    wait_for(&host, "the campaign to go", |v| v["campaigns"].as_array().is_some_and(|c| c.is_empty())).await;
    assert_eq!(host.post_vhs(None, &send(5)).await.0, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(host.grants().await.len(), 10);

    // Every heartbeat was evaluated exactly once across the swaps: 5 minutes each
    // while the campaign existed, none after.
    host.stop();
    assert_eq!(host.database_totals().await, (10, 6));
    assert!(host.log().contains("rules reloaded"), "the swaps are logged");
    if std::env::var_os("SHOW_RELOAD_LOG").is_some() {
        eprintln!("{}", host.log());
    }
}

/// A core module importing WASI, which the host must refuse.
fn wat_importing_wasi() -> Vec<u8> {
    wat::parse_str(
        r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32))))"#,
    )
    .unwrap()
}

#[tokio::test]
async fn plugins_are_uploaded_listed_and_rolled_back_through_the_admin_api() {
    use reqwest::Method;
    let config = HostConfig { campaigns: vec![("reload".into(), campaign(&[(1, "t1")]))], ..Default::default() };
    let Some(mut host) = TestHost::spawn(Backend::Sqlite, config).await else { return };
    let v1 = std::fs::read(plugin_path("watch-time-tiers")).unwrap();
    let v2 = new_version(&v1, "v2");
    let serving = |view: &Value| view["campaigns"][0]["plugin_hash"].as_str().unwrap_or_default().to_string();

    // Upload: the answer comes once the version serves.
    let (status, answer) = host.admin_send(Method::PUT, "/plugins/watch-time-tiers", v2.clone()).await;
    assert_eq!((status, answer), (200, json!({"name": "watch-time-tiers", "hash": sha(&v2), "serving": true})));
    assert_eq!(serving(&host.admin_get("/campaigns").await), sha(&v2));

    // Refused uploads change nothing and say why.
    let (status, answer) = host.admin_send(Method::PUT, "/plugins/watch-time-tiers", b"garbage".to_vec()).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"], json!("not a WebAssembly module or component"));
    let hostile = std::fs::read(plugin_path("hostile")).unwrap();
    let (status, answer) = host.admin_send(Method::PUT, "/plugins/watch-time-tiers", hostile).await;
    assert_eq!(status, 422, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("campaign camp-reload"), "names the campaign: {answer}");
    assert_eq!(serving(&host.admin_get("/campaigns").await), sha(&v2));
    assert_eq!(host.admin_send(Method::PUT, "/plugins/Bad%20Name", v1.clone()).await.0, 400);
    // Its own connection: the host refuses before reading the body and closes
    // the connection, which a pooled client could otherwise reuse.
    let anonymous =
        reqwest::Client::new().put(format!("{}/v1/plugins/x", host.base)).body(v1.clone()).send().await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);

    // Versions and rollback.
    let versions = host.admin_get("/plugins/watch-time-tiers/versions").await;
    let listed: Vec<(String, bool)> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["hash"].as_str().unwrap().to_string(), v["serving"] == true))
        .collect();
    assert_eq!(listed, vec![(sha(&v1), false), (sha(&v2), true)]);
    let rollback = serde_json::to_vec(&json!({"hash": sha(&v1)})).unwrap();
    let (status, answer) = host.admin_send(Method::POST, "/plugins/watch-time-tiers/rollback", rollback).await;
    assert_eq!((status, answer["hash"].clone()), (200, json!(sha(&v1))));
    assert_eq!(serving(&host.admin_get("/campaigns").await), sha(&v1));
    assert_eq!(std::fs::read(host.dir.path().join("rules/plugins/watch-time-tiers.wasm")).unwrap(), v1);
    // Each version's bytes, for a replay against an older one.
    let bytes = host
        .client
        .get(format!("{}/v1/plugins/watch-time-tiers/versions/{}", host.base, sha(&v2)))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(bytes.headers()["content-type"], "application/wasm");
    assert_eq!(bytes.bytes().await.unwrap().to_vec(), v2);
    let path = |hash: &str| format!("/plugins/watch-time-tiers/versions/{hash}");
    assert_eq!(host.admin_send(Method::GET, &path(&"0".repeat(64)), Vec::new()).await.0, 404);
    assert_eq!(host.admin_send(Method::GET, &path("not-a-hash"), Vec::new()).await.0, 400);
    let unknown = serde_json::to_vec(&json!({"hash": "0".repeat(64)})).unwrap();
    assert_eq!(host.admin_send(Method::POST, "/plugins/watch-time-tiers/rollback", unknown).await.0, 404);

    // The history says which version served the campaign when.
    let history = host.admin_get("/campaigns/camp-reload/history").await;
    let hashes: Vec<&str> = history.as_array().unwrap().iter().map(|h| h["plugin_hash"].as_str().unwrap()).collect();
    assert_eq!(hashes, vec![sha(&v1), sha(&v2), sha(&v1)]);

    // A core module without the rules world's metadata (as AssemblyScript
    // builds them) is componentized against the host's own rules.wit: one
    // whose exports lie about the world is refused naming the export; the
    // TypeScript build of the same rule serves.
    let lying = wat::parse_str(
        r#"(module (memory (export "memory") 1)
             (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) i32.const 0)
             (func (export "drops:rules/rule@0.4.0#on-heartbeat")))"#,
    )
    .unwrap();
    let (status, answer) = host.admin_send(Method::PUT, "/plugins/watch-time-tiers", lying).await;
    assert_eq!(status, 422, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("on-heartbeat"), "names the export: {answer}");
    assert_eq!(serving(&host.admin_get("/campaigns").await), sha(&v1));
    let typescript = std::fs::read(plugin_path("watch-time-tiers-ts")).unwrap();
    let (status, answer) = host.admin_send(Method::PUT, "/plugins/watch-time-tiers", typescript.clone()).await;
    assert_eq!((status, answer["serving"].clone()), (200, json!(true)), "{answer}");
    assert_eq!(serving(&host.admin_get("/campaigns").await), sha(&typescript));
    host.stop();
}

/// Campaign files uploaded through the admin API: validated against the
/// plugins in force before they are written, serving when answered; every
/// refusal names why and changes nothing.
#[tokio::test]
async fn campaigns_are_uploaded_through_the_admin_api() {
    use reqwest::Method;
    let config = HostConfig { campaigns: vec![("reload".into(), campaign(&[(1, "t1")]))], ..Default::default() };
    let Some(host) = TestHost::spawn(Backend::Sqlite, config).await else { return };
    let fresh = campaign(&[(2, "t2")]).replace("id = \"camp-reload\"", "id = \"camp-uploaded\"");
    let (status, answer) = host.admin_send(Method::PUT, "/campaigns/uploaded", fresh.clone().into_bytes()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({"name": "uploaded", "id": "camp-uploaded", "revision": sha(fresh.as_bytes()), "serving": true})
    );
    let view = host.admin_get("/campaigns").await;
    assert!(view["campaigns"].as_array().unwrap().iter().any(|c| c["id"] == "camp-uploaded"), "{view}");
    assert!(host.dir.path().join("rules/campaigns/uploaded.toml").exists());

    let other = fresh.replace("camp-uploaded", "camp-other");
    let nested = format!("{other}\n[extra]\nx = {}1{}\n", "[".repeat(5000), "]".repeat(5000));
    let refusals: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("not-utf8", vec![0xff, 0xfe, b'i', b'd'], 422, "UTF-8"),
        ("no-plugin", other.replace("watch-time-tiers", "no-such-plugin").into_bytes(), 422, "rule.plugin"),
        ("taken-id", fresh.clone().into_bytes(), 422, "field `id`"),
        ("bad-config", other.replace("tiers = [", "tears = [").into_bytes(), 422, "rule.config"),
        ("nested", nested.into_bytes(), 422, ""),
        ("Bad%20Name", fresh.clone().into_bytes(), 400, "name"),
        ("empty", Vec::new(), 400, "body"),
        ("huge", vec![b'#'; 2 << 20], 413, ""),
    ];
    for (name, body, want, says) in refusals {
        let (status, answer) = host.admin_send(Method::PUT, &format!("/campaigns/{name}"), body).await;
        assert_eq!(status, want, "{name}: {answer}");
        assert!(answer.to_string().contains(says), "{name}: {answer} should mention {says}");
        assert!(!host.dir.path().join(format!("rules/campaigns/{name}.toml")).exists(), "{name} was written");
    }
    // A fresh connection: the server closes one whose body it refused (413) mid-write.
    let ready = reqwest::get(format!("{}/readyz", host.base)).await.unwrap().text().await.unwrap();
    assert_eq!(ready, "ready", "refusals leave the host serving");
}
