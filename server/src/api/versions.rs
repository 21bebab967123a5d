//! Versions: upload, show, delete, download.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use zoo_api::{DeployQuery, ErrorBody, ModelName, Scope, Sha256Hex, VersionInfo, VersionName, headers};

use super::{ApiPath, ApiQuery};
use crate::AppState;
use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::service::deploy::Upload;
use crate::store::Range;

fn check_upload_type(h: &HeaderMap) -> Result<()> {
    let Some(ct) = h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return Ok(()) };
    let ct = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match ct.as_str() {
        ""
        | "application/octet-stream"
        | "application/x-tar"
        | "application/tar"
        | "application/onnx"
        | "application/x-protobuf"
        | "application/x-www-form-urlencoded" => Ok(()),
        other => Err(Error::UnsupportedMediaType(format!(
            "send the artifact as the raw request body (application/octet-stream, or application/x-tar for bundles), not '{other}'"
        ))),
    }
}

async fn upload(
    state: AppState,
    caller: Caller,
    model: ModelName,
    version: Option<VersionName>,
    query: DeployQuery,
    h: HeaderMap,
    body: Body,
) -> Result<Response> {
    caller.require(Scope::Deploy, Some(&model))?;
    check_upload_type(&h)?;
    let upload = Upload {
        model,
        version,
        query,
        expected_sha256: h.get(headers::SHA256).and_then(|v| v.to_str().ok()).map(|s| s.trim().to_string()),
        content_length: h.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|s| s.parse().ok()),
        body: body.into_data_stream(),
    };
    let info = state.services.deploy(&caller, upload).await?;
    let location = format!("/v1/models/{}/versions/{}", info.model, info.version);
    let mut response = (StatusCode::CREATED, Json(info)).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

/// Deploy a new version with the next integer version number. The body is the
/// artifact: an ONNX file, or a tar archive of a bundle directory
/// (`model.onnx` + `tokenizer.json` + `config.json`).
#[utoipa::path(post, path = "/v1/models/{name}/versions", tag = "models",
    params(("name" = ModelName, Path, description = "Model name; created if new"), DeployQuery,
        ("x-zoo-sha256" = Option<Sha256Hex>, Header, nullable = false, description = "Hex sha256 of the body; a mismatch stores nothing")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The artifact bytes"),
    responses(
        (status = 201, description = "Deployed", body = VersionInfo),
        (status = 400, description = "invalid_name, invalid_request or sha256_mismatch", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "forbidden: the key lacks the deploy scope or the model", body = ErrorBody),
        (status = 408, description = "timeout: the upload stalled", body = ErrorBody),
        (status = 409, description = "version_exists, or not_servable: stored, but the alias asked for was not moved", body = ErrorBody),
        (status = 413, description = "payload_too_large", body = ErrorBody),
        (status = 415, description = "unsupported_media_type", body = ErrorBody),
        (status = 422, description = "invalid_artifact or unknown_format", body = ErrorBody),
        (status = 503, description = "unavailable: the database or store is unreachable", body = ErrorBody)
    ))]
pub async fn create_version(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<ModelName>,
    ApiQuery(query): ApiQuery<DeployQuery>,
    h: HeaderMap,
    body: Body,
) -> Result<Response> {
    upload(state, caller, name, None, query, h, body).await
}

/// Deploy a version with an explicit version string. The body is the artifact.
#[utoipa::path(put, path = "/v1/models/{name}/versions/{version}", tag = "models",
    params(("name" = ModelName, Path, description = "Model name; created if new"),
        ("version" = VersionName, Path, description = "Version, e.g. 1 or 1.2.0"), DeployQuery,
        ("x-zoo-sha256" = Option<Sha256Hex>, Header, nullable = false, description = "Hex sha256 of the body; a mismatch stores nothing")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The artifact bytes"),
    responses(
        (status = 201, description = "Deployed", body = VersionInfo),
        (status = 400, description = "invalid_name, invalid_request or sha256_mismatch", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "forbidden: the key lacks the deploy scope or the model", body = ErrorBody),
        (status = 408, description = "timeout: the upload stalled", body = ErrorBody),
        (status = 409, description = "version_exists, or not_servable: stored, but the alias asked for was not moved", body = ErrorBody),
        (status = 413, description = "payload_too_large", body = ErrorBody),
        (status = 415, description = "unsupported_media_type", body = ErrorBody),
        (status = 422, description = "invalid_artifact or unknown_format", body = ErrorBody),
        (status = 503, description = "unavailable: the database or store is unreachable", body = ErrorBody)
    ))]
pub async fn put_version(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((name, version)): ApiPath<(ModelName, VersionName)>,
    ApiQuery(query): ApiQuery<DeployQuery>,
    h: HeaderMap,
    body: Body,
) -> Result<Response> {
    upload(state, caller, name, Some(version), query, h, body).await
}

