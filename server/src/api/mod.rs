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
use crate::auth::Caller;
use crate::error::{Error, Result};

pub mod aliases;
pub mod health;
pub mod keys;
pub mod kserve;
pub mod model_docs;
pub mod models;
pub mod multipart;
pub mod openai;
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
    components(schemas(
        zoo_api::RuntimeChoice,
        zoo_api::LoadPolicy,
        zoo_api::Task,
        zoo_api::Format,
        zoo_api::ModelName,
        zoo_api::VersionName,
        zoo_api::AliasName,
        zoo_api::KeyId,
        zoo_api::Sha256Hex
    )),
    security(("bearer" = []), ("api_key" = [])),
    tags(
        (name = "health", description = "Liveness and readiness"),
        (name = "models", description = "Models and versions in the registry"),
        (name = "predict", description = "Predictions"),
        (name = "keys", description = "API keys (admin)"),
        (name = "auth", description = "Browser sessions for the web catalogue"),
        (name = "kserve", description = "KServe v2 / Open Inference Protocol (tritonclient and other existing clients)"),
        (name = "openai", description = "OpenAI-compatible chat and completions for text-generation models (the openai client libraries, base_url `/openai/v1`)")
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
        .routes(routes!(kserve::model_generate))
        .routes(routes!(kserve::version_generate))
        .routes(routes!(kserve::model_generate_stream))
        .routes(routes!(kserve::version_generate_stream))
        .routes(routes!(openai::chat_completions))
        .routes(routes!(openai::completions))
        .routes(routes!(openai::chat_completions_openai))
        .routes(routes!(openai::completions_openai))
        .routes(routes!(openai::list_models))
}

/// The OpenAPI document of the server.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = router().split_for_parts().1;
    finish(&mut doc);
    doc
}

/// What the route annotations cannot say: the session route takes its key in the
/// body or in `Authorization`, so its body is optional; the predict routes also
/// take an image model's image as the body or in a form.
pub fn finish(doc: &mut utoipa::openapi::OpenApi) {
    let image = serde_json::json!({"type": "string", "contentMediaType": "image/*"});
    let media: [(&str, serde_json::Value); 3] = [
        ("image/jpeg", serde_json::json!({"schema": image})),
        ("image/png", serde_json::json!({"schema": image})),
        (
            "multipart/form-data",
            serde_json::json!({"schema": {
                "type": "object",
                "required": ["image"],
                "properties": {
                    "image": {"type": "array", "items": image, "minItems": 1,
                              "description": "image models: the image file; several parts named image answer with a list"},
                    "top_k": {"type": "integer", "minimum": 1}
                }
            }}),
        ),
    ];
    for (path, item) in doc.paths.paths.iter_mut() {
        if path.ends_with("/predict")
            && path.starts_with("/v1/")
            && let Some(body) = item.post.as_mut().and_then(|p| p.request_body.as_mut())
        {
            for (ty, content) in &media {
                if let Ok(c) = serde_json::from_value(content.clone()) {
                    body.content.insert((*ty).to_string(), c);
                }
            }
        }
    }
    if let Some(item) = doc.paths.paths.get_mut("/v1/auth/session")
        && let Some(post) = item.post.as_mut()
        && let Some(body) = post.request_body.as_mut()
    {
        body.required = Some(utoipa::openapi::Required::False);
    }
}

/// `Path` with errors in the API's format.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        axum::extract::Path::<T>::from_request_parts(parts, state).await.map(|p| ApiPath(p.0)).map_err(
            |e: PathRejection| {
                // A typed name (`ModelName`, ...) refused by its own rule.
                if let PathRejection::FailedToDeserializePathParams(d) = &e {
                    let message = match d.kind() {
                        axum::extract::path::ErrorKind::DeserializeError { message, .. } => Some(message.as_str()),
                        axum::extract::path::ErrorKind::Message(m) => Some(m.as_str()),
                        _ => None,
                    };
                    if let Some(rule) = message.and_then(|m| m.split_once(zoo_api::typed::INVALID_NAME)) {
                        return Error::InvalidName(rule.1.to_string());
                    }
                }
                Error::InvalidRequest(e.body_text())
            },
        )
    }
}

