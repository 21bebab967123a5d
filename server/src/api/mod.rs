//! HTTP API: thin handlers, registered together with their OpenAPI docs.

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use serde::de::DeserializeOwned;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::{Error, Result};

pub mod aliases;
pub mod health;
pub mod keys;
pub mod kserve;
pub mod model_docs;
pub mod models;
pub mod predict;
pub mod session;
pub mod versions;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "zoo",
        description = "Model registry and deploy service: upload an artifact, get an authenticated, documented prediction endpoint.\n\n\
                       Errors are `{\"error\": {\"code\": \"snake_case\", \"message\": \"...\"}}`; match on `code`.\n\n\
                       Limits (defaults, configurable on the server): upload 4 GiB (`ZOO_MAX_UPLOAD_BYTES`), predict body 32 MiB \
                       (`ZOO_MAX_PREDICT_BYTES`), 256 texts or rows per request (`ZOO_MAX_BATCH_ITEMS`), 60 s per request \
                       (`ZOO_REQUEST_TIMEOUT_SECS`), uploads idle for 30 s are cut off (`ZOO_UPLOAD_IDLE_TIMEOUT_SECS`).",
        license(name = "Apache-2.0")
    ),
    modifiers(&Security),
    components(schemas(zoo_api::RuntimeChoice, zoo_api::LoadPolicy, zoo_api::Task, zoo_api::Format)),
    security(("bearer" = []), ("api_key" = [])),
    tags(
        (name = "health", description = "Liveness and readiness"),
        (name = "models", description = "Models and versions in the registry"),
        (name = "predict", description = "Predictions"),
        (name = "keys", description = "API keys (admin)"),
        (name = "auth", description = "Browser sessions for the web catalogue"),
        (name = "kserve", description = "KServe v2 / Open Inference Protocol (tritonclient and other existing clients)")
    )
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("zk_<id>_<secret>").build(),
            ),
        );
        components
            .add_security_scheme("api_key", SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-api-key"))));
    }
}

/// Every documented route.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .routes(routes!(models::list_models))
        .routes(routes!(models::show_model, models::delete_model))
        .routes(routes!(versions::create_version))
        .routes(routes!(versions::put_version, versions::show_version, versions::delete_version))
        .routes(routes!(versions::download_artifact))
        .routes(routes!(aliases::set_alias, aliases::delete_alias))
        .routes(routes!(aliases::list_aliases))
        .routes(routes!(model_docs::model_openapi))
        .routes(routes!(model_docs::version_openapi))
        .routes(routes!(predict::predict_default))
        .routes(routes!(predict::predict_version))
        .routes(routes!(predict::predict_alias))
        .routes(routes!(keys::create_key, keys::list_keys))
        .routes(routes!(keys::revoke_key))
        .routes(routes!(session::create_session, session::show_session, session::delete_session))
        .routes(routes!(kserve::server_metadata))
        .routes(routes!(kserve::live))
        .routes(routes!(kserve::ready))
        .routes(routes!(kserve::model_metadata))
        .routes(routes!(kserve::version_metadata))
        .routes(routes!(kserve::model_ready))
        .routes(routes!(kserve::version_ready))
        .routes(routes!(kserve::model_infer))
        .routes(routes!(kserve::version_infer))
}

/// The OpenAPI document of the server.
pub fn openapi() -> utoipa::openapi::OpenApi {
    router().split_for_parts().1
}

/// `Path` with errors in the API's format.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e: PathRejection| Error::InvalidRequest(e.body_text()))
    }
}

/// `Query` with errors in the API's format.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e: QueryRejection| Error::InvalidRequest(e.body_text()))
    }
}

/// Read a JSON body up to `limit` bytes, all of it within `deadline` (a client that
/// trickles its body is cut off). JSON is accepted with any JSON-ish or absent
/// Content-Type, and with curl's default form type (`curl -d`).
pub async fn read_json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    deadline: std::time::Duration,
) -> Result<T> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
        let ct = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        let ok = ct.is_empty()
            || ct == "application/json"
            || ct.ends_with("+json")
            || ct == "application/x-www-form-urlencoded"
            || ct == "text/plain";
        if !ok {
            return Err(Error::UnsupportedMediaType(format!("expected a JSON body (application/json), got '{ct}'")));
        }
    }
    let bytes = read_body(body, limit, deadline).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::InvalidRequest(format!("the body is not valid JSON for this route: {e}")))
}

/// The most of a refused body that is read and discarded (and for how long) so
/// that the client, still sending, receives the 413 rather than a reset connection.
const DRAIN_BYTES: usize = 64 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Read a whole body of at most `limit` bytes within `deadline`. Past the limit
/// the rest is read and thrown away (at most [`DRAIN_BYTES`] for [`DRAIN_TIME`], so
/// memory stays bounded) before the 413 is sent: a connection closed on unread
/// data is reset, and most HTTP clients then report a broken pipe instead of
/// the answer.
pub async fn read_body(body: Body, limit: usize, deadline: std::time::Duration) -> Result<bytes::Bytes> {
    use futures::StreamExt;
    let too_large = || Error::PayloadTooLarge(format!("the request body is larger than the limit of {limit} bytes"));
    let timeout = || Error::Timeout(format!("the request body did not arrive within {} seconds", deadline.as_secs()));
    let mut body = body.into_data_stream();
    // Chunks are kept as they come: a body in one chunk (the usual case) is used
    // as it is, without a copy.
    let read = tokio::time::timeout(deadline, async {
        let (mut chunks, mut len) = (Vec::<bytes::Bytes>::new(), 0usize);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| Error::InvalidRequest(format!("could not read the request body: {e}")))?;
            len += chunk.len();
            if len > limit {
                return Ok(None);
            }
            chunks.push(chunk);
        }
        Ok::<_, Error>(Some(if chunks.len() == 1 { chunks.swap_remove(0) } else { chunks.concat().into() }))
    })
    .await
    .map_err(|_| timeout())??;
    if let Some(bytes) = read {
        return Ok(bytes);
    }
    let mut drained = 0usize;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(chunk)) = body.next().await {
            drained += chunk.len();
            if drained > DRAIN_BYTES {
                break;
            }
        }
    })
    .await;
    Err(too_large())
}

/// 404 for unknown routes, in the API's error format.
pub async fn not_found(req: Request) -> Error {
    Error::NotFound(format!("no route for {} {}", req.method(), req.uri().path()))
}

/// 405 in the API's error format.
pub async fn method_not_allowed(req: Request) -> Error {
    Error::MethodNotAllowed(format!("{} is not allowed on {}", req.method(), req.uri().path()))
}
