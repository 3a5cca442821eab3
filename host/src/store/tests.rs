//! Each query's behaviour, on SQLite and (where a server answers, and always
//! in CI) on PostgreSQL: the SQL text is shared, so the backends must agree.

use std::sync::Arc;

use super::*;
use crate::domain::{
    AccountLink, Event, GameStateEvent, GrantOrigin, Heartbeat, Id, NewGrant, Paused, Publisher, Update, ViewerList,
};

/// A fresh database of each backend, and what keeps it alive.
struct Databases {
    stores: Vec<(&'static str, Store)>,
    _dir: tempfile::TempDir,
    postgres: Option<(String, String)>,
}

impl Databases {
    async fn new() -> Databases {
        let (dir, sqlite) = temp_sqlite().await;
        let mut stores = vec![("sqlite", sqlite)];
        let mut postgres = None;
        if let Some((admin, url)) = fresh_postgres().await {
            let store = Store::connect(&url).await.unwrap();
            store.migrate().await.unwrap();
            stores.push(("postgres", store));
            postgres = Some((admin, url));
        }
        Databases { stores, _dir: dir, postgres }
    }

    async fn drop_postgres(self) {
        for (_, store) in &self.stores {
            store.close().await;
        }
        if let Some((admin, url)) = self.postgres {
            let name = url.rsplit('/').next().unwrap_or_default().to_string();
            if let Ok(pool) = sqlx::AnyPool::connect(&admin).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name}")).execute(&pool).await;
            }
        }
    }
}

/// A new PostgreSQL database, or None (said on stderr) outside CI when no server answers.
async fn fresh_postgres() -> Option<(String, String)> {
    sqlx::any::install_default_drivers();
    let admin =
        std::env::var("DROPS_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let pool = match sqlx::AnyPool::connect(&admin).await {
        Ok(pool) => pool,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED: store tests on PostgreSQL: no server at {admin} ({e})");
            return None;
        }
        Err(e) => panic!("PostgreSQL at {admin} is required in CI: {e}"),
    };
    let name = format!("drops_store_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&pool).await.unwrap();
    pool.close().await;
    let base = admin.rsplit_once('/').map(|(b, _)| b.to_string()).unwrap_or(admin.clone());
    Some((admin, format!("{base}/{name}")))
}

fn heartbeat(id: &str, broadcaster: &str, viewers: &[&str]) -> Heartbeat {
    Heartbeat {
        id: Id(id.into()),
        broadcaster: Id(broadcaster.into()),
        broadcast_id: Some(7),
        viewers: viewers.len() as u64,
        viewer_list: Arc::new(viewers.iter().map(|v| v.to_string()).collect::<ViewerList>()),
        game: Id("G".into()),
        version: 1,
        time: serde_json::from_str("\"2026-11-23T10:00:00Z\"").unwrap(),
        retries: 0,
    }
}

fn game_state(id: &str) -> GameStateEvent {
    GameStateEvent {
        id: id.into(),
        broadcasters: vec![Publisher { twitch_user_id: "t-1".into(), account_id: "b-1".into() }],
        client_id: "c".into(),
        game_id: "g".into(),
        update: Update::Full,
        data: serde_json::json!({"level": 1}),
        received_at_ms: 1_000,
        authoritative: true,
    }
}

/// A manifest's users, in grant order (one page holds them all here).
async fn manifest_users(store: &Store, manifest_id: &str) -> Vec<String> {
    store.manifest_users_page(manifest_id, 0, 1000).await.unwrap().into_iter().map(|(_, u)| u).collect()
}

fn grant(user: &str, key: &str) -> NewGrant {
    NewGrant {
        origin: Arc::new(GrantOrigin {
            campaign_id: "c-1".into(),
            broadcaster_id: "b-1".into(),
            game: "G".into(),
            client_id: "client".into(),
            reason: "watching",
            campaign_revision: "rev".into(),
            plugin_hash: "hash".into(),
            inbox_seq: 1,
            event_minute: 30,
        }),
        reward_id: "r-1".into(),
        user_id: user.into(),
        grant_key: key.into(),
    }
}

