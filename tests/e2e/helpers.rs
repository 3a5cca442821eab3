//! `TestHost`: the real `drops-host` binary on a free port, against a fresh
//! SQLite file or a fresh PostgreSQL database, with methods that read like a user's story.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::Row;

pub const ADMIN_TOKEN: &str = "e2e-admin-token-0123";

/// Which database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL server tests use.
pub fn postgres_admin_url() -> String {
    std::env::var("DROPS_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A fresh database URL for a backend, or None (with a printed notice) when
/// PostgreSQL is not reachable outside CI. In CI a missing server fails the test.
pub async fn database_url(backend: Backend, dir: &Path) -> Option<String> {
    match backend {
        Backend::Sqlite => Some(format!("sqlite://{}", dir.join("drops-host.db").display())),
        Backend::Postgres => {
            sqlx::any::install_default_drivers();
            let admin = postgres_admin_url();
            let pool = match sqlx::AnyPool::connect(&admin).await {
                Ok(pool) => pool,
                Err(e) if std::env::var_os("CI").is_none() => {
                    eprintln!("SKIPPED: PostgreSQL test: no server at {admin} ({e})");
                    return None;
                }
                Err(e) => panic!("PostgreSQL at {admin} is required in CI: {e}"),
            };
            let name = format!("drops_e2e_{}", uuid::Uuid::new_v4().simple());
            sqlx::query(&format!("CREATE DATABASE {name}")).execute(&pool).await.expect("create database");
            pool.close().await;
            let base = admin.rsplit_once('/').map(|(b, _)| b.to_string()).unwrap_or(admin.clone());
            Some(format!("{base}/{name}"))
        }
    }
}

/// What a test host is configured with.
#[derive(Debug, Clone, Default)]
pub struct HostConfig {
    pub campaigns: Vec<(String, String)>,
    pub vhs_token: Option<String>,
    pub max_body_bytes: Option<u64>,
    /// Test plugins (tests/plugins) to install beside watch-time-tiers.
    pub extra_plugins: Vec<&'static str>,
    /// Record evaluated events to `<dir>/events.jsonl`.
    pub record_events: bool,
    /// More TOML appended to the config file.
    pub extra_toml: String,
    /// Environment variables of the process (for keys whose table the config file already has).
    pub env: Vec<(String, String)>,
    /// Join this database (another host's) instead of a fresh one; it is not dropped with this host.
    pub database_url: Option<String>,
    /// Start with an empty rules directory (a host that mirrors the database's rules).
    pub no_rules: bool,
}

/// A running drops-host process and its files.
pub struct TestHost {
    pub dir: tempfile::TempDir,
    pub database_url: String,
    pub base: String,
    pub client: reqwest::Client,
    child: Child,
    /// Drop the PostgreSQL database with this host (it created it).
    owns_database: bool,
}

/// The example plugin, built by scripts/build-plugins.sh.
pub fn plugin_path(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join("wasm32-unknown-unknown/plugin").join(format!("{}.wasm", name.replace('-', "_")));
    assert!(path.exists(), "{} is missing: run scripts/build-plugins.sh (scripts/test.sh does)", path.display());
    path
}

impl TestHost {
    /// Starts a host, or None when the backend is unavailable outside CI.
    pub async fn spawn(backend: Backend, config: HostConfig) -> Option<TestHost> {
        let dir = tempfile::tempdir().expect("tempdir");
        let owns_database = config.database_url.is_none();
        let database_url = match &config.database_url {
            Some(url) => url.clone(),
            None => database_url(backend, dir.path()).await?,
        };
        let rules = dir.path().join("rules");
        std::fs::create_dir_all(rules.join("campaigns")).unwrap();
        std::fs::create_dir_all(rules.join("plugins")).unwrap();
        if !config.no_rules {
            std::fs::copy(plugin_path("watch-time-tiers"), rules.join("plugins/watch-time-tiers.wasm")).unwrap();
            for name in &config.extra_plugins {
                std::fs::copy(plugin_path(name), rules.join(format!("plugins/{name}.wasm"))).unwrap();
            }
            for (name, text) in &config.campaigns {
                std::fs::write(rules.join("campaigns").join(format!("{name}.toml")), text).unwrap();
            }
        }
        let mut toml = format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\ndatabase_url = \"{database_url}\"\nrules_dir = \"{}\"\n\
             [admin]\ntoken = \"{ADMIN_TOKEN}\"\n[manifests]\nflush_interval_secs = 1\n[engine]\ncheckpoint_interval_secs = 1\n",
            dir.path().join("data").display(),
            rules.display()
        );
        if config.record_events {
            toml = format!("record_events = \"{}\"\n{toml}", dir.path().join("events.jsonl").display());
        }
        toml.push_str("[vhs]\n");
        if let Some(token) = &config.vhs_token {
            toml.push_str(&format!("token = \"{token}\"\n"));
        }
        if let Some(max) = config.max_body_bytes {
            toml.push_str(&format!("max_body_bytes = {max}\n"));
        }
        toml.push_str(&config.extra_toml);
        std::fs::write(dir.path().join("drops-host.toml"), toml).unwrap();
        let env: String = config.env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        std::fs::write(dir.path().join("env"), env).unwrap();
        let (child, base) = start_process(dir.path());
        Some(TestHost { dir, database_url, base, client: reqwest::Client::new(), child, owns_database })
    }

    /// Kills the process with SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the process again on the same files and database.
    pub fn restart(&mut self) {
        let (child, base) = start_process(self.dir.path());
        self.child = child;
        self.base = base;
    }

    /// SIGTERM, and expects a clean exit.
    pub fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "drops-host exited with {status}; log:\n{}", self.log());
    }

    /// Waits up to `limit` for the process to exit on its own; its exit status.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The host's peak resident memory so far (`VmHWM`), in MiB.
    pub fn peak_rss_mib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0);
        kib / 1024
    }

    /// What the host logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("host.log")).unwrap_or_default()
    }

    /// POSTs a JSON body to /vhs (or /vhs/{token}); returns status and JSON answer.
    pub async fn post_vhs(&self, token: Option<&str>, body: &Value) -> (u16, Value) {
        self.post_vhs_raw(token, serde_json::to_vec(body).unwrap(), &[]).await
    }

    /// POSTs raw bytes with extra headers.
    pub async fn post_vhs_raw(&self, token: Option<&str>, body: Vec<u8>, headers: &[(&str, String)]) -> (u16, Value) {
        let url = match token {
            Some(t) => format!("{}/vhs/{t}", self.base),
            None => format!("{}/vhs", self.base),
        };
        let mut req = self.client.post(url).body(body);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let resp = req.send().await.expect("POST /vhs");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// GET a path outside the admin API, as text.
    pub async fn get_text(&self, path: &str) -> String {
        self.client.get(format!("{}{path}", self.base)).send().await.unwrap().text().await.unwrap()
    }

    /// Sends a request to the admin API; returns status and JSON answer.
    pub async fn admin_send(&self, method: reqwest::Method, path: &str, body: Vec<u8>) -> (u16, Value) {
        let resp = self
            .client
            .request(method, format!("{}/v1{path}", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// GET an admin API path.
    pub async fn admin_get(&self, path: &str) -> Value {
        let resp = self.client.get(format!("{}/v1{path}", self.base)).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
        assert!(resp.status().is_success(), "GET /v1{path}: {}", resp.status());
        resp.json().await.unwrap()
    }

    /// Stored grants, oldest first.
    pub async fn grants(&self) -> Vec<Value> {
        self.admin_get("/grants?limit=100000").await.as_array().cloned().unwrap_or_default()
    }

    /// The stored grants once there are at least `n`, or whatever there are after 20 s.
    pub async fn wait_for_grants(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let grants = self.grants().await;
            if grants.len() >= n || Instant::now() > deadline {
                return grants;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `n` manifests have their file written and every manifest is past that.
    pub async fn wait_for_manifests(&self, n: usize) -> Vec<Value> {
        self.wait_for_manifests_in(n, &["written", "not_configured", "uploading", "uploaded"]).await
    }

    /// Waits until `n` manifests are in one of `states` and no manifest is in another.
    pub async fn wait_for_manifests_in(&self, n: usize, states: &[&str]) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let manifests = self.admin_get("/manifests").await.as_array().cloned().unwrap_or_default();
            let written = manifests.iter().filter(|m| states.iter().any(|s| m["status"] == *s)).count();
            if written >= n && written == manifests.len() {
                return manifests;
            }
            assert!(Instant::now() < deadline, "expected {n} manifests, have {manifests:?}; log:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every manifest file, parsed, with its name.
    pub fn manifest_files(&self) -> Vec<(String, Value)> {
        let dir = self.dir.path().join("data/manifests");
        let mut files: Vec<(String, Value)> = std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                    .map(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        let value = serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap();
                        (name, value)
                    })
                    .collect()
            })
            .unwrap_or_default();
        files.sort_by(|a, b| a.0.cmp(&b.0));
        files
    }

    /// Reads totals straight from the database (after the host stopped).
    pub async fn database_totals(&self) -> (i64, i64) {
        sqlx::any::install_default_drivers();
        let pool = open_database(&self.database_url).await;
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(minutes), 0) AS BIGINT) AS minutes, (SELECT COUNT(*) FROM inbox) AS events FROM campaign_viewers",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        let totals = (row.get::<i64, _>("minutes"), row.get::<i64, _>("events"));
        pool.close().await;
        totals
    }
}

impl TestHost {
    /// Reward ids of the stored grants (after the host stopped).
    pub async fn grants_from_database(&self) -> Vec<String> {
        sqlx::any::install_default_drivers();
        let pool = open_database(&self.database_url).await;
        let rewards = sqlx::query_scalar("SELECT reward_id FROM grants ORDER BY id").fetch_all(&pool).await.unwrap();
        pool.close().await;
        rewards
    }

    /// Checkpointed game state per broadcaster, and game-state messages still in the inbox.
    pub async fn game_state_from_database(&self) -> (Vec<(String, String)>, i64) {
        sqlx::any::install_default_drivers();
        let pool = open_database(&self.database_url).await;
        let states = sqlx::query("SELECT broadcaster_id, state FROM game_state ORDER BY broadcaster_id")
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.get::<String, _>(0), r.get::<String, _>(1)))
            .collect();
        let e2_rows =
            sqlx::query_scalar("SELECT COUNT(*) FROM inbox WHERE source = 'e2'").fetch_one(&pool).await.unwrap();
        pool.close().await;
        (states, e2_rows)
    }

    /// Rules' stored state, sorted (after the host stopped).
    pub async fn campaign_state(&self) -> Vec<(String, String, Vec<u8>)> {
        sqlx::any::install_default_drivers();
        let pool = open_database(&self.database_url).await;
        let rows = sqlx::query("SELECT campaign_id, key, value FROM campaign_state ORDER BY campaign_id, key")
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        pool.close().await;
        rows
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let owned = self.database_url.strip_prefix("postgres").filter(|_| self.owns_database);
        if let Some(name) = owned.and_then(|u| u.rsplit('/').next()) {
            // Drop runs outside the test's runtime: a small one of its own drops the database.
            let name = name.to_string();
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
                rt.block_on(async {
                    let pool = sqlx::AnyPool::connect(&postgres_admin_url()).await.ok()?;
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&pool).await;
                    pool.close().await;
                    Some(())
                })
            })
            .join();
        }
    }
}

