//! The web catalogue: server-rendered pages (maud) over the same services as the
//! JSON API. Sign in with an API key (a session cookie, see `auth::session`); see
//! every model, its versions, aliases, signature and examples; try it; and, as
//! an admin, manage API keys and move aliases. Forms that change state carry the
//! session's CSRF token. No JavaScript framework: a few lines of script (served
//! from the binary) add copy buttons.

use axum::Form;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use zoo_api::{CreateKeyRequest, ListModelsQuery, PredictRequest, Scope, Task};

use crate::AppState;
use crate::api::ApiPath;
use crate::auth::Caller;
use crate::auth::session::{Claims, csrf_matches, session_cookie};
use crate::error::Error;
use crate::service::predict::Target;

mod pages;

pub use pages::{CSS, JS};

/// The catalogue's routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/models/{name}", get(model_page))
        .route("/models/{name}/try", post(try_model))
        .route("/models/{name}/alias", post(move_alias))
        .route("/keys", get(keys_page).post(create_key))
        .route("/keys/{id}/revoke", post(revoke_key))
        .route("/static/zoo.css", get(|| async { static_file("text/css; charset=utf-8", CSS) }))
        .route("/static/zoo.js", get(|| async { static_file("text/javascript; charset=utf-8", JS) }))
}

/// A page's HTML.
fn page(m: maud::Markup) -> axum::response::Html<String> {
    axum::response::Html(m.into_string())
}

fn static_file(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "public, max-age=3600")], body).into_response()
}

/// The signed-in user of a page: their key's caller and session.
pub struct Session {
    pub caller: Caller,
    pub claims: Claims,
}

impl Session {
    pub fn is_admin(&self) -> bool {
        self.caller.has(Scope::Admin)
    }
}

/// The session of a page request, or a redirect to the sign-in page.
async fn session(state: &AppState, headers: &HeaderMap, here: &str) -> Result<Session, Response> {
    let to_login = || Redirect::to(&format!("/login?next={}", urlencode(here))).into_response();
    let Some(token) = session_cookie(headers) else { return Err(to_login()) };
    let Ok(claims) = state.sessions.verify(token) else { return Err(to_login()) };
    match state.keys.check_id(&claims.sub).await {
        Ok(caller) => Ok(Session { caller, claims }),
        Err(_) => Err(to_login()),
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A page for an error, with its status.
fn error_page(session: Option<&Session>, e: &Error) -> Response {
    let status = crate::error::status_of(e.code());
    let message = match e.code() {
        zoo_api::ErrorCode::Internal => "Something went wrong on the server; its log has the details.".to_string(),
        _ => e.to_string(),
    };
    (status, page(pages::error(session, status.as_u16(), e.code().as_str(), &message))).into_response()
}

/// Only local paths are followed after signing in.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_string(),
        _ => "/".to_string(),
    }
}

#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
}

async fn login_page(Query(q): Query<NextQuery>) -> Response {
    page(pages::login(&safe_next(q.next.as_deref()), None)).into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    key: String,
    next: Option<String>,
}

