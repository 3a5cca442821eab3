//! Misbehaves as its config asks: `{ "mode": "loop" | "memory" | "recursion" | "flood" | "panic" | "ok" }`.
//! Used by the sandbox tests to show the host survives each attack.

use std::hint::black_box;

use drops_plugin_sdk::{Campaign, Grant, Heartbeat, Rule, Viewer};
use serde::Deserialize;

#[derive(Deserialize)]
pub struct Config {
    pub mode: String,
}

pub struct Hostile;

fn recurse(n: u64) -> u64 {
    if n == 0 {
        0
    } else {
        black_box(recurse(black_box(n - 1))) + 1
    }
}

impl Rule for Hostile {
    type Config = Config;

    fn validate(config: &Config, _: &Campaign) -> Result<(), String> {
        match config.mode.as_str() {
            "loop" | "memory" | "recursion" | "flood" | "panic" | "ok" => Ok(()),
            other => Err(format!("config.mode: unknown mode `{other}`")),
        }
    }

    fn on_heartbeat(config: &Config, _: &Campaign, _: &Heartbeat, viewers: &[Viewer]) -> Vec<Grant> {
        match config.mode.as_str() {
            "loop" => loop {
                black_box(());
            },
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    // Reserve without writing: the cap, not the deadline, must stop this.
                    hoard.push(Vec::with_capacity(1 << 20));
                    black_box(&hoard);
                }
            }
            "recursion" => vec![Grant::once(0, recurse(black_box(u64::MAX)) as u32)],
            "flood" => (0..100_000).map(|_| Grant::once(0, 0)).collect(),
            "panic" => panic!("the rule gave up"),
            _ => viewers.iter().map(|v| Grant::once(v.handle, 0)).collect(),
        }
    }
}

drops_plugin_sdk::export_rule!(Hostile);
