//! Turning a `.wasm` into a checked, compiled, pre-instantiated plugin.
//!
//! Plugins are built for `wasm32-unknown-unknown` and componentized here
//! (`wit-component`), so they import nothing but the rules world: no WASI, so
//! no files, network, environment or clock by construction.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

use super::error::PluginError;
use super::host::CallState;
use super::runtime::PluginRuntime;
use super::wit::{RulesPre, HOST_IMPORT, RULES_WIT, RULE_EXPORT, VERSION};
use crate::telemetry::latency::{Latency, LatencyView};

/// SHA-256 of a plugin's bytes, in hex: the identity of a plugin version.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PluginHash(pub String);

impl PluginHash {
    /// Hashes plugin bytes.
    pub fn of(bytes: &[u8]) -> PluginHash {
        PluginHash(hex::encode(Sha256::digest(bytes)))
    }
}

impl fmt::Display for PluginHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A loaded, validated plugin version.
pub struct Plugin {
    /// File stem (`watch-time-tiers`).
    pub name: String,
    /// SHA-256 of the bytes it was loaded from.
    pub hash: PluginHash,
    /// The bytes, kept for the version history (plugins are tens of KB).
    pub bytes: Arc<[u8]>,
    pub(super) pre: RulesPre<CallState>,
    /// Its metric handles, registered once rather than looked up per call.
    pub(super) metrics: CallMetrics,
}

/// A plugin version's per-call metrics, and the same figures for the console.
pub(super) struct CallMetrics {
    plugin: String,
    /// The hash's first 12 hex digits: enough to tell versions apart on a dashboard.
    version: String,
    ok: metrics::Counter,
    seconds: metrics::Histogram,
    fuel: metrics::Histogram,
    stats: CallStats,
}

/// What a plugin version's calls did since it was loaded.
#[derive(Default)]
struct CallStats {
    ok: AtomicU64,
    failed: Mutex<BTreeMap<&'static str, u64>>,
    latency: Latency,
    fuel: AtomicU64,
}

/// A plugin version's calls since it was loaded (in this process).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CallsView {
    pub ok: u64,
    /// Failed calls by kind: `cpu_budget`, `timeout`, `out_of_memory`, `trap`, ...
    pub failed: BTreeMap<&'static str, u64>,
    pub latency: LatencyView,
    /// Fuel burnt over all calls.
    pub fuel: u64,
}

impl CallMetrics {
    fn of(plugin: &str, hash: &PluginHash) -> CallMetrics {
        let (name, version) = (plugin.to_string(), hash.0.chars().take(12).collect::<String>());
        let (n, v) = (name.clone(), version.clone());
        CallMetrics {
            ok: metrics::counter!("drops_plugin_calls_total", "plugin" => n.clone(), "version" => v.clone(), "outcome" => "ok"),
            seconds: metrics::histogram!("drops_plugin_eval_seconds", "plugin" => n.clone(), "version" => v.clone()),
            fuel: metrics::histogram!("drops_plugin_fuel", "plugin" => n, "version" => v),
            plugin: name,
            version,
            stats: CallStats::default(),
        }
    }

    /// Counts one call.
    pub(super) fn record(&self, outcome: Result<(), &PluginError>, took: Duration, fuel: u64) {
        match outcome {
            Ok(()) => {
                self.ok.increment(1);
                self.stats.ok.fetch_add(1, Relaxed);
            }
            Err(e) => {
                let (plugin, version) = (self.plugin.clone(), self.version.clone());
                metrics::counter!("drops_plugin_calls_total", "plugin" => plugin, "version" => version, "outcome" => e.kind())
                    .increment(1);
                *self.stats.failed.lock().unwrap_or_else(|e| e.into_inner()).entry(e.kind()).or_default() += 1;
            }
        }
        self.seconds.record(took.as_secs_f64());
        self.fuel.record(fuel as f64);
        self.stats.latency.record(took);
        self.stats.fuel.fetch_add(fuel, Relaxed);
    }
}

