//! Several hosts on one PostgreSQL database: any host takes any event, a
//! Twitch retry may land on another host, hosts die and come back, game
//! servers reconnect elsewhere, the database goes away for a while; the
//! outcome equals one uninterrupted host's on the same traffic.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::Row;

use crate::e2::{boss_campaign, connect, connect_message, recv, send, Ws, E2_ALLOWLIST, E2_TOKENS};
use crate::helpers::{database_url, open_database, postgres_admin_url, Backend, HostConfig, TestHost};
use crate::reload::{new_version, sha};

/// The crash test's campaigns (tiers; a daily cap kept in rules' state),
/// plus an E2 boss-kill campaign.
fn config(database: Option<String>, cluster: Option<(&str, bool, u32)>) -> HostConfig {
    let mut config = crate::crash::config();
    config.campaigns.push(boss_campaign());
    config.extra_plugins.push("boss-defeated");
    config.extra_toml = format!("{E2_ALLOWLIST}{E2_TOKENS}");
    if let Some((host_id, publish, partitions)) = cluster {
        config.extra_toml.push_str(&format!(
            "[cluster]\nenabled = true\nhost_id = \"{host_id}\"\nengine_partitions = {partitions}\n\
             lease_ttl_ms = 1500\npublish_rules = {publish}\n"
        ));
        // Only the publishing host starts with rules: the others get them from the database.
        config.no_rules = !publish;
    }
    config.database_url = database;
    config
}

/// Traffic spread over hosts: each report to a random host until one
/// acknowledges it, some sent again to another host (Twitch's retries).
struct Traffic {
    rng: fastrand::Rng,
    unavailable: usize,
    /// Answers of 503 among the unavailable (the rest: connections refused or cut).
    refused_503: usize,
    resent: u64,
    duplicates: u64,
}

impl Traffic {
    fn new(seed: u64) -> Traffic {
        Traffic { rng: fastrand::Rng::with_seed(seed), unavailable: 0, refused_503: 0, resent: 0, duplicates: 0 }
    }

    /// Sends `report` until a host among `live` acknowledges it; returns that host.
    async fn deliver(&mut self, hosts: &[TestHost], live: &[usize], report: &Value) -> usize {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let i = live[self.rng.usize(..live.len())];
            match post(&hosts[i], report).await {
                Some((200, _)) => return i,
                Some((503, _)) => {
                    self.unavailable += 1;
                    self.refused_503 += 1;
                }
                None => self.unavailable += 1,
                Some((status, body)) => panic!("host {i} answered {status}: {body}"),
            }
            assert!(Instant::now() < deadline, "no host took report {}", report["id"]);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends an acknowledged report again to another live host, now and then.
    async fn maybe_resend(&mut self, hosts: &[TestHost], live: &[usize], first: usize, report: &Value) {
        let others: Vec<usize> = live.iter().copied().filter(|&i| i != first).collect();
        if others.is_empty() || self.rng.u8(..4) != 0 {
            return;
        }
        let i = others[self.rng.usize(..others.len())];
        if let Some((200, body)) = post(&hosts[i], report).await {
            self.resent += 1;
            self.duplicates += body["duplicates"].as_u64().unwrap_or(0);
        }
    }
}

async fn post(host: &TestHost, report: &Value) -> Option<(u16, Value)> {
    let sent = host.client.post(format!("{}/vhs", host.base)).json(report).timeout(Duration::from_secs(10)).send();
    let resp = sent.await.ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.json().await.unwrap_or(Value::Null)))
}

/// What a run leaves in the database and the manifest files.
#[derive(Debug, PartialEq)]
struct Outcome {
    events: i64,
    minutes: i64,
    /// (reward, user, key).
    grants: BTreeSet<(String, String, String)>,
    rule_state: Vec<(String, String, Vec<u8>)>,
    /// (item, user) of every manifest file, sorted; equals the grants' (reward, user).
    manifest_entries: Vec<(String, String)>,
}

