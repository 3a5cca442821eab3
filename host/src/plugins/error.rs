//! Why a plugin could not be loaded or a call failed, in the plugin's terms.

use super::wit::{HOST_IMPORT, RULE_EXPORT};

/// A plugin failure: at load time (the file is refused) or in a call (the
/// call fails and the campaign's circuit breaker counts it).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PluginError {
    #[error("not a WebAssembly module or component")]
    NotWasm,
    #[error("could not make a component of the module (was it built with drops-plugin-sdk?): {0}")]
    Componentize(String),
    #[error("imports `{0}`, which the host does not provide (plugins may import only {HOST_IMPORT})")]
    ForbiddenImport(String),
    #[error("built for interface drops:rules@{found}, but this host supports drops:rules@{supported}")]
    WrongVersion { found: String, supported: &'static str },
    #[error("does not export {RULE_EXPORT}")]
    MissingExport,
    #[error("does not compile: {0}")]
    Compile(String),
    #[error("used up its CPU budget of {0} fuel")]
    CpuBudget(u64),
    #[error("ran past its wall-clock deadline of {0} ms")]
    Timeout(u64),
    #[error("sent the host more than its budget of {0} bytes in one call")]
    HostBudget(u64),
    #[error("exceeded its memory limit: {0}")]
    OutOfMemory(String),
    #[error("trapped: {0}")]
    Trap(String),
    #[error("rejected the input: {0}")]
    Rejected(String),
    #[error("returned a bad answer: {0}")]
    BadOutput(String),
}

impl PluginError {
    /// The kind of failure, as metrics and the console count them.
    pub fn kind(&self) -> &'static str {
        match self {
            PluginError::NotWasm => "not_wasm",
            PluginError::Componentize(_) => "componentize",
            PluginError::ForbiddenImport(_) => "forbidden_import",
            PluginError::WrongVersion { .. } => "wrong_version",
            PluginError::MissingExport => "missing_export",
            PluginError::Compile(_) => "compile",
            PluginError::CpuBudget(_) => "cpu_budget",
            PluginError::Timeout(_) => "timeout",
            PluginError::HostBudget(_) => "host_budget",
            PluginError::OutOfMemory(_) => "out_of_memory",
            PluginError::Trap(_) => "trap",
            PluginError::Rejected(_) => "rejected",
            PluginError::BadOutput(_) => "bad_output",
        }
    }
}
