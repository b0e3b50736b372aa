//! Helpers for the tests that read the Keras-written fixtures: the unit
//! tests' module, and included by `tests/common` for the integration tests.

use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The `.expected.json` Keras wrote beside a fixture.
pub fn expected_of(source: &str) -> Value {
    let text = std::fs::read_to_string(fixture(&format!("{source}.expected.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Every weight of an expected JSON, in model order.
pub fn expected_weights(expected: &Value) -> Vec<&Value> {
    expected["layers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l["weights"].as_array().unwrap())
        .collect()
}

/// The sha256 Keras wrote for each weight that has bytes (no zero-length
/// axis), sorted: what a set of stored runs must hash to, in any order.
pub fn sorted_nonempty_hashes(expected: &Value) -> Vec<&str> {
    let mut hashes: Vec<&str> = expected_weights(expected)
        .iter()
        .filter(|w| w["shape"].as_array().unwrap().iter().all(|d| d != 0))
        .map(|w| w["sha256"].as_str().unwrap())
        .collect();
    hashes.sort();
    hashes
}
