//! The web catalogue: server-rendered pages (maud) over the same services as the
//! JSON API. Sign in with an API key (a session cookie, see `auth::session`); see
//! every model, its versions, aliases, signature and examples; try it; and, as
//! an admin, manage API keys and move aliases. Forms that change state carry the
//! session's CSRF token. No JavaScript framework: a few lines of script (served
//! from the binary) add copy buttons.

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequest, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde::Deserialize;
use zoo_api::{CreateKeyRequest, KeyId, ListModelsQuery, ModelName, Scope, Task};

use crate::AppState;
use crate::api::ApiPath;
use crate::auth::Caller;
use crate::auth::session::{Claims, csrf_matches, session_cookie};
use crate::error::Error;
use crate::pipeline::generation::{Piece, Settings};
use crate::pipeline::task::{self, TryIt};
use crate::service::predict::Target;
use zoo_api::openai::{ChatMessage, Content, SamplingParams};

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
        .route("/models/{name}/try-image", post(try_image))
        .route("/models/{name}/chat", post(chat))
        .route("/models/{name}/alias", post(move_alias))
        .route("/keys", get(keys_page).post(create_key))
        .route("/keys/{id}/revoke", post(revoke_key))
        .route("/static/zoo.css", get(|| async { static_file("text/css; charset=utf-8", CSS) }))
        .route("/static/zoo.js", get(|| async { static_file("text/javascript; charset=utf-8", JS) }))
}

/// Largest body of the sign-in and sign-out forms (anyone can send them).
const SMALL_FORM: usize = 16 * 1024;
/// Largest body of the forms of a signed-in user (try-it carries a request).
const LARGE_FORM: usize = 1024 * 1024;
/// Largest body of the try-it form of an image model (the image itself).
const IMAGE_FORM: usize = 16 * 1024 * 1024;
/// Largest image the try-it result shows back inline.
const SHOWN_IMAGE: usize = 2 * 1024 * 1024;
/// How long a form's body may take to arrive.
const FORM_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// A form body of at most `LIMIT` bytes, read within [`FORM_DEADLINE`] and
/// counted against `sender`'s in-flight budget, before anything else is done.
async fn read_form<T: serde::de::DeserializeOwned, S: Send + Sync>(
    req: Request,
    state: &S,
    limit: usize,
    sender: crate::api::Sender,
) -> Result<T, Response> {
    let (parts, body) = req.into_parts();
    if !same_origin(&parts.headers) {
        return Err(error_page(None, &Error::Forbidden("the form was sent from a page of another site".into())));
    }
    let bytes =
        crate::api::read_body_from(body, limit, FORM_DEADLINE, sender).await.map_err(|e| error_page(None, &e))?;
    let req = Request::from_parts(parts, Body::from(bytes.clone()));
    axum::Form::<T>::from_request(req, state).await.map(|f| f.0).map_err(|e| {
        error_page(None, &Error::InvalidRequest(format!("the form is not what this page sends: {}", e.body_text())))
    })
}

/// The sign-in and sign-out forms: anyone can send them, so their bodies are
/// small and share the budget of requests without a key.
pub struct Form<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequest<S> for Form<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        read_form(req, state, SMALL_FORM, crate::api::Sender::Anonymous).await.map(Form)
    }
}

/// A form of a signed-in user: its body is read only after the session cookie
/// checks out (a request without one is sent to the sign-in page unread).
pub struct SessionForm<T>(pub T);

impl<T: serde::de::DeserializeOwned> FromRequest<AppState> for SessionForm<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let signed_in = session_cookie(req.headers()).is_some_and(|t| state.sessions.verify(t).is_ok());
        if !signed_in {
            let here = req.uri().path().to_string();
            return Err(Redirect::to(&format!("/login?next={}", urlencode(&here))).into_response());
        }
        read_form(req, state, LARGE_FORM, crate::api::Sender::Authenticated).await.map(SessionForm)
    }
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
    match state.keys.check_id(&claims.sub, &claims.kfp).await {
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

/// A page for an error, with its status and headers.
fn error_page(session: Option<&Session>, e: &Error) -> Response {
    let public = e.public();
    let body = page(pages::error(session, public.status.as_u16(), public.code.as_str(), &public.message));
    public.respond(body)
}

/// Only a path on this server is followed after signing in: it starts with one
/// `/` and holds only the characters of a URL path and query (browsers drop tabs
/// and newlines and read `\` as `/`, so `/\t/evil.example` would leave the site).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && n.len() <= 2048
                && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"/-._~%?=&+:@!$'()*,;".contains(&b)) =>
        {
            n.to_string()
        }
        _ => "/".to_string(),
    }
}

