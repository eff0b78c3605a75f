//! `/billable_metrics`: create, change (a new version), list, show, versions, delete, usage
//! evaluation (with the version in force at `as_of`) and preview of a candidate definition.

use arrow::array::{Array, AsArray};
use arrow::datatypes::TimestampMicrosecondType;
use axum::body::Body;
use axum::extract::Path;
use axum::response::Response;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use hyper::StatusCode;
use meterbase_catalog::{MetricVersion, Organisation, StoredMetric};
use meterbase_metrics::{Metric, MetricError, MetricSpec, UsageRequest, Window};
use meterbase_query::format::write_json_value;
use meterbase_schema::timestamp::format_micros;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::App;
use crate::auth::Tenant;
use crate::http::{
    Params, Result, bytes_response, json_response, no_content, parse_json, read_body,
};
use crate::problem::Problem;

/// The path word of a new definition's preview, so never a slug.
const PREVIEW: &str = "preview";

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A definition as shown inside a version: what runs, without the metric's timestamps.
fn definition_json(m: &Metric) -> Value {
    let mut v = serde_json::to_value(m).unwrap_or(Value::Null);
    if let Value::Object(o) = &mut v {
        o.remove("created_at");
    }
    v
}

/// A metric as `GET /billable_metrics/{slug}` shows it: the definition of `version`, when the
/// metric was created (its version 1), and which version this is and since when.
fn metric_json(stored: &StoredMetric, version: &MetricVersion, m: &Metric) -> Value {
    let mut v = definition_json(m);
    let created = stored
        .versions
        .first()
        .map_or(m.created_at, |first| first.created_at);
    if let Value::Object(o) = &mut v {
        o.insert(
            "created_at".into(),
            json!(created.to_rfc3339_opts(SecondsFormat::Secs, true)),
        );
        o.insert("version".into(), json!(version.version));
        o.insert(
            "version_created_at".into(),
            json!(rfc3339(version.created_at)),
        );
    }
    v
}

pub(crate) fn load(app: &App, org: &Organisation, slug: &str) -> Result<StoredMetric> {
    app.catalog
        .metric(&org.id, slug)
        .ok_or_else(|| Problem::not_found(format!("no billable metric {slug:?}")))
}

fn decode(slug: &str, v: &MetricVersion) -> Result<Metric> {
    serde_json::from_value(v.body.clone()).map_err(|e| {
        Problem::internal(format!(
            "stored metric {slug:?} version {} is unreadable: {e}",
            v.version
        ))
    })
}

fn current(slug: &str, stored: &StoredMetric) -> Result<(MetricVersion, Metric)> {
    let v = stored
        .current()
        .ok_or_else(|| Problem::internal(format!("stored metric {slug:?} has no version")))?;
    Ok((v.clone(), decode(slug, v)?))
}

/// A definition for the metric at `slug`: its slug is the path's (a definition naming
/// another is refused rather than silently renamed or forked).
fn for_slug(mut spec: MetricSpec, slug: &str) -> std::result::Result<MetricSpec, MetricError> {
    match &spec.slug {
        Some(s) if s != slug => Err(MetricError::Invalid(format!(
            "slug {s:?} differs from the metric's, {slug:?}; a metric keeps its slug across versions"
        ))
        .at("/slug")),
        _ => {
            spec.slug = Some(slug.to_string());
            Ok(spec)
        }
    }
}

/// Checks a definition exactly as creation does, against the current schemas.
async fn check(app: &App, org: &Organisation, spec: MetricSpec) -> Result<Metric> {
    let tables = app.snapshots(org)?;
    let types = app.catalog.event_types(&org.id);
    Ok(meterbase_metrics::create(&app.engine, &org.id, tables, &types, spec).await?)
}

fn body_of(m: &Metric) -> Result<Value> {
    serde_json::to_value(m).map_err(|e| Problem::internal(e.to_string()))
}

pub(crate) async fn create(Tenant { app, org }: Tenant, body: Body) -> Result<Response> {
    let body = read_body(body, 1 << 20).await?;
    let spec: MetricSpec = parse_json(&body)?;
    let metric = check(&app, &org, spec).await?;
    if metric.slug == PREVIEW {
        return Err(MetricError::Invalid(format!(
            "{PREVIEW:?} cannot be a metric's slug: POST /billable_metrics/{PREVIEW} previews a new definition"
        ))
        .at("/slug")
        .into());
    }
    app.catalog.create_metric(
        &org.id,
        &metric.slug,
        metric.reads.clone(),
        body_of(&metric)?,
    )?;
    let stored = load(&app, &org, &metric.slug)?;
    let (version, metric) = current(&metric.slug, &stored)?;
    Ok(json_response(
        StatusCode::CREATED,
        &metric_json(&stored, &version, &metric),
    ))
}