/// Waits until every partition has evaluated the whole inbox and every grant
/// is in a written manifest, then reads the outcome.
async fn settle(database: &str, partitions: i64, manifest_dirs: &[std::path::PathBuf]) -> Outcome {
    let pool = open_database(database).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let row = sqlx::query(
            "SELECT (SELECT COALESCE(MAX(seq), 0) FROM inbox) AS last, \
             (SELECT COALESCE(MIN(inbox_seq), 0) FROM engine_checkpoint) AS evaluated, \
             (SELECT COUNT(*) FROM engine_checkpoint) AS checkpoints, \
             (SELECT COUNT(*) FROM grants WHERE manifest_id IS NULL) AS unbatched, \
             (SELECT COUNT(*) FROM manifests WHERE status = 'pending') AS pending",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        let (last, evaluated, checkpoints): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        let (unbatched, pending): (i64, i64) = (row.get(3), row.get(4));
        if checkpoints == partitions && evaluated >= last && unbatched == 0 && pending == 0 {
            break;
        }
        if Instant::now() > deadline {
            let leases: Vec<(String, Option<String>, i64)> =
                triples(&pool, "SELECT name, holder, epoch FROM leases").await;
            panic!("not settled: inbox {last}, evaluated {evaluated} ({checkpoints} checkpoints), {unbatched} unbatched, {pending} pending; leases {leases:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let events = sqlx::query_scalar("SELECT COUNT(*) FROM inbox WHERE source = 'vhs'").fetch_one(&pool).await.unwrap();
    let minutes = sqlx::query_scalar("SELECT CAST(COALESCE(SUM(minutes), 0) AS BIGINT) FROM campaign_viewers")
        .fetch_one(&pool)
        .await
        .unwrap();
    let grants: Vec<(String, String, String)> =
        triples(&pool, "SELECT reward_id, user_id, grant_key FROM grants").await;
    let grants: BTreeSet<(String, String, String)> = grants.into_iter().collect();
    let rule_state =
        triples(&pool, "SELECT campaign_id, key, value FROM campaign_state ORDER BY campaign_id, key").await;
    let stored_manifests: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM manifests").fetch_one(&pool).await.unwrap();
    pool.close().await;

    // A manifest rewritten by the host that took over is the same file under the same name.
    let mut files: BTreeMap<String, Value> = BTreeMap::new();
    for dir in manifest_dirs {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".json") {
                continue;
            }
            let file: Value = serde_json::from_slice(&std::fs::read(entry.path()).unwrap()).unwrap();
            if let Some(earlier) = files.insert(name.clone(), file.clone()) {
                assert_eq!(earlier, file, "manifest {name} written twice with different contents");
            }
        }
    }
    assert_eq!(files.len() as i64, stored_manifests, "one file per manifest");
    let mut manifest_entries: Vec<(String, String)> = files
        .values()
        .flat_map(|m| {
            let item = m["item_id"].as_str().unwrap().to_string();
            m["users"].as_array().unwrap().iter().map(move |u| (item.clone(), u.as_str().unwrap().to_string()))
        })
        .collect();
    manifest_entries.sort();
    let mut granted: Vec<(String, String)> = grants.iter().map(|(r, u, _)| (r.clone(), u.clone())).collect();
    granted.sort();
    assert_eq!(manifest_entries, granted, "every grant in exactly one manifest");
    Outcome { events, minutes, grants, rule_state, manifest_entries }
}

/// Every row of a three-column query.
async fn triples<A, B, C>(pool: &sqlx::AnyPool, sql: &str) -> Vec<(A, B, C)>
where
    for<'r> A: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
    for<'r> B: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
    for<'r> C: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    let rows = sqlx::query(sql).fetch_all(pool).await.unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect()
}

async fn link_broadcasters(host: &TestHost) {
    let links = json!([
        {"twitch_user_id": "twitch-b0", "game_account_id": "b-0"},
        {"twitch_user_id": "twitch-b1", "game_account_id": "b-1"},
    ]);
    let (status, _) = host.admin_send(reqwest::Method::PUT, "/links", links.to_string().into_bytes()).await;
    assert_eq!(status, 200);
}

async fn acked(ws: &mut Ws, message: Value) {
    send(ws, message).await;
    let answer = recv(ws).await;
    assert_eq!(answer["type"], "ack", "{answer}");
}

