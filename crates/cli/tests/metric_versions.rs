//! Metric versions and preview through the HTTP API: `PUT` makes version 2, the versions
//! list, usage naming its version, `as_of` using the version in force then, preview's
//! current/candidate/difference storing nothing, and refused candidates naming their field.

mod common;

use std::time::Duration;

use common::{Reply, Server, load_metrics_dataset, tempdir};
use serde_json::{Value, json};

/// A preview's rows as (customer, current, candidate, difference).
fn compared(body: &Value) -> Vec<(Value, Value, Value, Value)> {
    body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["customer_id"].clone(),
                r["current"].clone(),
                r["candidate"].clone(),
                r["difference"].clone(),
            )
        })
        .collect()
}

fn put_json(s: &Server, path: &str, body: &Value) -> Reply {
    s.request(
        "PUT",
        path,
        Some(&s.key),
        &[("content-type", "application/json")],
        Some(body.to_string().as_bytes()),
    )
}

fn now() -> String {
    let t = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    std::thread::sleep(Duration::from_millis(50));
    t
}

/// A refusal as the contract has it, naming the member at fault.
fn assert_names_field(r: &Reply, pointer: &str) {
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(
        r.header("content-type"),
        Some("application/problem+json"),
        "{}",
        r.text
    );
    assert_eq!(r.body["errors"][0]["pointer"], pointer, "{}", r.text);
}

const JULY: &str = "start_date=2025-07-01&end_date=2025-08-01";

