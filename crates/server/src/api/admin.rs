//! `/admin/…` with the admin token: organisations, API keys, a compaction pass now, and
//! (with `--fault-injection`) the faults tests inject.

use axum::body::Body;
use axum::extract::{Path, RawQuery};
use axum::response::Response;
use hyper::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Admin;
use crate::http::{Result, json_body, json_response, no_content};
use crate::problem::Problem;

fn rfc3339(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// `POST /admin/organisations` `{"name"}`: the organisation and its first key (shown once).
pub(crate) async fn create_organisation(Admin(app): Admin, body: Body) -> Result<Response> {
    #[derive(Deserialize)]
    struct Request {
        name: String,
    }
    let r: Request = json_body(body).await?;
    let (org, key) = app.catalog.create_organisation(&r.name)?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"id": org.id, "name": org.name, "api_key": key.key, "api_key_id": key.id}),
    ))
}

pub(crate) async fn list_organisations(Admin(app): Admin) -> Result<Response> {
    let items: Vec<Value> = app
        .catalog
        .organisations()
        .iter()
        .map(|o| json!({"id": o.id, "name": o.name, "created_at": rfc3339(&o.created_at)}))
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "items": items })))
}

pub(crate) async fn create_key(Admin(app): Admin, Path(org): Path<String>) -> Result<Response> {
    let key = app.catalog.create_api_key(&org)?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"id": key.id, "api_key": key.key}),
    ))
}

/// Key ids and creation times, never the keys: enough to revoke one.
pub(crate) async fn list_keys(Admin(app): Admin, Path(org): Path<String>) -> Result<Response> {
    let items: Vec<Value> = app
        .catalog
        .api_keys(&org)?
        .iter()
        .map(|k| json!({"id": k.id, "created_at": rfc3339(&k.created_at)}))
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "items": items })))
}

pub(crate) async fn delete_key(Admin(app): Admin, Path(id): Path<String>) -> Result<Response> {
    app.catalog.delete_api_key(&id)?;
    Ok(no_content())
}

/// `POST /admin/compact`: merges every day fully, now.
pub(crate) async fn compact(Admin(app): Admin) -> Result<Response> {
    let stats = app
        .store
        .compact_all(meterbase_storage::CompactionMode::Full)
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "files_in": stats.files_in,
            "files_out": stats.files_out,
            "rows_in": stats.rows_in,
            "rows_out": stats.rows_out,
            "files_one_seq": stats.files_one_seq,
        }),
    ))
}

/// `POST /admin/open_tables/publish`: brings every table's Delta log up to its current
/// manifest now (it also happens every `--delta-commit-interval`), and says where each
/// stands. 404 with `--open-tables off`. `?flush=true` persists every buffer and pending
/// deletion first, so the tables hold everything acknowledged so far.
pub(crate) async fn publish_open_tables(
    Admin(app): Admin,
    RawQuery(query): RawQuery,
) -> Result<Response> {
    let Some(publisher) = &app.open_tables else {
        return Err(Problem::not_found(
            "open tables are off (--open-tables off)",
        ));
    };
    let flush = match query.as_deref().unwrap_or_default() {
        "" | "flush=" | "flush=false" | "flush=0" => false,
        "flush=true" | "flush=1" => true,
        other => {
            return Err(Problem::bad_request(format!(
                "unknown query {other:?}: the only parameter is flush=true|false"
            )));
        }
    };
    if flush {
        app.store.flush_due(true).await?;
    }
    let tables = publisher.publish_all().await;
    Ok(json_response(StatusCode::OK, &json!({ "tables": tables })))
}

/// `POST /admin/faults` (only with `--fault-injection`): sets what the object store and the
/// write-ahead log do wrong. Absent fields are left as they are.
pub(crate) async fn set_faults(Admin(app): Admin, body: Body) -> Result<Response> {
    use std::sync::atomic::Ordering::SeqCst;
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Request {
        outage: Option<bool>,
        fail_puts: Option<usize>,
        lose_put_responses: Option<usize>,
        latency_ms: Option<u64>,
        timeout_puts: Option<usize>,
        timeout_ms: Option<u64>,
        wal_sync_failures: Option<usize>,
    }
    let Some(faults) = &app.faults else {
        return Err(Problem::not_found(
            "fault injection is off (start the server with --fault-injection)",
        ));
    };
    let b: Request = json_body(body).await?;
    if let Some(v) = b.outage {
        faults.outage.store(v, SeqCst);
    }
    if let Some(v) = b.fail_puts {
        faults.fail_puts.store(v, SeqCst);
    }
    if let Some(v) = b.lose_put_responses {
        faults.lose_put_responses.store(v, SeqCst);
    }
    if let Some(v) = b.latency_ms {
        faults.latency_ms.store(v, SeqCst);
    }
    if let Some(v) = b.timeout_puts {
        faults.timeout_puts.store(v, SeqCst);
    }
    if let Some(v) = b.timeout_ms {
        faults.timeout_ms.store(v, SeqCst);
    }
    if let Some(n) = b.wal_sync_failures
        && let Some(fp) = app.store.wal_failpoint()
    {
        fp.fail_next(n);
    }
    Ok(no_content())
}
