//! Browser sessions: exchange an API key for a session cookie, see it, end it.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use zoo_api::{ErrorBody, SessionInfo, SessionRequest};

use super::{Sender, read_json_from};
use crate::AppState;
use crate::auth::session::{Claims, session_cookie};
use crate::auth::{Caller, presented_key};
use crate::error::{Error, Result};

/// The session as the API shows it.
fn info(caller: &Caller, claims: &Claims) -> Result<SessionInfo> {
    Ok(SessionInfo {
        key_id: caller.key_id.clone(),
        scopes: caller.scopes.clone(),
        models: caller.models.clone(),
        expires_at: chrono::DateTime::from_timestamp(claims.exp, 0).ok_or_else(|| Error::internal("bad expiry"))?,
        csrf_token: claims.csrf.clone(),
    })
}

/// Open a session for the web catalogue: exchange an API key (in the body or in
/// `Authorization`) for a short-lived signed token, set as an HttpOnly,
/// SameSite=Strict cookie. The session has the key's scopes, ends with the key
/// (revoked, expired), and requests that change state with it must send its
/// `csrf_token` in `x-csrf-token`.
#[utoipa::path(post, path = "/v1/auth/session", tag = "auth", security(()),
    request_body(content = SessionRequest, example = json!({"key": "zk_<id>_<secret>"})),
    responses(
        (status = 201, description = "Signed in; the cookie is set", body = SessionInfo),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "unauthorized: the key is not valid", body = ErrorBody)
    ))]
pub async fn create_session(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Result<Response> {
    let from_header = presented_key(&headers).map(str::to_string);
    let req: SessionRequest = if from_header.is_some() && headers.get(header::CONTENT_LENGTH).is_none_or(|l| l == "0") {
        SessionRequest::default()
    } else {
        let deadline = state.services.config.upload_idle_timeout();
        read_json_from(&headers, body, 16 * 1024, deadline, Sender::Anonymous).await?
    };
    let key =
        req.key.or(from_header).ok_or_else(|| Error::Unauthorized("send the API key as {\"key\": \"...\"}".into()))?;
    let (caller, cookie, claims) = open(&state, &key).await?;
    let mut response = (StatusCode::CREATED, Json(info(&caller, &claims)?)).into_response();
    response.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).map_err(Error::internal)?);
    Ok(response)
}

/// Check a key and issue its session: the caller, the `Set-Cookie` value, the claims.
pub async fn open(state: &AppState, key: &str) -> Result<(Caller, String, Claims)> {
    let caller = state.keys.check(key.trim()).await?;
    let (token, claims) = state.sessions.issue(&caller.key_id, &caller.fingerprint, caller.expires_at)?;
    tracing::info!(key = %caller.key_id, "session opened");
    Ok((caller, state.sessions.cookie(&token, &claims), claims))
}

/// The current session (from its cookie), with its CSRF token.
#[utoipa::path(get, path = "/v1/auth/session", tag = "auth",
    responses(
        (status = 200, body = SessionInfo),
        (status = 401, description = "unauthorized: no session, or an expired or invalid one", body = ErrorBody)
    ))]
pub async fn show_session(
    State(state): State<AppState>,
    headers: HeaderMap,
    caller: Caller,
) -> Result<Json<SessionInfo>> {
    let token = session_cookie(&headers).ok_or_else(|| Error::Unauthorized("no session cookie".into()))?;
    let claims = state.sessions.verify(token)?;
    Ok(Json(info(&caller, &claims)?))
}

/// Sign out: the cookie is cleared (the token also expires by itself).
#[utoipa::path(delete, path = "/v1/auth/session", tag = "auth", security(()),
    responses((status = 204, description = "Signed out")))]
pub async fn delete_session(State(state): State<AppState>) -> Result<Response> {
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, HeaderValue::from_str(&state.sessions.clear_cookie()).map_err(Error::internal)?);
    Ok(response)
}
