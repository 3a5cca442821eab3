//! A plugin's source folder, in either language, and its build: a Cargo crate
//! (`cargo build --target wasm32-unknown-unknown`) or a TypeScript package
//! (`npm run build`, AssemblyScript). `plugin watch` and `plugin test` build
//! through this, so both languages behave the same.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use anyhow::Context;

/// What a plugin folder is written in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Language {
    /// A Cargo crate built with this cargo profile.
    Rust { profile: &'static str },
    /// An npm package whose `build` script runs the AssemblyScript compiler.
    TypeScript,
}

/// A plugin's source folder.
#[derive(Debug, Clone)]
pub struct PluginPackage {
    /// The folder, canonical.
    pub dir: PathBuf,
    /// The plugin's name (the crate's or the npm package's).
    pub name: String,
    /// Where the build lands.
    pub artifact: PathBuf,
    pub language: Language,
}

impl PluginPackage {
    /// Describes the plugin in `dir`: a TypeScript package when it has a
    /// `package.json`, else a Cargo crate.
    pub fn describe(dir: &Path) -> anyhow::Result<PluginPackage> {
        let dir = std::fs::canonicalize(dir).with_context(|| format!("{}: no such plugin folder", dir.display()))?;
        if dir.join("package.json").exists() {
            describe_typescript(dir)
        } else if dir.join("Cargo.toml").exists() {
            describe_rust(dir)
        } else {
            anyhow::bail!(
                "{}: neither a Cargo crate (Cargo.toml) nor a TypeScript package (package.json)",
                dir.display()
            )
        }
    }

    /// The latest modification time and total size of the sources: a change
    /// to any of them means a new build.
    pub fn fingerprint(&self) -> (Option<SystemTime>, u64, usize) {
        let roots: Vec<PathBuf> = match self.language {
            Language::Rust { .. } => vec![self.dir.join("src"), self.dir.join("Cargo.toml")],
            Language::TypeScript => {
                vec![self.dir.join("assembly"), self.dir.join("package.json"), self.dir.join("asconfig.json")]
            }
        };
        let mut latest = None;
        let (mut bytes, mut files) = (0u64, 0usize);
        let mut pending = roots;
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

    /// Builds the plugin and returns its bytes; a failed build's error holds the compiler's messages.
    pub fn build(&self) -> anyhow::Result<Vec<u8>> {
        let output = match &self.language {
            Language::Rust { profile } => Command::new(cargo())
                .args(["build", "--quiet", "--profile", profile, "--target", "wasm32-unknown-unknown"])
                .current_dir(&self.dir)
                .output()
                .context("running cargo build")?,
            Language::TypeScript => {
                anyhow::ensure!(
                    self.dir.join("node_modules").exists() || in_npm_workspace(&self.dir),
                    "{}: run `npm install` there first (it installs the AssemblyScript compiler)",
                    self.dir.display()
                );
                Command::new("npm")
                    .args(["run", "--silent", "build"])
                    .current_dir(&self.dir)
                    .output()
                    .context("running npm run build (is Node.js installed?)")?
            }
        };
        if !output.status.success() {
            let mut messages = String::from_utf8_lossy(&output.stderr).trim_end().to_string();
            let stdout = String::from_utf8_lossy(&output.stdout);
            if !stdout.trim().is_empty() {
                messages = format!("{}\n{messages}", stdout.trim_end());
            }
            anyhow::bail!("the build failed:\n{messages}");
        }
        std::fs::read(&self.artifact).with_context(|| format!("reading {}", self.artifact.display()))
    }
}

/// Whether an enclosing folder's `node_modules` serves `dir` (an npm workspace member).
fn in_npm_workspace(dir: &Path) -> bool {
    dir.ancestors().skip(1).any(|d| d.join("node_modules/assemblyscript").exists())
}

fn describe_typescript(dir: PathBuf) -> anyhow::Result<PluginPackage> {
    let manifest = dir.join("package.json");
    let text = std::fs::read_to_string(&manifest).with_context(|| format!("reading {}", manifest.display()))?;
    let package: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", manifest.display()))?;
    let name = package["name"].as_str().with_context(|| format!("{}: no `name`", manifest.display()))?;
    anyhow::ensure!(
        package["scripts"]["build"].is_string(),
        "{}: no `build` script (the template's is `asc assembly/rule.ts --config asconfig.json`)",
        manifest.display()
    );
    // The compiler writes where asconfig.json's `outFile` says.
    let config = dir.join("asconfig.json");
    let out_file = std::fs::read_to_string(&config)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|c| c["options"]["outFile"].as_str().map(str::to_string))
        .unwrap_or_else(|| format!("build/{name}.wasm"));
    Ok(PluginPackage { artifact: dir.join(out_file), dir, name: name.to_string(), language: Language::TypeScript })
}

fn describe_rust(dir: PathBuf) -> anyhow::Result<PluginPackage> {
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
    Ok(PluginPackage { dir, name, artifact, language: Language::Rust { profile } })
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}
