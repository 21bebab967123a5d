//! API keys (admin scope).

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use zoo_api::{CreateKeyRequest, CreatedKey, ErrorBody, KeyInfo, KeyList, Scope};

use super::{ApiPath, read_json};
use crate::AppState;
use crate::auth::{self, Caller};
use crate::error::{Error, Result};

/// Create a key. The secret is in this response only.
#[utoipa::path(post, path = "/v1/keys", tag = "keys",
    request_body = CreateKeyRequest,
    responses(
        (status = 201, body = CreatedKey),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "forbidden: admin scope needed", body = ErrorBody),
        (status = 413, description = "payload_too_large", body = ErrorBody),
        (status = 415, description = "unsupported_media_type", body = ErrorBody)
    ))]
pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    h: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<CreatedKey>)> {
    caller.require(Scope::Admin, None)?;
    let req: CreateKeyRequest = read_json(&h, body, 64 * 1024).await?;
    let name = req.name.trim();
    if name.is_empty() || name.len() > 200 || name.chars().any(char::is_control) {
        return Err(Error::InvalidRequest("name must be 1-200 printable characters".into()));
    }
    if req.scopes.is_empty() {
        return Err(Error::InvalidRequest("scopes must name at least one of read, predict, deploy, admin".into()));
    }
    if req.models.len() > 100
        || req.models.iter().any(|p| {
            p.is_empty()
                || p.len() > 128
                || !p.chars().all(|c| c == '*' || c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        })
    {
        return Err(Error::InvalidRequest(
            "models must be up to 100 patterns of a-z, 0-9, '.', '_', '-' and '*'".into(),
        ));
    }
    if req.expires_at.is_some_and(|e| e <= chrono::Utc::now()) {
        return Err(Error::InvalidRequest("expires_at is in the past".into()));
    }
    let mut scopes = req.scopes.clone();
    scopes.sort();
    scopes.dedup();
    let new = auth::generate(name, scopes, req.models.clone(), req.expires_at);
    state.services.registry.create_key(&new.record).await?;
    tracing::info!(key = %new.record.id, by = %caller.key_id, "API key created");
    Ok((StatusCode::CREATED, Json(CreatedKey { key: new.key, info: auth::key_info(&new.record) })))
}

/// List keys (never their secrets).
#[utoipa::path(get, path = "/v1/keys", tag = "keys",
    responses(
        (status = 200, body = KeyList),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "forbidden: admin scope needed", body = ErrorBody)
    ))]
pub async fn list_keys(State(state): State<AppState>, caller: Caller) -> Result<Json<KeyList>> {
    caller.require(Scope::Admin, None)?;
    let keys = state.services.registry.list_keys().await?;
    Ok(Json(KeyList { keys: keys.iter().map(auth::key_info).collect() }))
}

/// Revoke a key: it stops working at once on this server, and within 5 seconds on others.
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "keys",
    params(("id" = String, Path, description = "Key id (the part after zk_)")),
    responses(
        (status = 200, body = KeyInfo),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "forbidden: admin scope needed", body = ErrorBody),
        (status = 404, description = "key_not_found", body = ErrorBody)
    ))]
pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<KeyInfo>> {
    caller.require(Scope::Admin, None)?;
    let reg = &state.services.registry;
    if !reg.revoke_key(&id, chrono::Utc::now()).await? {
        return Err(Error::KeyNotFound(id));
    }
    state.keys.forget(&id);
    tracing::info!(key = %id, by = %caller.key_id, "API key revoked");
    let record = reg.get_key(&id).await?.ok_or_else(|| Error::KeyNotFound(id.clone()))?;
    Ok(Json(auth::key_info(&record)))
}
