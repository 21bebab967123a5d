//! OpenAI-compatible routes for text-generation versions, so that the `openai`
//! client libraries (and everything built on them) work with zoo unchanged:
//! `POST /v1/chat/completions` and `POST /v1/completions`, with `stream: true`
//! as server-sent events in OpenAI's chunk format. The same routes, with the
//! model list, are under `/openai/v1` (the client's `base_url`), since zoo's own
//! `GET /v1/models` keeps zoo's shape. Keys and scopes apply as for predict;
//! errors come in OpenAI's shape.

use std::convert::Infallible;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use zoo_api::openai::{
    AssistantMessage, ChatChoice, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChoiceLogprobs,
    ChunkChoice, Completion, CompletionChoice, CompletionRequest, Delta, OpenAiError, OpenAiErrorDetail, OpenAiModel,
    OpenAiModelList, Prompt, Usage,
};
use zoo_api::{ListModelsQuery, Scope, Task};

use super::{json_event, with_version};
use crate::AppState;
use crate::auth::Caller;
use crate::error::Error;
use crate::pipeline::generation::{Piece, Settings, Stream};
use crate::service::generate::{Generating, parse_reference};
use crate::service::predict::Target;

/// An error in OpenAI's shape.
pub struct OpenAiFailure(Error);

impl From<Error> for OpenAiFailure {
    fn from(e: Error) -> Self {
        OpenAiFailure(e)
    }
}

fn error_body(e: &Error) -> (crate::error::Public, OpenAiError) {
    let public = e.public();
    let kind = match public.status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        s if s >= 500 => "server_error",
        _ => "invalid_request_error",
    };
    let param = match &public.message {
        m if m.starts_with("'") => m[1..].split('\'').next().map(str::to_string),
        m if m.contains("'model'") => Some("model".to_string()),
        _ => None,
    };
    let body = OpenAiError {
        error: OpenAiErrorDetail {
            message: public.message.clone(),
            kind: kind.into(),
            param,
            code: Some(public.code.to_string()),
        },
    };
    (public, body)
}

impl IntoResponse for OpenAiFailure {
    fn into_response(self) -> Response {
        let (public, body) = error_body(&self.0);
        public.respond(Json(body))
    }
}

type OpenAiResult<T> = std::result::Result<T, OpenAiFailure>;

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The version a request's `model` names, after the key is checked for it.
async fn version(state: &AppState, c: std::result::Result<Caller, Error>, model: &str) -> OpenAiResult<Generating> {
    let caller = c?;
    let (name, target) = parse_reference(model)?;
    caller.require(Scope::Predict, Some(&name))?;
    let target = match &target {
        None => Target::Default,
        Some((true, v)) => Target::Version(v),
        Some((false, a)) => Target::Alias(a),
    };
    Ok(state.services.generating(&name, target).await?)
}

async fn read<T: serde::de::DeserializeOwned>(state: &AppState, h: &HeaderMap, body: Body) -> OpenAiResult<T> {
    let c = &state.services.config;
    Ok(super::read_json(h, body, c.max_predict_bytes, c.upload_idle_timeout()).await?)
}

fn usage(prompt: usize, completion: usize) -> Usage {
    let (p, c) = (prompt as u32, completion as u32);
    Usage { prompt_tokens: p, completion_tokens: c, total_tokens: p + c }
}

/// Pieces of a generation as server-sent events: `make` turns each piece into
/// the route's chunks; an error mid-stream is sent as OpenAI's error body; the
/// stream ends with `[DONE]`. Dropping the response (the client went away)
/// drops the generation, which the engine then ends.
fn sse(
    stream: Stream,
    first: Vec<Event>,
    make: impl FnMut(Piece) -> Vec<Event> + Send + 'static,
) -> Sse<impl futures::Stream<Item = std::result::Result<Event, Infallible>>> {
    struct St<F> {
        stream: Stream,
        queued: std::collections::VecDeque<Event>,
        make: F,
        done: bool,
    }
    let state = St { stream, queued: first.into(), make, done: false };
    let events = futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(e) = st.queued.pop_front() {
                return Some((Ok(e), st));
            }
            if st.done {
                return None;
            }
            match st.stream.next().await {
                Some(Ok(p)) => {
                    let events = (st.make)(p);
                    st.queued.extend(events);
                }
                Some(Err(e)) => {
                    st.queued.push_back(json_event(&error_body(&e).1));
                    st.queued.push_back(Event::default().data("[DONE]"));
                    st.done = true;
                }
                None => {
                    st.queued.push_back(Event::default().data("[DONE]"));
                    st.done = true;
                }
            }
        }
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