#[tokio::test]
async fn the_inbox_keeps_order_and_counts_a_retry_once() {
    let dbs = Databases::new().await;
    for (backend, store) in &dbs.stores {
        let first = store.insert_heartbeats(&[heartbeat("h-1", "b-1", &["v-1", "v-2"])]).await.unwrap();
        assert_eq!(first, InsertOutcome { accepted: 1, duplicates: 0 }, "{backend}");
        let retry = [heartbeat("h-1", "b-1", &["v-1", "v-2"]), heartbeat("h-2", "b-1", &[])];
        let second = store.insert_heartbeats(&retry).await.unwrap();
        assert_eq!(second, InsertOutcome { accepted: 1, duplicates: 1 }, "{backend}");
        store.insert_game_state(&game_state("conn:1")).await.unwrap();
        store.insert_game_state(&game_state("conn:1")).await.unwrap();

        let events = store.inbox_after(0, 10).await.unwrap();
        assert_eq!(events.len(), 3, "{backend}: the resent game-state id is stored once");
        assert!(events.windows(2).all(|w| w[0].seq < w[1].seq), "{backend}");
        match &events[0].event {
            Event::Heartbeat(hb) => assert_eq!(*hb, heartbeat("h-1", "b-1", &["v-1", "v-2"]), "{backend}"),
            other => panic!("{backend}: {other:?}"),
        }
        assert!(matches!(&events[2].event, Event::GameState(gs) if gs.id == "conn:1"), "{backend}");
        let after_first = store.inbox_after(events[0].seq, 1).await.unwrap();
        assert_eq!(after_first.len(), 1, "{backend}: the limit holds");
        assert_eq!(after_first[0].seq, events[1].seq, "{backend}");
    }
    dbs.drop_postgres().await;
}

#[tokio::test]
async fn a_commit_raises_its_signal() {
    let dbs = Databases::new().await;
    for (backend, store) in &dbs.stores {
        let mut commits = store.signals().inbox_commits();
        store.insert_heartbeats(&[heartbeat("h-1", "b-1", &["v-1"])]).await.unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(1), commits.changed())
            .await
            .unwrap_or_else(|_| panic!("{backend}: no inbox signal"))
            .unwrap();
        assert_eq!(store.insert_grants(&[grant("u-1", ""), grant("u-2", "")], None).await.unwrap(), 2);
        assert_eq!(store.insert_grants(&[grant("u-1", "")], None).await.unwrap(), 0, "{backend}: a repeat is no grant");
        assert_eq!(store.signals().grants_waiting(), 2, "{backend}");
        assert_eq!(store.signals().take_grants_waiting(), 2, "{backend}");
        assert_eq!(store.signals().grants_waiting(), 0, "{backend}");
    }
    dbs.drop_postgres().await;
}

#[tokio::test]
async fn grants_are_unique_by_key_and_listed_by_filter_and_page() {
    let dbs = Databases::new().await;
    for (backend, store) in &dbs.stores {
        let made = [grant("u-1", ""), grant("u-1", "kill-1"), grant("u-1", "kill-2"), grant("u-2", "")];
        assert_eq!(store.insert_grants(&made, None).await.unwrap(), 4, "{backend}");
        assert_eq!(store.insert_grants(&made, None).await.unwrap(), 0, "{backend}");
        let all = store.list_grants(&GrantFilter::default()).await.unwrap();
        assert_eq!(all.len(), 4, "{backend}");
        assert_eq!(all[1].grant_key, "kill-1", "{backend}");
        assert_eq!(all[0].event_minute, 30, "{backend}");
        let of_u2 = GrantFilter { user_id: Some("u-2".into()), ..Default::default() };
        assert_eq!(store.list_grants(&of_u2).await.unwrap().len(), 1, "{backend}");
        let page = GrantFilter { after_id: Some(all[1].id), limit: Some(1), ..Default::default() };
        let page = store.list_grants(&page).await.unwrap();
        assert_eq!(page.iter().map(|g| g.id).collect::<Vec<_>>(), vec![all[2].id], "{backend}");
        let other = GrantFilter { campaign_id: Some("c-2".into()), ..Default::default() };
        assert!(store.list_grants(&other).await.unwrap().is_empty(), "{backend}");
        let by = |f: GrantFilter| async move { store.list_grants(&f).await.unwrap().len() };
        assert_eq!(by(GrantFilter { reward_id: Some("r-1".into()), ..Default::default() }).await, 4, "{backend}");
        assert_eq!(by(GrantFilter { broadcaster_id: Some("b-2".into()), ..Default::default() }).await, 0, "{backend}");
        assert_eq!(by(GrantFilter { delivery: Some("unbatched".into()), ..Default::default() }).await, 4, "{backend}");
        let ids: Vec<i64> = all.iter().take(2).map(|g| g.id).collect();
        let row = ManifestRow { id: "m-f".into(), status: "pending".into(), ..Default::default() };
        store.create_manifest(&row, &ids).await.unwrap();
        assert_eq!(by(GrantFilter { delivery: Some("pending".into()), ..Default::default() }).await, 2, "{backend}");
        assert_eq!(by(GrantFilter { delivery: Some("unbatched".into()), ..Default::default() }).await, 2, "{backend}");
        let now = time::OffsetDateTime::now_utc();
        let hour = time::Duration::hours(1);
        assert_eq!(by(GrantFilter { since: Some(now - hour), ..Default::default() }).await, 4, "{backend}");
        assert_eq!(by(GrantFilter { since: Some(now + hour), ..Default::default() }).await, 0, "{backend}");
        assert_eq!(by(GrantFilter { until: Some(now - hour), ..Default::default() }).await, 0, "{backend}");
    }
    dbs.drop_postgres().await;
}

