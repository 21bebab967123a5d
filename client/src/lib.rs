//! Typed HTTP client for zoo, used by the `zoo` command line and by tests.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::StreamExt;
use reqwest::{Body, Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use tokio_util::io::ReaderStream;
use zoo_api::openai::{ChatCompletionChunk, ChatCompletionRequest};
use zoo_api::{
    AliasInfo, CreateKeyRequest, CreatedKey, DeployQuery, ErrorBody, ErrorCode, KeyInfo, KeyList, ListModelsQuery,
    ModelDetail, ModelList, PredictRequest, VersionInfo, headers,
};

pub mod config;
pub mod pack;

/// What a call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error body.
    #[error("{message} ({code}, HTTP {status})")]
    Api { status: u16, code: ErrorCode, message: String },
    /// The server answered something that is not zoo's.
    #[error("unexpected response (HTTP {status}): {body}")]
    Unexpected { status: u16, body: String },
    /// Each cause is printed once: by `{:#}` (anyhow's chain), not by this message.
    #[error("cannot reach the zoo server at {url}")]
    Connect { url: String, source: reqwest::Error },
    #[error(transparent)]
    Http(#[from] reqwest::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// A prediction and the version that answered.
#[derive(Debug, Clone)]
pub struct Prediction {
    pub body: serde_json::Value,
    pub version: Option<String>,
    pub inference_ms: Option<f64>,
}

/// Connection to one zoo server.
#[derive(Clone)]
pub struct Client {
    base: String,
    key: Option<String>,
    http: reqwest::Client,
}

impl Client {
    pub fn new(url: &str, key: Option<String>) -> Result<Client> {
        let http = reqwest::Client::builder().user_agent(concat!("zoo-client/", env!("CARGO_PKG_VERSION"))).build()?;
        Ok(Client { base: url.trim_end_matches('/').to_string(), key, http })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(k) = &self.key {
            r = r.bearer_auth(k);
        }
        r
    }

    async fn send(&self, r: RequestBuilder) -> Result<Response> {
        let resp = r.send().await.map_err(|e| {
            if e.is_connect() || e.is_timeout() {
                ClientError::Connect { url: self.base.clone(), source: e }
            } else {
                ClientError::Http(e)
            }
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(error_of(resp).await)
    }

    async fn json<T: DeserializeOwned>(&self, r: RequestBuilder) -> Result<T> {
        let resp = self.send(r).await?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await?;
        serde_json::from_slice(&bytes).map_err(|_| ClientError::Unexpected {
            status,
            body: String::from_utf8_lossy(&bytes).chars().take(500).collect(),
        })
    }

    pub async fn health(&self) -> Result<zoo_api::Health> {
        self.json(self.request(Method::GET, "/healthz")).await
    }

    pub async fn list_models(&self, q: &ListModelsQuery) -> Result<ModelList> {
        self.json(self.request(Method::GET, "/v1/models").query(q)).await
    }

    pub async fn show_model(&self, name: &str) -> Result<ModelDetail> {
        self.json(self.request(Method::GET, &format!("/v1/models/{name}"))).await
    }

    pub async fn show_version(&self, name: &str, version: &str) -> Result<VersionInfo> {
        self.json(self.request(Method::GET, &format!("/v1/models/{name}/versions/{version}"))).await
    }

    pub async fn delete_version(&self, name: &str, version: &str) -> Result<VersionInfo> {
        self.json(self.request(Method::DELETE, &format!("/v1/models/{name}/versions/{version}"))).await
    }

    pub async fn delete_model(&self, name: &str) -> Result<Vec<VersionInfo>> {
        self.json(self.request(Method::DELETE, &format!("/v1/models/{name}"))).await
    }

    /// Upload an artifact file. `on_progress` is called with the bytes sent so far.
    pub async fn deploy_file(
        &self,
        name: &str,
        version: Option<&str>,
        artifact: &Path,
        content_type: &str,
        query: &DeployQuery,
        on_progress: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<VersionInfo> {
        let sha = sha256_file(artifact).await?;
        let file = tokio::fs::File::open(artifact).await?;
        let len = file.metadata().await?.len();
        let stream = ReaderStream::with_capacity(file, UPLOAD_CHUNK);
        self.upload(name, version, stream, len, &sha, content_type, query, on_progress).await
    }

    /// Upload the model directory `dir` as a tar bundle, packed as it is sent (no
    /// copy on disk); `packed` is [`pack::measure`]'s account of it (the hash and
    /// size the server checks).
    pub async fn deploy_dir(
        &self,
        name: &str,
        version: Option<&str>,
        dir: &Path,
        packed: &pack::Packed,
        query: &DeployQuery,
        on_progress: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<VersionInfo> {
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
        let (dir, files) = (dir.to_path_buf(), packed.files.clone());
        tokio::task::spawn_blocking(move || {
            let out = ChunkSender { tx: tx.clone(), buf: Vec::with_capacity(UPLOAD_CHUNK) };
            if let Err(e) = pack::write_tar(&dir, &files, out).and_then(|mut w| w.send()) {
                // The request fails with it (unless it is already over).
                let _ = tx.blocking_send(Err(e));
            }
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
        self.upload(name, version, stream, packed.size, &packed.sha256, "application/x-tar", query, on_progress).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn upload<S>(
        &self,
        name: &str,
        version: Option<&str>,
        body: S,
        len: u64,
        sha256: &str,
        content_type: &str,
        query: &DeployQuery,
        on_progress: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<VersionInfo>
    where
        S: futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    {
        let mut sent = 0u64;
        let stream = body.map(move |chunk| {
            if let Ok(c) = &chunk {
                sent += c.len() as u64;
                on_progress(sent);
            }
            chunk
        });
        let (method, path) = match version {
            Some(v) => (Method::PUT, format!("/v1/models/{name}/versions/{v}")),
            None => (Method::POST, format!("/v1/models/{name}/versions")),
        };
        let r = self
            .request(method, &path)
            .query(query)
            .header(headers::SHA256, sha256)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(Body::wrap_stream(stream));
        self.json(r).await
    }

    /// Predict with the default version, or with `version`.
    pub async fn predict(&self, name: &str, version: Option<&str>, req: &PredictRequest) -> Result<Prediction> {
        let path = match version {
            Some(v) => format!("/v1/models/{name}/versions/{v}/predict"),
            None => format!("/v1/models/{name}/predict"),
        };
        let resp = self.send(self.request(Method::POST, &path).json(req)).await?;
        let version = resp.headers().get(headers::MODEL_VERSION).and_then(|v| v.to_str().ok()).map(str::to_string);
        let inference_ms =
            resp.headers().get(headers::INFERENCE_TIME).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        let body = resp.json().await?;
        Ok(Prediction { body, version, inference_ms })
    }

    /// A chat completion of a text-generation model, streamed
    /// (`/openai/v1/chat/completions` with `stream: true`): `on_text` gets each
    /// piece of the answer as it comes. Returns the whole answer and why it ended
    /// (`stop` or `length`).
    pub async fn chat(
        &self,
        req: &ChatCompletionRequest,
        mut on_text: impl FnMut(&str),
    ) -> Result<(String, Option<String>)> {
        let mut req = req.clone();
        req.params.stream = Some(true);
        let resp = self.send(self.request(Method::POST, "/openai/v1/chat/completions").json(&req)).await?;
        let mut body = resp.bytes_stream();
        let (mut pending, mut answer, mut finish) = (Vec::<u8>::new(), String::new(), None);
        while let Some(bytes) = body.next().await {
            pending.extend_from_slice(&bytes?);
            // Events end with a blank line; their `data:` lines hold the JSON.
            while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = pending.drain(..end + 2).collect();
                let event = String::from_utf8_lossy(&event);
                for data in event.lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim) {
                    if data == "[DONE]" {
                        return Ok((answer, finish));
                    }
                    if let Ok(err) = serde_json::from_str::<ErrorBody>(data) {
                        let status = if err.error.code == ErrorCode::Overloaded { 429 } else { 500 };
                        return Err(ClientError::Api { status, code: err.error.code, message: err.error.message });
                    }
                    let chunk: ChatCompletionChunk = serde_json::from_str(data)
                        .map_err(|_| ClientError::Unexpected { status: 200, body: data.chars().take(500).collect() })?;
                    for choice in chunk.choices {
                        if let Some(text) = choice.delta.content.filter(|t| !t.is_empty()) {
                            on_text(&text);
                            answer.push_str(&text);
                        }
                        if choice.finish_reason.is_some() {
                            finish = choice.finish_reason;
                        }
                    }
                }
            }
            if pending.len() > MAX_CHAT_EVENT {
                return Err(ClientError::Other(format!(
                    "the server sent a stream event longer than {MAX_CHAT_EVENT} bytes"
                )));
            }
        }
        Err(ClientError::Other("the server ended the stream before it was done".into()))
    }

    /// Download an artifact to `dest`, checking its sha256.
    pub async fn pull(&self, name: &str, version: &str, dest: &Path) -> Result<VersionInfo> {
        let info = self.show_version(name, version).await?;
        let resp =
            self.send(self.request(Method::GET, &format!("/v1/models/{name}/versions/{version}/artifact"))).await?;
        let tmp = part_path(dest);
        let mut file = tokio::fs::File::create(&tmp).await?;
        let mut hasher = Sha256::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            hasher.update(&chunk);
            tokio::io::AsyncWriteExt::write_all(&mut file, &chunk).await?;
        }
        tokio::io::AsyncWriteExt::flush(&mut file).await?;
        let got = hex::encode(hasher.finalize());
        if got != info.sha256 {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(ClientError::Other(format!("downloaded artifact has sha256 {got}, expected {}", info.sha256)));
        }
        tokio::fs::rename(&tmp, dest).await?;
        Ok(info)
    }

    /// Point an alias at a version.
    pub async fn set_alias(&self, name: &str, alias: &str, version: &str) -> Result<AliasInfo> {
        // The server checks the names (and says which rule a bad one breaks).
        let body = serde_json::json!({ "version": version });
        self.json(self.request(Method::PUT, &format!("/v1/models/{name}/aliases/{alias}")).json(&body)).await
    }

    /// Remove an alias.
    pub async fn delete_alias(&self, name: &str, alias: &str) -> Result<AliasInfo> {
        self.json(self.request(Method::DELETE, &format!("/v1/models/{name}/aliases/{alias}"))).await
    }

    pub async fn list_aliases(&self, name: &str) -> Result<zoo_api::AliasList> {
        self.json(self.request(Method::GET, &format!("/v1/models/{name}/aliases"))).await
    }

    pub async fn create_key(&self, req: &CreateKeyRequest) -> Result<CreatedKey> {
        self.json(self.request(Method::POST, "/v1/keys").json(req)).await
    }

    pub async fn list_keys(&self) -> Result<KeyList> {
        self.json(self.request(Method::GET, "/v1/keys")).await
    }

    /// Revoke a key; `confirm` is needed to revoke the key this client uses.
    pub async fn revoke_key(&self, id: &str, confirm: bool) -> Result<KeyInfo> {
        let path = if confirm { format!("/v1/keys/{id}?confirm=true") } else { format!("/v1/keys/{id}") };
        self.json(self.request(Method::DELETE, &path)).await
    }
}

fn part_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}

async fn error_of(resp: Response) -> ClientError {
    let status = resp.status();
    let bytes = resp.bytes().await.unwrap_or_default();
    match serde_json::from_slice::<ErrorBody>(&bytes) {
        Ok(b) => ClientError::Api { status: status.as_u16(), code: b.error.code, message: b.error.message },
        Err(_) => {
            let body = String::from_utf8_lossy(&bytes).chars().take(500).collect::<String>();
            let body = if body.is_empty() { status.canonical_reason().unwrap_or("").to_string() } else { body };
            if status == StatusCode::NOT_FOUND {
                return ClientError::Unexpected { status: 404, body: format!("{body} (is this a zoo server?)") };
            }
            ClientError::Unexpected { status: status.as_u16(), body }
        }
    }
}

/// Bytes per chunk of an upload's body.
const UPLOAD_CHUNK: usize = 256 * 1024;

/// The tar packer's output, sent in chunks to the request body (the channel
/// bounds what is held); fails once the request is over.
struct ChunkSender {
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChunkSender {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(UPLOAD_CHUNK));
        self.tx
            .blocking_send(Ok(Bytes::from(chunk)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the upload ended"))
    }
}

impl std::io::Write for ChunkSender {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(UPLOAD_CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == UPLOAD_CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Hex sha256 of a file, streamed.
pub async fn sha256_file(path: &Path) -> Result<String> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = tokio::io::AsyncReadExt::read(&mut file, &mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The longest server-sent event `Client::chat` holds while waiting for its end:
/// one chunk of a chat answer is a few hundred bytes, so a longer one is a server
/// that is not zoo, or a hostile one.
const MAX_CHAT_EVENT: usize = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers any request with `body` as an event stream.
    async fn serve_once(body: Vec<u8>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut req = vec![0u8; 64 * 1024];
            let _ = conn.read(&mut req).await;
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
            let _ = conn.write_all(head.as_bytes()).await;
            let _ = conn.write_all(&body).await;
        });
        format!("http://{addr}")
    }

    fn request() -> ChatCompletionRequest {
        serde_json::from_value(serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
            .unwrap()
    }

    #[tokio::test]
    async fn a_chat_stream_is_read_event_by_event() {
        let chunk = |text: &str, finish: Option<&str>| {
            let c = serde_json::json!({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m", "system_fingerprint": "zoo",
                "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]});
            format!("data: {c}\n\n")
        };
        let body = format!("{}{}{}data: [DONE]\n\n", chunk("Hel", None), chunk("lo", None), chunk("", Some("stop")));
        let client = Client::new(&serve_once(body.into_bytes()).await, None).unwrap();
        let mut seen = Vec::new();
        let (answer, finish) = client.chat(&request(), |t| seen.push(t.to_string())).await.unwrap();
        assert_eq!(
            (answer.as_str(), finish.as_deref(), seen),
            ("Hello", Some("stop"), vec!["Hel".into(), "lo".into()])
        );
    }

    #[tokio::test]
    async fn an_endless_event_is_refused_not_held() {
        // A server that never ends its event: the client stops at its bound.
        let body = [b"data: ".as_slice(), &vec![b'x'; 3 * MAX_CHAT_EVENT]].concat();
        let client = Client::new(&serve_once(body).await, None).unwrap();
        let err = client.chat(&request(), |_| {}).await.unwrap_err();
        assert!(err.to_string().contains("longer than"), "{err}");
    }
}
