//! Rules: campaign files bound to plugins, loaded from the rules directory.
//!
//! A [`RuleSet`] is immutable; loading builds a new one, and the host swaps it
//! in whole (`arc-swap`), so the engine always sees one consistent set.

mod campaign;
mod error;
pub mod mirror;
pub mod reload;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use campaign::{CampaignFile, LoadedCampaign, RewardDef, RuleDef};
pub use error::RulesError;

use crate::domain::{GameStateEvent, Heartbeat};
use crate::plugins::{Plugin, PluginHash, PluginRuntime};

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
        RuleSet::reload(dir, runtime, &RuleSet::default())
    }

    /// Loads the rules directory again, keeping from `previous` what did not
    /// change (same bytes: not recompiled) and the last good version of any
    /// file that now fails. A new plugin version is taken only if every
    /// campaign that uses it accepts its config under it.
    pub fn reload(dir: &Path, runtime: &PluginRuntime, previous: &RuleSet) -> RuleSet {
        let mut set = RuleSet::default();
        let mut parsed = Vec::new();
        for path in files_with_extension(&dir.join("campaigns"), "toml", &mut set.errors) {
            let result = LoadedCampaign::parse(&path);
            parsed.push((path, result));
        }
        for path in files_with_extension(&dir.join("plugins"), "wasm", &mut set.errors) {
            let name = file_stem(&path);
            let old = previous.plugins.get(&name);
            match load_plugin(&path, &name, runtime, old, &parsed) {
                Ok(plugin) => {
                    set.plugins.insert(name, plugin);
                }
                Err(error) => {
                    set.errors.push(LoadError { file: path, error: error.to_string() });
                    if let Some(old) = old {
                        tracing::warn!(plugin = %name, hash = %old.hash, "keeping the last good version");
                        set.plugins.insert(name, old.clone());
                    }
                }
            }
        }
        for (path, result) in parsed {
            let old = previous.campaigns.iter().find(|c| c.file == path);
            let bound = result.and_then(|(def, revision)| match old {
                // Unchanged file and plugin version: nothing to check again.
                Some(old)
                    if old.revision == revision
                        && set.plugins.get(&def.rule.plugin).is_some_and(|p| Arc::ptr_eq(p, &old.plugin)) =>
                {
                    Ok(old.clone())
                }
                _ => LoadedCampaign::bind(&path, def, revision, &set.plugins, runtime).map(Arc::new),
            });
            match bound {
                Ok(campaign) => {
                    if old.is_none_or(|o| !Arc::ptr_eq(o, &campaign)) {
                        tracing::info!(campaign = %campaign.def.id, name = %campaign.def.name, revision = %&campaign.revision[..12],
                            plugin = %campaign.plugin.name, plugin_hash = %&campaign.plugin.hash.0[..12], file = %path.display(), "campaign loaded");
                    }
                    set.add(campaign);
                }
                Err(error) => {
                    set.errors.push(LoadError { file: path.clone(), error: error.to_string() });
                    if let Some(old) = old {
                        tracing::warn!(campaign = %old.def.id, file = %path.display(), "keeping the last good version");
                        set.add(old.clone());
                    }
                }
            }
        }
        for err in &set.errors {
            tracing::error!(file = %err.file.display(), "rules file not loaded: {}", err.error);
        }
        metrics::gauge!("drops_rules_load_errors").set(set.errors.len() as f64);
        metrics::gauge!("drops_rules_campaigns").set(set.campaigns.len() as f64);
        set
    }

    /// A fingerprint of what is in force: plugin hashes and campaign revisions.
    pub fn fingerprint(&self) -> Vec<String> {
        let mut f: Vec<String> = self.plugins.iter().map(|(n, p)| format!("plugin {n} {}", p.hash)).collect();
        f.extend(self.campaigns.iter().map(|c| format!("campaign {} {}", c.file.display(), c.revision)));
        f.extend(self.errors.iter().map(|e| format!("error {} {}", e.file.display(), e.error)));
        f.sort();
        f
    }

    fn add(&mut self, campaign: Arc<LoadedCampaign>) {
        if let Some(dup) = self.campaigns.iter().find(|c| c.def.id == campaign.def.id) {
            self.errors.push(LoadError {
                file: campaign.file.clone(),
                error: format!("field `id`: `{}` is already used by {}", campaign.def.id, dup.file.display()),
            });
            return;
        }
        self.by_game.entry(campaign.def.game.clone()).or_default().push(self.campaigns.len());
        self.campaigns.push(campaign);
    }

    /// The same set with only the campaigns `keep` selects (an engine
    /// partition's share); plugins and errors are kept whole.
    pub fn only(&self, keep: impl Fn(&str) -> bool) -> RuleSet {
        let mut set = RuleSet { plugins: self.plugins.clone(), errors: self.errors.clone(), ..RuleSet::default() };
        for campaign in self.campaigns.iter().filter(|c| keep(&c.def.id)) {
            set.add(campaign.clone());
        }
        set
    }

    /// The campaigns a heartbeat counts for: same game (exactly), enabled,
    /// inside the window, and the broadcaster allowlisted when a list is set.
    pub fn matching<'a>(&'a self, hb: &'a Heartbeat) -> impl Iterator<Item = &'a Arc<LoadedCampaign>> + 'a {
        self.by_game.get(&hb.game.0).into_iter().flatten().map(|&i| &self.campaigns[i]).filter(move |c| c.matches(hb))
    }

    /// The campaigns a game-state change of `broadcaster` (game account id) concerns.
    pub fn matching_game_state<'a>(
        &'a self,
        event: &'a GameStateEvent,
        broadcaster: &'a str,
    ) -> impl Iterator<Item = &'a Arc<LoadedCampaign>> + 'a {
        self.campaigns.iter().filter(move |c| c.matches_game_state(event, broadcaster))
    }

    /// The campaign with this id.
    pub fn campaign(&self, id: &str) -> Option<&Arc<LoadedCampaign>> {
        self.campaigns.iter().find(|c| c.def.id == id)
    }

    /// Every loaded campaign.
    pub fn campaigns(&self) -> &[Arc<LoadedCampaign>] {
        &self.campaigns
    }

    /// The ids of the enabled campaigns: entitlements left unmatched for one
    /// of them can be decided now.
    pub fn enabled_campaign_ids(&self) -> Vec<String> {
        self.campaigns.iter().filter(|c| c.def.enabled).map(|c| c.def.id.clone()).collect()
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

/// A campaign file and what parsing it gave (definition and revision, or the error).
type ParsedCampaign = (PathBuf, Result<(CampaignFile, String), RulesError>);

/// Loads a plugin file, reusing `old` when the bytes are the same, and
/// validating a new version against every campaign file that names it.
fn load_plugin(
    path: &Path,
    name: &str,
    runtime: &PluginRuntime,
    old: Option<&Arc<Plugin>>,
    campaigns: &[ParsedCampaign],
) -> Result<Arc<Plugin>, RulesError> {
    let bytes = std::fs::read(path).map_err(|e| RulesError::read(path, e))?;
    if let Some(old) = old.filter(|o| o.hash == PluginHash::of(&bytes)) {
        return Ok(old.clone());
    }
    check_plugin(name, &bytes, runtime, campaigns).map(Arc::new)
}

/// Compiles a plugin version and runs its config check for every campaign
/// file that names it; the error says which campaign refused it.
fn check_plugin(
    name: &str,
    bytes: &[u8],
    runtime: &PluginRuntime,
    campaigns: &[ParsedCampaign],
) -> Result<Plugin, RulesError> {
    let plugin = runtime.load(name, bytes)?;
    for (file, parsed) in campaigns {
        let Ok((def, _)) = parsed else { continue };
        if def.rule.plugin != name {
            continue;
        }
        let wit = LoadedCampaign::wit_campaign(def)?;
        runtime.validate_config(&plugin, &wit).map_err(|source| RulesError::VersionRefused {
            hash: plugin.hash.0.clone(),
            campaign: def.id.clone(),
            file: file.display().to_string(),
            source,
        })?;
    }
    tracing::info!(plugin = %name, hash = %plugin.hash, "plugin loaded");
    Ok(plugin)
}

/// Checks a plugin version against the campaign files in `dir` without
/// installing it (the admin API's upload validates before writing the file).
pub fn validate_plugin(dir: &Path, runtime: &PluginRuntime, name: &str, bytes: &[u8]) -> Result<Plugin, RulesError> {
    let mut errors = Vec::new();
    let parsed: Vec<ParsedCampaign> = files_with_extension(&dir.join("campaigns"), "toml", &mut errors)
        .into_iter()
        .map(|path| {
            let result = LoadedCampaign::parse(&path);
            (path, result)
        })
        .collect();
    check_plugin(name, bytes, runtime, &parsed)
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
