//! Aliases: move and remove.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use zoo_api::{AliasInfo, AliasList, AliasName, ErrorBody, ModelName, Scope, SetAliasRequest};

use super::{ApiPath, read_json};
use crate::AppState;
use crate::auth::Caller;
use crate::error::Result;

/// Body limit of alias requests: they carry a version string.
const ALIAS_BODY_LIMIT: usize = 4096;

/// Point an alias at a version (creating the alias if new). The version is
/// loaded and warmed before the alias moves, so no request fails; requests in
/// flight on the previous version finish there. Every move is recorded.
#[utoipa::path(put, path = "/v1/models/{name}/aliases/{alias}", tag = "models",
    params(("name" = ModelName, Path, description = "Model name"),
        ("alias" = AliasName, Path, description = "Alias, e.g. production: a-z, 0-9, '.', '_', '-', starting with a letter")),
    request_body(content = SetAliasRequest, example = json!({"version": "2"})),
    responses(
        (status = 200, description = "The alias now points at the version", body = AliasInfo),
        (status = 400, description = "invalid_name or invalid_request", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "forbidden: the key lacks the deploy scope or the model", body = ErrorBody),
        (status = 404, description = "model_not_found or version_not_found", body = ErrorBody),
        (status = 409, description = "not_servable: the version failed to load", body = ErrorBody),
        (status = 413, description = "payload_too_large", body = ErrorBody),
        (status = 415, description = "unsupported_media_type", body = ErrorBody),
        (status = 503, description = "unavailable: the database or store is unreachable", body = ErrorBody)
    ))]
pub async fn set_alias(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((name, alias)): ApiPath<(ModelName, AliasName)>,
    h: HeaderMap,
    body: Body,
) -> Result<Json<AliasInfo>> {
    caller.require(Scope::Deploy, Some(&name))?;
    let req: SetAliasRequest =
        read_json(&h, body, ALIAS_BODY_LIMIT, state.services.config.upload_idle_timeout()).await?;
    Ok(Json(state.services.set_alias(&caller, &name, &alias, &req.version).await?))
}

/// Remove an alias. Predictions through it get 404 from then on; the default
/// route falls back to the newest version when `production` is removed.
#[utoipa::path(delete, path = "/v1/models/{name}/aliases/{alias}", tag = "models",
    params(("name" = ModelName, Path, description = "Model name"), ("alias" = AliasName, Path, description = "Alias")),
    responses(
        (status = 200, description = "Removed; `previous` is the version it pointed at", body = AliasInfo),
        (status = 400, description = "invalid_name", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "forbidden: the key lacks the deploy scope or the model", body = ErrorBody),
        (status = 404, description = "model_not_found or version_not_found (no such alias)", body = ErrorBody),
        (status = 503, description = "unavailable: the database is unreachable", body = ErrorBody)
    ))]
pub async fn delete_alias(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((name, alias)): ApiPath<(ModelName, AliasName)>,
) -> Result<Json<AliasInfo>> {
    caller.require(Scope::Deploy, Some(&name))?;
    Ok(Json(state.services.delete_alias(&caller, &name, &alias).await?))
}

/// The model's aliases and their history: who moved which alias from which
/// version to which, and when (newest first).
#[utoipa::path(get, path = "/v1/models/{name}/aliases", tag = "models",
    params(("name" = ModelName, Path, description = "Model name")),
    responses(
        (status = 200, body = AliasList),
        (status = 400, description = "invalid_name", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "forbidden: the key lacks the read scope or the model", body = ErrorBody),
        (status = 404, description = "model_not_found", body = ErrorBody),
        (status = 503, description = "unavailable: the database is unreachable", body = ErrorBody)
    ))]
pub async fn list_aliases(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<ModelName>,
) -> Result<Json<AliasList>> {
    caller.require(Scope::Read, Some(&name))?;
    Ok(Json(state.services.list_aliases(&name).await?))
}