/// `PUT /billable_metrics/{slug}`: a full definition becomes the next version; the earlier
/// ones stay, for `as_of` and the versions list.
pub(crate) async fn replace(
    Tenant { app, org }: Tenant,
    Path(slug): Path<String>,
    body: Body,
) -> Result<Response> {
    let body = read_body(body, 1 << 20).await?;
    let spec: MetricSpec = parse_json(&body)?;
    load(&app, &org, &slug)?;
    let metric = check(&app, &org, for_slug(spec, &slug)?).await?;
    app.catalog
        .add_metric_version(&org.id, &slug, metric.reads.clone(), body_of(&metric)?)?;
    let stored = load(&app, &org, &slug)?;
    let (version, metric) = current(&slug, &stored)?;
    Ok(json_response(
        StatusCode::OK,
        &metric_json(&stored, &version, &metric),
    ))
}

pub(crate) async fn list(Tenant { app, org }: Tenant) -> Result<Response> {
    let items: Vec<Value> = app
        .catalog
        .metrics(&org.id)
        .into_iter()
        .filter_map(|s| {
            let (v, m) = current(&s.slug, &s).ok()?;
            Some(metric_json(&s, &v, &m))
        })
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "items": items })))
}

pub(crate) async fn show(
    Tenant { app, org }: Tenant,
    Path(slug): Path<String>,
) -> Result<Response> {
    let stored = load(&app, &org, &slug)?;
    let (version, metric) = current(&slug, &stored)?;
    Ok(json_response(
        StatusCode::OK,
        &metric_json(&stored, &version, &metric),
    ))
}

/// `GET /billable_metrics/{slug}/versions`, oldest first.
pub(crate) async fn versions(
    Tenant { app, org }: Tenant,
    Path(slug): Path<String>,
) -> Result<Response> {
    let stored = load(&app, &org, &slug)?;
    let versions = stored
        .versions
        .iter()
        .map(|v| {
            Ok(json!({
                "version": v.version,
                "created_at": rfc3339(v.created_at),
                "definition": definition_json(&decode(&slug, v)?),
            }))
        })
        .collect::<Result<Vec<Value>>>()?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"metric": slug, "versions": versions}),
    ))
}

pub(crate) async fn delete(
    Tenant { app, org }: Tenant,
    Path(slug): Path<String>,
) -> Result<Response> {
    app.catalog.delete_metric(&org.id, &slug)?;
    Ok(no_content())
}

/// The definition in force at `as_of` reproduces what was billed then; without it, today's.
pub(crate) fn in_force(
    stored: &StoredMetric,
    slug: &str,
    as_of: Option<i64>,
) -> Result<(MetricVersion, Metric)> {
    let version = match as_of {
        None => stored.current(),
        Some(t) => stored.in_force_at(t),
    }
    .ok_or_else(|| {
        let since = stored
            .versions
            .first()
            .map_or_else(String::new, |v| rfc3339(v.created_at));
        Problem::not_found(format!(
            "billable metric {slug:?} did not exist at as_of {}: its version 1 took effect at {since}",
            as_of.map(format_micros).unwrap_or_default()
        ))
    })?
    .clone();
    let metric = decode(slug, &version)?;
    Ok((version, metric))
}

/// `start_date` and `end_date` of a usage-style query, both required; plain days begin at
/// midnight in `tz`.
pub(crate) fn period(q: &Params, tz: chrono_tz::Tz) -> Result<(i64, i64)> {
    let instant = |name: &str| -> Result<i64> {
        let text = q
            .get(name)
            .ok_or_else(|| Problem::bad_request(format!("{name} is required")))?;
        Ok(meterbase_metrics::parse_instant(text, tz)?)
    };
    Ok((instant("start_date")?, instant("end_date")?))
}

pub(crate) fn time_zone(text: Option<&str>) -> Result<chrono_tz::Tz> {
    match text {
        None => Ok(chrono_tz::UTC),
        Some(t) => t.parse().map_err(|_| {
            Problem::bad_request(format!(
                "tz {t:?} is not an IANA time zone (e.g. Europe/Berlin)"
            ))
        }),
    }
}