#[tokio::test]
async fn each_grant_lands_in_one_manifest() {
    let dbs = Databases::new().await;
    for (backend, store) in &dbs.stores {
        store.insert_grants(&[grant("u-1", ""), grant("u-2", ""), grant("u-3", "")], None).await.unwrap();
        let unbatched = store.unbatched_grants(i64::MAX, 10).await.unwrap();
        assert_eq!(unbatched.iter().map(|g| g.user_id.as_str()).collect::<Vec<_>>(), ["u-1", "u-2", "u-3"]);
        let row = ManifestRow {
            id: "m-1".into(),
            campaign_id: "c-1".into(),
            client_id: "client".into(),
            game: "G".into(),
            broadcaster_id: "b-1".into(),
            item_id: "r-1".into(),
            reason: "watching".into(),
            users: 2,
            status: "pending".into(),
            ..Default::default()
        };
        store.create_manifest(&row, &[unbatched[0].id, unbatched[2].id]).await.unwrap();
        // A second manifest cannot take grants the first holds.
        let second = ManifestRow { id: "m-2".into(), ..row.clone() };
        store.create_manifest(&second, &[unbatched[0].id, unbatched[1].id]).await.unwrap();
        assert_eq!(manifest_users(store, "m-1").await, ["u-1", "u-3"], "{backend}");
        assert_eq!(manifest_users(store, "m-2").await, ["u-2"], "{backend}");
        assert!(store.unbatched_grants(i64::MAX, 10).await.unwrap().is_empty(), "{backend}");
        assert_eq!(store.pending_manifests().await.unwrap().len(), 2, "{backend}");
        store.mark_manifest_written("m-1", "/tmp/m-1.json", 120, true).await.unwrap();
        let pending = store.pending_manifests().await.unwrap();
        assert_eq!(pending.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["m-2"], "{backend}");
        let listed = store.list_manifests().await.unwrap();
        let m1 = listed.iter().find(|m| m.id == "m-1").unwrap();
        assert_eq!((m1.status.as_str(), m1.path.as_deref()), ("written", Some("/tmp/m-1.json")), "{backend}");
        assert_eq!(m1.bytes, Some(120), "{backend}");
        let page = store.manifest_users_page("m-1", 0, 1).await.unwrap();
        assert_eq!(page.iter().map(|(_, u)| u.as_str()).collect::<Vec<_>>(), ["u-1"], "{backend}");
        let rest = store.manifest_users_page("m-1", page[0].0, 10).await.unwrap();
        assert_eq!(rest.iter().map(|(_, u)| u.as_str()).collect::<Vec<_>>(), ["u-3"], "{backend}");
    }
    dbs.drop_postgres().await;
}

