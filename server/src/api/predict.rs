//! Predictions.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use zoo_api::{AliasName, ErrorBody, ModelName, PredictRequest, PredictResponse, Scope, VersionName, headers};

use super::multipart;
use super::{ApiPath, check_json_type, read_body};
use crate::AppState;
use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::service::predict::Target;

async fn predict(
    state: AppState,
    caller: Caller,
    model: ModelName,
    target: Target<'_>,
    h: HeaderMap,
    body: Body,
) -> Result<Response> {
    caller.require(Scope::Predict, Some(&model))?;
    // The version first: its body limit applies to the body.
    let (_, served) = state.services.prepare(&model, target).await?;
    let limit = usize::try_from(served.effective.max_body_bytes).unwrap_or(usize::MAX);
    let kind = body_kind(&h)?;
    if !matches!(kind, BodyKind::Json) {
        crate::service::predict::takes_images(&served)?;
    }
    let bytes = read_body(body, limit, state.services.config.upload_idle_timeout()).await?;
    let p = match kind {
        BodyKind::Json => state.services.predict_on(&served, &bytes).await?,
        BodyKind::Image => state.services.predict_images(&served, vec![(*bytes).clone()], false, None).await?,
        BodyKind::Form(boundary) => {
            let form = ImageForm::read(&bytes, &boundary, served.effective.max_items as usize)?;
            let many = form.images.len() > 1;
            state.services.predict_images(&served, form.images, many, form.top_k).await?
        }
    };
    let mut response = Json(p.response).into_response();
    let hs = response.headers_mut();
    let ms = |d: std::time::Duration| HeaderValue::from_str(&format!("{:.3}", d.as_secs_f64() * 1000.0));
    if let Ok(v) = HeaderValue::from_str(&p.version) {
        hs.insert(headers::MODEL_VERSION, v);
    }
    if let Ok(v) = ms(p.inference) {
        hs.insert(headers::INFERENCE_TIME, v);
    }
    if let Ok(v) = ms(p.queue) {
        hs.insert(headers::QUEUE_TIME, v);
    }
    hs.insert(headers::BATCH_SIZE, HeaderValue::from(p.batch_rows));
    Ok(response)
}

/// What a predict body holds, from its content type.
enum BodyKind {
    /// `{"inputs": ...}` (and MLflow's formats).
    Json,
    /// The image itself (`image/jpeg`, `image/png`, `application/octet-stream`).
    Image,
    /// `multipart/form-data` with image files, with its boundary.
    Form(String),
}

fn body_kind(h: &HeaderMap) -> Result<BodyKind> {
    let ct = h.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if let Some(boundary) = multipart::boundary(ct) {
        return Ok(BodyKind::Form(boundary?));
    }
    let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if matches!(essence.as_str(), "image/jpeg" | "image/jpg" | "image/png" | "application/octet-stream") {
        return Ok(BodyKind::Image);
    }
    check_json_type(h).map_err(|_| {
        Error::UnsupportedMediaType(format!(
            "expected a JSON body (application/json), an image (image/jpeg, image/png) or a form \
             (multipart/form-data), got '{essence}'"
        ))
    })?;
    Ok(BodyKind::Json)
}

/// The images (parts named `image`, or `file`) and `top_k` of a predict form.
pub struct ImageForm {
    pub images: Vec<bytes::Bytes>,
    pub top_k: Option<std::num::NonZeroUsize>,
}

impl ImageForm {
    pub fn read(body: &bytes::Bytes, boundary: &str, max_images: usize) -> Result<ImageForm> {
        let mut form = ImageForm { images: Vec::new(), top_k: None };
        for part in multipart::parse(body, boundary, max_images.saturating_add(4))? {
            match part.name.as_str() {
                "image" | "file" | "inputs" => form.images.push(part.data),
                "top_k" => {
                    let k = std::str::from_utf8(&part.data).ok().and_then(|t| t.trim().parse().ok());
                    form.top_k =
                        Some(k.ok_or_else(|| Error::InvalidInput("top_k must be a whole number from 1".into()))?);
                }
                other => {
                    return Err(Error::InvalidInput(format!(
                        "unknown form field '{other}': send the image as a part named image (and top_k)"
                    )));
                }
            }
        }
        if form.images.is_empty() {
            return Err(Error::InvalidInput("the form holds no image: send it as a part named image".into()));
        }
        if form.images.len() > max_images {
            return Err(Error::InvalidInput(format!(
                "at most {max_images} images per request, got {}",
                form.images.len()
            )));
        }
        Ok(form)
    }
}