pub(crate) async fn usage(
    Tenant { app, org }: Tenant,
    Path(slug): Path<String>,
    q: Params,
) -> Result<Response> {
    let stored = load(&app, &org, &slug)?;
    let tz = time_zone(q.get("tz"))?;
    let (start, end) = period(&q, tz)?;
    let window: Option<Window> = q.get("window").map(str::parse).transpose()?;
    let as_of = q.get("as_of").map(|t| app.parse_as_of(t)).transpose()?;
    let customer_id = q.get("customer_id");
    let (version, metric) = in_force(&stored, &slug, as_of)?;
    let request = UsageRequest {
        start,
        end,
        customer_id,
        window,
        tz,
        as_of,
    };
    let tables = app.snapshots(&org)?;
    let evaluations =
        meterbase_metrics::evaluate(&app.engine, &org.id, tables, &metric, &request).await?;
    let mut rows: Vec<(i64, String, String)> = Vec::new();
    for e in &evaluations {
        let schema = &e.output.schema;
        let cid = schema.index_of("customer_id").ok();
        let wcol = schema.index_of("window_start").ok();
        for batch in &e.output.batches {
            for r in 0..batch.num_rows() {
                let mut obj = String::from("{");
                let mut sort_key = String::new();
                let mut first = true;
                let mut push = |obj: &mut String, name: &str, value: &str| {
                    if !first {
                        obj.push(',');
                    }
                    first = false;
                    obj.push_str(&json!(name).to_string());
                    obj.push(':');
                    obj.push_str(value);
                };
                let cell = |i: usize| {
                    let mut s = String::new();
                    write_json_value(&mut s, batch.column(i), r);
                    s
                };
                if let Some(i) = cid {
                    sort_key = cell(i);
                    push(&mut obj, "customer_id", &sort_key);
                }
                if let Ok(i) = schema.index_of("value") {
                    push(&mut obj, "value", &cell(i));
                }
                // The window: the evaluation's, or the row's own when one query answered
                // every window.
                let window = e.window_start.or_else(|| {
                    wcol.and_then(|i| {
                        batch
                            .column(i)
                            .as_primitive_opt::<TimestampMicrosecondType>()
                            .filter(|a| a.is_valid(r))
                            .map(|a| a.value(r))
                    })
                });
                if let Some(ws) = window {
                    push(
                        &mut obj,
                        "window_start",
                        &json!(format_micros(ws)).to_string(),
                    );
                }
                for (i, f) in schema.fields().iter().enumerate() {
                    if !matches!(f.name().as_str(), "customer_id" | "value" | "window_start") {
                        let v = cell(i);
                        sort_key.push('\0');
                        sort_key.push_str(&v);
                        push(&mut obj, f.name(), &v);
                    }
                }
                obj.push('}');
                rows.push((window.unwrap_or(0), sort_key, obj));
            }
        }
    }
    rows.sort();
    let mut body = format!(
        "{{\"metric\":{},\"version\":{},\"start_date\":{},\"end_date\":{},",
        json!(metric.slug),
        version.version,
        json!(format_micros(start)),
        json!(format_micros(end))
    );
    if metric.period == meterbase_metrics::Period::AllTime {
        body.push_str("\"period\":\"all_time\",");
    }
    body.push_str("\"rows\":[");
    for (i, (_, _, row)) in rows.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(row);
    }
    body.push_str("]}");
    let mut response = bytes_response(StatusCode::OK, "application/json", Bytes::from(body));
    if window.is_some() {
        // How the windows were answered: all in one query (a single window is one query
        // too), or one query each (a SQL metric whose shape does not allow one; see
        // docs/metrics.md).
        let how = match evaluations.len() {
            1 => "one-query",
            _ => "per-window",
        };
        response
            .headers_mut()
            .insert(WINDOWS_HEADER, axum::http::HeaderValue::from_static(how));
    }
    if let Some(served) = evaluations.iter().find_map(|e| e.served) {
        let text = format!(
            "kept={}; computed={}; combined={}; raw_files={}; buffered_rows={}",
            served.cached_files,
            served.computed_files,
            served.combined_files,
            served.raw_files,
            served.buffered_rows
        );
        if let Ok(value) = axum::http::HeaderValue::from_str(&text) {
            response.headers_mut().insert(PARTIALS_HEADER, value);
        }
    }
    Ok(response)
}

/// Says how a windowed usage answer was computed.
const WINDOWS_HEADER: &str = "x-meterbase-windows";