/// Game servers' messages at given points of the heartbeat traffic, each on
/// the host named: (before report, host, broadcaster, message).
fn e2_script() -> Vec<(usize, usize, usize, Value)> {
    let state = |data: Value| json!({"type": "delta", "data": data});
    vec![
        (5, 0, 0, connect_message("app-token", Some(&["twitch-b0"]), json!({"boss_defeated": false, "boss_kills": 0}))),
        (
            10,
            1,
            1,
            connect_message("app-token", Some(&["twitch-b1"]), json!({"boss_defeated": false, "boss_kills": 0})),
        ),
        (15, 0, 0, state(json!({"boss_defeated": true, "boss_kills": 1}))),
        (20, 1, 1, state(json!({"boss_defeated": true, "boss_kills": 1}))),
        (25, 1, 1, json!({"type": "disconnect"})),
        (30, 0, 0, json!({"type": "disconnect"})),
        // b-0's game server comes back on another host (B, restarted by then)
        // with its full state: nothing new; its next kill is a new grant.
        (50, 1, 0, connect_message("app-token", Some(&["twitch-b0"]), json!({"boss_defeated": true, "boss_kills": 1}))),
        (60, 1, 0, state(json!({"boss_defeated": false}))),
        (61, 1, 0, state(json!({"boss_defeated": true, "boss_kills": 2}))),
        (70, 1, 0, json!({"type": "disconnect"})),
    ]
}

/// Plays the script's messages due before report `i`.
async fn play_e2(i: usize, hosts: &[TestHost], servers: &mut [Option<Ws>; 2]) {
    for (at, host, server, message) in e2_script() {
        if at != i {
            continue;
        }
        if message["type"] == "connect" {
            // With one host, every connection goes to it.
            servers[server] = Some(connect(&hosts[host.min(hosts.len() - 1)]).await);
        }
        let ws = servers[server].as_mut().expect("connected");
        if message["type"] == "disconnect" {
            send(ws, message).await;
            assert_eq!(recv(ws).await["type"], "ack");
            servers[server] = None;
        } else {
            acked(ws, message).await;
        }
    }
}

/// `n` hosts on one fresh database (the first publishes the rules), with
/// `n` engine partitions; None when PostgreSQL is not reachable outside CI.
async fn cluster(n: u32) -> Option<(String, Vec<TestHost>)> {
    let dir = tempfile::tempdir().unwrap();
    let database = database_url(Backend::Postgres, dir.path()).await?;
    let mut hosts = Vec::new();
    for (i, name) in ["host-a", "host-b", "host-c"].into_iter().take(n as usize).enumerate() {
        let host = TestHost::spawn(Backend::Postgres, config(Some(database.clone()), Some((name, i == 0, n)))).await;
        hosts.push(host.expect("joins the database"));
    }
    Some((database, hosts))
}

/// One host, nothing interrupted: the outcome to compare with.
async fn one_host() -> Option<Outcome> {
    let host = TestHost::spawn(Backend::Postgres, config(None, None)).await?;
    link_broadcasters(&host).await;
    let hosts = [host];
    let mut servers = [None, None];
    let mut traffic = Traffic::new(1);
    for (i, report) in crate::crash::workload().iter().enumerate() {
        play_e2(i, &hosts, &mut servers).await;
        traffic.deliver(&hosts, &[0], report).await;
    }
    let [mut host] = hosts;
    let outcome = settle(&host.database_url, 1, &[host.dir.path().join("data/manifests")]).await;
    host.stop();
    Some(outcome)
}