impl Plugin {
    /// What this version's calls did since it was loaded.
    pub fn calls(&self) -> CallsView {
        let stats = &self.metrics.stats;
        CallsView {
            ok: stats.ok.load(Relaxed),
            failed: stats.failed.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            latency: stats.latency.view(),
            fuel: stats.fuel.load(Relaxed),
        }
    }
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin").field("name", &self.name).field("hash", &self.hash).finish()
    }
}

impl PluginRuntime {
    /// Loads plugin bytes (a core module built with the SDK, or a component),
    /// checks its imports and exports, compiles and pre-instantiates it.
    pub fn load(&self, name: &str, bytes: &[u8]) -> Result<Plugin, PluginError> {
        let hash = PluginHash::of(bytes);
        let core = wasmparser::Parser::is_core_wasm(bytes);
        if core {
            check_core_imports(bytes)?;
        } else if !wasmparser::Parser::is_component(bytes) {
            return Err(PluginError::NotWasm);
        }
        let component = match self.cache.as_ref().and_then(|cache| cache.get(&self.engine, &hash)) {
            Some(compiled) => compiled,
            None => {
                let component = self.compile(bytes, core)?;
                if let Some(cache) = &self.cache {
                    cache.put(&hash, &component);
                }
                component
            }
        };
        check_component_interface(&self.engine, &component)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .and_then(RulesPre::new)
            .map_err(|e| PluginError::Compile(format!("{e:#}")))?;
        let metrics = CallMetrics::of(name, &hash);
        Ok(Plugin { name: name.to_string(), hash, bytes: Arc::from(bytes), pre, metrics })
    }
}

impl PluginRuntime {
    /// Componentizes a core module and compiles the component.
    fn compile(&self, bytes: &[u8], core: bool) -> Result<Component, PluginError> {
        let started = std::time::Instant::now();
        let component = if core {
            let module = with_world_metadata(bytes)?;
            let component_bytes = wit_component::ComponentEncoder::default()
                .module(&module)
                .and_then(|e| e.validate(true).encode())
                .map_err(|e| PluginError::Componentize(format!("{e:#}")))?;
            Component::new(&self.engine, &component_bytes)
        } else {
            Component::new(&self.engine, bytes)
        };
        let component = component.map_err(|e| PluginError::Compile(format!("{e:#}")))?;
        metrics::histogram!("drops_plugin_compile_seconds").record(started.elapsed().as_secs_f64());
        Ok(component)
    }
}

/// The rules world, parsed once: what a core module without type information
/// (a TypeScript rule from AssemblyScript) is componentized against.
fn rules_world() -> Result<&'static (wit_parser::Resolve, wit_parser::WorldId), PluginError> {
    static WORLD: OnceLock<Result<(wit_parser::Resolve, wit_parser::WorldId), String>> = OnceLock::new();
    WORLD
        .get_or_init(|| {
            let mut resolve = wit_parser::Resolve::default();
            let package = resolve.push_str("rules.wit", RULES_WIT).map_err(|e| format!("{e:#}"))?;
            let world = resolve.select_world(&[package], Some("rules")).map_err(|e| format!("{e:#}"))?;
            Ok((resolve, world))
        })
        .as_ref()
        .map_err(|e| PluginError::Componentize(format!("the host's rules.wit: {e}")))
}