/// The cookie that carries the sign-in form's CSRF token (login CSRF: another site
/// cannot sign a browser in with the attacker's key).
const LOGIN_COOKIE: &str = "zoo_login";

fn login_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(LOGIN_COOKIE).and_then(|rest| rest.strip_prefix('=')))
        .filter(|t| !t.is_empty())
}

/// Whether a form comes from a page of this server: a browser names the page's
/// origin in `Origin`, which must be this server's (`Host`); clients that send no
/// `Origin` (not browsers) pass.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return true };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    let authority = origin.split_once("://").map(|(_, a)| a).unwrap_or("");
    !host.is_empty() && authority.eq_ignore_ascii_case(host)
}

/// The sign-in page with its form token, and the cookie that holds the token.
fn login_form(state: &AppState, headers: &HeaderMap, next: &str, error: Option<&str>, status: StatusCode) -> Response {
    let token = login_cookie(headers).map(str::to_string).unwrap_or_else(|| {
        use rand::RngCore;
        let mut b = [0u8; 16];
        rand::rng().fill_bytes(&mut b);
        hex::encode(b)
    });
    let secure = if state.sessions.secure { "; Secure" } else { "" };
    let cookie = format!("{LOGIN_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/login; Max-Age=3600{secure}");
    let mut r = (status, page(pages::login(next, &token, error))).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
}

async fn login_page(State(state): State<AppState>, headers: HeaderMap, Query(q): Query<NextQuery>) -> Response {
    login_form(&state, &headers, &safe_next(q.next.as_deref()), None, StatusCode::OK)
}

#[derive(Deserialize)]
struct LoginForm {
    key: String,
    next: Option<String>,
    #[serde(default)]
    csrf: String,
}

