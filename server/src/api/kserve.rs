//! KServe v2 / Open Inference Protocol REST routes (`/v2/...`), so that existing
//! clients such as `tritonclient` work with zoo unchanged. API keys apply as on
//! every other route; errors use the protocol's `{"error": "..."}` body.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::convert::Infallible;

use axum::response::sse::{KeepAlive, Sse};
use zoo_api::kserve::{
    HEADER_CONTENT_LENGTH, V2Error, V2GenerateRequest, V2GenerateResponse, V2InferRequest, V2InferResponse, V2Live,
    V2ModelMetadata, V2Ready, V2ServerMetadata,
};
use zoo_api::{ModelName, Scope, VersionName};

use super::{ApiPath, json_event, with_version};
use crate::AppState;
use crate::auth::Caller;
use crate::error::Error;
use crate::pipeline::generation::{Piece, Settings};
use crate::service::generate::Generating;
use crate::service::predict::Target;

/// An error in the protocol's shape: `{"error": "<code>: <message>"}`.
pub struct V2Failure(Error);

impl From<Error> for V2Failure {
    fn from(e: Error) -> Self {
        V2Failure(e)
    }
}

impl IntoResponse for V2Failure {
    fn into_response(self) -> Response {
        let public = self.0.public();
        let body = Json(V2Error { error: format!("{}: {}", public.code, public.message) });
        public.respond(body)
    }
}

type V2Result<T> = std::result::Result<T, V2Failure>;

/// `Path` for the v2 routes: a bad name is answered in the protocol's error shape.
pub struct V2Path<T>(pub T);

impl<T: serde::de::DeserializeOwned + Send, S: Send + Sync> axum::extract::FromRequestParts<S> for V2Path<T> {
    type Rejection = V2Failure;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> V2Result<Self> {
        ApiPath::<T>::from_request_parts(parts, state).await.map(|p| V2Path(p.0)).map_err(V2Failure)
    }
}

fn caller(c: std::result::Result<Caller, Error>, scope: Scope, model: Option<&str>) -> V2Result<Caller> {
    let c = c?;
    c.require(scope, model)?;
    Ok(c)
}

/// Server metadata: name, version and the protocol extensions zoo implements.
#[utoipa::path(get, path = "/v2", tag = "kserve",
    responses((status = 200, body = V2ServerMetadata), (status = 401, description = "unauthorized", body = V2Error)))]
pub async fn server_metadata(c: std::result::Result<Caller, Error>) -> V2Result<Json<V2ServerMetadata>> {
    caller(c, Scope::Read, None)?;
    Ok(Json(V2ServerMetadata {
        name: "zoo".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        extensions: vec!["binary_tensor_data".into(), "generate".into()],
    }))
}

/// Liveness (no key needed).
#[utoipa::path(get, path = "/v2/health/live", tag = "kserve", security(()), responses((status = 200, body = V2Live)))]
pub async fn live() -> Json<V2Live> {
    Json(V2Live { live: true })
}

/// Readiness: the database and the object store answer (no key needed).
#[utoipa::path(get, path = "/v2/health/ready", tag = "kserve", security(()),
    responses((status = 200, body = V2Ready), (status = 503, body = V2Ready)))]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<V2Ready>) {
    let s = &state.services;
    let (db, store) = tokio::join!(s.registry.ping(), s.store.ping());
    let ready = db.is_ok() && store.is_ok();
    (if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, Json(V2Ready { ready, name: None }))
}

async fn metadata(
    state: AppState,
    c: std::result::Result<Caller, Error>,
    name: ModelName,
    version: Option<VersionName>,
) -> V2Result<Json<V2ModelMetadata>> {
    caller(c, Scope::Read, Some(&name))?;
    let target = version.as_deref().map_or(Target::Default, Target::Version);
    let record = state.services.resolve(&name, target).await?;
    Ok(Json(state.services.v2_metadata(&record).await?))
}