#[tokio::test]
async fn upload_attempts_keep_the_manifest_and_count() {
    use crate::store::{manifest_status as status, UploadOutcome};
    let dbs = Databases::new().await;
    for (backend, store) in &dbs.stores {
        store.insert_grants(&[grant("u-1", "")], None).await.unwrap();
        let ids: Vec<i64> = store.unbatched_grants(i64::MAX, 10).await.unwrap().iter().map(|g| g.id).collect();
        let row = ManifestRow { id: "m-1".into(), users: 1, status: "pending".into(), ..Default::default() };
        store.create_manifest(&row, &ids).await.unwrap();
        assert!(store.manifests_to_upload(i64::MAX, 10).await.unwrap().is_empty(), "{backend}: pending is not due");
        store.mark_manifest_written("m-1", "/tmp/m-1.json", 10, true).await.unwrap();
        assert_eq!(store.manifests_to_upload(0, 10).await.unwrap().len(), 1, "{backend}");
        store.start_upload_attempt("m-1").await.unwrap();
        let later = UploadOutcome::RetryAt { at_ms: 5_000, error: "HTTP 500".into() };
        store.finish_upload_attempt("m-1", &later).await.unwrap();
        assert!(store.manifests_to_upload(4_999, 10).await.unwrap().is_empty(), "{backend}: not due yet");
        let due = store.manifests_to_upload(5_000, 10).await.unwrap();
        assert_eq!((due[0].status.as_str(), due[0].attempts), (status::UPLOADING, 1), "{backend}");
        assert_eq!(due[0].last_error.as_deref(), Some("HTTP 500"), "{backend}");
        // A crash mid-attempt: the manifest is still due, under the same id.
        store.start_upload_attempt("m-1").await.unwrap();
        assert_eq!(store.manifests_to_upload(0, 10).await.unwrap()[0].attempts, 2, "{backend}");
        store.finish_upload_attempt("m-1", &UploadOutcome::Failed { error: "HTTP 400".into() }).await.unwrap();
        assert!(store.manifests_to_upload(i64::MAX, 10).await.unwrap().is_empty(), "{backend}");
        assert!(!store.retry_manifest("nope").await.unwrap(), "{backend}");
        assert!(store.retry_manifest("m-1").await.unwrap(), "{backend}");
        store.start_upload_attempt("m-1").await.unwrap();
        store.finish_upload_attempt("m-1", &UploadOutcome::Uploaded).await.unwrap();
        let m = store.manifest("m-1").await.unwrap().unwrap();
        assert_eq!((m.status.as_str(), m.attempts, m.last_error), (status::UPLOADED, 1, None), "{backend}");
        assert!(!store.retry_manifest("m-1").await.unwrap(), "{backend}: only a failed one is retried");
        // Written without credentials, queued once they exist.
        store.insert_grants(&[grant("u-2", "")], None).await.unwrap();
        let ids: Vec<i64> = store.unbatched_grants(i64::MAX, 10).await.unwrap().iter().map(|g| g.id).collect();
        store.create_manifest(&ManifestRow { id: "m-2".into(), ..row.clone() }, &ids).await.unwrap();
        store.mark_manifest_written("m-2", "/tmp/m-2.json", 10, false).await.unwrap();
        assert!(store.manifests_to_upload(i64::MAX, 10).await.unwrap().is_empty(), "{backend}");
        assert_eq!(store.queue_unconfigured_manifests().await.unwrap(), 1, "{backend}");
        assert_eq!(store.manifests_to_upload(0, 10).await.unwrap()[0].id, "m-2", "{backend}");
        let first = store.list_manifests_page(None, None, 1).await.unwrap();
        let rest = store.list_manifests_page(None, Some(&first[0].id), 10).await.unwrap();
        assert_eq!((first.len(), rest.len()), (1, 1), "{backend}: pages");
        assert_ne!(first[0].id, rest[0].id, "{backend}");
        let uploaded = store.list_manifests_page(Some("uploaded"), None, 10).await.unwrap();
        assert_eq!(uploaded.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["m-1"], "{backend}");
        let (mut counts, oldest) = store.manifest_backlog().await.unwrap();
        counts.sort();
        assert_eq!(counts, [("uploaded".to_string(), 1), ("written".to_string(), 1)], "{backend}");
        assert!(oldest.is_some(), "{backend}: m-2 is not uploaded yet");
    }
    dbs.drop_postgres().await;
}

#[tokio::test]
async fn links_are_replaced_and_looked_up_both_ways() {
    let dbs = Databases::new().await;
    let link = |t: &str, g: &str| AccountLink { twitch_user_id: Id(t.into()), game_account_id: Id(g.into()) };
    for (backend, store) in &dbs.stores {
        assert_eq!(store.put_links(&[link("t-1", "g-1"), link("t-2", "g-2")]).await.unwrap(), 2);
        store.put_links(&[link("t-1", "g-9")]).await.unwrap();
        assert_eq!(store.link_of("t-1").await.unwrap().as_deref(), Some("g-9"), "{backend}: relinked");
        assert_eq!(store.link_of("t-3").await.unwrap(), None, "{backend}");
        assert_eq!(store.links(None, Some("g-2"), 10).await.unwrap(), [link("t-2", "g-2")], "{backend}");
        assert_eq!(store.links(None, None, 1).await.unwrap(), [link("t-1", "g-9")], "{backend}");
    }
    dbs.drop_postgres().await;
}

#[tokio::test]
async fn plugin_versions_and_rule_history_are_recorded_once() {
    let dbs = Databases::new().await;
    for (backend, store) in &dbs.stores {
        store.record_plugin_version("tiers", "h1", b"one").await.unwrap();
        store.record_plugin_version("tiers", "h1", b"one").await.unwrap();
        store.record_plugin_version("tiers", "h2", b"two!").await.unwrap();
        let versions = store.plugin_versions("tiers").await.unwrap();
        assert_eq!(versions.iter().map(|v| (v.hash.as_str(), v.size)).collect::<Vec<_>>(), [("h1", 3), ("h2", 4)]);
        assert_eq!(store.plugin_bytes("tiers", "h2").await.unwrap().as_deref(), Some(&b"two!"[..]), "{backend}");
        assert_eq!(store.plugin_bytes("other", "h2").await.unwrap(), None, "{backend}");
        let entry = |rev: &str, hash: &str, runtime: &str| RuleHistoryEntry {
            campaign_id: "c-1".into(),
            campaign_revision: rev.into(),
            plugin_name: "tiers".into(),
            plugin_hash: hash.into(),
            runtime: runtime.into(),
            activated_at: 0,
        };
        let (old, new) = ("wasmtime 48.0.8; fuel 1", "wasmtime 49.0.0; fuel 1");
        for e in [entry("r1", "h1", old), entry("r1", "h1", old), entry("r1", "h2", old), entry("r1", "h1", old)] {
            store.record_activation(&e).await.unwrap();
        }
        // The same plugin and revision under another wasmtime is a new entry: fuel counts may differ.
        store.record_activation(&entry("r1", "h1", new)).await.unwrap();
        let history = store.rule_history("c-1").await.unwrap();
        let seen: Vec<_> = history.iter().map(|e| (e.plugin_hash.as_str(), e.runtime.as_str())).collect();
        assert_eq!(
            seen,
            [("h1", old), ("h2", old), ("h1", old), ("h1", new)],
            "{backend}: a repeat of the latest entry is not recorded"
        );
    }
    dbs.drop_postgres().await;
}

