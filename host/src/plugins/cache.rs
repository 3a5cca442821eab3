//! Compiled plugins kept on disk, so a plugin is compiled once per (plugin
//! bytes, wasmtime version and engine settings): a restart, a reload that
//! brings an old version back, or a second host on the same folder loads
//! the machine code instead of compiling it again.
//!
//! Loading compiled code runs it without verification, so the cache folder
//! is as trusted as the binary: it lives in the host's `data_dir` beside the
//! database, and only this module writes it (see docs/security.md).

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::component::Component;
use wasmtime::Engine;

use super::load::PluginHash;
use crate::files::write_atomically;

/// Compiled plugins kept at most; the oldest go first.
const MAX_ENTRIES: usize = 64;

/// The folder of compiled plugins for one engine configuration.
#[derive(Debug, Clone)]
pub struct ArtifactCache {
    dir: PathBuf,
    /// Names the engine's configuration and wasmtime version in each file name.
    engine_key: String,
}

impl ArtifactCache {
    /// A cache in `dir` for code compiled by `engine`.
    pub fn new(dir: &Path, engine: &Engine) -> ArtifactCache {
        // FNV-1a: stable across builds, unlike std's hasher, so a restart of the same binary hits.
        let mut hasher = Fnv1a::default();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        ArtifactCache { dir: dir.to_path_buf(), engine_key: format!("{:016x}", hasher.finish()) }
    }

    fn path(&self, plugin: &PluginHash) -> PathBuf {
        self.dir.join(format!("{}-{}.cwasm", plugin.0, self.engine_key))
    }

    /// The compiled plugin, if this cache holds it.
    pub fn get(&self, engine: &Engine, plugin: &PluginHash) -> Option<Component> {
        let path = self.path(plugin);
        if !path.is_file() {
            return None;
        }
        // SAFETY: only `put` writes this folder, with what `Component::serialize`
        // made for an engine with the same compatibility hash (in the name);
        // the folder is as trusted as the binary (module docs).
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), "compiled plugin unusable, compiling again: {e:#}");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Keeps a compiled plugin; failures only cost a compile next time.
    pub fn put(&self, plugin: &PluginHash, component: &Component) {
        let written = component
            .serialize()
            .map_err(|e| format!("{e:#}"))
            .and_then(|bytes| write_atomically(&self.path(plugin), &bytes).map_err(|e| e.to_string()));
        match written {
            Ok(()) => self.evict(),
            Err(e) => tracing::warn!(dir = %self.dir.display(), "could not keep the compiled plugin: {e}"),
        }
    }

    /// Removes the least recently written entries past [`MAX_ENTRIES`].
    fn evict(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        if files.len() > MAX_ENTRIES {
            files.sort();
            for (_, path) in &files[..files.len() - MAX_ENTRIES] {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// 64-bit FNV-1a.
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::PluginRuntime;

    fn tiers_wasm() -> Vec<u8> {
        crate::test_values::example_plugin("watch_time_tiers.wasm")
    }

    #[test]
    fn a_plugin_is_compiled_once_and_a_damaged_entry_is_compiled_again() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = tiers_wasm();
        let hash = PluginHash::of(&bytes);
        let first = PluginRuntime::new(Default::default()).unwrap().with_cache(dir.path());
        first.load("tiers", &bytes).unwrap();
        let cache = first.cache.clone().unwrap();
        let entry = cache.path(&hash);
        assert!(entry.is_file(), "{} was not written", entry.display());

        // Another runtime with the same settings takes the compiled code.
        let second = PluginRuntime::new(Default::default()).unwrap().with_cache(dir.path());
        assert!(second.cache.as_ref().unwrap().get(&second.engine, &hash).is_some());
        second.load("tiers", &bytes).unwrap();

        // A damaged entry is dropped and the plugin compiled again.
        std::fs::write(&entry, b"not machine code").unwrap();
        let third = PluginRuntime::new(Default::default()).unwrap().with_cache(dir.path());
        assert!(third.cache.as_ref().unwrap().get(&third.engine, &hash).is_none());
        third.load("tiers", &bytes).unwrap();
        assert!(third.cache.as_ref().unwrap().get(&third.engine, &hash).is_some(), "rewritten after the compile");
    }
}
