//! API keys (admin scope).

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use zoo_api::{CreateKeyRequest, CreatedKey, ErrorBody, KeyId, KeyInfo, KeyList, RevokeQuery};

use super::{ApiPath, ApiQuery, read_json};
use crate::AppState;
use crate::auth::Caller;
use crate::error::Result;

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
    let req: CreateKeyRequest = read_json(&h, body, 64 * 1024, state.services.config.upload_idle_timeout()).await?;
    Ok((StatusCode::CREATED, Json(state.services.create_key(&caller, &req).await?)))
}

/// List keys (never their secrets).
#[utoipa::path(get, path = "/v1/keys", tag = "keys",
    responses(
        (status = 200, body = KeyList),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "forbidden: admin scope needed", body = ErrorBody)
    ))]
pub async fn list_keys(State(state): State<AppState>, caller: Caller) -> Result<Json<KeyList>> {
    Ok(Json(KeyList { keys: state.services.list_keys(&caller).await? }))
}

/// Revoke a key: it stops working at once on this server, and within 5 seconds on
/// others. The last active admin key for every model cannot be revoked (unless
/// the server has `ZOO_ADMIN_KEY`), and revoking the key the request is made with
/// needs `confirm=true`.
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "keys",
    params(("id" = KeyId, Path, description = "Key id (the part after zk_)"), RevokeQuery),
    responses(
        (status = 200, body = KeyInfo),
        (status = 400, description = "invalid_request: a malformed query", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "forbidden: admin scope needed, or a key outside this key's models", body = ErrorBody),
        (status = 404, description = "key_not_found", body = ErrorBody),
        (status = 409, description = "last_admin_key, or confirmation_required: the key of this request", body = ErrorBody)
    ))]
pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<KeyId>,
    ApiQuery(q): ApiQuery<RevokeQuery>,
) -> Result<Json<KeyInfo>> {
    Ok(Json(state.services.revoke_key(&caller, &state.keys, &id, q.confirm.unwrap_or(false)).await?))
}