/// `Query` with errors in the API's format.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        axum::extract::Query::<T>::from_request_parts(parts, state).await.map(|q| ApiQuery(q.0)).map_err(
            |e: QueryRejection| {
                let text = e.body_text();
                match text.split_once(zoo_api::typed::INVALID_NAME) {
                    Some((_, rule)) => Error::InvalidName(rule.to_string()),
                    None => Error::InvalidRequest(text),
                }
            },
        )
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
    read_json_from(headers, body, limit, deadline, Sender::Authenticated).await
}

/// [`read_json`] for a given sender.
pub async fn read_json_from<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    deadline: std::time::Duration,
    sender: Sender,
) -> Result<T> {
    check_json_type(headers)?;
    let bytes = read_body_from(body, limit, deadline, sender).await?;
    parse_json(&bytes)
}

/// JSON is accepted with any JSON-ish or absent Content-Type, and with curl's
/// default form type (`curl -d`).
pub fn check_json_type(headers: &HeaderMap) -> Result<()> {
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
    Ok(())
}

/// Who calls: the key in the headers, else the session cookie (`auth` checks both).
impl FromRequestParts<AppState> for Caller {
    type Rejection = Error;

    /// A key in the headers, else a session cookie. A session that changes state
    /// must send its CSRF token in `x-csrf-token`.
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller> {
        if let Some(key) = crate::auth::presented_key(&parts.headers) {
            let caller = state.keys.check(key).await?;
            tracing::Span::current().record("key", caller.key_id.as_str());
            return Ok(caller);
        }
        let Some(token) = crate::auth::session::session_cookie(&parts.headers) else {
            return Err(Error::Unauthorized("an API key is required: send 'Authorization: Bearer <key>'".into()));
        };
        let claims = state.sessions.verify(token)?;
        let safe =
            matches!(parts.method, axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS);
        if !safe {
            let given = parts.headers.get(crate::auth::session::CSRF_HEADER).and_then(|v| v.to_str().ok());
            if !crate::auth::session::csrf_matches(&claims, given) {
                return Err(Error::Forbidden(format!(
                    "a request that changes state with a session cookie needs the session's CSRF token in {}",
                    crate::auth::session::CSRF_HEADER
                )));
            }
        }
        let caller = state.keys.check_id(&claims.sub, &claims.kfp).await?;
        tracing::Span::current().record("key", caller.key_id.as_str());
        Ok(caller)
    }
}

pub use crate::pipeline::json::parse as parse_json;

/// Request bodies held in memory at once, across requests.
static BODY_BUDGET: std::sync::OnceLock<std::sync::Arc<tokio::sync::Semaphore>> = std::sync::OnceLock::new();

/// Set how many bytes of request bodies may be held in memory at once (once, at start).
pub fn set_body_budget(bytes: u64) {
    let permits = usize::try_from(bytes).unwrap_or(usize::MAX).min(tokio::sync::Semaphore::MAX_PERMITS);
    let _ = BODY_BUDGET.set(std::sync::Arc::new(tokio::sync::Semaphore::new(permits)));
}

fn body_budget() -> &'static std::sync::Arc<tokio::sync::Semaphore> {
    BODY_BUDGET.get_or_init(|| std::sync::Arc::new(tokio::sync::Semaphore::new(512 << 20)))
}

/// Bodies of requests that carry no key yet (sign-in) share a small budget of
/// their own, so that clients without a key cannot make the server hold much.
const ANONYMOUS_BODY_BUDGET: usize = 8 << 20;

fn anonymous_budget() -> &'static std::sync::Arc<tokio::sync::Semaphore> {
    static BUDGET: std::sync::OnceLock<std::sync::Arc<tokio::sync::Semaphore>> = std::sync::OnceLock::new();
    BUDGET.get_or_init(|| std::sync::Arc::new(tokio::sync::Semaphore::new(ANONYMOUS_BODY_BUDGET)))
}

/// Whose bodies a read counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// A request whose key (or session) was checked before its body is read.
    Authenticated,
    /// A request that carries no key yet (signing in).
    Anonymous,
}

