//! JSON objects whose key order means something (model order), which
//! serde_json's own map would sort away.

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

/// A JSON object's entries in the order they were written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OrderedObject(pub Vec<(String, Value)>);

impl<'de> Deserialize<'de> for OrderedObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Pairs;
        impl<'de> Visitor<'de> for Pairs {
            type Value = OrderedObject;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedObject, A::Error> {
                let mut pairs = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    pairs.push(entry);
                }
                Ok(OrderedObject(pairs))
            }
        }
        deserializer.deserialize_map(Pairs)
    }
}

/// Parses a JSON object, keeping its key order.
pub fn ordered_object(json: &str) -> Option<Vec<(String, Value)>> {
    serde_json::from_str::<OrderedObject>(json)
        .ok()
        .map(|o| o.0)
}

/// Writes pairs as a JSON object in the given order.
pub fn object_in_order<'a>(pairs: impl IntoIterator<Item = (&'a str, Value)>) -> String {
    object_of(pairs)
}

/// [`object_in_order`] of values that are JSON texts already.
pub fn object_of_json<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    object_of(pairs)
}

/// A value's `Display` is its JSON text (`serde_json::Value`'s is).
/// Written into one string as it goes: the objects of 100,000 layers are
/// megabytes, and a list of entries joined at the end held them three times.
fn object_of<'a, V: std::fmt::Display>(pairs: impl IntoIterator<Item = (&'a str, V)>) -> String {
    use std::fmt::Write;
    let mut json = String::from("{");
    for (i, (key, value)) in pairs.into_iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        write!(json, "{}:{value}", Value::from(key)).expect("a String takes every write");
    }
    json.push('}');
    json
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_survives_a_round_trip() {
        let json = object_in_order([("zeta", Value::from(1)), ("alpha", Value::Null)]);
        assert_eq!(json, r#"{"zeta":1,"alpha":null}"#);
        let pairs = ordered_object(&json).unwrap();
        assert_eq!(pairs[0].0, "zeta");
        assert_eq!(pairs[1].0, "alpha");
    }
}
