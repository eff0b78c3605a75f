//! Reading catalog documents of older formats: each is rewritten, as JSON, into the shape of
//! today's before it is decoded, so the decoder knows one shape only.

use serde_json::{Value, json};

/// Formats 0 and 1 kept one definition per metric (`reads`, `body`); from format 2 a metric
/// holds `versions`. The old definition becomes version 1, in force since the metric's own
/// `created_at` (every build wrote one into the body); a body without a readable one is in
/// force since the epoch, i.e. for any `as_of`.
pub(crate) fn metrics_to_versions(doc: &mut Value) -> Result<(), String> {
    let Some(metrics) = doc.get_mut("metrics").and_then(Value::as_array_mut) else {
        return Ok(());
    };
    for (i, m) in metrics.iter_mut().enumerate() {
        let obj = m
            .as_object_mut()
            .ok_or_else(|| format!("metrics[{i}] is not an object"))?;
        let reads = obj.remove("reads").unwrap_or_else(|| json!([]));
        let body = obj
            .remove("body")
            .ok_or_else(|| format!("metrics[{i}] has no body"))?;
        let created_at = body
            .get("created_at")
            .and_then(Value::as_str)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&chrono::Utc))
            .unwrap_or(chrono::DateTime::UNIX_EPOCH);
        obj.insert(
            "versions".into(),
            json!([{"version": 1, "created_at": created_at, "reads": reads, "body": body}]),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_definition_becomes_version_1_since_its_creation() {
        let mut doc = json!({"format": 1, "metrics": [
            {"org_id": "o", "slug": "a", "reads": ["t"],
             "body": {"sql": "x", "created_at": "2025-07-01T10:00:00Z"}},
            {"org_id": "o", "slug": "b", "reads": [], "body": {"sql": "y"}}]});
        metrics_to_versions(&mut doc).unwrap();
        assert_eq!(
            doc["metrics"][0],
            json!({"org_id": "o", "slug": "a", "versions": [{"version": 1,
                "created_at": "2025-07-01T10:00:00Z", "reads": ["t"],
                "body": {"sql": "x", "created_at": "2025-07-01T10:00:00Z"}}]})
        );
        assert_eq!(
            doc["metrics"][1]["versions"][0]["created_at"],
            "1970-01-01T00:00:00Z"
        );
        let mut none = json!({"format": 0, "organisations": []});
        metrics_to_versions(&mut none).unwrap();
        assert!(metrics_to_versions(&mut json!({"metrics": [{"slug": "x"}]})).is_err());
    }
}