fn start_process(dir: &Path) -> (Child, String) {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("host.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_drops-host"))
        .args(["serve", "--config"])
        .arg(dir.join("drops-host.toml"))
        .env("RUST_LOG", "info,drops_host=debug")
        .envs(
            std::fs::read_to_string(dir.join("env"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("spawn drops-host");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("drops-host listening on ") {
                let _ = tx.send(addr.to_string());
            }
        }
    });
    let base = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| {
        panic!("drops-host did not start; log:\n{}", std::fs::read_to_string(dir.join("host.log")).unwrap_or_default())
    });
    (child, base)
}

/// A heartbeat as Twitch sends it.
pub fn heartbeat(id: &str, broadcaster: &str, game: &str, time: &str, viewers: &[&str]) -> Value {
    json!({
        "broadcaster": broadcaster, "broadcast_id": 27388295120u64, "viewers": viewers.len() + 2,
        "viewer_list": viewers, "game": game, "version": 1, "id": id, "time": time, "retries": 0
    })
}

/// A campaign file using the watch-time-tiers plugin.
pub fn tiers_campaign(id: &str, game: &str, window: (&str, &str), allowlist: &[&str], tiers: &[(u32, &str)]) -> String {
    let rewards: String = tiers.iter().map(|(_, r)| format!("[[rewards]]\nid = \"{r}\"\nname = \"{r}\"\n")).collect();
    let tiers: Vec<String> = tiers.iter().map(|(m, r)| format!("{{ minutes = {m}, reward = \"{r}\" }}")).collect();
    format!(
        "id = \"{id}\"\nname = \"{id}\"\ngame = \"{game}\"\nclient_id = \"client-e2e\"\nstarts_at = \"{}\"\nends_at = \"{}\"\n\
         allowlist = {allowlist:?}\n{rewards}[rule]\nplugin = \"watch-time-tiers\"\nconfig = {{ tiers = [{}] }}\n",
        window.0,
        window.1,
        tiers.join(", ")
    )
}

/// The host's database as the host sees it: on SQLite, the main file with the
/// inbox file beside it attached (the host keeps the inbox in its own file).
pub async fn open_database(url: &str) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    let inbox = url.strip_prefix("sqlite://").map(|path| {
        let path = path.split('?').next().unwrap_or(path);
        format!("{}.inbox.db", path.strip_suffix(".db").unwrap_or(path))
    });
    sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .after_connect(move |conn, _| {
            let inbox = inbox.clone();
            Box::pin(async move {
                if let Some(inbox) = inbox {
                    sqlx::query("ATTACH DATABASE $1 AS inbox_file").bind(inbox).execute(&mut *conn).await?;
                }
                Ok(())
            })
        })
        .connect(url)
        .await
        .unwrap()
}
