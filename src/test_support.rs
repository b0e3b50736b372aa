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