/// Predict with the model's default version: alias `production` if set, else the
/// newest version. The body's shape depends on the task (see `PredictRequest`);
/// an image task also takes the image itself as the body (`image/jpeg`,
/// `image/png`) or in a `multipart/form-data` form (parts named `image`, and `top_k`).
#[utoipa::path(post, path = "/v1/models/{name}/predict", tag = "predict",
    params(("name" = ModelName, Path, description = "Model name")),
    request_body(content = PredictRequest, examples(
        ("text" = (summary = "Text task", value = json!({"inputs": "good job"}))),
        ("tensor" = (summary = "Tensor task", value = json!({"inputs": {"X": [[1.0, 2.0, 3.0, 4.0]]}})))
    )),
    responses(
        (status = 200, body = PredictResponse, headers(
            ("x-zoo-model-version" = String, description = "The version that answered"),
            ("x-inference-time" = String, description = "Milliseconds in the runtime (the batch's run)"),
            ("x-queue-time" = String, description = "Milliseconds waiting in the model's queue"),
            ("x-batch-size" = u32, description = "Rows of the batch the request ran in"))),
        (status = 400, description = "invalid_request, invalid_input or invalid_name", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "forbidden: the key lacks the predict scope or the model", body = ErrorBody),
        (status = 404, description = "model_not_found or version_not_found", body = ErrorBody),
        (status = 408, description = "timeout", body = ErrorBody),
        (status = 409, description = "not_servable", body = ErrorBody),
        (status = 413, description = "payload_too_large", body = ErrorBody),
        (status = 415, description = "unsupported_media_type", body = ErrorBody),
        (status = 429, description = "overloaded: retry after Retry-After seconds", body = ErrorBody),
        (status = 500, description = "inference_failed", body = ErrorBody),
        (status = 503, description = "unavailable: the database or store is unreachable", body = ErrorBody)
    ))]
pub async fn predict_default(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<ModelName>,
    h: HeaderMap,
    body: Body,
) -> Result<Response> {
    predict(state, caller, name, Target::Default, h, body).await
}

/// Predict with an explicit version.
#[utoipa::path(post, path = "/v1/models/{name}/versions/{version}/predict", tag = "predict",
    params(("name" = ModelName, Path), ("version" = VersionName, Path)),
    request_body(content = PredictRequest),
    responses(
        (status = 200, body = PredictResponse, headers(
            ("x-zoo-model-version" = String, description = "The version that answered"),
            ("x-inference-time" = String, description = "Milliseconds in the runtime (the batch's run)"),
            ("x-queue-time" = String, description = "Milliseconds waiting in the model's queue"),
            ("x-batch-size" = u32, description = "Rows of the batch the request ran in"))),
        (status = 400, description = "invalid_request, invalid_input or invalid_name", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "forbidden: the key lacks the predict scope or the model", body = ErrorBody),
        (status = 404, description = "model_not_found or version_not_found", body = ErrorBody),
        (status = 408, description = "timeout", body = ErrorBody),
        (status = 409, description = "not_servable", body = ErrorBody),
        (status = 413, description = "payload_too_large", body = ErrorBody),
        (status = 415, description = "unsupported_media_type", body = ErrorBody),
        (status = 429, description = "overloaded: retry after Retry-After seconds", body = ErrorBody),
        (status = 500, description = "inference_failed", body = ErrorBody),
        (status = 503, description = "unavailable: the database or store is unreachable", body = ErrorBody)
    ))]
pub async fn predict_version(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((name, version)): ApiPath<(ModelName, VersionName)>,
    h: HeaderMap,
    body: Body,
) -> Result<Response> {
    predict(state, caller, name, Target::Version(&version), h, body).await
}

/// Predict with the version an alias (e.g. `production`, `staging`) points at.
#[utoipa::path(post, path = "/v1/models/{name}/aliases/{alias}/predict", tag = "predict",
    params(("name" = ModelName, Path), ("alias" = AliasName, Path)),
    request_body(content = PredictRequest),
    responses(
        (status = 200, body = PredictResponse, headers(
            ("x-zoo-model-version" = String, description = "The version that answered"),
            ("x-inference-time" = String, description = "Milliseconds in the runtime (the batch's run)"),
            ("x-queue-time" = String, description = "Milliseconds waiting in the model's queue"),
            ("x-batch-size" = u32, description = "Rows of the batch the request ran in"))),
        (status = 400, description = "invalid_request, invalid_input or invalid_name", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "forbidden: the key lacks the predict scope or the model", body = ErrorBody),
        (status = 404, description = "model_not_found or version_not_found (no such alias)", body = ErrorBody),
        (status = 408, description = "timeout", body = ErrorBody),
        (status = 409, description = "not_servable", body = ErrorBody),
        (status = 413, description = "payload_too_large", body = ErrorBody),
        (status = 415, description = "unsupported_media_type", body = ErrorBody),
        (status = 429, description = "overloaded: retry after Retry-After seconds", body = ErrorBody),
        (status = 500, description = "inference_failed", body = ErrorBody),
        (status = 503, description = "unavailable: the database or store is unreachable", body = ErrorBody)
    ))]
pub async fn predict_alias(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((name, alias)): ApiPath<(ModelName, AliasName)>,
    h: HeaderMap,
    body: Body,
) -> Result<Response> {
    predict(state, caller, name, Target::Alias(&alias), h, body).await
}
