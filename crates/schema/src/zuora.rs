//! Zuora's usage record shape (`IngestUsageEvents`): `CustomerId`, `UsageDate` and every other
//! key as a data field of its snake_case name. Both that shape and the contract's are
//! rewritten, raw values untouched, into the contract's shape as NDJSON, so the same decoder
//! validates them as every other path. Pure, so it is fuzzed like the decoders.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::json;
use serde_json::value::RawValue;

use crate::SchemaError;

/// `UsageIdentifier` → `usage_identifier`, `HTTPStatus` → `http_status`.
pub fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            if prev.is_ascii_lowercase()
                || prev.is_ascii_digit()
                || (prev.is_ascii_uppercase() && next_lower)
            {
                out.push('_');
            }
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// A raw value on one line. JSON strings cannot hold a raw line break, so every CR or LF in
/// a value is whitespace between tokens: a pretty-printed `data` object would otherwise
/// split its event over several NDJSON lines (found by the `zuora_bulk` fuzz target).
fn one_line(raw: &RawValue) -> std::borrow::Cow<'_, str> {
    let text = raw.get();
    if text.contains(['\n', '\r']) {
        text.replace(['\n', '\r'], " ").into()
    } else {
        text.into()
    }
}

/// One event's keys and raw values, in order, duplicates kept (the decoder reports them).
struct Entries<'a>(Vec<(String, &'a RawValue)>);

struct EntriesVisitor;

impl<'de> Visitor<'de> for EntriesVisitor {
    type Value = Entries<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries<'de>, A::Error> {
        let mut v = Vec::new();
        while let Some(k) = map.next_key::<String>()? {
            v.push((k, map.next_value::<&'de RawValue>()?));
        }
        Ok(Entries(v))
    }
}

struct EventsSeed;

impl<'de> DeserializeSeed<'de> for EventsSeed {
    type Value = Vec<Entries<'de>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for EventsSeed {
    type Value = Vec<Entries<'de>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event object or an array of event objects")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Ok(vec![EntriesVisitor.visit_map(map)?])
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(e) = seq.next_element_seed(EntrySeed)? {
            out.push(e);
        }
        Ok(out)
    }
}

struct EntrySeed;

impl<'de> DeserializeSeed<'de> for EntrySeed {
    type Value = Entries<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Entries<'de>, D::Error> {
        d.deserialize_map(EntriesVisitor)
    }
}

/// Rewrites a bulk body into NDJSON in the contract's event shape, one line per event, so
/// line N is event N-1.
pub fn to_ndjson(body: &[u8]) -> Result<Vec<u8>, SchemaError> {
    std::str::from_utf8(body).map_err(|e| {
        SchemaError::Invalid(format!(
            "body is not valid UTF-8 (byte {})",
            e.valid_up_to()
        ))
    })?;
    let mut de = serde_json::Deserializer::from_slice(body);
    let events = EventsSeed
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e: serde_json::Error| SchemaError::Invalid(format!("invalid JSON: {e}")))?;
    let mut out = Vec::with_capacity(body.len() + events.len() * 32);
    for Entries(entries) in events {
        let zuora = entries.iter().any(|(k, _)| k == "CustomerId");
        if !zuora {
            out.push(b'{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(json!(k).to_string().as_bytes());
                out.push(b':');
                out.extend_from_slice(one_line(v).as_bytes());
            }
            out.extend_from_slice(b"}\n");
            continue;
        }
        let mut top = Vec::new();
        let mut data = Vec::new();
        for (k, v) in &entries {
            let target = match k.as_str() {
                "CustomerId" => Some("customer_id".to_string()),
                "UsageDate" => Some("timestamp".to_string()),
                _ => None,
            };
            match target {
                Some(t) => top.push(format!("{}:{}", json!(t), one_line(v))),
                None => data.push(format!("{}:{}", json!(snake_case(k)), one_line(v))),
            }
        }
        top.push(format!("\"data\":{{{}}}", data.join(",")));
        out.push(b'{');
        out.extend_from_slice(top.join(",").as_bytes());
        out.extend_from_slice(b"}\n");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_cases() {
        assert_eq!(snake_case("UsageIdentifier"), "usage_identifier");
        assert_eq!(snake_case("Quantity"), "quantity");
        assert_eq!(snake_case("HTTPStatus"), "http_status");
        assert_eq!(snake_case("region"), "region");
        assert_eq!(snake_case("Gb2Hours"), "gb2_hours");
    }

    #[test]
    fn zuora_events_become_contract_events() {
        let body = br#"[{"CustomerId":"C1","UsageIdentifier":"api","UsageDate":"2025-07-01T00:00:00Z","Quantity":1.50},
                        {"customer_id":"c2","timestamp":1,"data":{"quantity":2}}]"#;
        let out = String::from_utf8(to_ndjson(body).unwrap()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            r#"{"customer_id":"C1","timestamp":"2025-07-01T00:00:00Z","data":{"usage_identifier":"api","quantity":1.50}}"#
        );
        assert_eq!(
            lines[1],
            r#"{"customer_id":"c2","timestamp":1,"data":{"quantity":2}}"#
        );
        assert!(to_ndjson(b"[1,2]").is_err());
    }

    #[test]
    fn pretty_printed_values_stay_on_their_event_line() {
        let body = b"[{\"customer_id\":\"c1\",\"timestamp\":1,\"data\":{\r\n  \"q\": 2,\n  \"s\": \"a b\"\n}},\n {\"CustomerId\":\"C2\",\"UsageDate\":1,\"Tags\":[\n1,\n2]}]";
        let out = String::from_utf8(to_ndjson(body).unwrap()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        let first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(first["data"]["s"], "a b");
        let second: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(second["data"]["tags"], json!([1, 2]));
    }
}