/// A model's metadata: its versions, platform, inputs and outputs (the default
/// version's).
#[utoipa::path(get, path = "/v2/models/{name}", tag = "kserve", params(("name" = ModelName, Path)),
    responses((status = 200, body = V2ModelMetadata), (status = 400, description = "invalid_name", body = V2Error),
        (status = 401, body = V2Error), (status = 403, body = V2Error),
        (status = 404, body = V2Error), (status = 409, description = "not servable", body = V2Error),
        (status = 503, description = "unavailable", body = V2Error)))]
pub async fn model_metadata(
    State(state): State<AppState>,
    c: std::result::Result<Caller, Error>,
    V2Path(name): V2Path<ModelName>,
) -> V2Result<Json<V2ModelMetadata>> {
    metadata(state, c, name, None).await
}

/// One version's metadata.
#[utoipa::path(get, path = "/v2/models/{name}/versions/{version}", tag = "kserve",
    params(("name" = ModelName, Path), ("version" = VersionName, Path)),
    responses((status = 200, body = V2ModelMetadata), (status = 400, description = "invalid_name", body = V2Error),
        (status = 401, body = V2Error), (status = 403, body = V2Error),
        (status = 404, body = V2Error), (status = 409, description = "not servable", body = V2Error),
        (status = 503, description = "unavailable", body = V2Error)))]
pub async fn version_metadata(
    State(state): State<AppState>,
    c: std::result::Result<Caller, Error>,
    V2Path((name, version)): V2Path<(ModelName, VersionName)>,
) -> V2Result<Json<V2ModelMetadata>> {
    metadata(state, c, name, Some(version)).await
}

async fn model_ready_inner(
    state: AppState,
    c: std::result::Result<Caller, Error>,
    name: ModelName,
    version: Option<VersionName>,
) -> V2Result<Json<V2Ready>> {
    caller(c, Scope::Read, Some(&name))?;
    let target = version.as_deref().map_or(Target::Default, Target::Version);
    // Ready: loaded, or servable and loaded by its first inference request. Asking
    // loads nothing (a read key cannot make the server load models).
    let record = state.services.resolve(&name, target).await?;
    if !record.servable {
        return Err(Error::NotServable(format!(
            "version '{}' of model '{name}' cannot be served: {}",
            record.version,
            record.reason.as_deref().unwrap_or("no reason recorded")
        ))
        .into());
    }
    Ok(Json(V2Ready { ready: true, name: Some(name.into_string()) }))
}

/// 200 when the model's default version can answer: it is loaded, or servable and
/// loaded by its first inference request (asking loads nothing).
#[utoipa::path(get, path = "/v2/models/{name}/ready", tag = "kserve", params(("name" = ModelName, Path)),
    responses((status = 200, body = V2Ready), (status = 400, description = "invalid_name", body = V2Error),
        (status = 401, body = V2Error), (status = 403, body = V2Error), (status = 404, body = V2Error),
        (status = 409, description = "not servable", body = V2Error), (status = 503, description = "unavailable", body = V2Error)))]
pub async fn model_ready(
    State(state): State<AppState>,
    c: std::result::Result<Caller, Error>,
    V2Path(name): V2Path<ModelName>,
) -> V2Result<Json<V2Ready>> {
    model_ready_inner(state, c, name, None).await
}

/// 200 when the version can answer.
#[utoipa::path(get, path = "/v2/models/{name}/versions/{version}/ready", tag = "kserve",
    params(("name" = ModelName, Path), ("version" = VersionName, Path)),
    responses((status = 200, body = V2Ready), (status = 400, description = "invalid_name", body = V2Error),
        (status = 401, body = V2Error), (status = 403, body = V2Error), (status = 404, body = V2Error),
        (status = 409, description = "not servable", body = V2Error), (status = 503, description = "unavailable", body = V2Error)))]
pub async fn version_ready(
    State(state): State<AppState>,
    c: std::result::Result<Caller, Error>,
    V2Path((name, version)): V2Path<(ModelName, VersionName)>,
) -> V2Result<Json<V2Ready>> {
    model_ready_inner(state, c, name, Some(version)).await
}

