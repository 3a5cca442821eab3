//! The one place the SDK tells wasm from native: on wasm the host's imports,
//! natively the per-thread doubles of [`crate::testing`], so rules test with
//! plain `cargo test`.

#[cfg(target_arch = "wasm32")]
pub(crate) use wasm::*;

#[cfg(not(target_arch = "wasm32"))]
pub(crate) use native::*;

#[cfg(target_arch = "wasm32")]
mod wasm {
    use crate::bindings::drops::rules::host;
    use crate::Level;

    pub(crate) fn log(level: Level, message: &str) {
        host::log(level, message)
    }

    pub(crate) fn viewer_id(handle: u32) -> Option<String> {
        host::viewer_id(handle)
    }

    pub(crate) fn state_get(key: &str) -> Option<Vec<u8>> {
        host::state_get(key)
    }

    pub(crate) fn state_set(key: &str, value: &[u8]) -> Result<(), String> {
        host::state_set(key, value)
    }

    pub(crate) fn state_delete(key: &str) {
        host::state_delete(key)
    }

    /// Panics abort a wasm32-unknown-unknown module with the message lost,
    /// so the hook sends it to the host's log first.
    pub(crate) fn install_panic_hook() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            std::panic::set_hook(Box::new(|info| log(Level::Error, &format!("panic: {info}"))));
        });
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use crate::testing::{STATE, VIEWER_IDS};
    use crate::Level;

    pub(crate) fn log(_level: Level, _message: &str) {}

    pub(crate) fn viewer_id(handle: u32) -> Option<String> {
        VIEWER_IDS.with(|ids| ids.borrow().get(handle as usize).cloned())
    }

    pub(crate) fn state_get(key: &str) -> Option<Vec<u8>> {
        STATE.with(|s| s.borrow().get(key).cloned())
    }

    pub(crate) fn state_set(key: &str, value: &[u8]) -> Result<(), String> {
        STATE.with(|s| s.borrow_mut().insert(key.to_string(), value.to_vec()));
        Ok(())
    }

    pub(crate) fn state_delete(key: &str) {
        STATE.with(|s| s.borrow_mut().remove(key));
    }

    /// Natively a panic fails the test with its message already.
    pub(crate) fn install_panic_hook() {}
}
