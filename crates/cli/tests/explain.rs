//! "Explain this number": one customer's value with every event that made it (and its
//! contribution) and every event left out, with the reason — replaced, deleted, outside the
//! period, filtered, or after `as_of` — across the buffer, files and a compaction.

mod common;

use std::collections::BTreeSet;

use common::{Server, compact, tempdir};
use serde_json::{Value, json};

const JULY: i64 = 1_751_328_000; // 2025-07-01T00:00:00Z
const PERIOD: &str = "start_date=2025-07-01T00:00:00Z&end_date=2025-08-01T00:00:00Z";

fn post(s: &Server, events: Value) {
    let r = s.post_json("/usage/compute_events", &events);
    assert_eq!(r.status, 200, "{}", r.text);
}

fn event(customer: &str, ts: i64, v: f64, region: &str) -> Value {
    json!({"customer_id": customer, "timestamp": ts, "data": {"cpu_hours_consumed": v, "region": region}})
}

fn now_rfc3339() -> String {
    std::thread::sleep(std::time::Duration::from_millis(5));
    let t = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    std::thread::sleep(std::time::Duration::from_millis(5));
    t
}

/// Every item of `show`, page by page (`limit` each).
fn all_items(s: &Server, extra: &str, show: &str, limit: usize) -> (Value, Vec<Value>) {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    let mut first = None;
    loop {
        let mut path = format!(
            "/billable_metrics/eu_cpu/usage/explain?customer_id=acme&{PERIOD}{extra}&show={show}&limit={limit}"
        );
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let r = s.get(&path);
        assert_eq!(r.status, 200, "{}", r.text);
        let page = r.body["items"].as_array().cloned().unwrap_or_default();
        assert!(page.len() <= limit);
        items.extend(page);
        first.get_or_insert(r.body.clone());
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    (first.unwrap_or(Value::Null), items)
}

fn timestamps(items: &[Value]) -> BTreeSet<String> {
    items
        .iter()
        .map(|i| i["timestamp"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn explain_accounts_for_every_event_of_the_customer() {
    let tmp = tempdir();
    let dir = tmp.path().join("data");
    let s = Server::start(
        &dir,
        &["--compaction-interval-secs", "0", "--flush-age-ms", "100"],
    );
    s.create_compute_events();
    let r = s.post_json(
        "/billable_metrics",
        &json!({"name": "EU CPU", "slug": "eu_cpu", "usage_event": "compute_events",
                "aggregation": "sum", "field": "cpu_hours_consumed",
                "filters": [{"field": "region", "op": "eq", "value": "eu"}]}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let hour = 3600;
    // Ten EU events in July (kept), two US ones (filtered), two in June (outside), and
    // another customer's (never listed). Values are multiples of 1/8: sums are exact.
    let mut batch: Vec<Value> = (0..10)
        .map(|i| event("acme", JULY + i * hour, 0.125 * (i + 1) as f64, "eu"))
        .collect();
    batch.push(event("acme", JULY + 20 * hour, 100.0, "us"));
    batch.push(event("acme", JULY + 21 * hour, 200.0, "us"));
    batch.push(event("acme", JULY - 5 * hour, 50.0, "eu"));
    batch.push(event("acme", JULY - 6 * hour, 60.0, "eu"));
    batch.push(event("globex", JULY + hour, 7.0, "eu"));
    post(&s, json!(batch));
    s.wait_flushed();
    // Two of the EU events are re-sent with new values (the first versions are replaced),
    // one of them twice; the second batch lands in another file.
    post(
        &s,
        json!([
            event("acme", JULY, 2.0, "eu"),
            event("acme", JULY + hour, 3.0, "eu")
        ]),
    );
    s.wait_flushed();
    post(&s, json!([event("acme", JULY, 4.0, "eu")]));
    // A range deletion removes the EU events of hours 8 and 9.
    let from = "2025-07-01T08:00:00Z";
    let to = "2025-07-01T10:00:00Z";
    let r = s.delete(&format!(
        "/usage/compute_events/events?customer_id=acme&from={from}&to={to}"
    ));
    assert_eq!(r.status, 200, "{}", r.text);
    s.wait_flushed();
    compact(&s);
    let as_of = now_rfc3339();
    // After `as_of`: one new event and one more replacement.
    post(
        &s,
        json!([
            event("acme", JULY + 30 * hour, 9.0, "eu"),
            event("acme", JULY + 2 * hour, 8.0, "eu")
        ]),
    );

    // Live EU events of July as of `as_of`: hour 0 → 4.0, hour 1 → 3.0, hours 2..8 → 0.125·(i+1).
    let expected_value: f64 = 4.0 + 3.0 + (2..8).map(|i| 0.125 * (i + 1) as f64).sum::<f64>();
    let extra = format!("&as_of={as_of}");
    let usage = s.get(&format!(
        "/billable_metrics/eu_cpu/usage?customer_id=acme&{PERIOD}{extra}"
    ));
    assert_eq!(usage.status, 200, "{}", usage.text);
    assert_eq!(
        usage.body["rows"][0]["value"].as_f64(),
        Some(expected_value)
    );

    let (head, included) = all_items(&s, &extra, "included", 3);
    assert_eq!(head["value"].as_f64(), Some(expected_value), "{head}");
    assert_eq!(head["version"], 1);
    let counts = &head["counts"];
    assert_eq!(counts["included"], 8, "{head}");
    assert_eq!(counts["replaced"], 3, "{head}");
    assert_eq!(counts["deleted"], 2, "{head}");
    assert_eq!(counts["outside_period"], 2, "{head}");
    assert_eq!(counts["filtered"], 2, "{head}");
    assert_eq!(counts["after_as_of"], 2, "{head}");
    assert_eq!(included.len(), 8);
    let total: f64 = included
        .iter()
        .map(|i| i["contribution"].as_f64().unwrap_or(f64::NAN))
        .sum();
    assert_eq!(total, expected_value, "contributions add up to the value");
    assert!(included.iter().all(|i| i["customer_id"] == "acme"));
    assert!(included.iter().all(|i| i["data"]["region"] == "eu"));
    // Every included event once, in time order, over pages of 3.
    assert_eq!(timestamps(&included).len(), 8);

    let (_, excluded) = all_items(&s, &extra, "excluded", 4);
    assert_eq!(excluded.len(), 11);
    let reason_of = |reason: &str| -> Vec<&Value> {
        excluded.iter().filter(|i| i["reason"] == reason).collect()
    };
    assert_eq!(reason_of("replaced").len(), 3);
    assert!(
        reason_of("replaced")
            .iter()
            .all(|i| i["detail"]["replaced_by_version_ingested_at"].is_string())
    );
    let deleted = reason_of("deleted");
    assert_eq!(deleted.len(), 2);
    assert_eq!(deleted[0]["detail"]["deletion"]["from"], from);
    assert_eq!(deleted[0]["detail"]["deletion"]["to"], to);
    assert_eq!(reason_of("outside_period").len(), 2);
    let filtered = reason_of("filtered");
    assert_eq!(filtered.len(), 2);
    assert_eq!(filtered[0]["detail"]["filters"][0]["field"], "region");
    assert_eq!(reason_of("after_as_of").len(), 2);

    // Without `as_of`: the later event counts and the later replacement takes over.
    let (now, _) = all_items(&s, "", "included", 100);
    let value_now = expected_value - 0.375 + 8.0 + 9.0;
    assert_eq!(now["value"].as_f64(), Some(value_now), "{now}");
    assert_eq!(now["counts"]["included"], 9);
    assert_eq!(now["counts"]["after_as_of"], 0);

    // Bad requests say what is wrong and change nothing.
    for (query, needle) in [
        (PERIOD.to_string(), "customer_id"),
        (format!("customer_id=acme&{PERIOD}&show=all"), "show"),
        (format!("customer_id=acme&{PERIOD}&limit=0"), "limit"),
        (format!("customer_id=acme&{PERIOD}&cursor=zz"), "cursor"),
    ] {
        let r = s.get(&format!("/billable_metrics/eu_cpu/usage/explain?{query}"));
        assert_eq!(r.status, 400, "{query}: {}", r.text);
        assert!(r.text.contains(needle), "{query}: {}", r.text);
    }
}