/// A core module with the rules world's type information: as it is when it
/// carries its own (the Rust SDK embeds it), else with the host's embedded,
/// so that a designer's toolchain needs neither `wit-component` nor `jco`.
fn with_world_metadata(bytes: &[u8]) -> Result<Cow<'_, [u8]>, PluginError> {
    let mut exports_rule = false;
    let mut other_version = None;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| PluginError::Compile(e.to_string()))?;
        match payload {
            wasmparser::Payload::CustomSection(section) if section.name().starts_with("component-type") => {
                return Ok(Cow::Borrowed(bytes));
            }
            wasmparser::Payload::ExportSection(reader) => {
                for export in reader {
                    let name = export.map_err(|e| PluginError::Compile(e.to_string()))?.name;
                    let interface = name.split('#').next().unwrap_or_default();
                    exports_rule |= interface == RULE_EXPORT;
                    other_version = other_version.or_else(|| check_version(interface));
                }
            }
            _ => {}
        }
    }
    // Without the world's metadata, the exports say what the module is: none
    // of the rule interface is the typed error a component without it gets.
    if !exports_rule {
        return Err(other_version.unwrap_or(PluginError::MissingExport));
    }
    let (resolve, world) = rules_world()?;
    let mut module = bytes.to_vec();
    wit_component::embed_component_metadata(&mut module, resolve, *world, wit_component::StringEncoding::UTF8, false)
        .map_err(|e| PluginError::Componentize(format!("{e:#}")))?;
    Ok(Cow::Owned(module))
}

/// Refuses a core module that imports anything outside the rules world (WASI
/// included), naming the import, before wit-component gives a vaguer error.
fn check_core_imports(bytes: &[u8]) -> Result<(), PluginError> {
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| PluginError::Compile(e.to_string()))?;
        if let wasmparser::Payload::ImportSection(reader) = payload {
            for import in reader.into_imports() {
                let import = import.map_err(|e| PluginError::Compile(e.to_string()))?;
                let module = import.module;
                if module != HOST_IMPORT && !module.starts_with("[export]") && module != "$root" {
                    return Err(check_version(module)
                        .unwrap_or_else(|| PluginError::ForbiddenImport(format!("{module}#{}", import.name))));
                }
            }
        }
    }
    Ok(())
}

/// A `drops:rules/...@X` name with another version X.
fn check_version(name: &str) -> Option<PluginError> {
    let rest = name.strip_prefix("drops:rules/")?;
    let (_, version) = rest.split_once('@')?;
    (version != VERSION).then(|| PluginError::WrongVersion { found: version.to_string(), supported: VERSION })
}

fn check_component_interface(engine: &Engine, component: &Component) -> Result<(), PluginError> {
    let ty = component.component_type();
    for (name, _) in ty.imports(engine) {
        if name != HOST_IMPORT {
            return Err(check_version(name).unwrap_or_else(|| PluginError::ForbiddenImport(name.to_string())));
        }
    }
    let mut found = None;
    for (name, _) in ty.exports(engine) {
        if name == RULE_EXPORT {
            return Ok(());
        }
        if let Some(err) = check_version(name) {
            found = Some(err);
        }
    }
    Err(found.unwrap_or(PluginError::MissingExport))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_interface_versions_are_named() {
        assert_eq!(
            check_version("drops:rules/rule@0.1.0"),
            Some(PluginError::WrongVersion { found: "0.1.0".into(), supported: VERSION })
        );
        assert_eq!(check_version(RULE_EXPORT), None);
        assert_eq!(check_version("wasi:io/streams@0.2.0"), None);
    }

    #[test]
    fn a_plugin_built_for_the_previous_interface_is_refused_naming_both_versions() {
        let runtime = PluginRuntime::new(Default::default()).unwrap();
        let older: [(&str, &[u8]); 2] = [
            ("0.2.0", include_bytes!("../../../tests/fixtures/watch-time-tiers-interface-0.2.0.wasm")),
            ("0.3.0", include_bytes!("../../../tests/fixtures/watch-time-tiers-interface-0.3.0.wasm")),
        ];
        for (version, bytes) in older {
            let err = runtime.load("old", bytes).unwrap_err();
            assert_eq!(err, PluginError::WrongVersion { found: version.into(), supported: VERSION });
            let message = err.to_string();
            assert!(message.contains(version) && message.contains(VERSION), "{message}");
        }
    }
}