/// A chat completion: the model's chat template turns the messages into its
/// prompt. `stream: true` answers with `chat.completion.chunk` events, the last
/// one with the usage, then `[DONE]`.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "openai",
    request_body(content = ChatCompletionRequest, example = json!({"model": "smol", "messages": [{"role": "user", "content": "What is the capital of France?"}], "max_tokens": 32})),
    responses(
        (status = 200, body = ChatCompletion, description = "the answer; with `stream: true`, `text/event-stream` of `ChatCompletionChunk`s"),
        (status = 400, body = OpenAiError), (status = 401, body = OpenAiError), (status = 403, body = OpenAiError),
        (status = 404, body = OpenAiError), (status = 413, body = OpenAiError), (status = 415, body = OpenAiError),
        (status = 429, body = OpenAiError), (status = 500, body = OpenAiError), (status = 503, body = OpenAiError)))]
pub async fn chat_completions(
    State(state): State<AppState>,
    c: std::result::Result<Caller, Error>,
    h: HeaderMap,
    body: Body,
) -> OpenAiResult<Response> {
    let req: ChatCompletionRequest = read(&state, &h, body).await?;
    let g = version(&state, c, &req.model).await?;
    let settings = Settings::openai(&req.params, None)?;
    let prompt = state.services.chat_tokens(&g, &req.messages).await?;
    let stream = state.services.start(&g, prompt, &settings)?;
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let (created, model, fingerprint) = (now(), req.model.clone(), format!("zoo-{}", g.served.version));
    if req.params.stream != Some(true) {
        let done = stream.collect().await?;
        let answer = ChatCompletion {
            id,
            object: "chat.completion".into(),
            created,
            model,
            choices: vec![ChatChoice {
                index: 0,
                message: AssistantMessage { role: "assistant".into(), content: done.text },
                finish_reason: done.finish.as_str().into(),
                logprobs: settings.logprobs.map(|_| ChoiceLogprobs { content: Some(done.logprobs) }),
            }],
            usage: usage(done.prompt_tokens, done.completion_tokens),
            system_fingerprint: fingerprint,
        };
        return Ok(with_version(Json(answer).into_response(), &g.served.version));
    }
    let chunk =
        move |delta: Delta, finish: Option<&str>, lp: Option<ChoiceLogprobs>, u: Option<Usage>| ChatCompletionChunk {
            id: id.clone(),
            object: "chat.completion.chunk".into(),
            created,
            model: model.clone(),
            choices: if u.is_some() {
                vec![]
            } else {
                vec![ChunkChoice { index: 0, delta, finish_reason: finish.map(str::to_string), logprobs: lp }]
            },
            usage: u,
            system_fingerprint: fingerprint.clone(),
        };
    let asked = settings.logprobs.is_some();
    let start = Delta { role: Some("assistant".into()), content: Some(String::new()) };
    let first = vec![json_event(&chunk(start, None, None, None))];
    let body = sse(stream, first, move |p| match p {
        Piece::Text(t, lp) => {
            let lp = asked.then_some(ChoiceLogprobs { content: Some(lp) });
            vec![json_event(&chunk(Delta { role: None, content: Some(t) }, None, lp, None))]
        }
        Piece::End { finish, prompt_tokens, completion_tokens } => vec![
            json_event(&chunk(Delta::default(), Some(finish.as_str()), None, None)),
            json_event(&chunk(Delta::default(), None, None, Some(usage(prompt_tokens, completion_tokens)))),
        ],
    });
    Ok(with_version(body.into_response(), &g.served.version))
}

/// A completion: the prompt is continued as it is (no chat template).
/// `stream: true` answers with `text_completion` events, the last one with the
/// usage, then `[DONE]`. `max_tokens` defaults to 16, as OpenAI's.
#[utoipa::path(post, path = "/v1/completions", tag = "openai",
    request_body(content = CompletionRequest, example = json!({"model": "smol", "prompt": "Once upon a time", "max_tokens": 32})),
    responses(
        (status = 200, body = Completion, description = "the answer; with `stream: true`, `text/event-stream` of `Completion`s"),
        (status = 400, body = OpenAiError), (status = 401, body = OpenAiError), (status = 403, body = OpenAiError),
        (status = 404, body = OpenAiError), (status = 413, body = OpenAiError), (status = 415, body = OpenAiError),
        (status = 429, body = OpenAiError), (status = 500, body = OpenAiError), (status = 503, body = OpenAiError)))]