/// A version's metadata, including its signature.
#[utoipa::path(get, path = "/v1/models/{name}/versions/{version}", tag = "models",
    params(("name" = ModelName, Path), ("version" = VersionName, Path)),
    responses(
        (status = 200, body = VersionInfo),
        (status = 400, description = "invalid_name", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "forbidden", body = ErrorBody),
        (status = 404, description = "model_not_found or version_not_found", body = ErrorBody)
    ))]
pub async fn show_version(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((name, version)): ApiPath<(ModelName, VersionName)>,
) -> Result<Json<VersionInfo>> {
    caller.require(Scope::Read, Some(&name))?;
    Ok(Json(state.services.show_version(&name, &version).await?))
}

/// Delete a version (its artifact goes when no other version shares it).
#[utoipa::path(delete, path = "/v1/models/{name}/versions/{version}", tag = "models",
    params(("name" = ModelName, Path), ("version" = VersionName, Path)),
    responses(
        (status = 200, description = "The deleted version", body = VersionInfo),
        (status = 400, description = "invalid_name", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "forbidden", body = ErrorBody),
        (status = 404, description = "model_not_found or version_not_found", body = ErrorBody),
        (status = 409, description = "version_in_use: an alias points at it", body = ErrorBody),
        (status = 503, description = "unavailable: the database or store is unreachable", body = ErrorBody)
    ))]
pub async fn delete_version(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((name, version)): ApiPath<(ModelName, VersionName)>,
) -> Result<Json<VersionInfo>> {
    caller.require(Scope::Deploy, Some(&name))?;
    Ok(Json(state.services.delete_version(&name, &version).await?))
}

/// Parse a single `bytes=` range against a size. `Ok(None)`: serve everything.
fn parse_range(h: &HeaderMap, size: u64) -> Result<Option<Range>> {
    let Some(v) = h.get(header::RANGE).and_then(|v| v.to_str().ok()) else { return Ok(None) };
    let Some(spec) = v.trim().strip_prefix("bytes=") else { return Ok(None) };
    if spec.contains(',') {
        return Ok(None); // several ranges: answer with the whole artifact
    }
    let Some((a, b)) = spec.split_once('-') else { return Ok(None) };
    let unsatisfiable = || Error::RangeNotSatisfiable(format!("range '{v}' is outside the artifact of {size} bytes"));
    let range = match (a.trim(), b.trim()) {
        ("", "") => return Ok(None),
        ("", n) => {
            let n: u64 = n.parse().map_err(|_| unsatisfiable())?;
            if n == 0 {
                return Err(unsatisfiable());
            }
            Range { start: size.saturating_sub(n), end: size }
        }
        (s, e) => {
            let start: u64 = s.parse().map_err(|_| unsatisfiable())?;
            let end = if e.is_empty() {
                size
            } else {
                e.parse::<u64>().map_err(|_| unsatisfiable())?.saturating_add(1).min(size)
            };
            if start >= size || end <= start {
                return Err(unsatisfiable());
            }
            Range { start, end }
        }
    };
    Ok(Some(range))
}

/// Download a version's artifact (the ONNX file, or the bundle as a tar archive).
/// Supports a single `Range`.
#[utoipa::path(get, path = "/v1/models/{name}/versions/{version}/artifact", tag = "models",
    params(("name" = ModelName, Path), ("version" = VersionName, Path),
        ("Range" = Option<String>, Header, description = "bytes=START-END")),
    responses(
        (status = 200, description = "The artifact: a single file, or a bundle's tar archive", content(
            (Vec<u8> = "application/octet-stream"), (Vec<u8> = "application/x-tar"))),
        (status = 206, description = "Part of the artifact", content(
            (Vec<u8> = "application/octet-stream"), (Vec<u8> = "application/x-tar"))),
        (status = 400, description = "invalid_name", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "forbidden", body = ErrorBody),
        (status = 404, description = "model_not_found or version_not_found", body = ErrorBody),
        (status = 416, description = "range_not_satisfiable", body = ErrorBody)
    ))]
pub async fn download_artifact(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((name, version)): ApiPath<(ModelName, VersionName)>,
    h: HeaderMap,
) -> Result<Response> {
    caller.require(Scope::Read, Some(&name))?;
    let s = &state.services;
    let v = s.show_version(&name, &version).await?;
    let range = parse_range(&h, v.size as u64)?;
    let (info, obj) = s.open_artifact(&name, &version, range).await?;
    let (ext, ct) =
        if info.signature.bundle { ("tar", "application/x-tar") } else { ("onnx", "application/octet-stream") };
    let mut response = Response::new(Body::from_stream(obj.body));
    if range.is_some() {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    let hs = response.headers_mut();
    hs.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    hs.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", info.sha256)) {
        hs.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}-{version}.{ext}\"")) {
        hs.insert(header::CONTENT_DISPOSITION, v);
    }
    match range {
        Some(r) => {
            hs.insert(header::CONTENT_LENGTH, HeaderValue::from(r.end - r.start));
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {}-{}/{}", r.start, r.end - 1, obj.size)) {
                hs.insert(header::CONTENT_RANGE, v);
            }
        }
        None => {
            hs.insert(header::CONTENT_LENGTH, HeaderValue::from(obj.size));
        }
    }
    Ok(response)
}