async fn login(State(state): State<AppState>, headers: HeaderMap, Form(f): Form<LoginForm>) -> Response {
    let next = safe_next(f.next.as_deref());
    let token_ok = login_cookie(&headers).is_some_and(|t| {
        use subtle::ConstantTimeEq;
        bool::from(t.as_bytes().ct_eq(f.csrf.as_bytes()))
    });
    if !token_ok {
        let why = "the sign-in form has expired or came from another site: sign in again from this page";
        return login_form(&state, &headers, &next, Some(why), StatusCode::FORBIDDEN);
    }
    match crate::api::session::open(&state, &f.key).await {
        Ok((_, cookie, _)) => {
            let mut r = Redirect::to(&next).into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Err(e) => {
            let public = e.public();
            login_form(&state, &headers, &next, Some(&public.message), public.status)
        }
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
    ApiPath(name): ApiPath<ModelName>,
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
    ApiPath(name): ApiPath<ModelName>,
    SessionForm(f): SessionForm<TryForm>,
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
        let form = task::kind(served.task).try_it(&served.signature);
        if form == TryIt::Chat {
            // Without the page's script: the chat's answer as a whole.
            let g = state.services.generating(&name, Target::Version(&f.version)).await?;
            let messages =
                vec![ChatMessage { role: "user".into(), content: Some(Content::Text(f.input.clone())), name: None }];
            let prompt = state.services.chat_tokens(&g, &messages).await?;
            let text = state.services.start(&g, prompt, &chat_settings())?.collect().await?.text;
            return Ok(text);
        }
        let body = form.body(&f.input);
        let p = state.services.predict_on(&served, &body).await?;
        serde_json::to_string_pretty(&p.response).map_err(Error::internal)
    }
    .await;
    let millis = started.elapsed().as_secs_f64() * 1000.0;
    let tried = match result {
        Ok(body) => TryResult { status: 200, body, millis, version: f.version.clone() },
        Err(e) => {
            let public = e.public();
            let body = format!("{}: {}", public.code, public.message);
            TryResult { status: public.status.as_u16(), body, millis, version: f.version.clone() }
        }
    };
    render_model(&state, &s, &name, Some(&f.version), &headers, Some((tried, f.input)), None).await
}

/// How the catalogue's chat box samples.
fn chat_settings() -> Settings {
    let params = SamplingParams { max_tokens: Some(CHAT_TOKENS), temperature: Some(0.7), ..Default::default() };
    Settings::openai(&params, None).expect("valid settings")
}

/// Most tokens of one answer in the catalogue's chat box.
const CHAT_TOKENS: u32 = 512;

#[derive(Deserialize)]
struct ChatForm {
    csrf: String,
    version: String,
    /// The conversation so far, the new message last: JSON `[{"role", "content"}]`.
    messages: String,
}

/// The chat box of a text-generation model (the page's script sends it): the
/// conversation in, the answer out as server-sent events, `{"text": "..."}` per
/// piece, then `{"finish_reason", "completion_tokens"}`; a failure as
/// `{"error": "code: message"}` (before the first event with its status).
async fn chat(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(name): ApiPath<ModelName>,
    SessionForm(f): SessionForm<ChatForm>,
) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let failed = |e: Error| {
        let public = e.public();
        let body = axum::Json(serde_json::json!({"error": format!("{}: {}", public.code, public.message)}));
        public.respond(body)
    };
    let s = match session(&state, &headers, &format!("/models/{name}")).await {
        Ok(s) => s,
        Err(_) => return failed(Error::Unauthorized("sign in again: the session has ended".into())),
    };
    if !csrf_matches(&s.claims, Some(&f.csrf)) {
        return failed(Error::Forbidden("the form's CSRF token does not match the session".into()));
    }
    let started = async {
        s.caller.require(Scope::Predict, Some(&name))?;
        let messages: Vec<ChatMessage> = serde_json::from_str(&f.messages)
            .map_err(|e| Error::InvalidInput(format!("'messages' must be a JSON list of messages: {e}")))?;
        let g = state.services.generating(&name, Target::Version(&f.version)).await?;
        let prompt = state.services.chat_tokens(&g, &messages).await?;
        state.services.start(&g, prompt, &chat_settings())
    }
    .await;
    let stream = match started {
        Ok(stream) => stream,
        Err(e) => return failed(e),
    };
    let event = |v: serde_json::Value| Ok::<_, std::convert::Infallible>(Event::default().data(v.to_string()));
    let events = futures::stream::unfold(Some(stream), move |stream| async move {
        let mut stream = stream?;
        Some(match stream.next().await? {
            Ok(Piece::Text(t, _)) => (event(serde_json::json!({"text": t})), Some(stream)),
            Ok(Piece::End { finish, completion_tokens, .. }) => (
                event(serde_json::json!({"finish_reason": finish.as_str(), "completion_tokens": completion_tokens})),
                None,
            ),
            Err(e) => {
                let public = e.public();
                (event(serde_json::json!({"error": format!("{}: {}", public.code, public.message)})), None)
            }
        })
    });
    Sse::new(events).keep_alive(KeepAlive::default()).into_response()
}