async fn infer(
    state: AppState,
    c: std::result::Result<Caller, Error>,
    name: ModelName,
    version: Option<VersionName>,
    headers: HeaderMap,
    body: Body,
) -> V2Result<Response> {
    caller(c, Scope::Predict, Some(&name))?;
    let target = version.as_deref().map_or(Target::Default, Target::Version);
    let (_, served) = state.services.prepare(&name, target).await?;
    let limit = usize::try_from(served.effective.max_body_bytes).unwrap_or(usize::MAX);
    let deadline = state.services.config.upload_idle_timeout();
    let bytes = super::read_body(body, limit, deadline).await?;
    // The binary extension: the JSON part's length in a header, the tensors after it.
    let json_len = match headers.get(HEADER_CONTENT_LENGTH) {
        Some(v) => {
            v.to_str().ok().and_then(|v| v.trim().parse::<usize>().ok()).filter(|n| *n <= bytes.len()).ok_or_else(
                || Error::InvalidRequest(format!("{HEADER_CONTENT_LENGTH} must be a length within the body")),
            )?
        }
        None => bytes.len(),
    };
    let req: V2InferRequest = super::parse_json(&bytes[..json_len])?;
    let started = std::time::Instant::now();
    let (response, binary) = state.services.v2_infer(&served, req, &bytes[json_len..]).await?;
    state.services.metrics.predict(&served.model, &served.version, crate::metrics::Phase::Total, started.elapsed());
    let json = serde_json::to_vec(&response).map_err(Error::internal)?;
    let out = if binary.is_empty() {
        ([(header::CONTENT_TYPE, "application/json")], json).into_response()
    } else {
        let len = json.len();
        let mut body = json;
        body.extend_from_slice(&binary);
        let mut r = ([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response();
        r.headers_mut().insert(HEADER_CONTENT_LENGTH, HeaderValue::from(len));
        r
    };
    Ok(with_version(out, &served.version))
}

/// Run an inference on the model's default version: typed tensors in JSON (flat or
/// nested `data`) or in the binary tensor data extension
/// (`Inference-Header-Content-Length`), requested outputs, `id` echoed.
#[utoipa::path(post, path = "/v2/models/{name}/infer", tag = "kserve", params(("name" = ModelName, Path)),
    request_body(content = V2InferRequest, example = json!({"id": "1", "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1.0, 2.0, 3.0, 4.0]}]})),
    responses((status = 200, body = V2InferResponse), (status = 400, body = V2Error), (status = 401, body = V2Error),
        (status = 403, body = V2Error), (status = 404, body = V2Error), (status = 408, body = V2Error),
        (status = 409, body = V2Error), (status = 413, body = V2Error), (status = 429, body = V2Error),
        (status = 500, body = V2Error), (status = 503, body = V2Error)))]
pub async fn model_infer(
    State(state): State<AppState>,
    c: std::result::Result<Caller, Error>,
    V2Path(name): V2Path<ModelName>,
    headers: HeaderMap,
    body: Body,
) -> V2Result<Response> {
    infer(state, c, name, None, headers, body).await
}

/// Run an inference on one version.
#[utoipa::path(post, path = "/v2/models/{name}/versions/{version}/infer", tag = "kserve",
    params(("name" = ModelName, Path), ("version" = VersionName, Path)),
    request_body(content = V2InferRequest),
    responses((status = 200, body = V2InferResponse), (status = 400, body = V2Error), (status = 401, body = V2Error),
        (status = 403, body = V2Error), (status = 404, body = V2Error), (status = 408, body = V2Error),
        (status = 409, body = V2Error), (status = 413, body = V2Error), (status = 429, body = V2Error),
        (status = 500, body = V2Error), (status = 503, body = V2Error)))]
pub async fn version_infer(
    State(state): State<AppState>,
    c: std::result::Result<Caller, Error>,
    V2Path((name, version)): V2Path<(ModelName, VersionName)>,
    headers: HeaderMap,
    body: Body,
) -> V2Result<Response> {
    infer(state, c, name, Some(version), headers, body).await
}

/// The version a generate request names, after the key is checked for it.
async fn generating(
    state: &AppState,
    c: std::result::Result<Caller, Error>,
    name: &ModelName,
    version: Option<&VersionName>,
    body: Body,
) -> V2Result<(Generating, V2GenerateRequest, Settings)> {
    caller(c, Scope::Predict, Some(name))?;
    let target = version.map_or(Target::Default, |v| Target::Version(v));
    let g = state.services.generating(name, target).await?;
    let limit = usize::try_from(g.served.effective.max_body_bytes).unwrap_or(usize::MAX);
    let bytes = super::read_body(body, limit, state.services.config.upload_idle_timeout()).await?;
    let req: V2GenerateRequest = super::parse_json(&bytes)?;
    let settings = Settings::v2(&req.parameters.clone().unwrap_or_default())?;
    Ok((g, req, settings))
}

/// An answer of `generate`, or an event of `generate_stream` (`end`: the
/// finish reason and the prompt's and the answer's token counts).
fn generated(
    id: &Option<String>,
    name: &str,
    version: &str,
    text: String,
    end: Option<(&str, usize, usize)>,
) -> V2GenerateResponse {
    V2GenerateResponse {
        id: id.clone(),
        model_name: name.to_string(),
        model_version: version.to_string(),
        text_output: text,
        finish_reason: end.map(|e| e.0.to_string()),
        prompt_tokens: end.map(|e| e.1 as u32),
        completion_tokens: end.map(|e| e.2 as u32),
    }
}

async fn generate_inner(
    state: AppState,
    c: std::result::Result<Caller, Error>,
    name: ModelName,
    version: Option<VersionName>,
    body: Body,
) -> V2Result<Response> {
    let (g, req, settings) = generating(&state, c, &name, version.as_ref(), body).await?;
    let tokens = state.services.prompt_tokens(&g, req.text_input.clone(), false).await?;
    let done = state.services.start(&g, tokens, &settings)?.collect().await?;
    let exclude = req.parameters.as_ref().and_then(|p| p.exclude_input_in_output).unwrap_or(false);
    let text = if exclude { done.text } else { req.text_input + &done.text };
    let end = (done.finish.as_str(), done.prompt_tokens, done.completion_tokens);
    let answer = generated(&req.id, &name, &g.served.version, text, Some(end));
    Ok(with_version(Json(answer).into_response(), &g.served.version))
}

async fn generate_stream_inner(
    state: AppState,
    c: std::result::Result<Caller, Error>,
    name: ModelName,
    version: Option<VersionName>,
    body: Body,
) -> V2Result<Response> {
    let (g, req, settings) = generating(&state, c, &name, version.as_ref(), body).await?;
    let tokens = state.services.prompt_tokens(&g, req.text_input.clone(), false).await?;
    let stream = state.services.start(&g, tokens, &settings)?;
    let (id, name, version) = (req.id, name.to_string(), g.served.version.clone());
    let header_version = version.clone();
    // Each piece of text as an event; the last one carries the finish reason and
    // the token counts; an error mid-stream is sent as the protocol's error body.
    // Dropping the response (the client went away) ends the generation.
    let events = futures::stream::unfold(Some(stream), move |stream| {
        let (id, name, version) = (id.clone(), name.clone(), version.clone());
        async move {
            let mut stream = stream?;
            let (event, rest) = match stream.next().await? {
                Ok(Piece::Text(t, _)) => (json_event(&generated(&id, &name, &version, t, None)), Some(stream)),
                Ok(Piece::End { finish, prompt_tokens, completion_tokens }) => {
                    let end = Some((finish.as_str(), prompt_tokens, completion_tokens));
                    (json_event(&generated(&id, &name, &version, String::new(), end)), None)
                }
                Err(e) => {
                    let public = e.public();
                    (json_event(&V2Error { error: format!("{}: {}", public.code, public.message) }), None)
                }
            };
            Some((Ok::<_, Infallible>(event), rest))
        }
    });
    let sse = Sse::new(events).keep_alive(KeepAlive::default());
    Ok(with_version(sse.into_response(), &header_version))
}

/// Generate text with the model's default version (Triton's generate
/// extension): `{"text_input": "prompt", "parameters": {"max_tokens": 32}}` ->
/// `{"model_name", "model_version", "text_output"}`; the prompt is continued as
/// it is, greedy unless a temperature above 0 is given.
#[utoipa::path(post, path = "/v2/models/{name}/generate", tag = "kserve", params(("name" = ModelName, Path)),
    request_body(content = V2GenerateRequest, example = json!({"text_input": "The capital of France is", "parameters": {"max_tokens": 16}})),
    responses((status = 200, body = V2GenerateResponse), (status = 400, body = V2Error), (status = 401, body = V2Error),
        (status = 403, body = V2Error), (status = 404, body = V2Error), (status = 409, body = V2Error),
        (status = 413, body = V2Error), (status = 415, body = V2Error), (status = 429, body = V2Error),
        (status = 500, body = V2Error), (status = 503, body = V2Error)))]