#[tokio::test]
async fn three_hosts_with_a_crash_and_a_departure_equal_one_host() {
    let Some(single) = one_host().await else { return };
    let Some((database, mut hosts)) = cluster(3).await else { return };
    link_broadcasters(&hosts[2]).await;
    let mut live = vec![0, 1, 2];
    let mut servers = [None, None];
    let mut traffic = Traffic::new(7);
    for (i, report) in crate::crash::workload().iter().enumerate() {
        play_e2(i, &hosts, &mut servers).await;
        if i == 40 {
            // SIGKILL B with a report in flight to it; Twitch retries elsewhere.
            let (client, url, body) = (hosts[1].client.clone(), format!("{}/vhs", hosts[1].base), report.clone());
            let in_flight = tokio::spawn(async move { client.post(url).json(&body).send().await });
            tokio::time::sleep(Duration::from_millis(2)).await;
            hosts[1].kill();
            let _ = in_flight.await;
            live = vec![0, 2];
        }
        if i == 46 {
            hosts[1].restart();
            live = vec![0, 1, 2];
        }
        if i == 80 {
            // C leaves for good, cleanly: its partitions and roles go to the others.
            hosts[2].stop();
            live = vec![0, 1];
        }
        let first = traffic.deliver(&hosts, &live, report).await;
        traffic.maybe_resend(&hosts, &live, first, report).await;
    }
    assert!(traffic.resent > 0);
    assert_eq!(traffic.duplicates, traffic.resent, "a report sent to a second host is a duplicate there");
    let dirs: Vec<_> = hosts.iter().map(|h| h.dir.path().join("data/manifests")).collect();
    let clustered = settle(&database, 3, &dirs).await;
    let leases = hosts[0].admin_get("/cluster").await;
    for host in [0, 1] {
        hosts[host].stop();
    }
    assert_eq!(clustered.events, 120, "every report stored once");
    assert!(clustered.grants.iter().any(|(_, _, key)| key == "b-0:boss_kills=2"), "the reconnected game server's kill");
    assert_eq!(clustered, single, "three hosts with a crash and a departure equal one host; leases: {leases}");
    drop(hosts);
    drop_database(&database).await;
}

