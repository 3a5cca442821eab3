//! The console: its login and session, its routes' bounds, the metrics an
//! operator scrapes (checked by Prometheus's own `promtool`), and the page
//! itself in a real headless Chromium driven through chromedriver.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};

use crate::delivery::{FakeTwitch, Fault};
use crate::helpers::{heartbeat, plugin_path, tiers_campaign, Backend, HostConfig, TestHost, ADMIN_TOKEN};

/// A window around now: the campaigns are live.
const LIVE: (&str, &str) = ("2025-01-01T00:00:00Z", "2030-01-01T00:00:00Z");

fn hostile_campaign(id: &str) -> String {
    format!(
        "id = \"{id}\"\nname = \"{id}\"\ngame = \"GameName\"\nclient_id = \"c\"\nstarts_at = \"{}\"\nends_at = \"{}\"\n\
         [[rewards]]\nid = \"r\"\n[rule]\nplugin = \"hostile\"\nconfig = {{ mode = \"panic\" }}\n",
        LIVE.0, LIVE.1
    )
}

/// A plugin's bytes with a custom section appended: the same code, another version (hash).
fn another_version(plugin: &str, tag: &str) -> Vec<u8> {
    let mut bytes = std::fs::read(plugin_path(plugin)).unwrap();
    let name = b"drops-e2e-version";
    let payload = tag.as_bytes();
    let size = 1 + name.len() + payload.len();
    assert!(size < 128, "one-byte LEB128 sizes");
    bytes.extend_from_slice(&[0, size as u8, name.len() as u8]);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(payload);
    bytes
}

/// A form's parts: name and bytes.
type Parts<'a> = Vec<(&'a str, &'a [u8])>;

/// A multipart body of named parts, and its content type.
fn multipart(parts: &[(&str, &[u8])]) -> (Vec<u8>, String) {
    let boundary = "drops-e2e-boundary-7d3f";
    let mut body = Vec::new();
    for (name, bytes) in parts {
        body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes());
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (body, format!("multipart/form-data; boundary={boundary}"))
}

async fn post_replay(host: &TestHost, parts: &[(&str, &[u8])]) -> (u16, Value) {
    let (body, content_type) = multipart(parts);
    let answer = host
        .client
        .post(format!("{}/v1/replay", host.base))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap_or(Value::Null))
}

/// Logs in through the form; returns the session cookie (`name=value`).
async fn log_in(host: &TestHost) -> String {
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let answer = http
        .post(format!("{}/console/login", host.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 303);
    assert_eq!(answer.headers()["location"], "/console");
    let cookie = answer.headers()["set-cookie"].to_str().unwrap().to_string();
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!cookie.contains(ADMIN_TOKEN), "the cookie holds a proof, not the token: {cookie}");
    cookie.split(';').next().unwrap().to_string()
}

