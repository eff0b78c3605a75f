//! A billable metric as the catalog keeps it: every version of its definition, oldest first.
//! Definitions stay opaque (the metrics layer owns them); what the catalog decides is which
//! version a number was computed with, so an old invoice can be recomputed as it was.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One version of a metric's definition.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MetricVersion {
    /// 1 for the first definition, +1 for each change; never reused while the metric lives.
    pub version: u32,
    /// When this version took effect (microsecond precision, so it compares exactly with an
    /// `as_of` instant). Never before the previous version's.
    pub created_at: DateTime<Utc>,
    /// Event type slugs this version reads, so deleting one of them can be refused.
    pub reads: Vec<String>,
    pub body: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoredMetric {
    pub org_id: String,
    pub slug: String,
    /// Oldest first; never empty (a metric is created with its version 1).
    pub versions: Vec<MetricVersion>,
}

impl StoredMetric {
    /// The version in force now: the newest.
    pub fn current(&self) -> Option<&MetricVersion> {
        self.versions.last()
    }

    /// The version in force at `micros` (UTC): the newest created at or before it; `None`
    /// when the metric did not exist yet.
    pub fn in_force_at(&self, micros: i64) -> Option<&MetricVersion> {
        self.versions
            .iter()
            .rev()
            .find(|v| v.created_at.timestamp_micros() <= micros)
    }

    /// Whether any version reads `event_type`: an old version must stay computable for as
    /// long as the metric exists, so its event types are kept too.
    pub fn reads(&self, event_type: &str) -> Option<u32> {
        self.versions
            .iter()
            .rev()
            .find(|v| v.reads.iter().any(|r| r == event_type))
            .map(|v| v.version)
    }

    /// The next version, stamped `now` but never before the newest (a clock stepping back
    /// must not make an older version newer than its successor for `as_of`).
    pub(crate) fn next_version(
        &self,
        now: DateTime<Utc>,
        reads: Vec<String>,
        body: serde_json::Value,
    ) -> MetricVersion {
        let (version, floor) = match self.current() {
            Some(v) => (v.version + 1, Some(v.created_at)),
            None => (1, None),
        };
        MetricVersion {
            version,
            created_at: floor.map_or(now, |f| f.max(now)),
            reads,
            body,
        }
    }
}

/// `now` cut to whole microseconds, the precision instants have everywhere else.
pub(crate) fn now_micros() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(micros: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(micros).unwrap()
    }

    fn metric(stamps: &[i64]) -> StoredMetric {
        StoredMetric {
            org_id: "o".into(),
            slug: "m".into(),
            versions: stamps
                .iter()
                .enumerate()
                .map(|(i, &t)| MetricVersion {
                    version: i as u32 + 1,
                    created_at: at(t),
                    reads: vec![format!("t{i}")],
                    body: serde_json::json!({ "n": i }),
                })
                .collect(),
        }
    }

    #[test]
    fn the_version_in_force_is_the_newest_created_at_or_before_the_instant() {
        let m = metric(&[100, 200, 200, 300]);
        assert_eq!(m.in_force_at(99), None);
        assert_eq!(m.in_force_at(100).map(|v| v.version), Some(1));
        assert_eq!(m.in_force_at(199).map(|v| v.version), Some(1));
        // Two versions in the same microsecond: the later one is what was in force after it.
        assert_eq!(m.in_force_at(200).map(|v| v.version), Some(3));
        assert_eq!(m.in_force_at(i64::MAX).map(|v| v.version), Some(4));
        assert_eq!(m.current().map(|v| v.version), Some(4));
    }

    #[test]
    fn a_next_version_never_predates_the_current_one() {
        let m = metric(&[500]);
        let next = m.next_version(at(400), vec![], serde_json::Value::Null);
        assert_eq!((next.version, next.created_at), (2, at(500)));
        let next = m.next_version(at(600), vec![], serde_json::Value::Null);
        assert_eq!((next.version, next.created_at), (2, at(600)));
        let first = metric(&[]).next_version(at(7), vec![], serde_json::Value::Null);
        assert_eq!((first.version, first.created_at), (1, at(7)));
    }

    #[test]
    fn any_version_reading_an_event_type_is_found() {
        let m = metric(&[1, 2]);
        assert_eq!(m.reads("t0"), Some(1));
        assert_eq!(m.reads("t1"), Some(2));
        assert_eq!(m.reads("t9"), None);
    }
}