/// The try-it form of an image model (`multipart/form-data`: csrf, version, the
/// image file), read only for a signed-in user from this site.
async fn try_image(State(state): State<AppState>, ApiPath(name): ApiPath<ModelName>, req: Request) -> Response {
    let headers = req.headers().clone();
    let s = match session(&state, &headers, &format!("/models/{name}")).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if !same_origin(&headers) {
        return error_page(Some(&s), &Error::Forbidden("the form was sent from a page of another site".into()));
    }
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let boundary = match crate::api::multipart::boundary(ct) {
        Some(Ok(b)) => b,
        Some(Err(e)) => return error_page(Some(&s), &e),
        None => {
            return error_page(Some(&s), &Error::UnsupportedMediaType("the image form is multipart/form-data".into()));
        }
    };
    let body = match crate::api::read_body(req.into_body(), IMAGE_FORM, FORM_DEADLINE).await {
        Ok(b) => b,
        Err(e) => return error_page(Some(&s), &e),
    };
    let parts = match crate::api::multipart::parse(&body, &boundary, 4) {
        Ok(p) => p,
        Err(e) => return error_page(Some(&s), &e),
    };
    let field = |n: &str| parts.iter().find(|p| p.name == n).map(|p| String::from_utf8_lossy(&p.data).into_owned());
    let (csrf, version) = (field("csrf"), field("version").unwrap_or_default());
    if !csrf_matches(&s.claims, csrf.as_deref()) {
        return error_page(Some(&s), &Error::Forbidden("the form's CSRF token does not match the session".into()));
    }
    let image = parts.iter().find(|p| p.name == "image").map(|p| p.data.clone()).unwrap_or_default();
    let started = std::time::Instant::now();
    let result = async {
        s.caller.require(Scope::Predict, Some(&name))?;
        let (_, served) = state.services.prepare(&name, Target::Version(&version)).await?;
        let p = state.services.predict_images(&served, vec![image.clone()], false, None).await?;
        serde_json::to_string_pretty(&p.response).map_err(Error::internal)
    }
    .await;
    let millis = started.elapsed().as_secs_f64() * 1000.0;
    let tried = match result {
        Ok(body) => TryResult { status: 200, body, millis, version: version.clone() },
        Err(e) => {
            let public = e.public();
            let body = format!("{}: {}", public.code, public.message);
            TryResult { status: public.status.as_u16(), body, millis, version: version.clone() }
        }
    };
    // The image is shown back next to its labels (when it is one the page can show,
    // and small enough to send back inline).
    let shown = match image.first().filter(|_| image.len() <= SHOWN_IMAGE) {
        Some(0xFF) => format!("data:image/jpeg;base64,{}", base64::engine::general_purpose::STANDARD.encode(&image)),
        Some(0x89) => format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(&image)),
        _ => String::new(),
    };
    render_model(&state, &s, &name, Some(&version), &headers, Some((tried, shown)), None).await
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
    ApiPath(name): ApiPath<ModelName>,
    SessionForm(f): SessionForm<AliasForm>,
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
        let alias = zoo_api::AliasName::parse(f.alias.trim()).map_err(|e| Error::InvalidName(e.to_string()))?;
        let version = zoo_api::VersionName::parse(f.version.trim()).map_err(|e| Error::InvalidName(e.to_string()))?;
        state.services.set_alias(&s.caller, &name, &alias, &version).await
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

async fn create_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    SessionForm(f): SessionForm<KeyForm>,
) -> Response {
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
            .map(|m| zoo_api::ModelPattern::parse(m).map_err(|e| Error::InvalidRequest(e.to_string())))
            .collect::<Result<Vec<_>, Error>>()?;
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
        Err(e @ (Error::InvalidRequest(_) | Error::InvalidName(_))) => {
            match state.services.list_keys(&s.caller).await {
                Ok(keys) => {
                    (StatusCode::BAD_REQUEST, page(pages::keys(&s, &keys, None, Some(&e.to_string())))).into_response()
                }
                Err(e) => error_page(Some(&s), &e),
            }
        }
        Err(e) => error_page(Some(&s), &e),
    }
}

async fn revoke_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<KeyId>,
    SessionForm(f): SessionForm<CsrfForm>,
) -> Response {
    let s = match session(&state, &headers, "/keys").await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if !csrf_matches(&s.claims, Some(&f.csrf)) {
        return error_page(Some(&s), &Error::Forbidden("the form's CSRF token does not match the session".into()));
    }
    // The page asks before it sends the form: that is the confirmation.
    match state.services.revoke_key(&s.caller, &state.keys, &id, true).await {
        // Revoking the key of this very session ends it.
        Ok(_) if *id == *s.caller.key_id => Redirect::to("/login").into_response(),
        Ok(_) => Redirect::to("/keys").into_response(),
        Err(e) => error_page(Some(&s), &e),
    }
}
