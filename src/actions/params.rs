//! Reading action parameters. Juju validates them against `actions.yaml`
//! and fills defaults before the charm runs; these checks repeat the types
//! so a bad value is one clear sentence, never a panic.

use serde_json::{Map, Value};

use crate::error::Error;

fn bad(name: &str, reason: impl Into<String>) -> Error {
    Error::Param {
        name: name.to_string(),
        reason: reason.into(),
    }
}

pub fn string(p: &Map<String, Value>, name: &str, default: &str) -> Result<String, Error> {
    match p.get(name) {
        None | Some(Value::Null) => Ok(default.to_string()),
        Some(Value::String(s)) if s.trim().is_empty() => Err(bad(name, "must not be empty")),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(bad(name, format!("expected a string, got {other}"))),
    }
}

pub fn optional_string(p: &Map<String, Value>, name: &str) -> Result<Option<String>, Error> {
    match p.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(bad(name, format!("expected a string, got {other}"))),
    }
}

pub fn integer(
    p: &Map<String, Value>,
    name: &str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, Error> {
    let v = match p.get(name) {
        None | Some(Value::Null) => default,
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| bad(name, format!("expected a whole number, got {n}")))?,
        Some(other) => return Err(bad(name, format!("expected a whole number, got {other}"))),
    };
    if range.contains(&v) {
        Ok(v)
    } else {
        Err(bad(
            name,
            format!("{v} is outside {}..={}", range.start(), range.end()),
        ))
    }
}

pub fn boolean(p: &Map<String, Value>, name: &str, default: bool) -> Result<bool, Error> {
    match p.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(bad(name, format!("expected true or false, got {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn typed_reads_with_defaults_and_clear_errors() {
        let p = json!({"target": "/x", "keep": 2, "neg": -1, "flag": true, "s": 3})
            .as_object()
            .cloned()
            .unwrap();
        assert_eq!(string(&p, "target", "/d").unwrap(), "/x");
        assert_eq!(string(&p, "missing", "/d").unwrap(), "/d");
        assert_eq!(integer(&p, "keep", 0, 0..=10).unwrap(), 2);
        assert!(integer(&p, "neg", 0, 0..=10).is_err());
        assert!(integer(&p, "keep", 0, 3..=10).is_err());
        assert!(boolean(&p, "flag", false).unwrap());
        let e = string(&p, "s", "").unwrap_err().to_string();
        assert_eq!(e, "invalid action parameter s: expected a string, got 3");
    }
}
