//! The watch-time-tiers rule as a studio could ship it without the component
//! model: a core wasm module that takes its whole input as JSON in linear
//! memory and answers JSON, the ABI Extism plugins use. It exists only so
//! that `host/benches/engine.rs` can put a figure beside the WIT plugin's;
//! the host never loads it.
//!
//! ABI: the host calls `alloc(len)`, writes the input there, then calls
//! `on_heartbeat(ptr, len)`, which answers `ptr << 32 | len` of its output
//! (`[[viewer, reward], ...]`), or 0 when the input is not understood.

use serde::Deserialize;

/// What the host sends on every call: the campaign, its config and the viewers.
#[derive(Deserialize)]
pub struct Input {
    pub rewards: Vec<String>,
    pub config: Config,
    pub viewers: Vec<Viewer>,
}

/// The tiers rule's config, as in `plugins/watch-time-tiers`.
#[derive(Deserialize)]
pub struct Config {
    pub tiers: Vec<Tier>,
}

/// Minutes of watch-time and the reward they earn.
#[derive(Deserialize)]
pub struct Tier {
    pub minutes: u32,
    pub reward: String,
}

/// One viewer as the JSON carries it.
#[derive(Deserialize)]
pub struct Viewer {
    pub handle: u32,
    pub minutes: u32,
    pub counted: bool,
}

/// Parses the input, decides as the tiers rule does, and writes the grants as JSON.
pub fn decide(input: &[u8]) -> Result<Vec<u8>, serde_json::Error> {
    let input: Input = serde_json::from_slice(input)?;
    let tiers: Vec<(u32, u32)> = input
        .config
        .tiers
        .iter()
        .filter_map(|t| input.rewards.iter().position(|r| *r == t.reward).map(|i| (t.minutes, i as u32)))
        .collect();
    let mut grants = Vec::new();
    for viewer in input.viewers.iter().filter(|v| v.counted) {
        for &(minutes, reward) in &tiers {
            if viewer.minutes == minutes {
                grants.push((viewer.handle, reward));
            }
        }
    }
    serde_json::to_vec(&grants)
}

#[cfg(target_arch = "wasm32")]
mod abi {
    /// Hands the host `len` bytes to write the input into; `on_heartbeat` takes them back.
    #[no_mangle]
    pub extern "C" fn alloc(len: u32) -> u32 {
        let mut buffer = std::mem::ManuallyDrop::new(Vec::<u8>::with_capacity(len as usize));
        buffer.as_mut_ptr() as u32
    }

    /// Decides on the input at `ptr..ptr + len` (from `alloc`); answers where the output is.
    #[no_mangle]
    pub extern "C" fn on_heartbeat(ptr: u32, len: u32) -> u64 {
        // SAFETY: `ptr` came from `alloc(len)` and the host wrote `len` bytes there.
        let input = unsafe { Vec::from_raw_parts(ptr as *mut u8, len as usize, len as usize) };
        match super::decide(&input) {
            Ok(output) => {
                let output = std::mem::ManuallyDrop::new(output);
                (u64::from(output.as_ptr() as u32) << 32) | output.len() as u64
            }
            Err(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn grants_each_tier_on_its_minute_and_only_counted_minutes() {
        let input = br#"{"rewards":["bronze","silver"],"config":{"tiers":[{"minutes":2,"reward":"bronze"},{"minutes":3,"reward":"silver"}]},
            "viewers":[{"handle":0,"minutes":2,"counted":true},{"handle":1,"minutes":3,"counted":true},{"handle":2,"minutes":3,"counted":false}]}"#;
        assert_eq!(super::decide(input).unwrap(), b"[[0,0],[1,1]]");
    }
}
