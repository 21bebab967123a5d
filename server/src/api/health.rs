//! Liveness and readiness.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use zoo_api::{Health, Readiness};

use crate::AppState;

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
