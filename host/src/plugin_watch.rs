//! `drops-host plugin watch`: like `spin watch`, rebuilds a plugin (a Cargo
//! crate or a TypeScript package) when its sources change, checks the new
//! build against every campaign of a rules folder that uses it, and installs
//! it (an atomic rename into the folder a host watches), or uploads it to a
//! running host, which checks it against its own campaigns. Prints what
//! changed, or the compiler's errors.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::plugin_build::PluginPackage;
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

/// Watches `crate_dir` (a Cargo crate or a TypeScript package) until
/// interrupted (or once, with `once`).
pub async fn run(crate_dir: &Path, destination: Destination, once: bool) -> anyhow::Result<ExitCode> {
    let krate = PluginPackage::describe(crate_dir)?;
    println!("watching {} (plugin `{}`); Ctrl-C to stop", krate.dir.display(), krate.name);
    let mut seen = None;
    let mut installed: Option<PluginHash> = None;
    loop {
        let now = krate.fingerprint();
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

/// Builds, checks and installs; what happened, for the terminal.
async fn build_and_install(
    krate: &PluginPackage,
    destination: &Destination,
    installed: &mut Option<PluginHash>,
) -> anyhow::Result<String> {
    let started = std::time::Instant::now();
    let bytes = krate.build()?;
    let hash = PluginHash::of(&bytes);
    // The same build as last time is installed only if the destination no
    // longer serves it (a rollback, an upload from elsewhere, a hand edit):
    // compared with what is served, not with this watch's memory.
    let serving = serving(destination, &krate.name).await;
    if installed.as_ref() == Some(&hash) && serving.as_ref() == Some(&hash) {
        return Ok(format!(
            "rebuilt `{}`: the same plugin (sha256 {}…) is serving, nothing to install",
            krate.name,
            &hash.0[..12]
        ));
    }
    if installed.is_none() {
        *installed = serving;
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

/// The version the destination serves now: the rules folder's file, or the
/// host's serving version (`GET /v1/plugins/NAME/versions`); None when there
/// is none or the host cannot say.
async fn serving(destination: &Destination, name: &str) -> Option<PluginHash> {
    match destination {
        Destination::Rules(rules) => {
            std::fs::read(rules.join("plugins").join(format!("{name}.wasm"))).ok().map(|b| PluginHash::of(&b))
        }
        Destination::Host { url, token } => {
            let target = format!("{}/v1/plugins/{name}/versions", url.trim_end_matches('/'));
            let answer = reqwest::Client::new()
                .get(&target)
                .bearer_auth(token)
                .timeout(Duration::from_secs(30))
                .send()
                .await
                .ok()?;
            let versions: serde_json::Value = answer.error_for_status().ok()?.json().await.ok()?;
            versions
                .as_array()?
                .iter()
                .find(|v| v["serving"] == true)
                .and_then(|v| v["hash"].as_str())
                .map(|h| PluginHash(h.to_string()))
        }
    }
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