#[tokio::test]
async fn rule_state_is_written_and_deleted_in_batches() {
    let dbs = Databases::new().await;
    for (backend, store) in &dbs.stores {
        let many: Vec<(String, String, Option<Vec<u8>>)> =
            (0..2500).map(|i| ("c-1".to_string(), format!("k{i}"), Some(vec![i as u8]))).collect();
        let write = |state: &'static [(String, String, Option<Vec<u8>>)]| CheckpointWrite {
            campaign_state: state,
            ..Default::default()
        };
        let many: &'static [_] = Box::leak(many.into_boxed_slice());
        store.save_checkpoint(&write(many)).await.unwrap();
        assert_eq!(store.load_checkpoint(0, &|_| true).await.unwrap().campaign_state.len(), 2500, "{backend}");
        let gone: Vec<_> = (0..2400).map(|i| ("c-1".to_string(), format!("k{i}"), None)).collect();
        store.save_checkpoint(&write(Box::leak(gone.into_boxed_slice()))).await.unwrap();
        let left = store.load_checkpoint(0, &|_| true).await.unwrap().campaign_state;
        assert_eq!(left.len(), 100, "{backend}");
        assert!(left.iter().all(|(_, k, _)| k[1..].parse::<u32>().unwrap() >= 2400), "{backend}");
    }
    dbs.drop_postgres().await;
}

#[tokio::test]
async fn a_value_the_database_refuses_is_a_permanent_error() {
    let corrupt = StoreError::Corrupt { seq: 1, reason: "x".into() };
    assert!(corrupt.is_permanent());
    assert!(!StoreError::Sqlx(sqlx::Error::PoolTimedOut).is_permanent());
    let dbs = Databases::new().await;
    if let Some((_, store)) = dbs.stores.iter().find(|(b, _)| *b == "postgres") {
        let mut bad = grant("u-1", "");
        bad.grant_key = "nul\0key".into();
        let err = store.insert_grants(&[bad], None).await.unwrap_err();
        assert!(err.is_permanent(), "{err}");
    }
    dbs.drop_postgres().await;
}

