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

/// Readiness: the database and the object store answer, and the server is not
/// shutting down (after SIGTERM it answers 503 `draining` while it finishes the
/// requests in flight).
#[utoipa::path(get, path = "/readyz", tag = "health", security(()),
    responses(
        (status = 200, description = "ready", body = Readiness),
        (status = 503, description = "a dependency is unreachable, or the server is shutting down", body = Readiness)
    ))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let s = &state.services;
    let (db, store) = tokio::join!(s.registry.ping(), s.store.ping());
    let draining = s.draining.load(std::sync::atomic::Ordering::Relaxed);
    let ready = db.is_ok() && store.is_ok() && !draining;
    let body = Readiness {
        status: if draining {
            "draining"
        } else if ready {
            "ready"
        } else {
            "unavailable"
        }
        .into(),
        database: db.is_ok(),
        store: store.is_ok(),
        runtimes: s.runtimes.names(),
        torchscript_sandbox: s.runtimes.sandbox_status(),
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
    let gauges = Gauges { loaded: s.pool.list() };
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
    // Only names the registry accepted become labels (unbounded label sets from
    // made-up names in paths would grow the server's memory): the model of a
    // request that succeeded, or of one this server resolved before; the version
    // that answered, or the path's version of a request that succeeded.
    let ok = response.status().is_success();
    let answered = response.headers().get(zoo_api::headers::MODEL_VERSION).and_then(|v| v.to_str().ok());
    let known = zoo_api::names::valid_model_name(&model)
        && (ok || answered.is_some() || state.services.knows_model(&model))
        && !matches!(status, 401 | 403 | 404);
    let version = match answered {
        Some(v) => v.to_string(),
        None if ok && zoo_api::names::valid_version(&path_version) => path_version,
        None => String::new(),
    };
    let (model, version) = if known { (model, version) } else { (String::new(), String::new()) };
    state.services.metrics.request(&route, &model, &version, status, started.elapsed());
    response
}