/// A request body read into memory; its bytes count against the server's
/// in-flight body budget until this is dropped.
pub struct BodyBytes {
    bytes: bytes::Bytes,
    _held: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl std::ops::Deref for BodyBytes {
    type Target = bytes::Bytes;

    fn deref(&self) -> &bytes::Bytes {
        &self.bytes
    }
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
///
/// Every chunk kept counts against the in-flight budget (`set_body_budget`): when
/// the bodies being held reach it, the request is refused with 429.
pub async fn read_body(body: Body, limit: usize, deadline: std::time::Duration) -> Result<BodyBytes> {
    read_body_from(body, limit, deadline, Sender::Authenticated).await
}

/// [`read_body`] for a given sender.
pub async fn read_body_from(
    body: Body,
    limit: usize,
    deadline: std::time::Duration,
    sender: Sender,
) -> Result<BodyBytes> {
    use futures::StreamExt;
    let budget = match sender {
        Sender::Authenticated => body_budget(),
        Sender::Anonymous => anonymous_budget(),
    };
    let too_large = || Error::PayloadTooLarge(format!("the request body is larger than the limit of {limit} bytes"));
    let timeout = || Error::Timeout(format!("the request body did not arrive within {} seconds", deadline.as_secs()));
    // Content-Length, when sent, sizes the buffer once (never past the limit).
    let hint = usize::try_from(axum::body::HttpBody::size_hint(&body).lower()).unwrap_or(0).min(limit);
    let mut body = body.into_data_stream();
    // A body in one chunk (the usual case) is used as it is, without a copy; more
    // chunks are copied into one buffer as they come, so at most one chunk is held
    // twice.
    let read = tokio::time::timeout(deadline, async {
        let (mut first, mut rest, mut len) = (None::<bytes::Bytes>, None::<bytes::BytesMut>, 0usize);
        let mut held: Option<tokio::sync::OwnedSemaphorePermit> = None;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| Error::InvalidRequest(format!("could not read the request body: {e}")))?;
            len += chunk.len();
            if len > limit {
                return Ok(None);
            }
            if chunk.is_empty() {
                continue;
            }
            let n = u32::try_from(chunk.len()).unwrap_or(u32::MAX);
            let permit = budget.clone().try_acquire_many_owned(n).map_err(|_| {
                Error::Busy("the server holds as much request data in memory as it may right now; retry".into())
            })?;
            match &mut held {
                Some(h) => h.merge(permit),
                None => held = Some(permit),
            }
            match (&mut rest, first.take()) {
                (Some(buf), _) => buf.extend_from_slice(&chunk),
                (None, None) => first = Some(chunk),
                (None, Some(head)) => {
                    let mut buf = bytes::BytesMut::with_capacity(hint.max(head.len() + chunk.len()));
                    buf.extend_from_slice(&head);
                    buf.extend_from_slice(&chunk);
                    rest = Some(buf);
                }
            }
        }
        let bytes = match (rest, first) {
            (Some(buf), _) => buf.freeze(),
            (None, Some(one)) => one,
            (None, None) => bytes::Bytes::new(),
        };
        Ok::<_, Error>(Some(BodyBytes { bytes, _held: held }))
    })
    .await
    .map_err(|_| timeout())??;
    if let Some(bytes) = read {
        return Ok(bytes);
    }
    // A client without a key gets the answer and a closed connection: the
    // server spends nothing on reading what it will throw away.
    if sender == Sender::Anonymous {
        return Err(too_large());
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

/// `r` with the header naming the version that answered.
pub(crate) fn with_version(mut r: axum::response::Response, version: &str) -> axum::response::Response {
    if let Ok(v) = axum::http::HeaderValue::from_str(version) {
        r.headers_mut().insert(zoo_api::headers::MODEL_VERSION, v);
    }
    r
}

/// A server-sent event whose data is `v` as JSON.
pub(crate) fn json_event(v: &impl serde::Serialize) -> axum::response::sse::Event {
    axum::response::sse::Event::default().data(serde_json::to_string(v).unwrap_or_default())
}
