//! Arbitrary values for property tests: hostile strings (non-ASCII, control
//! characters, quotes) and JSON nested a few levels deep.

use proptest::prelude::*;
use serde_json::Value;

/// Strings as an attacker would send them.
pub fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,16}",
        "[\\x00-\\x1f\"\\\\é日]{0,8}",
        Just(String::new()),
        Just(" ".into()),
        (0usize..300).prop_map(|n| "x".repeat(n)),
    ]
}

/// Any JSON value, up to a few levels deep.
pub fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        hostile_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(hostile_string(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The bytes of an example plugin built by scripts/build-plugins.sh (`file`
/// as Cargo names it), from `$CARGO_TARGET_DIR` when set, else `target/`.
pub fn example_plugin(file: &str) -> Vec<u8> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join("wasm32-unknown-unknown/plugin").join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; run scripts/build-plugins.sh", path.display()))
}