pub async fn completions(
    State(state): State<AppState>,
    c: std::result::Result<Caller, Error>,
    h: HeaderMap,
    body: Body,
) -> OpenAiResult<Response> {
    let req: CompletionRequest = read(&state, &h, body).await?;
    let g = version(&state, c, &req.model).await?;
    let prompt = match req.prompt.clone() {
        Prompt::One(p) => p,
        Prompt::Many(mut v) if v.len() == 1 => v.remove(0),
        Prompt::Many(_) => return Err(Error::InvalidInput("'prompt' must be one text".into()).into()),
    };
    if req.params.logprobs == Some(true) || req.params.top_logprobs.is_some() {
        let why = "log-probabilities are answered by /chat/completions ('logprobs': true), not /completions";
        return Err(Error::InvalidInput(why.into()).into());
    }
    let settings = Settings::openai(&req.params, Some(16))?;
    let tokens = state.services.prompt_tokens(&g, prompt.clone(), false).await?;
    let stream = state.services.start(&g, tokens, &settings)?;
    let echo = req.echo == Some(true);
    let id = format!("cmpl-{}", uuid::Uuid::new_v4().simple());
    let (created, model, fingerprint) = (now(), req.model.clone(), format!("zoo-{}", g.served.version));
    let completion = move |text: String, finish: Option<&str>, u: Option<Usage>| Completion {
        id: id.clone(),
        object: "text_completion".into(),
        created,
        model: model.clone(),
        choices: if u.is_some() && finish.is_none() {
            vec![]
        } else {
            vec![CompletionChoice { index: 0, text, finish_reason: finish.map(str::to_string), logprobs: None }]
        },
        usage: u,
        system_fingerprint: fingerprint.clone(),
    };
    if req.params.stream != Some(true) {
        let done = stream.collect().await?;
        let text = if echo { prompt + &done.text } else { done.text };
        let answer =
            completion(text, Some(done.finish.as_str()), Some(usage(done.prompt_tokens, done.completion_tokens)));
        return Ok(with_version(Json(answer).into_response(), &g.served.version));
    }
    let first = if echo { vec![json_event(&completion(prompt, None, None))] } else { vec![] };
    let body = sse(stream, first, move |p| match p {
        Piece::Text(t, _) => vec![json_event(&completion(t, None, None))],
        Piece::End { finish, prompt_tokens, completion_tokens } => vec![
            json_event(&completion(String::new(), Some(finish.as_str()), None)),
            json_event(&completion(String::new(), None, Some(usage(prompt_tokens, completion_tokens)))),
        ],
    });
    Ok(with_version(body.into_response(), &g.served.version))
}

/// The text-generation models the key may use, in OpenAI's list shape (zoo's
/// own `GET /v1/models` lists every model in zoo's shape). A key with the read
/// or the predict scope may list them.
#[utoipa::path(get, path = "/openai/v1/models", tag = "openai",
    responses((status = 200, body = OpenAiModelList), (status = 401, body = OpenAiError), (status = 403, body = OpenAiError)))]
pub async fn list_models(
    State(state): State<AppState>,
    c: std::result::Result<Caller, Error>,
) -> OpenAiResult<Json<OpenAiModelList>> {
    let caller = c?;
    // A key that may chat may list what it may chat with (as OpenAI's keys do).
    if !caller.has(Scope::Predict) {
        caller.require(Scope::Read, None)?;
    }
    let mut data = Vec::new();
    let mut cursor = None;
    loop {
        let q = ListModelsQuery { task: Some(Task::TextGeneration), limit: Some(1000), cursor, ..Default::default() };
        let page = state.services.list_models(&caller, &q).await?;
        data.extend(page.models.into_iter().map(|m| OpenAiModel {
            id: m.name,
            object: "model".into(),
            created: m.created_at.timestamp(),
            owned_by: "zoo".into(),
        }));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    Ok(Json(OpenAiModelList { object: "list".into(), data }))
}

/// `POST /v1/chat/completions` under the OpenAI clients' `base_url` (`/openai/v1`).
#[utoipa::path(post, path = "/openai/v1/chat/completions", tag = "openai",
    request_body(content = ChatCompletionRequest),
    responses(
        (status = 200, body = ChatCompletion, description = "the answer; with `stream: true`, `text/event-stream` of `ChatCompletionChunk`s"),
        (status = 400, body = OpenAiError), (status = 401, body = OpenAiError), (status = 403, body = OpenAiError),
        (status = 404, body = OpenAiError), (status = 413, body = OpenAiError), (status = 415, body = OpenAiError),
        (status = 429, body = OpenAiError), (status = 500, body = OpenAiError), (status = 503, body = OpenAiError)))]
pub async fn chat_completions_openai(
    state: State<AppState>,
    c: std::result::Result<Caller, Error>,
    h: HeaderMap,
    body: Body,
) -> OpenAiResult<Response> {
    chat_completions(state, c, h, body).await
}

/// `POST /v1/completions` under the OpenAI clients' `base_url` (`/openai/v1`).
#[utoipa::path(post, path = "/openai/v1/completions", tag = "openai",
    request_body(content = CompletionRequest),
    responses(
        (status = 200, body = Completion, description = "the answer; with `stream: true`, `text/event-stream` of `Completion`s"),
        (status = 400, body = OpenAiError), (status = 401, body = OpenAiError), (status = 403, body = OpenAiError),
        (status = 404, body = OpenAiError), (status = 413, body = OpenAiError), (status = 415, body = OpenAiError),
        (status = 429, body = OpenAiError), (status = 500, body = OpenAiError), (status = 503, body = OpenAiError)))]
pub async fn completions_openai(
    state: State<AppState>,
    c: std::result::Result<Caller, Error>,
    h: HeaderMap,
    body: Body,
) -> OpenAiResult<Response> {
    completions(state, c, h, body).await
}