/// Says where an answer from per-file partial aggregates came from.
const PARTIALS_HEADER: &str = "x-meterbase-partials";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PreviewPeriodText {
    start_date: String,
    end_date: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PreviewBody {
    definition: MetricSpec,
    periods: Vec<PreviewPeriodText>,
    #[serde(default)]
    customer_id: Option<String>,
    /// Where plain dates (`2025-07-01`) begin, as for usage.
    #[serde(default)]
    tz: Option<String>,
}

/// `POST /billable_metrics/{slug}/preview`: the candidate is checked as a `PUT` would check
/// it, then both it and the current version are evaluated on every period; nothing is stored.
pub(crate) async fn preview(
    Tenant { app, org }: Tenant,
    Path(slug): Path<String>,
    body: Body,
) -> Result<Response> {
    let stored = load(&app, &org, &slug)?;
    let (version, current_metric) = current(&slug, &stored)?;
    previewed(
        &app,
        &org,
        Some((&slug, version.version, &current_metric)),
        body,
    )
    .await
}

/// `POST /billable_metrics/preview`: a definition not created yet, evaluated on every period
/// as creation would store it (`current` is null); nothing is stored. `preview` is therefore
/// not a metric slug.
pub(crate) async fn preview_new(Tenant { app, org }: Tenant, body: Body) -> Result<Response> {
    previewed(&app, &org, None, body).await
}

async fn previewed(
    app: &App,
    org: &Organisation,
    existing: Option<(&str, u32, &Metric)>,
    body: Body,
) -> Result<Response> {
    let body = read_body(body, 1 << 20).await?;
    let req: PreviewBody = parse_json(&body)?;
    let tz = time_zone(req.tz.as_deref())?;
    if req.periods.len() > meterbase_metrics::MAX_PREVIEW_PERIODS {
        return Err(MetricError::Invalid(format!(
            "{} periods; at most {} per preview",
            req.periods.len(),
            meterbase_metrics::MAX_PREVIEW_PERIODS
        ))
        .at("/periods")
        .into());
    }
    let periods = req
        .periods
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let at = |name: &str, text: &str| {
                meterbase_metrics::parse_instant(text, tz)
                    .map_err(|e| e.at(&format!("/periods/{i}/{name}")))
            };
            Ok((
                at("start_date", &p.start_date)?,
                at("end_date", &p.end_date)?,
            ))
        })
        .collect::<std::result::Result<Vec<(i64, i64)>, MetricError>>()?;
    let spec = match existing {
        Some((slug, _, _)) => for_slug(req.definition, slug).map_err(|e| e.under("/definition"))?,
        None => req.definition,
    };
    let tables = app.snapshots(org)?;
    let types = app.catalog.event_types(&org.id);
    let candidate = meterbase_metrics::create(&app.engine, &org.id, tables.clone(), &types, spec)
        .await
        .map_err(|e| match e {
            e @ (MetricError::Invalid(_) | MetricError::Field { .. }) => e.under("/definition"),
            other => other,
        })?;
    let answers = meterbase_metrics::preview(
        &app.engine,
        &org.id,
        tables,
        existing.map(|(_, _, m)| m),
        &candidate,
        &periods,
        req.customer_id.as_deref(),
    )
    .await?;
    let mut out = match existing {
        Some((slug, version, _)) => format!(
            "{{\"metric\":{},\"version\":{},\"rows\":[",
            json!(slug),
            version
        ),
        None => format!(
            "{{\"metric\":{},\"version\":null,\"rows\":[",
            json!(candidate.slug)
        ),
    };
    let mut first = true;
    for period in &answers {
        let (start, end) = (
            json!(format_micros(period.start)),
            json!(format_micros(period.end)),
        );
        for row in &period.rows {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str("{\"customer_id\":");
            out.push_str(&row.key.customer_id);
            for (name, value) in &row.key.dimensions {
                out.push(',');
                out.push_str(&json!(name).to_string());
                out.push(':');
                out.push_str(value);
            }
            out.push_str(&format!(
                ",\"start_date\":{start},\"end_date\":{end},\"current\":{},\"candidate\":{},\"difference\":{}}}",
                row.current.as_deref().unwrap_or("null"),
                row.candidate.as_deref().unwrap_or("null"),
                row.difference
            ));
        }
    }
    out.push_str("]}");
    Ok(bytes_response(
        StatusCode::OK,
        "application/json",
        Bytes::from(out),
    ))
}