#[tokio::test]
async fn a_checkpoint_round_trips_and_prunes_what_it_passed() {
    let dbs = Databases::new().await;
    for (backend, store) in &dbs.stores {
        store.insert_heartbeats(&[heartbeat("h-1", "b-1", &["v-1"])]).await.unwrap();
        store.insert_heartbeats(&[heartbeat("h-2", "b-1", &["v-2"])]).await.unwrap();
        store.insert_game_state(&game_state("conn:1")).await.unwrap();
        store.insert_heartbeats(&[heartbeat("h-3", "b-2", &["v-3"])]).await.unwrap();
        let seqs: Vec<i64> = store.inbox_after(0, 10).await.unwrap().iter().map(|e| e.seq).collect();
        // An older host's row of c-1, read until c-1's first base commits.
        sqlx::query("INSERT INTO watch_time (campaign_id, viewer_id, minutes, last_minute, recent_mask) VALUES ('c-1', 'v-0', 3, 9, -1)")
            .execute(&store.pool)
            .await
            .unwrap();
        let mut columns = WatchTimeColumns::default();
        columns.push("v-1", 64, 29_000_000, u64::MAX);
        let data = columns.encode().unwrap();
        let orphan = store.write_segment("c-1", 1, &data).await.unwrap();
        let base = store.write_segment("c-1", 1, &data).await.unwrap();
        let viewers =
            [CampaignViewers { campaign_id: "c-1".into(), viewers: 1, minutes: 64, top: vec![("v-1".into(), 64)] }];
        let kv = [("c-1".to_string(), "k".to_string(), Some(vec![1, 2])), ("c-1".into(), "gone".into(), None)];
        let paused =
            Paused { since_seq: 99, plugin_hash: "h".into(), campaign_revision: "r".into(), reason: "x".into() };
        let breakers = [("c-2".to_string(), paused.clone())];
        let game = [GameStateRow {
            broadcaster_id: "b-1".into(),
            twitch_user_id: "t-1".into(),
            state: r#"{"level":1}"#.into(),
            changed_minute: 29_000_000,
        }];
        let watchers = [WatcherRow { broadcaster_id: "b-1".into(), inbox_seq: seqs[1], minute: 1, received_at_ms: 0 }];
        let write = CheckpointWrite {
            inbox_seq: seqs[2],
            segments: &[base],
            rebased: &[("c-1".to_string(), base)],
            viewers: &viewers,
            campaign_state: &kv,
            breakers: &breakers,
            game_state: &game,
            watchers: &watchers,
            ..Default::default()
        };
        store.save_checkpoint(&write).await.unwrap();

        let loaded = store.load_checkpoint(0, &|_| true).await.unwrap();
        assert_eq!(loaded.inbox_seq, seqs[2], "{backend}");
        assert_eq!(loaded.legacy_watch_time, [], "{backend}: the base replaced the older host's rows");
        assert_eq!(loaded.segments, [SegmentRef { id: base, campaign_id: "c-1".into(), row_count: 1 }], "{backend}");
        assert_eq!(store.read_segment(base).await.unwrap(), columns, "{backend}");
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM watch_time_segments WHERE id = $1")
            .bind(orphan)
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(left, 0, "{backend}: the uncommitted segment was deleted by the next load");
        let top: Vec<ViewerMinutes> = vec![ViewerMinutes { viewer_id: "v-1".into(), minutes: 64 }];
        assert_eq!(store.viewer_progress("c-1", 10).await.unwrap(), (1, top), "{backend}");
        assert_eq!(store.viewer_progress("c-1", 0).await.unwrap(), (1, vec![]), "{backend}");
        assert_eq!(loaded.campaign_state, [("c-1".to_string(), "k".to_string(), vec![1, 2])], "{backend}");
        assert_eq!(loaded.breakers, breakers, "{backend}");
        assert_eq!(loaded.game_state, game, "{backend}");
        assert_eq!(loaded.watchers.len(), 1, "{backend}");
        let (row, hb) = &loaded.watchers[0];
        assert_eq!((row.inbox_seq, hb.id.0.as_str()), (seqs[1], "h-2"), "{backend}");
        assert_eq!(hb.viewer_list.iter().collect::<Vec<_>>(), ["v-2"], "{backend}: the watcher keeps its viewers");

        // Behind the checkpoint: viewers dropped (ids kept for deduplication),
        // but the watcher's; game-state rows deleted; after it, all kept.
        let viewers: Vec<(i64, Option<Vec<u8>>)> =
            sqlx::query_as("SELECT seq, viewers FROM inbox ORDER BY seq").fetch_all(&store.pool).await.unwrap();
        let kept: Vec<(i64, bool)> = viewers.iter().map(|(s, v)| (*s, v.is_some())).collect();
        assert_eq!(kept, [(seqs[0], false), (seqs[1], true), (seqs[3], true)], "{backend}");
        assert_eq!(
            store.insert_heartbeats(&[heartbeat("h-1", "b-1", &["v-1"])]).await.unwrap().duplicates,
            1,
            "{backend}: a pruned heartbeat's id still deduplicates"
        );

        // The one engine's state becomes four partitions' when several hosts
        // first use the database: each starts where it stopped, with its own
        // copy of the per-broadcaster state, and the paused campaign moves to
        // its partition. Asking for another count afterwards is refused.
        assert_eq!(store.engine_partitions(4).await.unwrap(), 4, "{backend}");
        assert!(store.engine_partitions(3).await.is_err(), "{backend}");
        let home = crate::domain::partition_of("c-2", 4);
        for part in 0..4 {
            let loaded = store.load_checkpoint(part, &|_| true).await.unwrap();
            assert_eq!(loaded.inbox_seq, seqs[2], "{backend}: partition {part}");
            assert_eq!(loaded.game_state, game, "{backend}: partition {part}");
            assert_eq!(loaded.watchers.len(), 1, "{backend}: partition {part}");
            let expect_pause = if part == home { &breakers[..] } else { &[] };
            assert_eq!(loaded.breakers, expect_pause, "{backend}: partition {part}");
        }

        // A checkpoint under a lease this process no longer holds is refused, whole.
        let holder = "host-a#1";
        let epoch = store.try_acquire_lease("engine/1", holder, 60_000, false).await.unwrap().unwrap();
        assert_eq!(store.try_acquire_lease("engine/1", "host-b#1", 60_000, false).await.unwrap(), None, "{backend}");
        let taken = store.try_acquire_lease("engine/1", "host-b#1", 60_000, true).await.unwrap().unwrap();
        assert!(taken > epoch, "{backend}");
        let stale = PartitionKey {
            index: 1,
            count: 4,
            fence: Some(Fence { name: "engine/1".into(), holder: holder.into(), epoch }),
        };
        let late = store.write_segment("c-1", 1, &data).await.unwrap();
        let write = CheckpointWrite {
            partition: &stale,
            inbox_seq: seqs[3],
            segments: &[late],
            rebased: &[("c-1".to_string(), late)],
            ..Default::default()
        };
        assert!(matches!(store.save_checkpoint(&write).await, Err(StoreError::LeaseLost(_))), "{backend}");
        let after = store.load_checkpoint(1, &|_| true).await.unwrap();
        assert_eq!(after.inbox_seq, seqs[2], "{backend}: nothing written");
        assert_eq!(
            after.segments.iter().map(|s| s.id).collect::<Vec<_>>(),
            [base],
            "{backend}: its segment never counts"
        );
        assert_eq!(store.renew_leases(holder, 60_000).await.unwrap(), [], "{backend}: the old holder holds nothing");

        // Grants and entitlement decisions under the lost lease are refused
        // whole too; under the new holder's they are written.
        let stale_fence = stale.fence.as_ref();
        let grants_before = store.list_grants(&GrantFilter::default()).await.unwrap().len();
        let err = store.insert_grants(&[grant("late-1", ""), grant("late-2", "")], stale_fence).await.unwrap_err();
        assert!(matches!(err, StoreError::LeaseLost(_)), "{backend}: {err}");
        let late = decided("e-late", "u-late", 9, crate::domain::Decision::Refused("late".into()));
        let err = store.record_entitlement_decisions(std::slice::from_ref(&late), stale_fence).await.unwrap_err();
        assert!(matches!(err, StoreError::LeaseLost(_)), "{backend}: {err}");
        let grants_after = store.list_grants(&GrantFilter::default()).await.unwrap().len();
        assert_eq!(grants_after, grants_before, "{backend}: no grant written");
        assert_eq!(store.entitlement("e-late").await.unwrap(), None, "{backend}: no decision written");
        let current = Fence { name: "engine/1".into(), holder: "host-b#1".into(), epoch: taken };
        assert_eq!(store.insert_grants(&[grant("late-1", "")], Some(&current)).await.unwrap(), 1, "{backend}");
        assert_eq!(store.record_entitlement_decisions(&[late], Some(&current)).await.unwrap(), 1, "{backend}");
    }
    dbs.drop_postgres().await;
}