#[test]
fn versions_usage_as_of_and_preview() {
    let dir = tempdir();
    let mut s = Server::start(&dir.path().join("d"), &[]);
    load_metrics_dataset(&s);
    let before_metric = now();

    let v1 = json!({"name": "API cost", "slug": "api_cost",
        "sql": "SELECT customer_id, sum(cost) AS value FROM api_calls WHERE timestamp >= {{start_date}} AND timestamp < {{end_date}} GROUP BY customer_id"});
    let r = s.post_json("/billable_metrics", &v1);
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["version"], 1);
    let during_v1 = now();

    // A change: only one endpoint's calls are billed.
    let v2 = json!({"name": "API cost", "usage_event": "api_calls", "aggregation": "sum", "field": "cost",
        "filters": [{"field": "endpoint", "op": "eq", "value": "/v1/a"}]});
    let r = put_json(&s, "/billable_metrics/api_cost", &v2);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["version"], 2);
    assert_eq!(r.body["slug"], "api_cost");

    let shown = s.get("/billable_metrics/api_cost");
    assert_eq!(shown.body["version"], 2, "{}", shown.text);
    assert_eq!(shown.body["builder"]["aggregation"], "sum");
    let items = s.get("/billable_metrics").body["items"].clone();
    assert_eq!(items[0]["version"], 2);

    let versions = s.get("/billable_metrics/api_cost/versions");
    assert_eq!(versions.status, 200, "{}", versions.text);
    let list = versions.body["versions"].as_array().unwrap().clone();
    assert_eq!(list.len(), 2, "{}", versions.text);
    assert_eq!(
        (list[0]["version"].clone(), list[1]["version"].clone()),
        (json!(1), json!(2))
    );
    assert_eq!(list[0]["definition"]["sql"], v1["sql"]);
    assert_eq!(list[1]["definition"]["builder"]["filters"], v2["filters"]);
    assert!(list[0]["created_at"].as_str().unwrap() < list[1]["created_at"].as_str().unwrap());

    // Usage names its version: today's, or the one in force at as_of, with its value.
    let usage = |q: &str| s.get(&format!("/billable_metrics/api_cost/usage?{JULY}{q}"));
    let r = usage("");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body,
        json!({"metric": "api_cost", "version": 2, "start_date": "2025-07-01T00:00:00Z",
               "end_date": "2025-08-01T00:00:00Z",
               "rows": [{"customer_id": "acme", "value": "0.0030"}, {"customer_id": "globex", "value": "0.1000"}]})
    );
    let r = usage(&format!("&as_of={during_v1}"));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["version"], 1);
    assert_eq!(
        r.body["rows"],
        json!([{"customer_id": "acme", "value": "0.0060"}, {"customer_id": "globex", "value": "0.1000"}])
    );
    let r = usage(&format!("&as_of={before_metric}"));
    assert_eq!(r.status, 404, "{}", r.text);
    assert!(r.text.contains("did not exist"), "{}", r.text);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));

    // Preview: a candidate billing /v1/b only, on July and on an empty June.
    let candidate = json!({"name": "API cost", "usage_event": "api_calls", "aggregation": "sum", "field": "cost",
        "filters": [{"field": "endpoint", "op": "eq", "value": "/v1/b"}]});
    let r = s.post_json(
        "/billable_metrics/api_cost/preview",
        &json!({"definition": candidate, "periods": [
            {"start_date": "2025-07-01", "end_date": "2025-08-01"},
            {"start_date": "2025-06-01T00:00:00Z", "end_date": "2025-07-01T00:00:00Z"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body,
        json!({"metric": "api_cost", "version": 2, "rows": [
            {"customer_id": "acme", "start_date": "2025-07-01T00:00:00Z", "end_date": "2025-08-01T00:00:00Z",
             "current": "0.0030", "candidate": "0.0030", "difference": "0.0000"},
            {"customer_id": "globex", "start_date": "2025-07-01T00:00:00Z", "end_date": "2025-08-01T00:00:00Z",
             "current": "0.1000", "candidate": null, "difference": "-0.1000"}]})
    );
    let r = s.post_json(
        "/billable_metrics/api_cost/preview",
        &json!({"definition": {"name": "API calls", "usage_event": "api_calls", "aggregation": "count"},
                "periods": [{"start_date": "2025-07-01", "end_date": "2025-08-01"}], "customer_id": "acme"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body["rows"],
        json!([{"customer_id": "acme", "start_date": "2025-07-01T00:00:00Z", "end_date": "2025-08-01T00:00:00Z",
                "current": "0.0030", "candidate": 3, "difference": "2.9970"}])
    );
    // Nothing was stored.
    assert_eq!(
        s.get("/billable_metrics/api_cost/versions").body["versions"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(usage("").body["rows"][0]["value"], "0.0030");

    // Floats: CPU hours against the US-only candidate.
    let cpu = json!({"name": "CPU hours", "usage_event": "compute_events", "aggregation": "sum", "field": "cpu_hours_consumed"});
    assert_eq!(s.post_json("/billable_metrics", &cpu).status, 201);
    let r = s.post_json(
        "/billable_metrics/cpu_hours/preview",
        &json!({"definition": {"name": "CPU hours", "usage_event": "compute_events", "aggregation": "sum", "field": "cpu_hours_consumed",
                               "filters": [{"field": "region", "op": "eq", "value": "us-east-1"}]},
                "periods": [{"start_date": "2025-07-01", "end_date": "2025-08-01"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let rows = compared(&r.body);
    assert_eq!(
        rows,
        vec![
            (json!("acme"), json!(15), json!(10.5), json!(-4.5)),
            (json!("globex"), json!(2), json!(2), json!(0))
        ]
    );

    // Refusals name the member at fault and store nothing.
    let periods = json!([{"start_date": "2025-07-01", "end_date": "2025-08-01"}]);
    let bad = |definition: Value| {
        s.post_json(
            "/billable_metrics/api_cost/preview",
            &json!({"definition": definition, "periods": periods}),
        )
    };
    assert_names_field(
        &bad(
            json!({"name": "x", "usage_event": "api_calls", "aggregation": "median", "field": "cost"}),
        ),
        "/definition/aggregation",
    );
    assert_names_field(
        &bad(
            json!({"name": "x", "usage_event": "api_calls", "aggregation": "sum", "field": "nope"}),
        ),
        "/definition/field",
    );
    assert_names_field(
        &bad(
            json!({"name": "x", "sql": "SELECT customer_id FROM api_calls WHERE timestamp >= {{start_date}}"}),
        ),
        "/definition/sql",
    );
    assert_names_field(
        &bad(
            json!({"name": "x", "slug": "other", "usage_event": "api_calls", "aggregation": "count"}),
        ),
        "/definition/slug",
    );
    let many: Vec<Value> = (0..101)
        .map(|_| json!({"start_date": "2025-07-01", "end_date": "2025-08-01"}))
        .collect();
    assert_names_field(
        &s.post_json(
            "/billable_metrics/api_cost/preview",
            &json!({"definition": v1, "periods": many}),
        ),
        "/periods",
    );
    assert_names_field(
        &s.post_json(
            "/billable_metrics/api_cost/preview",
            &json!({"definition": v1, "periods": [{"start_date": "2025-08-01", "end_date": "2025-07-01"}]}),
        ),
        "/periods/0",
    );
    assert_names_field(
        &s.post_json(
            "/billable_metrics/api_cost/preview",
            &json!({"definition": v1, "periods": [{"start_date": "July", "end_date": "2025-07-01"}]}),
        ),
        "/periods/0/start_date",
    );
    assert_names_field(
        &put_json(
            &s,
            "/billable_metrics/api_cost",
            &json!({"name": "x", "usage_event": "api_calls", "aggregation": "sum", "field": "nope"}),
        ),
        "/field",
    );
    assert_names_field(
        &put_json(
            &s,
            "/billable_metrics/api_cost",
            &json!({"name": "x", "usage_event": "api_calls", "aggregation": "count",
                    "filters": [{"field": "endpoint", "op": "eq", "value": "/v1/a"}, {"field": "nope", "op": "eq", "value": 1}]}),
        ),
        "/filters/1",
    );
    assert_eq!(put_json(&s, "/billable_metrics/nope", &v1).status, 404);
    assert_eq!(
        s.post_json(
            "/billable_metrics/nope/preview",
            &json!({"definition": v1, "periods": periods})
        )
        .status,
        404
    );
    assert_eq!(
        s.get("/billable_metrics/api_cost/versions").body["versions"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Versions survive a restart; as_of still finds version 1.
    s.restart();
    let r = s.get(&format!(
        "/billable_metrics/api_cost/usage?{JULY}&as_of={during_v1}"
    ));
    assert_eq!(
        (r.status, r.body["version"].clone()),
        (200, json!(1)),
        "{}",
        r.text
    );
    assert_eq!(
        s.get("/billable_metrics/api_cost/versions").body["versions"],
        Value::Array(list)
    );
    // A new version 3 after the restart follows version 2.
    let r = put_json(&s, "/billable_metrics/api_cost", &v1);
    assert_eq!(
        (r.status, r.body["version"].clone()),
        (200, json!(3)),
        "{}",
        r.text
    );
    let r = s.get(&format!("/billable_metrics/api_cost/usage?{JULY}"));
    assert_eq!(r.body["version"], 3);
    assert_eq!(r.body["rows"][0]["value"], "0.0060");
}

/// A definition not created yet is previewed as creation would store it (the console shows
/// this before saving): the candidate's values, `current` null, nothing stored; `preview`
/// itself cannot become a slug.
#[test]
fn a_new_definition_previews_before_it_is_created() {
    let tmp = tempdir();
    let s = Server::start(&tmp.path().join("data"), &[]);
    load_metrics_dataset(&s);
    let definition = json!({"name": "CPU hours", "usage_event": "compute_events",
                            "aggregation": "sum", "field": "cpu_hours_consumed"});
    let r = s.post_json(
        "/billable_metrics/preview",
        &json!({"definition": definition,
                "periods": [{"start_date": "2025-07-01", "end_date": "2025-08-01"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["version"], Value::Null);
    let rows = compared(&r.body);
    assert_eq!(
        rows,
        vec![
            (json!("acme"), Value::Null, json!(15), json!(15)),
            (json!("globex"), Value::Null, json!(2), json!(2))
        ]
    );
    let r = s.get("/billable_metrics");
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        !r.text.contains("cpu_hours"),
        "a preview stores nothing: {}",
        r.text
    );
    let r = s.post_json(
        "/billable_metrics/preview",
        &json!({"definition": {"name": "x", "usage_event": "compute_events", "aggregation": "sum", "field": "region"},
                "periods": [{"start_date": "2025-07-01", "end_date": "2025-08-01"}]}),
    );
    assert_names_field(&r, "/definition/field");
    let r = s.post_json(
        "/billable_metrics",
        &json!({"name": "Preview", "slug": "preview", "usage_event": "compute_events", "aggregation": "count"}),
    );
    assert_names_field(&r, "/slug");
}