#[tokio::test]
async fn the_database_going_away_is_answered_503_and_loses_nothing() {
    let Some(single) = one_host().await else { return };
    let Some((database, mut hosts)) = cluster(2).await else { return };
    link_broadcasters(&hosts[0]).await;
    let mut servers = [None, None];
    let mut traffic = Traffic::new(11);
    let name = database.rsplit('/').next().unwrap().to_string();
    let mut outage = None;
    for (i, report) in crate::crash::workload().iter().enumerate() {
        play_e2(i, &hosts[..], &mut servers).await;
        if i == 45 {
            outage = Some(tokio::spawn(cut_connections(name.clone(), Duration::from_secs(3))));
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let first = traffic.deliver(&hosts, &[0, 1], report).await;
        traffic.maybe_resend(&hosts, &[0, 1], first, report).await;
    }
    outage.expect("outage").await.unwrap();
    assert!(traffic.refused_503 > 0, "hosts answered 503 while the database was away");
    let dirs: Vec<_> = hosts.iter().map(|h| h.dir.path().join("data/manifests")).collect();
    let after = settle(&database, 2, &dirs).await;
    let log = hosts[0].log();
    for host in &mut hosts {
        host.stop();
    }
    assert_eq!(after, single, "an outage loses nothing and adds nothing");
    assert!(log.contains("storage unavailable") || log.contains("cannot renew leases"), "the outage was noticed");
    drop(hosts);
    drop_database(&database).await;
}

/// Refuses new connections to the database and ends the ones open, for `long`.
async fn cut_connections(database: String, long: Duration) {
    let admin = sqlx::AnyPool::connect(&postgres_admin_url()).await.unwrap();
    sqlx::query(&format!("ALTER DATABASE {database} ALLOW_CONNECTIONS false")).execute(&admin).await.unwrap();
    let until = Instant::now() + long;
    while Instant::now() < until {
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
            .bind(&database)
            .execute(&admin)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sqlx::query(&format!("ALTER DATABASE {database} ALLOW_CONNECTIONS true")).execute(&admin).await.unwrap();
    admin.close().await;
}

#[tokio::test]
async fn a_plugin_uploaded_to_one_host_serves_on_all_three() {
    let Some((database, mut hosts)) = cluster(3).await else { return };
    let started = Instant::now();
    let uploaded_deadline = || started.elapsed() < Duration::from_secs(30);
    let serving = |view: &Value| -> Option<String> {
        let campaign = view["campaigns"].as_array()?.iter().find(|c| c["id"] == "camp-crash")?;
        campaign["plugin_hash"].as_str().map(String::from)
    };
    // The hosts that started without rules serve the published ones.
    let v1 = std::fs::read(crate::helpers::plugin_path("watch-time-tiers")).unwrap();
    for host in &hosts {
        assert_eq!(serving(&host.admin_get("/campaigns").await), Some(sha(&v1)), "{}", host.log());
    }
    // Hostile rows in the shared rules (the database is trusted, but bounded
    // anyway): a path out of the rules folder, a campaign that is not UTF-8,
    // a plugin that is not wasm; and notifications that are not ours.
    let pool = crate::helpers::open_database(&database).await;
    for (path, bytes) in [
        ("../../escape.toml", b"id = \"x\"".to_vec()),
        ("campaigns/../../escape.toml", b"id = \"x\"".to_vec()),
        ("campaigns/not-utf8.toml", vec![0xff, 0xfe, b'i', b'd', 0xc3]),
        ("plugins/garbage.wasm", vec![0u8; 4096]),
    ] {
        sqlx::query(
            "INSERT INTO rule_files (path, bytes, sha256, updated_at, updated_by) VALUES ($1, $2, $3, 0, 'attacker')",
        )
        .bind(path)
        .bind(bytes.as_slice())
        .bind(sha(&bytes))
        .execute(&pool)
        .await
        .unwrap();
    }
    for payload in ["", "not-a-host", "x y z", "é 99999999999999999999999", "\u{0}"] {
        let _ = sqlx::query(
            "SELECT pg_notify('drops_rules', $1), pg_notify('drops_inbox', $1), pg_notify('drops_grants', $1)",
        )
        .bind(payload)
        .execute(&pool)
        .await;
    }
    pool.close().await;
    for host in &hosts {
        let errors = loop {
            let view = host.admin_get("/campaigns").await;
            let errors = view["errors"].to_string();
            if errors.contains("not-utf8.toml") && errors.contains("garbage.wasm") {
                break errors;
            }
            assert!(uploaded_deadline(), "the hostile rules never reached {}: {view}", host.base);
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(!errors.contains("escape"), "{errors}");
        // Still serving the good version; nothing written outside the rules folder.
        assert_eq!(serving(&host.admin_get("/campaigns").await), Some(sha(&v1)));
        let outside = [host.dir.path().join("escape.toml"), host.dir.path().parent().unwrap().join("escape.toml")];
        assert!(outside.iter().all(|p| !p.exists()), "{outside:?}");
        assert!(host.log().contains("not a rule file's path"), "{}", host.base);
    }
    let v2 = new_version(&v1, "cluster-v2");
    let uploaded = Instant::now();
    let (status, answer) = hosts[1].admin_send(reqwest::Method::PUT, "/plugins/watch-time-tiers", v2.clone()).await;
    assert_eq!(status, 200, "{answer}");
    let mut took = Vec::new();
    for host in &hosts {
        loop {
            if serving(&host.admin_get("/campaigns").await) == Some(sha(&v2)) {
                took.push(uploaded.elapsed());
                break;
            }
            assert!(uploaded.elapsed() < Duration::from_secs(20), "not serving v2 after 20 s:\n{}", host.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // The figure the issue asks for (within a second) is measured by
    // benches/cluster.sh on a release build; here it is reported.
    eprintln!("plugin upload to serving on all three hosts (debug build): {took:?}");
    // Every host's rules directory now holds v2, and the database names it.
    for host in &hosts {
        assert_eq!(std::fs::read(host.dir.path().join("rules/plugins/watch-time-tiers.wasm")).unwrap(), v2);
    }
    // A campaign uploaded to another host serves on all three too.
    let campaign = crate::helpers::tiers_campaign(
        "camp-everywhere",
        "GameName",
        ("2026-11-02T00:00:00Z", "2026-11-03T00:00:00Z"),
        &[],
        &[(5, "r5")],
    );
    let (status, answer) =
        hosts[2].admin_send(reqwest::Method::PUT, "/campaigns/everywhere", campaign.into_bytes()).await;
    assert_eq!(status, 200, "{answer}");
    for host in &hosts {
        loop {
            let view = host.admin_get("/campaigns").await;
            if view["campaigns"].as_array().unwrap().iter().any(|c| c["id"] == "camp-everywhere") {
                break;
            }
            assert!(uploaded_deadline(), "campaign not on {} after 30 s: {view}", host.base);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for host in &mut hosts {
        host.stop();
    }
    drop(hosts);
    drop_database(&database).await;
}

async fn drop_database(url: &str) {
    let name = url.rsplit('/').next().unwrap();
    let admin = sqlx::AnyPool::connect(&postgres_admin_url()).await.unwrap();
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&admin).await;
    admin.close().await;
}

/// A host whose partition lease passes to another holder while its grants
/// are on their way to the database writes none of them. The test holds
/// the lease row (as the database does for a host paused mid-write while
/// another takes over), sees the host's fenced grant write wait on it, gives
/// the lease to another holder, and finds the write refused whole:
/// holder and epoch are checked inside the write's own transaction.
#[tokio::test]
async fn a_host_that_lost_its_lease_writes_no_grant() {
    let dir = tempfile::tempdir().unwrap();
    let Some(database) = database_url(Backend::Postgres, dir.path()).await else { return };
    let window = ("2026-11-07T00:00:00Z", "2026-11-08T00:00:00Z");
    let campaign = crate::helpers::tiers_campaign("camp-fence", "GameName", window, &[], &[(1, "bronze")]);
    let config = HostConfig {
        campaigns: vec![("fence".into(), campaign)],
        database_url: Some(database.clone()),
        extra_toml: "[cluster]\nenabled = true\nhost_id = \"host-a\"\nengine_partitions = 1\nlease_ttl_ms = 6000\n\
                     publish_rules = true\n"
            .into(),
        // No checkpoint in the test's window: the one fenced write in flight is the grants'.
        env: vec![("DROPS_HOST_ENGINE__CHECKPOINT_INTERVAL_SECS".into(), "3600".into())],
        ..Default::default()
    };
    let Some(mut host) = TestHost::spawn(Backend::Postgres, config).await else { return };
    let pool = open_database(&database).await;
    let started = Instant::now();
    while sqlx::query("SELECT 1 FROM leases WHERE name = 'engine/0' AND holder IS NOT NULL")
        .fetch_optional(&pool)
        .await
        .unwrap()
        .is_none()
    {
        assert!(started.elapsed() < Duration::from_secs(30), "the host never took its partition");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let grants =
        || async { sqlx::query("SELECT COUNT(*) AS n FROM grants").fetch_one(&pool).await.unwrap().get::<i64, _>("n") };

    // The lease row held: the host's fenced write waits for it.
    // On a connection of its own (the test's pool has one).
    let holder = open_database(&database).await;
    let mut held = holder.begin().await.unwrap();
    sqlx::query("SELECT holder FROM leases WHERE name = 'engine/0' FOR UPDATE").fetch_all(&mut *held).await.unwrap();
    let hb = crate::helpers::heartbeat("fence-1", "b", "GameName", "2026-11-07T10:00:00Z", &["v1", "v2"]);
    assert_eq!(host.post_vhs(None, &hb).await.0, 200, "acknowledging needs no lease");
    let started = Instant::now();
    loop {
        let waiting = sqlx::query(
            "SELECT COUNT(*) AS n FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock' AND query LIKE 'UPDATE leases SET epoch = epoch%'",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
        .get::<i64, _>("n");
        if waiting > 0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no fenced write came to wait on the lease");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(grants().await, 0);

    // Another holder takes the lease, as after a pause past its time; the waiting write then finds it gone.
    sqlx::query(
        "UPDATE leases SET holder = 'host-b#taken-over', epoch = epoch + 1, expires_at = expires_at + 3600000 \
         WHERE name = 'engine/0'",
    )
    .execute(&mut *held)
    .await
    .unwrap();
    held.commit().await.unwrap();
    let started = Instant::now();
    // The refused write ends the partition on this host, or the next lease renewal notices first.
    let stopped = |log: &str| log.contains("its lease is held by another host") || log.contains("lease taken over");
    while !stopped(&host.log()) {
        let log = host.log();
        let tail = &log[log.len().saturating_sub(4000)..];
        assert!(started.elapsed() < Duration::from_secs(30), "the host went on as if it held the lease:\n{tail}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(grants().await, 0, "the host that lost its lease wrote no grant");
    host.stop();
    pool.close().await;
    holder.close().await;
    drop_database(&database).await;
}
