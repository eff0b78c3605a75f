//! Every endpoint tried with another organisation's key, plus the 401/403 rules.

mod common;

use common::{Server, compute_events_definition, tempdir};
use serde_json::json;

#[test]
fn organisations_are_isolated() {
    let dir = tempdir();
    let s = Server::start(&dir.path().join("d"), &[]);
    // Admin API: wrong or missing token.
    assert_eq!(
        s.request("GET", "/admin/organisations", None, &[], None)
            .status,
        401
    );
    assert_eq!(
        s.request(
            "GET",
            "/admin/organisations",
            None,
            &[("authorization", "Bearer nope")],
            None
        )
        .status,
        401
    );
    let acme = s.admin(
        "POST",
        "/admin/organisations",
        Some(&json!({"name": "acme"})),
    );
    assert_eq!(acme.status, 201, "{}", acme.text);
    let acme_key = acme.body["api_key"].as_str().unwrap().to_string();
    let acme_id = acme.body["id"].as_str().unwrap().to_string();
    assert_eq!(
        s.admin(
            "POST",
            "/admin/organisations",
            Some(&json!({"name": "acme"}))
        )
        .status,
        409
    );
    let list = s.admin("GET", "/admin/organisations", None);
    assert_eq!(list.body["items"].as_array().unwrap().len(), 2);
    assert!(
        list.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o.get("api_key").is_none())
    );

    // Default org owns compute_events with data; acme cannot see or touch any of it.
    s.create_compute_events();
    let ev = json!({"customer_id": "c", "timestamp": "2025-01-01T00:00:00Z", "data": {"cpu_hours_consumed": 1, "region": "r"}});
    assert_eq!(s.post_json("/usage/compute_events", &ev).status, 200);
    assert_eq!(
        s.request("GET", "/rawmetrics", Some(&acme_key), &[], None)
            .body["items"],
        json!([])
    );
    assert_eq!(
        s.request(
            "GET",
            "/rawmetrics/compute_events",
            Some(&acme_key),
            &[],
            None
        )
        .status,
        404
    );
    assert_eq!(
        s.request(
            "PATCH",
            "/rawmetrics/compute_events",
            Some(&acme_key),
            &[("content-type", "application/json")],
            Some(br#"{"name":"x"}"#)
        )
        .status,
        404
    );
    assert_eq!(
        s.request(
            "DELETE",
            "/rawmetrics/compute_events?force=true",
            Some(&acme_key),
            &[],
            None
        )
        .status,
        404
    );
    assert_eq!(
        s.post_as(&acme_key, "/usage/compute_events", &ev).status,
        404
    );
    let r = s.post_as(
        &acme_key,
        "/sql",
        &json!({"sql": "SELECT count(*) FROM compute_events"}),
    );
    assert_eq!(r.status, 400, "{}", r.text);
    // Acme may use the same slug for its own type; the two never mix.
    assert_eq!(
        s.post_as(&acme_key, "/rawmetrics", &compute_events_definition())
            .status,
        201
    );
    assert_eq!(
        s.post_as(&acme_key, "/usage/compute_events", &ev).status,
        200
    );
    assert_eq!(s.post_as(&acme_key, "/usage/compute_events", &json!([ev.clone(), {"customer_id": "d", "timestamp": "2025-01-01T00:00:00Z", "data": {"cpu_hours_consumed": 1, "region": "r"}}])).status, 200);
    assert_eq!(
        s.sql_as(&acme_key, "SELECT count(*) AS n FROM compute_events")[0]["n"],
        2
    );
    assert_eq!(s.sql("SELECT count(*) AS n FROM compute_events")[0]["n"], 1);

    // A refusal decided from the headers reads and drops a short body, so the connection
    // stays usable: reusing it raced hyper's close, and the next request failed with "Peer
    // disconnected". Longer bodies are not waited for, and the response says it closes.
    let body = vec![b' '; 256 << 10];
    for _ in 0..20 {
        let r = s.request(
            "POST",
            "/usage/compute_events",
            Some("mb_wrong"),
            &[],
            Some(&body),
        );
        assert_eq!(r.status, 401);
        assert_eq!(r.header("connection"), None);
        assert_eq!(s.request("GET", "/rawmetrics", None, &[], None).status, 401);
    }
    {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(s.addr.trim_start_matches("http://")).unwrap();
        conn.write_all(
            b"POST /usage/compute_events HTTP/1.1\r\nhost: x\r\nx-api-key: mb_wrong\r\n\
              content-length: 67108864\r\n\r\n{}",
        )
        .unwrap();
        let mut reply = String::new();
        conn.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 401"), "{reply}");
        assert!(
            reply.to_ascii_lowercase().contains("connection: close"),
            "{reply}"
        );
    }

    // 401 without or with an unknown key; 403 when the organisation header names another org.
    assert_eq!(s.request("GET", "/rawmetrics", None, &[], None).status, 401);
    assert_eq!(
        s.request("GET", "/rawmetrics", Some("mb_wrong"), &[], None)
            .status,
        401
    );
    assert_eq!(
        s.request(
            "GET",
            "/rawmetrics",
            Some(&acme_key),
            &[("organisation", "default")],
            None
        )
        .status,
        403
    );
    assert_eq!(
        s.request(
            "GET",
            "/rawmetrics",
            Some(&acme_key),
            &[("organisation", &acme_id)],
            None
        )
        .status,
        200
    );
    assert_eq!(
        s.request(
            "GET",
            "/rawmetrics",
            Some(&acme_key),
            &[("organisation", "acme")],
            None
        )
        .status,
        200
    );
    let bearer = format!("Bearer {acme_key}");
    assert_eq!(
        s.request(
            "GET",
            "/rawmetrics",
            None,
            &[("authorization", &bearer)],
            None
        )
        .status,
        200
    );

    // A second key works until deleted, then immediately stops.
    let k = s.admin(
        "POST",
        &format!("/admin/organisations/{acme_id}/api_keys"),
        None,
    );
    assert_eq!(k.status, 201);
    let key2 = k.body["api_key"].as_str().unwrap();
    assert_eq!(
        s.request("GET", "/rawmetrics", Some(key2), &[], None)
            .status,
        200
    );
    assert_eq!(
        s.admin(
            "DELETE",
            &format!("/admin/api_keys/{}", k.body["id"].as_str().unwrap()),
            None
        )
        .status,
        204
    );
    assert_eq!(
        s.request("GET", "/rawmetrics", Some(key2), &[], None)
            .status,
        401
    );
    // Keys are stored only as hashes.
    let catalog = std::fs::read_to_string(dir.path().join("d/catalog.json")).unwrap();
    assert!(!catalog.contains(&acme_key) && !catalog.contains(key2));
}
