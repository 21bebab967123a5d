//! Models: list, show, delete.

use axum::Json;
use axum::extract::State;
use zoo_api::{ErrorBody, ListModelsQuery, ModelDetail, ModelList, ModelName, Scope, VersionInfo};

use super::{ApiPath, ApiQuery};
use crate::AppState;
use crate::auth::Caller;
use crate::error::Result;

/// List models (filter by name/description substring, format, task; paginated).
#[utoipa::path(get, path = "/v1/models", tag = "models", params(ListModelsQuery),
    responses(
        (status = 200, body = ModelList),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "forbidden: the key lacks the read scope", body = ErrorBody)
    ))]
pub async fn list_models(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListModelsQuery>,
) -> Result<Json<ModelList>> {
    caller.require(Scope::Read, None)?;
    Ok(Json(state.services.list_models(&caller, &q).await?))
}

/// A model with its ready versions (newest first) and aliases.
#[utoipa::path(get, path = "/v1/models/{name}", tag = "models",
    params(("name" = ModelName, Path, description = "Model name")),
    responses(
        (status = 200, body = ModelDetail),
        (status = 400, description = "invalid_name", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "forbidden", body = ErrorBody),
        (status = 404, description = "model_not_found", body = ErrorBody)
    ))]
pub async fn show_model(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<ModelName>,
) -> Result<Json<ModelDetail>> {
    caller.require(Scope::Read, Some(&name))?;
    Ok(Json(state.services.show_model(&name).await?))
}

/// Delete a model and every version of it. Returns the deleted versions.
#[utoipa::path(delete, path = "/v1/models/{name}", tag = "models",
    params(("name" = ModelName, Path, description = "Model name")),
    responses(
        (status = 200, body = Vec<VersionInfo>),
        (status = 400, description = "invalid_name", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "forbidden: the key lacks the deploy scope", body = ErrorBody),
        (status = 404, description = "model_not_found", body = ErrorBody)
    ))]
pub async fn delete_model(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<ModelName>,
) -> Result<Json<Vec<VersionInfo>>> {
    caller.require(Scope::Deploy, Some(&name))?;
    Ok(Json(state.services.delete_model(&name).await?))
}
