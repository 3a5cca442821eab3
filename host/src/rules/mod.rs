//! Rules: campaign files bound to plugins, loaded from the rules directory.
//!
//! A [`RuleSet`] is immutable; loading builds a new one, and the host swaps it
//! in whole (`arc-swap`), so the engine always sees one consistent set.

mod campaign;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use campaign::{CampaignFile, LoadedCampaign, RewardDef, RuleDef};

use crate::ingest::heartbeat::Heartbeat;
use crate::plugins::{Plugin, PluginRuntime};

/// A file that could not be loaded, and why.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct LoadError {
    pub file: PathBuf,
    pub error: String,
}

/// The campaigns and plugins in force.
#[derive(Debug, Default)]
pub struct RuleSet {
    campaigns: Vec<Arc<LoadedCampaign>>,
    by_game: HashMap<String, Vec<usize>>,
    plugins: HashMap<String, Arc<Plugin>>,
    errors: Vec<LoadError>,
}

impl RuleSet {
    /// Loads `plugins/*.wasm` then `campaigns/*.toml` from a rules directory.
    /// A bad file is reported in [`RuleSet::errors`] and left out; the rest load.
    pub fn load(dir: &Path, runtime: &PluginRuntime) -> RuleSet {
        let mut set = RuleSet::default();
        for path in files_with_extension(&dir.join("plugins"), "wasm", &mut set.errors) {
            let name = file_stem(&path);
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| runtime.load(&name, &b).map_err(|e| e.to_string()))
            {
                Ok(plugin) => {
                    tracing::info!(plugin = %name, hash = %plugin.hash, "plugin loaded");
                    set.plugins.insert(name, Arc::new(plugin));
                }
                Err(error) => set.errors.push(LoadError { file: path, error }),
            }
        }
        for path in files_with_extension(&dir.join("campaigns"), "toml", &mut set.errors) {
            match LoadedCampaign::load(&path, &set.plugins, runtime) {
                Ok(campaign) => {
                    tracing::info!(campaign = %campaign.def.id, name = %campaign.def.name, file = %path.display(), "campaign loaded");
                    set.add(campaign);
                }
                Err(error) => set.errors.push(LoadError { file: path, error }),
            }
        }
        for err in &set.errors {
            tracing::error!(file = %err.file.display(), "rules file not loaded: {}", err.error);
        }
        metrics::gauge!("drops_rules_load_errors").set(set.errors.len() as f64);
        metrics::gauge!("drops_rules_campaigns").set(set.campaigns.len() as f64);
        set
    }

    fn add(&mut self, campaign: LoadedCampaign) {
        if let Some(dup) = self.campaigns.iter().find(|c| c.def.id == campaign.def.id) {
            self.errors.push(LoadError {
                file: campaign.file.clone(),
                error: format!("field `id`: `{}` is already used by {}", campaign.def.id, dup.file.display()),
            });
            return;
        }
        self.by_game.entry(campaign.def.game.clone()).or_default().push(self.campaigns.len());
        self.campaigns.push(Arc::new(campaign));
    }

    /// The campaigns a heartbeat counts for: same game (exactly), enabled,
    /// inside the window, and the broadcaster allowlisted when a list is set.
    pub fn matching<'a>(&'a self, hb: &'a Heartbeat) -> impl Iterator<Item = &'a Arc<LoadedCampaign>> + 'a {
        self.by_game.get(&hb.game.0).into_iter().flatten().map(|&i| &self.campaigns[i]).filter(move |c| c.matches(hb))
    }

    /// Every loaded campaign.
    pub fn campaigns(&self) -> &[Arc<LoadedCampaign>] {
        &self.campaigns
    }

    /// Every loaded plugin by name.
    pub fn plugins(&self) -> &HashMap<String, Arc<Plugin>> {
        &self.plugins
    }

    /// Files that failed to load.
    pub fn errors(&self) -> &[LoadError] {
        &self.errors
    }
}

fn file_stem(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Files in `dir` ending in `.ext`, sorted so loading order is stable.
fn files_with_extension(dir: &Path, ext: &str, errors: &mut Vec<LoadError>) -> Vec<PathBuf> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            errors.push(LoadError { file: dir.to_path_buf(), error: e.to_string() });
            return Vec::new();
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort();
    files
}
