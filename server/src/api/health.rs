//! Liveness and readiness.

use std::time::Instant;

use axum::Json;
use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use zoo_api::{Health, Readiness};

use crate::AppState;
use crate::metrics::Gauges;

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "health", security(()),
    responses((status = 200, description = "alive", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok".into(), version: env!("CARGO_PKG_VERSION").into() })
}

/// Readiness: the database and the object store answer.
#[utoipa::path(get, path = "/readyz", tag = "health", security(()),
    responses(
        (status = 200, description = "ready", body = Readiness),
        (status = 503, description = "a dependency is unreachable", body = Readiness)
    ))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let s = &state.services;
    let (db, store) = tokio::join!(s.registry.ping(), s.store.ping());
    let ready = db.is_ok() && store.is_ok();
    let body = Readiness {
        status: if ready { "ready" } else { "unavailable" }.into(),
        database: db.is_ok(),
        store: store.is_ok(),
        runtimes: s.runtimes.names(),
    };
    (if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, Json(body))
}

/// Prometheus metrics in the text exposition format: requests by route, model,
/// version and status; predict latency split into queue, inference and total;
/// batch sizes; queue depth; loaded models; upload bytes.
#[utoipa::path(get, path = "/metrics", tag = "health", security(()),
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let s = &state.services;
    let gauges = Gauges { loaded: s.loaded_versions() };
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], s.metrics.render(&gauges))
}

/// Count every routed request and its latency, by route template, model, version
/// and status.
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_default();
    let (mut parts, body) = req.into_parts();
    let params = RawPathParams::from_request_parts(&mut parts, &state).await.ok();
    let param = |key: &str| {
        params.as_ref().and_then(|p| p.iter().find(|(k, _)| *k == key).map(|(_, v)| v.to_string())).unwrap_or_default()
    };
    let (model, path_version) = (param("name"), param("version"));
    let response = next.run(Request::from_parts(parts, body)).await;
    let status = response.status().as_u16();
    // Names the registry never accepted would make the label set unbounded.
    let known = !matches!(status, 401 | 403 | 404) && zoo_api::names::valid_model_name(&model);
    let version = response
        .headers()
        .get(zoo_api::headers::MODEL_VERSION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or(path_version);
    let (model, version) = if known { (model, version) } else { (String::new(), String::new()) };
    state.services.metrics.request(&route, &model, &version, status, started.elapsed());
    response
}