#[tokio::test]
async fn a_sink_cursor_only_moves_forward_and_counts_what_waits() {
    let dbs = Databases::new().await;
    for (backend, store) in &dbs.stores {
        store.insert_grants(&[grant("u-1", ""), grant("u-2", ""), grant("u-3", "")], None).await.unwrap();
        assert_eq!(store.sink_cursor("webhook").await.unwrap(), 0, "{backend}");
        let first = store.grants_for_sink(0, 2).await.unwrap();
        assert_eq!(first.iter().map(|g| g.user_id.as_str()).collect::<Vec<_>>(), ["u-1", "u-2"], "{backend}");
        store.record_sink_failure("webhook", "HTTP 500").await.unwrap();
        assert_eq!(store.sink_cursor("webhook").await.unwrap(), 0, "{backend}: a failure moves nothing");
        store.advance_sink("webhook", first[1].id).await.unwrap();
        store.advance_sink("webhook", first[0].id).await.unwrap();
        assert_eq!(store.sink_cursor("webhook").await.unwrap(), first[1].id, "{backend}: never backwards");
        let backlog = store.sink_backlog("webhook").await.unwrap();
        assert_eq!((backlog.pending, backlog.oldest_pending_at.is_some()), (1, true), "{backend}");
        let rest = store.grants_for_sink(first[1].id, 10).await.unwrap();
        assert_eq!(rest.iter().map(|g| g.user_id.as_str()).collect::<Vec<_>>(), ["u-3"], "{backend}");
        assert_eq!(store.sink_cursor("nats").await.unwrap(), 0, "{backend}: each sink its own cursor");
    }
    dbs.drop_postgres().await;
}

fn entitlement(id: &str, user: &str) -> crate::domain::Entitlement {
    crate::domain::Entitlement {
        entitlement_id: id.into(),
        event_id: format!("ev-{id}"),
        organization_id: "org".into(),
        category_id: "game".into(),
        category_name: "Gäme".into(),
        campaign_id: "camp".into(),
        user_id: user.into(),
        user_login: "login".into(),
        user_name: "Näme".into(),
        benefit_id: "b-sword".into(),
        created_at: "2026-11-24T10:00:00Z".into(),
    }
}

fn decided(id: &str, user: &str, seq: i64, decision: crate::domain::Decision) -> crate::domain::EntitlementDecision {
    crate::domain::EntitlementDecision {
        entitlement: entitlement(id, user),
        first_seq: 1,
        seq,
        account: (!decision.is_open() || matches!(decision, crate::domain::Decision::Failed(_))).then(|| "acc".into()),
        decision,
        campaign_revision: "rev".into(),
        plugin_hash: "hash".into(),
    }
}

