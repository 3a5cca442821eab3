//! Why a rules file was not loaded, or a plugin version not installed.

use std::path::PathBuf;

use crate::plugins::PluginError;

/// A rules failure. Most are refusals of what a designer wrote (the admin
/// API answers 422); [`RulesError::Io`] and [`RulesError::Task`] are the
/// host's own trouble (500 and 503).
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// A campaign file that does not parse or validate; the message names the field.
    #[error("{0}")]
    Campaign(String),
    /// The plugin does not load: not wasm, wrong interface, forbidden import.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// The plugin's config check refused a campaign's config.
    #[error("field `rule.config`: plugin `{plugin}` {source}")]
    ConfigRefused { plugin: String, source: PluginError },
    /// A new plugin version refused the config of a campaign that uses it.
    #[error("version {hash} refused: campaign {campaign} ({file}): {source}")]
    VersionRefused { hash: String, campaign: String, file: String, source: PluginError },
    /// The new version was written but another file's error kept it from serving.
    #[error("{0}")]
    NotServing(String),
    /// Reading or writing a rules file failed.
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    /// The blocking task that compiles rules failed.
    #[error("rules task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// Serving here, but not stored for the other hosts (the database is away).
    #[error("installed on this host but not published to the others: {0}")]
    Unpublished(String),
}

impl RulesError {
    /// Whether the error is a refusal of the input (rather than the host failing).
    pub fn is_refusal(&self) -> bool {
        !matches!(self, RulesError::Io { .. } | RulesError::Task(_) | RulesError::Unpublished(_))
    }

    pub(super) fn read(path: &std::path::Path, source: std::io::Error) -> RulesError {
        RulesError::Io { what: "cannot read", path: path.to_path_buf(), source }
    }
}