async fn login(State(state): State<AppState>, Form(f): Form<LoginForm>) -> Response {
    let next = safe_next(f.next.as_deref());
    match crate::api::session::open(&state, &f.key).await {
        Ok((_, cookie, _)) => {
            let mut r = Redirect::to(&next).into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Err(e) => (StatusCode::UNAUTHORIZED, page(pages::login(&next, Some(&e.to_string())))).into_response(),
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(State(state): State<AppState>, headers: HeaderMap, Form(f): Form<CsrfForm>) -> Response {
    // Signing out needs the session's CSRF token, so another site cannot do it.
    if let Some(claims) = session_cookie(&headers).and_then(|t| state.sessions.verify(t).ok())
        && !csrf_matches(&claims, Some(&f.csrf))
    {
        return error_page(None, &Error::Forbidden("the form's CSRF token does not match the session".into()));
    }
    let mut r = Redirect::to("/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&state.sessions.clear_cookie()) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

#[derive(Deserialize, Default)]
struct ListQuery {
    q: Option<String>,
    format: Option<String>,
    task: Option<String>,
    cursor: Option<String>,
}

async fn home(State(state): State<AppState>, headers: HeaderMap, Query(q): Query<ListQuery>) -> Response {
    let s = match session(&state, &headers, "/").await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Err(e) = s.caller.require(Scope::Read, None) {
        return error_page(Some(&s), &e);
    }
    let empty = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
    let query = ListModelsQuery {
        q: empty(q.q.clone()),
        format: empty(q.format.clone()).and_then(|f| zoo_api::Format::parse(&f)),
        task: empty(q.task.clone()).and_then(|t| Task::parse(&t)),
        limit: Some(50),
        cursor: empty(q.cursor.clone()),
    };
    match state.services.list_models(&s.caller, &query).await {
        Ok(list) => page(pages::models(&s, &list, &query)).into_response(),
        Err(e) => error_page(Some(&s), &e),
    }
}

#[derive(Deserialize, Default)]
struct VersionQuery {
    version: Option<String>,
}

/// What a page shows of a try-it run.
pub struct TryResult {
    pub status: u16,
    pub body: String,
    pub millis: f64,
    pub version: String,
}

fn origin(headers: &HeaderMap) -> String {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("localhost:8080");
    let proto = headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).unwrap_or("http");
    format!("{proto}://{host}")
}

async fn render_model(
    state: &AppState,
    s: &Session,
    name: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    tried: Option<(TryResult, String)>,
    notice: Option<String>,
) -> Response {
    if let Err(e) = s.caller.require(Scope::Read, Some(name)) {
        return error_page(Some(s), &e);
    }
    let detail = match state.services.show_model(name).await {
        Ok(d) => d,
        Err(e) => return error_page(Some(s), &e),
    };
    let target = match version {
        Some(v) => Target::Version(v),
        None => Target::Default,
    };
    let record = match state.services.resolve(name, target).await {
        Ok(r) => Some(r),
        Err(Error::VersionNotFound { .. }) if version.is_none() => None,
        Err(e) => return error_page(Some(s), &e),
    };
    let chosen = record.as_ref().and_then(|r| detail.versions.iter().find(|v| v.version == r.version)).cloned();
    let example = match &record {
        Some(r) => state.services.example_request(r).await.unwrap_or(serde_json::Value::Null),
        None => serde_json::Value::Null,
    };
    let page = page(pages::model(s, &detail, chosen.as_ref(), &example, &origin(headers), tried, notice.as_deref()));
    page.into_response()
}

async fn model_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(name): ApiPath<String>,
    Query(q): Query<VersionQuery>,
) -> Response {
    let s = match session(&state, &headers, &format!("/models/{name}")).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    render_model(&state, &s, &name, q.version.as_deref(), &headers, None, None).await
}

#[derive(Deserialize)]
struct TryForm {
    csrf: String,
    version: String,
    /// A text (text tasks) or a JSON request body (others).
    input: String,
}

async fn try_model(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(name): ApiPath<String>,
    Form(f): Form<TryForm>,
) -> Response {
    let s = match session(&state, &headers, &format!("/models/{name}")).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if !csrf_matches(&s.claims, Some(&f.csrf)) {
        return error_page(Some(&s), &Error::Forbidden("the form's CSRF token does not match the session".into()));
    }
    let started = std::time::Instant::now();
    let result = async {
        s.caller.require(Scope::Predict, Some(&name))?;
        let (_, served) = state.services.prepare(&name, Target::Version(&f.version)).await?;
        let req: PredictRequest = match served.task {
            Task::TextClassification | Task::FeatureExtraction if served.signature.mlflow.is_none() => {
                PredictRequest { inputs: serde_json::Value::String(f.input.clone()), ..Default::default() }
            }
            _ => serde_json::from_str(&f.input)
                .map_err(|e| Error::InvalidRequest(format!("the request is not valid JSON: {e}")))?,
        };
        let p = state.services.predict_on(&served, req).await?;
        serde_json::to_string_pretty(&p.response).map_err(Error::internal)
    }
    .await;
    let millis = started.elapsed().as_secs_f64() * 1000.0;
    let tried = match result {
        Ok(body) => TryResult { status: 200, body, millis, version: f.version.clone() },
        Err(e) => {
            let status = crate::error::status_of(e.code()).as_u16();
            TryResult { status, body: format!("{}: {e}", e.code()), millis, version: f.version.clone() }
        }
    };
    render_model(&state, &s, &name, Some(&f.version), &headers, Some((tried, f.input)), None).await
}

#[derive(Deserialize)]
struct AliasForm {
    csrf: String,
    alias: String,
    version: String,
}

async fn move_alias(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(name): ApiPath<String>,
    Form(f): Form<AliasForm>,
) -> Response {
    let s = match session(&state, &headers, &format!("/models/{name}")).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if !csrf_matches(&s.claims, Some(&f.csrf)) {
        return error_page(Some(&s), &Error::Forbidden("the form's CSRF token does not match the session".into()));
    }
    let moved = async {
        s.caller.require(Scope::Deploy, Some(&name))?;
        crate::service::deploy::check_alias(f.alias.trim())?;
        state.services.set_alias(&s.caller, &name, f.alias.trim(), &f.version).await
    }
    .await;
    match moved {
        Ok(a) => {
            let notice = format!("Alias {} now points at version {}.", a.alias, f.version);
            render_model(&state, &s, &name, None, &headers, None, Some(notice)).await
        }
        Err(e) => error_page(Some(&s), &e),
    }
}

async fn keys_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let s = match session(&state, &headers, "/keys").await {
        Ok(s) => s,
        Err(r) => return r,
    };
    match state.services.list_keys(&s.caller).await {
        Ok(keys) => page(pages::keys(&s, &keys, None, None)).into_response(),
        Err(e) => error_page(Some(&s), &e),
    }
}

#[derive(Deserialize)]
struct KeyForm {
    csrf: String,
    name: String,
    scope_read: Option<String>,
    scope_predict: Option<String>,
    scope_deploy: Option<String>,
    scope_admin: Option<String>,
    models: Option<String>,
    expires_in_days: Option<String>,
}

async fn create_key(State(state): State<AppState>, headers: HeaderMap, Form(f): Form<KeyForm>) -> Response {
    let s = match session(&state, &headers, "/keys").await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if !csrf_matches(&s.claims, Some(&f.csrf)) {
        return error_page(Some(&s), &Error::Forbidden("the form's CSRF token does not match the session".into()));
    }
    let created = async {
        let mut scopes = Vec::new();
        for (on, scope) in [
            (&f.scope_read, Scope::Read),
            (&f.scope_predict, Scope::Predict),
            (&f.scope_deploy, Scope::Deploy),
            (&f.scope_admin, Scope::Admin),
        ] {
            if on.is_some() {
                scopes.push(scope);
            }
        }
        let models = f
            .models
            .as_deref()
            .unwrap_or("")
            .split([',', ' ', '\n'])
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(str::to_string)
            .collect();
        let expires_at = match f.expires_in_days.as_deref().map(str::trim).filter(|d| !d.is_empty()) {
            Some(d) => {
                let days: i64 = d
                    .parse()
                    .ok()
                    .filter(|d| (1..=3650).contains(d))
                    .ok_or_else(|| Error::InvalidRequest("expiry must be 1 to 3650 days".into()))?;
                Some(chrono::Utc::now() + chrono::TimeDelta::days(days))
            }
            None => None,
        };
        let req = CreateKeyRequest { name: f.name.clone(), scopes, models, expires_at };
        state.services.create_key(&s.caller, &req).await
    }
    .await;
    match created {
        Ok(new) => match state.services.list_keys(&s.caller).await {
            Ok(keys) => (StatusCode::CREATED, page(pages::keys(&s, &keys, Some(&new), None))).into_response(),
            Err(e) => error_page(Some(&s), &e),
        },
        Err(e @ Error::InvalidRequest(_)) => match state.services.list_keys(&s.caller).await {
            Ok(keys) => {
                (StatusCode::BAD_REQUEST, page(pages::keys(&s, &keys, None, Some(&e.to_string())))).into_response()
            }
            Err(e) => error_page(Some(&s), &e),
        },
        Err(e) => error_page(Some(&s), &e),
    }
}

async fn revoke_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    Form(f): Form<CsrfForm>,
) -> Response {
    let s = match session(&state, &headers, "/keys").await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if !csrf_matches(&s.claims, Some(&f.csrf)) {
        return error_page(Some(&s), &Error::Forbidden("the form's CSRF token does not match the session".into()));
    }
    match state.services.revoke_key(&s.caller, &state.keys, &id).await {
        // Revoking the key of this very session ends it.
        Ok(_) if id == s.caller.key_id => Redirect::to("/login").into_response(),
        Ok(_) => Redirect::to("/keys").into_response(),
        Err(e) => error_page(Some(&s), &e),
    }
}