#[tokio::test]
async fn an_entitlement_is_decided_once_then_delivered_and_answered() {
    use crate::domain::{Decision, DeliveredItem};
    let dbs = Databases::new().await;
    for (backend, store) in &dbs.stores {
        let items = vec![DeliveredItem { id: "iron-sword".into(), quantity: 1 }];
        // Awaiting, then failed, then decided: each open row may be replaced; a decided one never.
        store.record_entitlement_decisions(&[decided("e-1", "u-1", 1, Decision::AwaitingLink)], None).await.unwrap();
        store.record_entitlement_decisions(&[decided("e-1", "u-1", 1, Decision::AwaitingLink)], None).await.unwrap();
        let users = vec!["u-1".to_string()];
        assert_eq!(store.open_entitlements(&users, &[], 10).await.unwrap().len(), 1, "{backend}");
        store
            .record_entitlement_decisions(&[decided("e-1", "u-1", 5, Decision::Failed("trap".into()))], None)
            .await
            .unwrap();
        assert_eq!(store.open_entitlements(&users, &[], 10).await.unwrap().len(), 1, "{backend}: failed is still open");
        store
            .record_entitlement_decisions(&[decided("e-1", "u-1", 7, Decision::Deliver(items.clone()))], None)
            .await
            .unwrap();
        let changed = store
            .record_entitlement_decisions(&[decided("e-1", "u-1", 9, Decision::Refused("again".into()))], None)
            .await
            .unwrap();
        assert_eq!(changed, 0, "{backend}: a decision is final");
        let seen = store.entitlements_seen(&["e-1", "e-9"]).await.unwrap();
        assert_eq!(
            seen.get("e-1"),
            Some(&Seen { first_seq: 1, decided_seq: 7, awaiting: false, account: Some("acc".into()) }),
            "{backend}"
        );
        assert!(!seen.contains_key("e-9"), "{backend}");
        assert!(store.open_entitlements(&users, &[], 10).await.unwrap().is_empty(), "{backend}");

        // Delivered, then answered by Twitch: retried later, then fulfilled.
        let to_deliver = store.items_to_deliver(10).await.unwrap();
        assert_eq!(to_deliver.len(), 1, "{backend}");
        assert_eq!(to_deliver[0].items, items, "{backend}");
        assert!(store.entitlements_to_fulfil(i64::MAX, 100).await.unwrap().is_empty(), "{backend}: not delivered yet");
        store.mark_items_delivered(&["e-1"]).await.unwrap();
        assert!(store.items_to_deliver(10).await.unwrap().is_empty(), "{backend}");
        assert_eq!(store.entitlements_to_fulfil(i64::MAX, 100).await.unwrap(), ["e-1"], "{backend}");
        let later = crate::domain::now_ms() + 60_000;
        store
            .record_fulfilment(&[("e-1".into(), Fulfilment::Retry { after_ms: later, error: "UPDATE_FAILED".into() })])
            .await
            .unwrap();
        assert!(store.entitlements_to_fulfil(crate::domain::now_ms(), 100).await.unwrap().is_empty(), "{backend}");
        assert_eq!(store.next_fulfil_due().await.unwrap(), Some(later), "{backend}");
        store.record_fulfilment(&[("e-1".into(), Fulfilment::Fulfilled)]).await.unwrap();
        assert!(store.entitlements_to_fulfil(i64::MAX, 100).await.unwrap().is_empty(), "{backend}");
        let listed = store
            .list_entitlements(&EntitlementFilter { fulfillment: Some("fulfilled".into()), ..Default::default() })
            .await
            .unwrap();
        assert_eq!((listed.len(), listed[0].fulfil_attempts), (1, 2), "{backend}");
        assert_eq!(store.entitlement_backlog().await.unwrap(), EntitlementBacklog::default(), "{backend}");

        // Unmatched is open again once its campaign is loaded; the sweep finds linked viewers with open ones.
        store
            .record_entitlement_decisions(&[decided("e-2", "u-2", 3, Decision::Unmatched("no".into()))], None)
            .await
            .unwrap();
        let users = vec!["u-2".to_string()];
        assert!(store.open_entitlements(&users, &[], 10).await.unwrap().is_empty(), "{backend}");
        let reopened = store.open_entitlements(&users, &["camp".into()], 10).await.unwrap();
        assert_eq!((reopened.len(), reopened[0].1), (1, 3), "{backend}");
        assert!(store.linked_with_open_entitlements(&["camp".into()], 10).await.unwrap().is_empty(), "{backend}");
        let link = AccountLink { twitch_user_id: Id("u-2".into()), game_account_id: Id("acc-2".into()) };
        store.put_links(&[link]).await.unwrap();
        assert!(store.linked_with_open_entitlements(&[], 10).await.unwrap().is_empty(), "{backend}");
        assert_eq!(store.linked_with_open_entitlements(&["camp".into()], 10).await.unwrap(), ["u-2"], "{backend}");
        assert_eq!(store.announce_links(&users, &["camp".into()]).await.unwrap(), 1, "{backend}");
        assert_eq!(store.announce_links(&users, &["camp".into()]).await.unwrap(), 0, "{backend}: the same news once");
    }
    dbs.drop_postgres().await;
}