pub async fn model_generate(
    State(state): State<AppState>,
    c: std::result::Result<Caller, Error>,
    V2Path(name): V2Path<ModelName>,
    body: Body,
) -> V2Result<Response> {
    generate_inner(state, c, name, None, body).await
}

/// Generate text with one version.
#[utoipa::path(post, path = "/v2/models/{name}/versions/{version}/generate", tag = "kserve",
    params(("name" = ModelName, Path), ("version" = VersionName, Path)),
    request_body(content = V2GenerateRequest),
    responses((status = 200, body = V2GenerateResponse), (status = 400, body = V2Error), (status = 401, body = V2Error),
        (status = 403, body = V2Error), (status = 404, body = V2Error), (status = 409, body = V2Error),
        (status = 413, body = V2Error), (status = 415, body = V2Error), (status = 429, body = V2Error),
        (status = 500, body = V2Error), (status = 503, body = V2Error)))]
pub async fn version_generate(
    State(state): State<AppState>,
    c: std::result::Result<Caller, Error>,
    V2Path((name, version)): V2Path<(ModelName, VersionName)>,
    body: Body,
) -> V2Result<Response> {
    generate_inner(state, c, name, Some(version), body).await
}

/// Generate text with the model's default version as server-sent events (Triton's
/// generate_stream): one `V2GenerateResponse` per piece of text (`text_output`
/// holds the piece), the last with `finish_reason` and the token counts.
#[utoipa::path(post, path = "/v2/models/{name}/generate_stream", tag = "kserve", params(("name" = ModelName, Path)),
    request_body(content = V2GenerateRequest),
    responses((status = 200, content_type = "text/event-stream", body = V2GenerateResponse, description = "events of `V2GenerateResponse`; an error after the first event comes as a `V2Error` event"),
        (status = 400, body = V2Error), (status = 401, body = V2Error),
        (status = 403, body = V2Error), (status = 404, body = V2Error), (status = 409, body = V2Error),
        (status = 413, body = V2Error), (status = 415, body = V2Error), (status = 429, body = V2Error),
        (status = 500, body = V2Error), (status = 503, body = V2Error)))]
