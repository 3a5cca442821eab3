//! Misbehaves as its config asks: `{ "mode": "loop" | "memory" | "recursion" | "flood" | "panic" |
//! "state-flood" | "state-hoard" | "log-flood" | "big-keys" | "aliased-keys" | "huge-error" | "ok" |
//! "many-items" | "bad-items" }`; `on-entitlement` misbehaves in the heartbeat modes that apply to it
//! (`loop`, `memory`, `panic`) and in its own: more than 100 items, an item id with
//! a control character and quantity 0; `ok` delivers one `ok-item` and refuses
//! with a 1 MiB non-ASCII reason for benefit `refuse`.
//! Used by the sandbox tests to show the host survives each attack.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};

use drops_plugin_sdk::{
    log, state, Campaign, Entitlement, EntitlementVerdict, Grant, Heartbeat, Item, Level, Rule, Viewer,
};
use serde::Deserialize;

#[derive(Deserialize)]
pub struct Config {
    pub mode: String,
}

pub struct Hostile;

/// Frees nothing once `aliased-keys` has built its grants: their keys share
/// one buffer, which the bindings would otherwise free once per grant.
struct LeakOnDemand;

static LEAK: AtomicBool = AtomicBool::new(false);

unsafe impl GlobalAlloc for LeakOnDemand {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !LEAK.load(Ordering::Relaxed) {
            unsafe { System.dealloc(ptr, layout) }
        }
    }
}

#[global_allocator]
static ALLOCATOR: LeakOnDemand = LeakOnDemand;

/// `n` grant keys that all point at one `len`-byte buffer in the guest's memory.
fn aliased_grants(n: u32, len: usize) -> Vec<Grant> {
    let mut shared = std::mem::ManuallyDrop::new("k".repeat(len));
    let (ptr, cap) = (shared.as_mut_ptr(), shared.capacity());
    LEAK.store(true, Ordering::Relaxed);
    (0..n)
        .map(|_| {
            // SAFETY: the buffer is never freed (LEAK), and nothing writes to it.
            let key = unsafe { String::from_raw_parts(ptr, len, cap) };
            Grant::repeatable(0, 0, key)
        })
        .collect()
}

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
            "loop" | "memory" | "recursion" | "flood" | "panic" | "ok" | "state-flood" | "state-hoard"
            | "log-flood" | "big-keys" | "aliased-keys" | "many-items" | "bad-items" => Ok(()),
            // Ten MiB of error: the host must cut it before it reaches a log or an answer.
            "huge-error" => Err(format!("config.mode: {}", "x".repeat(10 << 20))),
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
            "state-flood" => {
                // One 1 MiB key, sent to the host again and again.
                let key = "k".repeat(1 << 20);
                for _ in 0..2_000 {
                    state::delete(black_box(&key));
                }
                Vec::new()
            }
            "state-hoard" => {
                // 600 KB of new state per call, for as long as the host takes it.
                let minute = black_box(viewers.len());
                for i in 0..10 {
                    let _ =
                        state::set(&format!("{}-{minute}-{i}", state::get("n").map_or(0, |v| v.len())), &[7; 60_000]);
                }
                let n = state::get("n").unwrap_or_default();
                let _ = state::set("n", &[n, vec![0]].concat());
                viewers.iter().map(|v| Grant::once(v.handle, 0)).collect()
            }
            "log-flood" => {
                let line = "l".repeat(100_000);
                for _ in 0..10_000 {
                    log(Level::Info, black_box(&line));
                }
                Vec::new()
            }
            "aliased-keys" => aliased_grants(100, 8 << 20),
            "big-keys" => (0..6).map(|i| Grant::repeatable(0, 0, format!("{i}{}", "k".repeat(8 << 20)))).collect(),
            _ => viewers.iter().map(|v| Grant::once(v.handle, 0)).collect(),
        }
    }

    fn on_entitlement(config: &Config, _: &Campaign, entitlement: &Entitlement) -> Result<EntitlementVerdict, String> {
        Ok(match config.mode.as_str() {
            "loop" => loop {
                black_box(0);
            },
            "memory" => EntitlementVerdict::Refuse("m".repeat(black_box(1 << 30))),
            "panic" => panic!("the rule gave up"),
            "many-items" => EntitlementVerdict::Deliver((0..101).map(|i| Item::new(format!("item-{i}"), 1)).collect()),
            "bad-items" => {
                EntitlementVerdict::Deliver(vec![Item::new("ok", 1), Item::new("bad\nitem", 1), Item::new("zero", 0)])
            }
            _ if entitlement.benefit_id == "refuse" => EntitlementVerdict::Refuse("ü".repeat(1 << 19)),
            _ => EntitlementVerdict::Deliver(vec![Item::new("ok-item", 1)]),
        })
    }
}

drops_plugin_sdk::export_rule!(Hostile, own_allocator);
