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
