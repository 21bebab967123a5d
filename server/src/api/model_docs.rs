//! Per-model API documentation: an OpenAPI 3.1 document generated from each
//! version's signature, task and limits, and a Swagger UI page for it.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use serde_json::Value;
use zoo_api::{ErrorBody, ModelName, Scope, VersionName};

use super::ApiPath;
use crate::AppState;
use crate::auth::Caller;
use crate::error::Result;
use crate::service::predict::Target;

/// The OpenAPI 3.1 document of the model's default version (alias production,
/// else the newest): its predict routes with request and response schemas built
/// from the signature (input names, dtypes, shapes), the labels of a classifier,
/// the limits, and an example request.
#[utoipa::path(get, path = "/v1/models/{name}/openapi.json", tag = "models",
    params(("name" = ModelName, Path, description = "Model name")),
    responses(
        (status = 200, description = "An OpenAPI 3.1 document", body = Object),
        (status = 400, description = "invalid_name", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "forbidden: the key lacks the read scope or the model", body = ErrorBody),
        (status = 404, description = "model_not_found or version_not_found", body = ErrorBody),
        (status = 503, description = "unavailable", body = ErrorBody)
    ))]
pub async fn model_openapi(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<ModelName>,
) -> Result<Json<Value>> {
    caller.require(Scope::Read, Some(&name))?;
    Ok(Json(state.services.model_openapi(&name, Target::Default).await?))
}

/// The OpenAPI 3.1 document of one version.
#[utoipa::path(get, path = "/v1/models/{name}/versions/{version}/openapi.json", tag = "models",
    params(("name" = ModelName, Path), ("version" = VersionName, Path)),
    responses(
        (status = 200, description = "An OpenAPI 3.1 document", body = Object),
        (status = 400, description = "invalid_name", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "forbidden: the key lacks the read scope or the model", body = ErrorBody),
        (status = 404, description = "model_not_found or version_not_found", body = ErrorBody),
        (status = 503, description = "unavailable", body = ErrorBody)
    ))]
pub async fn version_openapi(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((name, version)): ApiPath<(ModelName, VersionName)>,
) -> Result<Json<Value>> {
    caller.require(Scope::Read, Some(&name))?;
    Ok(Json(state.services.model_openapi(&name, Target::Version(&version)).await?))
}

/// Swagger UI for a model's own API (served from the binary; works offline). The
/// document is fetched with the browser's session, or with the key entered on
/// the page (kept in the tab's session storage only).
pub async fn model_docs_page(ApiPath(name): ApiPath<ModelName>) -> Result<impl IntoResponse> {
    let page = DOCS_PAGE.replace("{{NAME}}", &name);
    Ok(([(header::CACHE_CONTROL, "no-store")], Html(page)))
}

const DOCS_PAGE: &str = r##"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{NAME}} · zoo API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css">
<style>
  body { margin: 0; font-family: system-ui, sans-serif; }
  .zoo-bar { display: flex; gap: .5rem; align-items: center; padding: .6rem 1rem; background: #1f2933; color: #fff; flex-wrap: wrap; }
  .zoo-bar a { color: #9fd3ff; }
  .zoo-bar input { min-width: 18rem; padding: .3rem; }
</style>
</head>
<body>
<div class="zoo-bar">
  <strong>zoo</strong> · model <code>{{NAME}}</code> · <a href="/models/{{NAME}}">catalogue page</a>
  <label for="zoo-key">API key (if not signed in)</label>
  <input id="zoo-key" type="password" autocomplete="off" placeholder="zk_...">
  <button id="zoo-load" type="button">Load</button>
</div>
<div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script>
  const keyInput = document.getElementById("zoo-key");
  keyInput.value = sessionStorage.getItem("zoo-key") || "";
  function load() {
    const key = keyInput.value.trim();
    if (key) { sessionStorage.setItem("zoo-key", key); } else { sessionStorage.removeItem("zoo-key"); }
    window.ui = SwaggerUIBundle({
      url: "/v1/models/{{NAME}}/openapi.json",
      dom_id: "#swagger-ui",
      requestInterceptor: (req) => {
        if (key) { req.headers["Authorization"] = "Bearer " + key; }
        req.credentials = "same-origin";
        return req;
      },
    });
  }
  document.getElementById("zoo-load").addEventListener("click", load);
  load();
</script>
</body>
</html>
"##;
