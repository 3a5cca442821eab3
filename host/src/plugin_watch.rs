//! `drops-host plugin watch`: like `spin watch`, rebuilds a plugin crate when
//! its sources change, checks the new build against every campaign of a
//! rules folder that uses it, and installs it (an atomic rename into the
//! folder a host watches), or uploads it to a running host, which checks it
//! against its own campaigns. Prints what changed.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, SystemTime};

use anyhow::Context;

use crate::plugins::{PluginHash, PluginRuntime};
use crate::rules::LoadedCampaign;

/// How often the sources are looked at.
const POLL: Duration = Duration::from_millis(300);

/// Where a build goes.
pub enum Destination {
    /// A rules folder (`plugins/NAME.wasm`, checked against `campaigns/*.toml`).
    Rules(PathBuf),
    /// A running host's admin API.
    Host { url: String, token: String },
}

/// The crate being watched.
struct Crate {
    dir: PathBuf,
    /// Its package name: the plugin's name.
    name: String,
    /// Where Cargo puts the build.
    artifact: PathBuf,
    profile: &'static str,
}

/// Watches `crate_dir` until interrupted (or once, with `once`).
pub async fn run(crate_dir: &Path, destination: Destination, once: bool) -> anyhow::Result<ExitCode> {
    let krate = describe(crate_dir)?;
    println!("watching {} (plugin `{}`); Ctrl-C to stop", krate.dir.display(), krate.name);
    let mut seen = None;
    let mut installed: Option<PluginHash> = None;
    loop {
        let now = fingerprint(&krate.dir);
        if seen.as_ref() != Some(&now) {
            seen = Some(now);
            let outcome = build_and_install(&krate, &destination, &mut installed).await;
            match &outcome {
                Err(e) => println!("not installed: {e:#}"),
                Ok(message) => println!("{message}"),
            }
            if once {
                return Ok(if outcome.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE });
            }
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

/// The crate's name, its build profile and where its build lands.
fn describe(dir: &Path) -> anyhow::Result<Crate> {
    let dir = std::fs::canonicalize(dir).with_context(|| format!("{}: no such crate folder", dir.display()))?;
    let out = Command::new(cargo())
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(&dir)
        .output()
        .context("running cargo metadata")?;
    anyhow::ensure!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr).trim());
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).context("cargo metadata's answer")?;
    let manifest = dir.join("Cargo.toml");
    let package = meta["packages"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["manifest_path"].as_str().map(Path::new) == Some(manifest.as_path())))
        .with_context(|| format!("{} is not a crate's folder", dir.display()))?;
    let name = package["name"].as_str().unwrap_or_default().to_string();
    let target = PathBuf::from(meta["target_directory"].as_str().unwrap_or("target"));
    let workspace_manifest = meta["workspace_root"].as_str().map(|r| Path::new(r).join("Cargo.toml"));
    let has_plugin_profile = workspace_manifest
        .and_then(|m| std::fs::read_to_string(m).ok())
        .is_some_and(|t| t.lines().any(|l| l.trim() == "[profile.plugin]"));
    let profile = if has_plugin_profile { "plugin" } else { "release" };
    let artifact = target.join("wasm32-unknown-unknown").join(profile).join(format!("{}.wasm", name.replace('-', "_")));
    Ok(Crate { dir, name, artifact, profile })
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// The latest modification time and total size of the crate's sources.
fn fingerprint(dir: &Path) -> (Option<SystemTime>, u64, usize) {
    let mut latest = None;
    let (mut bytes, mut files) = (0u64, 0usize);
    let mut pending = vec![dir.join("src"), dir.join("Cargo.toml")];
    while let Some(path) = pending.pop() {
        let Ok(meta) = std::fs::metadata(&path) else { continue };
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                pending.extend(entries.flatten().map(|e| e.path()));
            }
            continue;
        }
        files += 1;
        bytes += meta.len();
        latest = latest.max(meta.modified().ok());
    }
    (latest, bytes, files)
}

/// Builds, checks and installs; what happened, for the terminal.
async fn build_and_install(
    krate: &Crate,
    destination: &Destination,
    installed: &mut Option<PluginHash>,
) -> anyhow::Result<String> {
    let started = std::time::Instant::now();
    let build = Command::new(cargo())
        .args(["build", "--quiet", "--profile", krate.profile, "--target", "wasm32-unknown-unknown"])
        .current_dir(&krate.dir)
        .output()
        .context("running cargo build")?;
    anyhow::ensure!(build.status.success(), "the build failed:\n{}", String::from_utf8_lossy(&build.stderr).trim_end());
    let bytes = std::fs::read(&krate.artifact).with_context(|| format!("reading {}", krate.artifact.display()))?;
    let hash = PluginHash::of(&bytes);
    if installed.as_ref() == Some(&hash) {
        return Ok(format!(
            "rebuilt `{}`: the same plugin (sha256 {}…), nothing to install",
            krate.name,
            &hash.0[..12]
        ));
    }
    let built = format!(
        "built `{}` in {:.1} s: {} bytes, sha256 {}…",
        krate.name,
        started.elapsed().as_secs_f64(),
        bytes.len(),
        &hash.0[..12]
    );
    let checked = match destination {
        Destination::Rules(rules) => install_into(rules, &krate.name, &bytes)?,
        Destination::Host { url, token } => upload(url, token, &krate.name, bytes).await?,
    };
    let previous = installed.replace(hash).map_or("none".to_string(), |h| format!("{}…", &h.0[..12]));
    Ok(format!("{built}\n{checked} (was {previous})"))
}

/// Checks the build against every campaign in `rules` that uses it, then
/// renames it into `rules/plugins/` (the host's hot reload picks it up).
fn install_into(rules: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<String> {
    let runtime = PluginRuntime::new(Default::default())?;
    let plugin = runtime.load(name, bytes).map_err(|e| anyhow::anyhow!("not loadable: {e}"))?;
    let mut users = Vec::new();
    if let Ok(entries) = std::fs::read_dir(rules.join("campaigns")) {
        for path in entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "toml")) {
            let Ok((def, _)) = LoadedCampaign::parse(&path) else { continue };
            if def.rule.plugin != name {
                continue;
            }
            let campaign = LoadedCampaign::wit_campaign(&def)?;
            runtime
                .validate_config(&plugin, &campaign)
                .map_err(|e| anyhow::anyhow!("{} refuses it: {e}", path.display()))?;
            users.push(def.id);
        }
    }
    let target = rules.join("plugins").join(format!("{name}.wasm"));
    crate::files::write_atomically(&target, bytes).with_context(|| format!("writing {}", target.display()))?;
    Ok(format!("installed as {}; campaigns using it: {}", target.display(), list(&users)))
}

/// Uploads the build to a running host, which checks it against its campaigns.
async fn upload(url: &str, token: &str, name: &str, bytes: Vec<u8>) -> anyhow::Result<String> {
    let target = format!("{}/v1/plugins/{name}", url.trim_end_matches('/'));
    let answer = reqwest::Client::new()
        .put(&target)
        .bearer_auth(token)
        .header("content-type", "application/wasm")
        .body(bytes)
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .with_context(|| format!("PUT {target}"))?;
    let status = answer.status();
    let body = answer.text().await.unwrap_or_default();
    anyhow::ensure!(status.is_success(), "the host refused it ({status}): {body}");
    Ok(format!("installed on {url}: {body}"))
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none yet".to_string()
    } else {
        items.join(", ")
    }
}
