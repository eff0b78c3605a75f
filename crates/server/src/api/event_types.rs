//! `/rawmetrics`: usage event type definitions (Zenskar's name for them).

use axum::body::Body;
use axum::extract::Path;
use axum::response::Response;
use hyper::StatusCode;
use meterbase_schema::{EventTypeDef, EventTypeSpec};
use serde_json::{Map, Value, json};

use crate::auth::Tenant;
use crate::http::{Params, Result, json_body, json_response, no_content};
use crate::problem::Problem;

fn def_json(def: &EventTypeDef) -> Value {
    let mut v = serde_json::to_value(def).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("endpoint".into(), json!(format!("/usage/{}", def.api_slug)));
        m.insert(
            "created_at".into(),
            json!(
                def.created_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        );
    }
    v
}

pub(crate) async fn create(Tenant { app, org }: Tenant, body: Body) -> Result<Response> {
    let spec: EventTypeSpec = json_body(body).await?;
    let def = EventTypeDef::from_spec(
        spec,
        uuid::Uuid::new_v4().simple().to_string(),
        chrono::Utc::now(),
    )?;
    app.catalog.create_event_type(&org.id, def.clone())?;
    app.store.create_table(&org.id, def.clone())?;
    Ok(json_response(StatusCode::CREATED, &def_json(&def)))
}

pub(crate) async fn list(Tenant { app, org }: Tenant) -> Result<Response> {
    let items: Vec<Value> = app
        .catalog
        .event_types(&org.id)
        .iter()
        .map(def_json)
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "items": items })))
}

pub(crate) async fn show(
    Tenant { app, org }: Tenant,
    Path(slug): Path<String>,
) -> Result<Response> {
    Ok(json_response(
        StatusCode::OK,
        &def_json(&app.event_type(&org, &slug)?),
    ))
}

/// `GET /rawmetrics/{slug}/stats`: where the type's rows are, from the manifest and the
/// buffer, without reading a row (a query of its own counts live events).
pub(crate) async fn stats(
    Tenant { app, org }: Tenant,
    Path(slug): Path<String>,
) -> Result<Response> {
    let table = app.table(&org, &slug)?;
    let manifest = table.manifest();
    let (buffered_rows, buffered_bytes, _) = table.buffered();
    let snapshot = table.snapshot()?;
    let file_rows: u64 = manifest.files.iter().map(|f| f.rows).sum();
    let file_bytes: u64 = manifest.files.iter().map(|f| f.size).sum();
    let latest = manifest
        .files
        .iter()
        .map(|f| f.max_ts)
        .chain(snapshot.buffer_ts_range.map(|(_, hi)| hi))
        .max();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "buffered": {"rows": buffered_rows, "bytes": buffered_bytes},
            "persisted": {"rows": file_rows, "files": manifest.files.len(), "bytes": file_bytes},
            "deletions": snapshot.tombstones.len(),
            "latest_timestamp": latest.map(meterbase_schema::timestamp::format_micros),
        }),
    ))
}

/// May rename and add `Nullable` fields; anything else is 400.
pub(crate) async fn patch(
    Tenant { app, org }: Tenant,
    Path(slug): Path<String>,
    body: Body,
) -> Result<Response> {
    let def = app.event_type(&org, &slug)?;
    let patch: Map<String, Value> = json_body(body).await?;
    let next = def.patched(&patch)?;
    app.catalog.replace_event_type(&org.id, next.clone())?;
    if let Some(t) = app.store.table(&org.id, &next.id) {
        t.set_def(next.clone())?;
    }
    Ok(json_response(StatusCode::OK, &def_json(&next)))
}

/// 409 while it holds events, unless `?force=true`.
pub(crate) async fn delete(
    Tenant { app, org }: Tenant,
    Path(slug): Path<String>,
    params: Params,
) -> Result<Response> {
    let def = app.event_type(&org, &slug)?;
    let force = params.get("force") == Some("true");
    if let Some(t) = app.store.table(&org.id, &def.id)
        && t.holds_rows()
        && !force
    {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "event type {:?} holds events; DELETE with ?force=true to delete them too",
                def.api_slug
            ),
        ));
    }
    app.catalog.delete_event_type(&org.id, &def.api_slug)?;
    app.store
        .drop_table(&org.id, &def.id, &def.api_slug)
        .await?;
    Ok(no_content())
}