pub async fn model_generate_stream(
    State(state): State<AppState>,
    c: std::result::Result<Caller, Error>,
    V2Path(name): V2Path<ModelName>,
    body: Body,
) -> V2Result<Response> {
    generate_stream_inner(state, c, name, None, body).await
}

/// Generate text with one version as server-sent events.
#[utoipa::path(post, path = "/v2/models/{name}/versions/{version}/generate_stream", tag = "kserve",
    params(("name" = ModelName, Path), ("version" = VersionName, Path)),
    request_body(content = V2GenerateRequest),
    responses((status = 200, content_type = "text/event-stream", body = V2GenerateResponse, description = "events of `V2GenerateResponse`; an error after the first event comes as a `V2Error` event"),
        (status = 400, body = V2Error), (status = 401, body = V2Error),
        (status = 403, body = V2Error), (status = 404, body = V2Error), (status = 409, body = V2Error),
        (status = 413, body = V2Error), (status = 415, body = V2Error), (status = 429, body = V2Error),
        (status = 500, body = V2Error), (status = 503, body = V2Error)))]
pub async fn version_generate_stream(
    State(state): State<AppState>,
    c: std::result::Result<Caller, Error>,
    V2Path((name, version)): V2Path<(ModelName, VersionName)>,
    body: Body,
) -> V2Result<Response> {
    generate_stream_inner(state, c, name, Some(version), body).await
}