#[tokio::test]
async fn without_the_token_the_console_and_its_stream_answer_401_and_hostile_input_is_refused() {
    let campaigns = vec![("camp".to_string(), tiers_campaign("camp", "GameName", LIVE, &[], &[(1, "badge")]))];
    let config = HostConfig { campaigns, extra_plugins: vec!["hostile"], record_events: true, ..Default::default() };
    let Some(host) = TestHost::spawn(Backend::Sqlite, config).await else { return };
    let http = &host.client;
    let get = |path: &str, cookie: Option<&str>| {
        let mut request = http.get(format!("{}{path}", host.base));
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        request.send()
    };
    // Without the token: 401, the console page showing the login form instead.
    let page = get("/console", None).await.unwrap();
    assert_eq!(page.status(), 401);
    assert!(page.headers()["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
    assert!(page.text().await.unwrap().contains("action=\"/console/login\""));
    for path in ["/v1/overview/stream", "/v1/overview"] {
        assert_eq!(get(path, None).await.unwrap().status(), 401, "{path}");
    }
    // Forged, expired and junk cookies are no session; the assets are public code.
    let later = (time::OffsetDateTime::now_utc().unix_timestamp() + 3600) * 1000;
    for cookie in [
        format!("drops_console={later}.{}", "0".repeat(64)),
        "drops_console=1.abc".into(),
        "drops_console=".into(),
        format!("drops_console={}", "9".repeat(10_000)),
        "drops_console=é.ü".into(),
    ] {
        assert_eq!(get("/v1/overview", Some(&cookie)).await.unwrap().status(), 401, "{cookie:.40}");
    }
    assert_eq!(get("/console/assets/console.js", None).await.unwrap().status(), 200);
    assert_eq!(get("/console/assets/..%2Fdrops-host.toml", None).await.unwrap().status(), 404);
    // Logins: a wrong token, a non-UTF-8 and a huge form are refused.
    let login = |body: Vec<u8>| {
        http.post(format!("{}/console/login", host.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    assert_eq!(login(b"token=wrong".to_vec()).await.unwrap().status(), 401);
    assert_eq!(login(b"token=\xff\xfe\x00".to_vec()).await.unwrap().status(), 401);
    // Just over the bound: a larger body may be cut off before the answer is read.
    assert_eq!(login(vec![b'a'; 8 << 10]).await.unwrap().status(), 413);
    // A session: the console and the API; a change by cookie alone needs the console's header.
    let cookie = log_in(&host).await;
    assert_eq!(get("/console", Some(&cookie)).await.unwrap().status(), 200);
    let answer = get("/v1/overview", Some(&cookie)).await.unwrap();
    assert_eq!(answer.headers()["cache-control"], "no-store", "what the session fetched is not cached");
    let overview: Value = answer.json().await.unwrap();
    assert_eq!(overview["campaigns"][0]["status"], "live", "{overview}");
    let retry =
        http.post(format!("{}/v1/manifests/none/retry", host.base)).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(retry.status(), 403, "a cross-site form could send the cookie: the header is required");
    let retry = http
        .post(format!("{}/v1/manifests/none/retry", host.base))
        .header("cookie", &cookie)
        .header("authorization", "Basic eDp4")
        .send()
        .await
        .unwrap();
    assert_eq!(retry.status(), 401, "another Authorization header is judged alone, not rescued by the cookie");
    let retry = http
        .post(format!("{}/v1/manifests/none/retry", host.base))
        .header("cookie", &cookie)
        .header("x-drops-console", "1");
    assert_eq!(retry.send().await.unwrap().status(), 404);
    // Out-of-range overview parameters are named.
    for (query, field) in [("bucket_secs=0", "bucket_secs"), ("buckets=100000", "buckets"), ("viewers=-1", "viewers")] {
        let (status, body) = host.admin_send(reqwest::Method::GET, &format!("/overview?{query}"), vec![]).await;
        assert_eq!((status, body["field"].as_str()), (400, Some(field)), "{query}: {body}");
    }

    // The stream: an overview a second; at most 16 at once.
    let mut streams = Vec::new();
    for _ in 0..16 {
        let answer =
            http.get(format!("{}/v1/overview/stream", host.base)).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
        assert_eq!(answer.status(), 200);
        assert!(answer.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        streams.push(answer);
    }
    let first = streams[0].chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).starts_with("event: overview\ndata: {"), "{first:?}");
    let refused = http.get(format!("{}/v1/overview/stream", host.base)).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(refused.status(), 503, "the 17th stream waits for a free slot");
    drop(streams);

    // Grants, recorded, for the dry runs.
    let viewers = ["v1", "vé-2", "日本-3"];
    let (status, _) = host.post_vhs(None, &heartbeat("h-1", "b-1", "GameName", &now_rfc3339(), &viewers)).await;
    assert_eq!(status, 200);
    assert_eq!(host.wait_for_grants(3).await.len(), 3);
    let recording = wait_for_recording(&host).await;
    // Dry runs: every part is bounded and named; a bad recording or plugin is the uploader's to fix.
    let tiers = std::fs::read(plugin_path("watch-time-tiers")).unwrap();
    let name = b"watch-time-tiers".as_slice();
    let cases: Vec<(Parts, u16, &str)> = vec![
        (vec![("plugin_name", name), ("plugin", &tiers)], 400, "events"),
        (vec![("events", &recording), ("plugin_name", name)], 400, "plugin"),
        (vec![("events", &recording), ("plugin", &tiers), ("plugin_name", name), ("colour", b"red")], 400, "colour"),
        (
            vec![("events", &recording), ("events", &recording), ("plugin_name", name), ("plugin", &tiers)],
            400,
            "events",
        ),
        (vec![("events", &recording), ("plugin_name", b"../etc"), ("plugin", &tiers)], 400, "plugin_name"),
        (vec![("events", &recording), ("plugin_name", b"\xff\xfe"), ("plugin", &tiers)], 400, "plugin_name"),
        (vec![("events", &recording), ("plugin_name", b"nope"), ("plugin", &tiers)], 422, "plugin_name"),
        (
            vec![("events", b"{\"not\": \"an event\"}\n\xff\xfe\n"), ("plugin_name", name), ("plugin", &tiers)],
            422,
            "events",
        ),
        (vec![("events", &recording), ("plugin_name", name), ("plugin", b"\x00asm junk")], 422, "plugin"),
    ];
    for (parts, status, field) in cases {
        let (got, body) = post_replay(&host, &parts).await;
        assert_eq!((got, body["field"].as_str()), (status, Some(field)), "{body}");
    }
    let huge = vec![b'{'; (16 << 20) + 1];
    let (got, body) = post_replay(&host, &[("events", &huge), ("plugin_name", name), ("plugin", &tiers)]).await;
    assert_eq!((got, body["field"].as_str()), (400, Some("events")), "{body}");
    // A candidate that does not take the campaign's config is refused, naming the plugin part.
    let hostile = std::fs::read(plugin_path("hostile")).unwrap();
    let (got, body) = post_replay(&host, &[("events", &recording), ("plugin_name", name), ("plugin", &hostile)]).await;
    assert_eq!((got, body["field"].as_str()), (422, Some("plugin")), "{body}");
    assert!(body["error"].as_str().unwrap().contains("mode"), "the reason reaches the designer: {body}");
    // Another build of the same rule grants the same: beside the live version, nothing gained or lost.
    let rebuilt = another_version("watch-time-tiers", "rebuilt");
    let (got, dry) = post_replay(&host, &[("events", &recording), ("plugin_name", name), ("plugin", &rebuilt)]).await;
    assert_eq!(got, 200, "{dry}");
    assert_eq!(dry["rewards"], json!([{"campaign_id": "camp", "reward_id": "badge", "live": 3, "candidate": 3}]));
    assert_eq!((dry["lost_total"].as_u64(), dry["gained_total"].as_u64()), (Some(0), Some(0)), "{dry}");
    assert_eq!((dry["live_errors"].as_u64(), dry["candidate_errors"].as_u64()), (Some(0), Some(0)), "{dry}");
    assert_eq!(host.grants().await.len(), 3, "a dry run stores nothing");
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap()
}

/// The host's recording once it holds an event (beside its notes of runtime and rules).
async fn wait_for_recording(host: &TestHost) -> Vec<u8> {
    let path = host.dir.path().join("events.jsonl");
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let note = |l: &str| l.starts_with("{\"recorded_under\"") || l.starts_with("{\"rules_in_force\"");
        if text.lines().any(|l| !l.trim().is_empty() && !note(l)) {
            return text.into_bytes();
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no recording at {}", path.display());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The overview's figures, read from each backend: grants per reward in all
/// and over time, the tier funnel, viewers' watch time.
#[tokio::test]
async fn the_overview_counts_grants_and_viewers_on_sqlite_and_postgres() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let campaigns = vec![("camp".to_string(), tiers_campaign("camp", "GameName", LIVE, &[], &[(1, "badge")]))];
        let Some(host) = TestHost::spawn(backend, HostConfig { campaigns, ..Default::default() }).await else {
            continue;
        };
        let (status, _) =
            host.post_vhs(None, &heartbeat("h-1", "b-1", "GameName", &now_rfc3339(), &["v1", "v2"])).await;
        assert_eq!(status, 200);
        assert_eq!(host.wait_for_grants(2).await.len(), 2);
        let started = Instant::now();
        // Watch time is read as of the engine's checkpoint (every second here).
        let campaign = loop {
            let overview = host.admin_get("/overview?bucket_secs=60&buckets=5&viewers=1").await;
            let campaign = overview["campaigns"][0].clone();
            if campaign["viewers"] == 2 {
                break campaign;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "{backend:?}: {overview}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(campaign["status"], "live", "{backend:?}");
        let reward = &campaign["rewards"][0];
        assert_eq!(reward["grants"], 2, "{backend:?}: {campaign}");
        let buckets = reward["over_time"].as_array().unwrap();
        assert_eq!(buckets.len(), 5, "{backend:?}");
        assert_eq!(buckets.iter().map(|b| b[1].as_i64().unwrap()).sum::<i64>(), 2, "{backend:?}: {campaign}");
        assert_eq!(campaign["funnel"], json!([{"minutes": 1, "reward": "badge", "viewers": 2}]), "{backend:?}");
        assert_eq!(campaign["top_viewers"].as_array().unwrap().len(), 1, "{backend:?}");
    }
}

/// Every metric has help text and a name Prometheus's linter accepts.
#[tokio::test]
async fn metrics_pass_promtool() {
    let promtool = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".into());
    if Command::new(&promtool).arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "promtool is required in CI (Debian's prometheus package)");
        eprintln!("SKIPPED: metrics_pass_promtool: no {promtool} (apt-get install prometheus)");
        return;
    }
    let campaigns = vec![("camp".to_string(), tiers_campaign("camp", "GameName", LIVE, &[], &[(1, "badge")]))];
    let Some(host) = TestHost::spawn(Backend::Sqlite, HostConfig { campaigns, ..Default::default() }).await else {
        return;
    };
    let (status, _) = host.post_vhs(None, &heartbeat("h-1", "b-1", "GameName", &now_rfc3339(), &["v1"])).await;
    assert_eq!(status, 200);
    assert_eq!(host.post_vhs_raw(None, b"{".to_vec(), &[]).await.0, 400);
    host.wait_for_grants(1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let text = host.get_text("/metrics").await;
    for wanted in [
        "drops_ingest_ack_seconds_bucket{source=\"vhs\"",
        "drops_engine_lag_events{partition=\"0\"}",
        "drops_engine_lag_seconds{partition=\"0\"}",
        "drops_plugin_fuel_bucket{plugin=\"watch-time-tiers\",version=\"",
        "drops_plugin_eval_seconds_bucket{plugin=\"watch-time-tiers\",version=\"",
        "drops_engine_watch_time_seconds_total 60",
        "# HELP drops_vhs_requests_total",
    ] {
        assert!(text.contains(wanted), "{wanted} missing:\n{text}");
    }
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut check.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let out = check.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics:\n{said}");
}

/// chromedriver driving a headless Chromium, stopped with the test.
struct Browser {
    driver: Child,
    client: Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts one, or None (printed) outside CI when Chromium is not installed.
    async fn start() -> Option<Browser> {
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let chromedriver = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
        if !std::path::Path::new(&chromium).exists() || !std::path::Path::new(&chromedriver).exists() {
            assert!(std::env::var_os("CI").is_none(), "Chromium and chromedriver are required in CI");
            eprintln!(
                "SKIPPED: browser test: no {chromium} or {chromedriver} (apt-get install chromium chromium-driver)"
            );
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let profile = tempfile::tempdir().unwrap();
        let capabilities = json!({
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,800", "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync",
                         format!("--user-data-dir={}", profile.path().display())]
            }
        });
        let capabilities = capabilities.as_object().unwrap().clone();
        let started = Instant::now();
        let client = loop {
            match ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(client) => break client,
                Err(e) if started.elapsed() < Duration::from_secs(30) => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("chromedriver did not start a session: {e}"),
            }
        };
        Some(Browser { driver, client, _profile: profile })
    }

    /// Saves a screenshot of the section `id` under target/console-screenshots/.
    async fn screenshot_of(&self, name: &str, id: &str) -> PathBuf {
        let script = "document.getElementById(arguments[0]).scrollIntoView()";
        self.client.execute(script, vec![json!(id)]).await.unwrap();
        self.screenshot(name).await
    }

    /// Saves a screenshot of the window under target/console-screenshots/.
    async fn screenshot(&self, name: &str) -> PathBuf {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, self.client.screenshot().await.unwrap()).unwrap();
        path
    }

    /// The text of the element `xpath` once `done` holds for it (20 s at most).
    async fn wait_for(&self, what: &str, xpath: &str, done: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            if let Ok(el) = self.client.find(Locator::XPath(xpath)).await {
                if let Ok(text) = el.text().await {
                    if done(&text) {
                        return text;
                    }
                }
            }
            if started.elapsed() > Duration::from_secs(30) {
                let _ = self.screenshot(&format!("timeout-{}", what.replace(' ', "-"))).await;
                let page = self.client.source().await.unwrap_or_default();
                panic!("timed out waiting for {what} ({xpath}); page:\n{page:.4000}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn click(&self, xpath: &str) {
        self.client.find(Locator::XPath(xpath)).await.unwrap_or_else(|e| panic!("{xpath}: {e}")).click().await.unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A campaign article's element, by the campaign's name.
fn in_campaign(name: &str, rest: &str) -> String {
    format!("//article[h3[normalize-space()='{name}']]{rest}")
}

fn number(text: &str) -> u64 {
    text.chars().filter(char::is_ascii_digit).collect::<String>().parse().unwrap_or(0)
}

/// The console in a browser during a campaign: logging in, grants rising
/// while `simulate` runs, a hostile plugin's campaign paused, a plugin rolled
/// back and a failed manifest retried, all through the page.
#[tokio::test]
async fn the_console_follows_a_campaign_and_acts_through_the_admin_api() {
    let Some(browser) = Browser::start().await else { return };
    let fake = FakeTwitch::start().await;
    // The first manifest is refused for good: it fails, and waits for a retry.
    fake.with(|f| f.url_faults = [Fault::BadRequest].into());
    let campaigns = vec![
        ("watch".to_string(), tiers_campaign("watch", "GameName", LIVE, &[], &[(1, "badge"), (3, "cape")])),
        ("evil".to_string(), hostile_campaign("evil")),
    ];
    let config = HostConfig {
        campaigns,
        extra_plugins: vec!["hostile"],
        extra_toml: format!("{}[plugins]\nbreaker_failures = 2\n", fake.config()),
        record_events: true,
        ..Default::default()
    };
    let Some(host) = TestHost::spawn(Backend::Sqlite, config).await else { return };
    // localhost, not 127.0.0.1: browsers keep a Secure cookie from http://localhost only.
    let base = host.base.replace("127.0.0.1", "localhost");
    let client = &browser.client;

    client.goto(&format!("{base}/console")).await.unwrap();
    browser.wait_for("the login form", "//form[@action='/console/login']//button", |_| true).await;
    browser.screenshot("01-login").await;
    client.find(Locator::Id("token")).await.unwrap().send_keys(ADMIN_TOKEN).await.unwrap();
    browser.click("//form[@action='/console/login']//button").await;
    browser
        .wait_for("the live campaign", &in_campaign("watch", "//span[contains(@class,'status')]"), |t| t == "live")
        .await;

    // Grants rise while simulate runs: first the 1-minute badge, then the 3-minute cape.
    let target = host.base.clone();
    let simulate = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_drops-host"))
            .args(["simulate", "--target", &target, "--channels", "2", "--viewers", "4", "--multi-viewers", "0"])
            .args(["--minutes", "6", "--speed", "30", "--verbose", "false"])
            .output()
            .unwrap()
    });
    let badge = in_campaign("watch", "//span[contains(@id,'-grants-badge')]");
    let cape = in_campaign("watch", "//span[contains(@id,'-grants-cape')]");
    let first = number(&browser.wait_for("the first badges", &badge, |t| number(t) > 0).await);
    let capes_then = number(&browser.client.find(Locator::XPath(&cape)).await.unwrap().text().await.unwrap());
    browser.screenshot_of("02-grants-rising", "campaigns").await;
    let out = simulate.await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let last = number(&browser.wait_for("every badge", &badge, |t| number(t) == 8).await);
    browser.wait_for("every cape", &cape, |t| number(t) == 8).await;
    assert!(
        first <= last && capes_then < 8,
        "the page showed grants rising: badges {first} → {last}, capes {capes_then} → 8"
    );
    browser.screenshot_of("03-traffic", "traffic").await;

    // The hostile plugin panics on every call: its breaker pauses its campaign, and the page says why.
    browser
        .wait_for("the paused campaign", &in_campaign("evil", "//span[contains(@class,'status')]"), |t| t == "paused")
        .await;
    browser
        .wait_for("why it paused", &in_campaign("evil", "//p[@class='paused']"), |t| {
            t.contains("panic") || t.contains("trap")
        })
        .await;
    browser.screenshot_of("04-hostile-paused", "campaigns").await;

    // A new version of the tiers plugin, then a rollback to the first from the page.
    let original =
        host.admin_get("/plugins").await.as_array().unwrap().iter().find(|p| p["name"] == "watch-time-tiers").unwrap()
            ["hash"]
            .as_str()
            .unwrap()
            .to_string();
    let (status, installed) = host
        .admin_send(reqwest::Method::PUT, "/plugins/watch-time-tiers", another_version("watch-time-tiers", "v2"))
        .await;
    assert_eq!(status, 200, "{installed}");
    let newer = installed["hash"].as_str().unwrap().to_string();
    let hash_shown = in_campaign("watch", "//code[contains(@id,'-hash')]");
    browser.wait_for("the new version", &hash_shown, |t| t == &newer[..12]).await;
    let rollback = format!("//button[@data-plugin='watch-time-tiers' and @data-hash='{original}']");
    browser.click(&rollback).await;
    client.accept_alert().await.unwrap();
    browser.wait_for("the rolled-back version", &hash_shown, |t| t == &original[..12]).await;
    browser.wait_for("the rollback's note", "//p[@id='action-status']", |t| t.contains(&original[..12])).await;
    browser.screenshot_of("05-rolled-back", "plugins").await;
    let serving = host.admin_get("/plugins/watch-time-tiers/versions").await;
    let serving: Vec<&str> = serving
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["serving"] == true)
        .map(|v| v["hash"].as_str().unwrap())
        .collect();
    assert_eq!(serving, [original.as_str()]);
    // The overview says when each version last went live: the rolled-back one after the newer.
    let started = Instant::now();
    loop {
        let overview = host.admin_get("/overview").await;
        let plugin = overview["plugins"].as_array().unwrap().iter().find(|p| p["name"] == "watch-time-tiers").unwrap();
        let live_at = |hash: &str| {
            let versions = plugin["versions"].as_array().unwrap();
            versions.iter().find(|v| v["hash"] == hash).and_then(|v| v["went_live_at"].as_i64())
        };
        if let (Some(old), Some(new)) = (live_at(&original), live_at(&newer)) {
            if old > new {
                break;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(20), "went_live_at: {plugin}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The refused manifest shows as failed, with a retry button; the retry reaches the fake Twitch.
    browser.wait_for("a failed manifest", "//button[contains(@id,'retry-')]", |_| true).await;
    browser.screenshot_of("06-delivery-failed", "delivery").await;
    let failed_id = client
        .find(Locator::XPath("//button[contains(@id,'retry-')]"))
        .await
        .unwrap()
        .attr("data-id")
        .await
        .unwrap()
        .unwrap();
    browser.click("//button[contains(@id,'retry-')]").await;
    client.accept_alert().await.unwrap();
    browser.wait_for("the retry's note", "//p[@id='action-status']", |t| t.contains("queued")).await;
    let started = Instant::now();
    while !fake.with(|f| f.accepted.contains(&failed_id)) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the retried manifest did not reach Twitch\n{}",
            host.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let uploaded = fake.with(|f| f.accepted.len() as u64);
    browser.wait_for("every manifest uploaded", "//span[@id='manifests-uploaded']", |t| number(t) == uploaded).await;
    assert!(
        client.find(Locator::XPath("//button[contains(@id,'retry-')]")).await.is_err(),
        "no failed manifest is left"
    );
    browser.screenshot_of("07-delivered", "delivery").await;

    // The replay panel: the host's own recording and a rebuilt tiers plugin, beside the live version.
    let candidate = host.dir.path().join("candidate.wasm");
    std::fs::write(&candidate, another_version("watch-time-tiers", "candidate")).unwrap();
    let recording = host.dir.path().join("events.jsonl");
    browser.click("//select[@id='replay-plugin-name']/option[normalize-space()='watch-time-tiers']").await;
    let file_input = |id: &'static str| client.find(Locator::Id(id));
    file_input("replay-events").await.unwrap().send_keys(&recording.display().to_string()).await.unwrap();
    file_input("replay-plugin").await.unwrap().send_keys(&candidate.display().to_string()).await.unwrap();
    browser.click("//form[@id='replay-form']//button").await;
    let live = browser
        .wait_for("the dry run", "//tr[td[normalize-space()='badge']]//span[@class='replay-live']", |_| true)
        .await;
    let with_candidate = browser
        .wait_for(
            "the candidate's grants",
            "//tr[td[normalize-space()='badge']]//span[@class='replay-candidate']",
            |_| true,
        )
        .await;
    assert_eq!((number(&live), number(&with_candidate)), (8, 8), "the same rule, rebuilt, grants the same");
    browser.screenshot_of("08-replay", "replay").await;

    // Keyboard: the skip link is the first stop, and every button is reachable by Tab.
    client.goto(&format!("{base}/console")).await.unwrap();
    browser.wait_for("the page", &in_campaign("watch", "//span[contains(@class,'status')]"), |_| true).await;
    client.active_element().await.unwrap().send_keys("\u{e004}").await.unwrap();
    let focused = client.active_element().await.unwrap().text().await.unwrap();
    assert_eq!(focused, "Skip to content");
    // A phone-sized window: one column, nothing wider than the screen.
    client.set_window_size(390, 844).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let wider = "return [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > window.innerWidth + 1 \
        && !(e.parentElement && e.parentElement.closest('section, article'))).map(e => e.tagName + '#' + e.id + '.' + e.className).slice(0, 10)";
    let wider = client.execute(wider, vec![]).await.unwrap();
    assert_eq!(wider, json!([]), "the page scrolls sideways on a phone: these are wider than the screen");
    browser.screenshot("09-phone").await;
    // Ends the browser itself: killing chromedriver alone would leave Chromium's helpers behind.
    browser.client.clone().close().await.unwrap();
}

/// Sends the head of a request and a little of its body, then nothing;
/// returns the status line the host answers with.
async fn trickle(host: &TestHost, head: String, body_start: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(host.base.trim_start_matches("http://")).await.unwrap();
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(body_start).await.unwrap();
    let mut answer = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(90), socket.read(&mut answer)).await.expect("no answer").unwrap();
    String::from_utf8_lossy(&answer[..n]).lines().next().unwrap_or_default().to_string()
}

/// A client that starts a login or a dry run's upload and stops sending is
/// cut off (408), and the dry-run slot it held serves the next upload.
#[tokio::test]
async fn slow_clients_are_cut_off() {
    let campaigns = vec![("camp".to_string(), tiers_campaign("camp", "GameName", LIVE, &[], &[(1, "badge")]))];
    let Some(host) = TestHost::spawn(Backend::Sqlite, HostConfig { campaigns, ..Default::default() }).await else {
        return;
    };
    let login = "POST /console/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
                 Content-Length: 100\r\n\r\n"
        .to_string();
    let boundary = "slow-boundary";
    let replay = format!(
        "POST /v1/replay HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: 1000000\r\n\r\n"
    );
    let part = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"events\"\r\n\r\n{{\"seq\"");
    let started = Instant::now();
    let (login, replay) = tokio::join!(trickle(&host, login, b"token=e2e"), trickle(&host, replay, part.as_bytes()));
    assert!(login.starts_with("HTTP/1.1 408"), "{login}");
    assert!(replay.starts_with("HTTP/1.1 408"), "{replay}");
    assert!(started.elapsed() < Duration::from_secs(80), "{:?}", started.elapsed());
    // The slot is free again: the next dry run is judged (here, refused for its missing parts).
    let (status, body) = post_replay(&host, &[("plugin_name", b"watch-time-tiers")]).await;
    assert_eq!((status, body["field"].as_str()), (400, Some("events")), "{body}");
}

/// A dry run cut short by kill -9 loses nothing: it stored nothing, and its
/// files are gone once the host is back.
#[tokio::test]
async fn a_dry_run_killed_mid_way_leaves_nothing_behind() {
    let campaigns = vec![("camp".to_string(), tiers_campaign("camp", "GameName", LIVE, &[], &[(1, "badge")]))];
    let config = HostConfig { campaigns, record_events: true, ..Default::default() };
    let Some(mut host) = TestHost::spawn(Backend::Sqlite, config).await else { return };
    let (status, _) = host.post_vhs(None, &heartbeat("h-1", "b-1", "GameName", &now_rfc3339(), &["v1", "v2"])).await;
    assert_eq!(status, 200);
    assert_eq!(host.wait_for_grants(2).await.len(), 2);
    let recording = String::from_utf8(wait_for_recording(&host).await).unwrap();
    // A long recording: the same events again and again (replays count them as duplicates).
    let mut long = String::new();
    while long.len() < 15 << 20 {
        long.push_str(&recording);
    }
    let runs = host.dir.path().join("data/dry-runs");
    let tiers = std::fs::read(plugin_path("watch-time-tiers")).unwrap();
    let (base, client) = (host.base.clone(), host.client.clone());
    let (body, content_type) =
        multipart(&[("events", long.as_bytes()), ("plugin_name", b"watch-time-tiers"), ("plugin", &tiers)]);
    let request = tokio::spawn(async move {
        let url = format!("{base}/v1/replay");
        client.post(url).bearer_auth(ADMIN_TOKEN).header("content-type", content_type).body(body).send().await
    });
    let started = Instant::now();
    while std::fs::read_dir(&runs).map(|d| d.count()).unwrap_or(0) == 0 {
        assert!(started.elapsed() < Duration::from_secs(30), "the dry run never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    host.kill();
    assert!(request.await.unwrap().is_err(), "the answer died with the host");
    assert!(std::fs::read_dir(&runs).unwrap().count() > 0, "the killed run left its folder");
    host.restart();
    assert!(!runs.exists() || std::fs::read_dir(&runs).unwrap().count() == 0, "the restart empties it");
    assert_eq!(host.grants().await.len(), 2, "a dry run stores nothing, before or after a kill");
}
