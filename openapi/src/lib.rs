//! zoo HTTP API types: the request and response bodies of every route, the error
//! body and its stable codes, and the model signature that the server derives from
//! an artifact. Shared by the server (which documents them with utoipa) and the
//! client (which deserializes them).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub mod kserve;
pub mod openai;
mod signature;
pub use signature::*;

/// The body of every error response: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable code: match on this, not on the message.
    pub code: ErrorCode,
    /// What went wrong, for a person.
    pub message: String,
    /// For `invalid_artifact`: the validation rule the artifact broke
    /// (`member_path`, `offsets`, `yaml`, `tree`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// For `invalid_artifact`: the format whose rule it is (`onnx`, `torchscript`,
    /// `safetensors`, `mlflow`, or `bundle` for the archive itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

/// Stable error codes. New codes may be added; existing ones never change meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// No API key, or a key that is unknown, malformed, expired or revoked (401).
    Unauthorized,
    /// The key lacks the scope or the model this route needs (403).
    Forbidden,
    /// The model does not exist (404).
    ModelNotFound,
    /// The version (or alias) does not exist for this model (404).
    VersionNotFound,
    /// The API key does not exist (404).
    KeyNotFound,
    /// Any other unknown route or resource (404).
    NotFound,
    /// The method is not allowed on this route (405).
    MethodNotAllowed,
    /// The version already exists, or is being uploaded right now (409).
    VersionExists,
    /// An alias points at the version: move or remove the alias first (409).
    VersionInUse,
    /// The key is the last active key with every right: revoking it would leave
    /// the server without an admin (409).
    LastAdminKey,
    /// The request revokes the key it is made with: repeat it with `confirm=true` (409).
    ConfirmationRequired,
    /// A model or version name does not follow the naming rules (400).
    InvalidName,
    /// The request body or query is malformed (400).
    InvalidRequest,
    /// The prediction inputs do not match the model's signature (400).
    InvalidInput,
    /// The uploaded bytes do not hash to the `x-zoo-sha256` header (400).
    Sha256Mismatch,
    /// The artifact was recognised but breaks a validation rule (422).
    InvalidArtifact,
    /// The artifact is not a format zoo knows (422).
    UnknownFormat,
    /// The version is stored but cannot be served; the message says why (409).
    NotServable,
    /// The body is larger than the configured limit (413).
    PayloadTooLarge,
    /// The Content-Type is not accepted by this route (415).
    UnsupportedMediaType,
    /// The requested byte range is outside the artifact (416).
    RangeNotSatisfiable,
    /// The model's queue is full; retry after the `Retry-After` seconds (429).
    Overloaded,
    /// The runtime failed while running the model (500).
    InferenceFailed,
    /// The request took longer than the configured timeout (408/504).
    Timeout,
    /// The database or object store is unreachable (503).
    Unavailable,
    /// An unexpected server error; details are in the server log (500).
    Internal,
}

impl ErrorCode {
    /// Every code, for documentation and tests.
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::ModelNotFound,
        ErrorCode::VersionNotFound,
        ErrorCode::KeyNotFound,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::VersionExists,
        ErrorCode::VersionInUse,
        ErrorCode::LastAdminKey,
        ErrorCode::ConfirmationRequired,
        ErrorCode::InvalidName,
        ErrorCode::InvalidRequest,
        ErrorCode::InvalidInput,
        ErrorCode::Sha256Mismatch,
        ErrorCode::InvalidArtifact,
        ErrorCode::UnknownFormat,
        ErrorCode::NotServable,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::RangeNotSatisfiable,
        ErrorCode::Overloaded,
        ErrorCode::InferenceFailed,
        ErrorCode::Timeout,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    /// The code as it appears in error bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::ModelNotFound => "model_not_found",
            ErrorCode::VersionNotFound => "version_not_found",
            ErrorCode::KeyNotFound => "key_not_found",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::VersionExists => "version_exists",
            ErrorCode::VersionInUse => "version_in_use",
            ErrorCode::LastAdminKey => "last_admin_key",
            ErrorCode::ConfirmationRequired => "confirmation_required",
            ErrorCode::InvalidName => "invalid_name",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidInput => "invalid_input",
            ErrorCode::Sha256Mismatch => "sha256_mismatch",
            ErrorCode::InvalidArtifact => "invalid_artifact",
            ErrorCode::UnknownFormat => "unknown_format",
            ErrorCode::NotServable => "not_servable",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::RangeNotSatisfiable => "range_not_satisfiable",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::InferenceFailed => "inference_failed",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `GET /healthz`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok` when the process is alive.
    pub status: String,
    pub version: String,
}

/// `GET /readyz`: whether the server can take traffic.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Readiness {
    /// `ready`, `unavailable` (the database or the store does not answer) or
    /// `draining` (shutting down: finishing the requests in flight).
    pub status: String,
    /// The database answered a query.
    pub database: bool,
    /// The object store answered.
    pub store: bool,
    /// Runtimes this server can run models with (`ort`, `tract`).
    pub runtimes: Vec<String>,
    /// How TorchScript workers are confined on this server (absent when this
    /// server cannot run TorchScript).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torchscript_sandbox: Option<SandboxStatus>,
}

/// The sandbox of the processes that run uploaded code (TorchScript workers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SandboxStatus {
    /// `required` (every protection in force, else TorchScript is not served),
    /// `unsafe-best-effort` or `unsafe-off`.
    pub mode: String,
    /// Every protection is in force.
    pub enforced: bool,
    /// The protections in force: `landlock` (read-only access to libtorch and the
    /// one model file, no writes), `seccomp` (no sockets, exec, new processes,
    /// ptrace, mounts, namespaces, keyrings), `network_namespace`, `no_new_privs`,
    /// `rlimits` (address space, file size 0, open files, no core), `not_dumpable`.
    pub protections: Vec<String>,
    /// What was asked for and is missing on this machine.
    pub missing: Vec<String>,
}

/// Lifecycle of a version. Only `ready` versions are listed or served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VersionStatus {
    Uploading,
    Ready,
    Failed,
}

/// One model and a summary of its versions.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ModelSummary {
    pub name: String,
    pub description: String,
    /// Format of the latest version.
    pub format: Option<Format>,
    /// Task of the latest version.
    pub task: Option<Task>,
    pub latest_version: Option<String>,
    pub version_count: i64,
    /// Sum of the artifact sizes of all versions, in bytes.
    pub total_size: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `GET /v1/models`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ModelList {
    pub models: Vec<ModelSummary>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /v1/models/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ModelDetail {
    pub name: String,
    pub description: String,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    /// Ready versions, newest first.
    pub versions: Vec<VersionInfo>,
    /// Alias name -> version.
    pub aliases: BTreeMap<String, String>,
}

/// Everything known about one version.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VersionInfo {
    pub model: String,
    pub version: String,
    pub format: Format,
    /// Hex sha256 of the stored artifact (the archive for bundles).
    pub sha256: String,
    /// Artifact size in bytes.
    pub size: i64,
    pub task: Task,
    /// Whether this server can run the version; `reason` says why not.
    pub servable: bool,
    pub reason: Option<String>,
    /// The runtime that serves it (`ort`, `tract`), when servable.
    pub runtime: Option<String>,
    pub status: VersionStatus,
    pub signature: Signature,
    /// Class labels, for classifiers.
    pub labels: Vec<String>,
    /// Latency of the warm-up run at load, in milliseconds.
    pub warmup_ms: Option<f64>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    /// Serving settings given at deploy.
    #[serde(default)]
    pub serving: ServingConfig,
    /// Serving settings in effect on this server.
    pub effective: EffectiveServing,
    /// Whether this server holds the version loaded in its runtime right now.
    pub loaded: bool,
    /// For versions that run uploaded code (TorchScript): the sandbox their
    /// worker process runs in on this server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxStatus>,
    /// Routes to call this version.
    pub endpoints: Endpoints,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Endpoints {
    /// Predict with this exact version.
    pub predict: String,
    /// Predict with the model's default version.
    pub predict_default: String,
    /// Download the artifact.
    pub artifact: String,
    /// The version's own OpenAPI document.
    pub openapi: String,
}

/// Query of `GET /v1/models`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListModelsQuery {
    /// Substring of the model name or description.
    pub q: Option<String>,
    /// Only models whose latest version has this format.
    pub format: Option<Format>,
    /// Only models whose latest version has this task.
    pub task: Option<Task>,
    /// Page size (1..=1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Opaque cursor from a previous page.
    pub cursor: Option<String>,
}

/// Query of the upload routes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeployQuery {
    /// Override the task derived from the artifact.
    pub task: Option<Task>,
    /// Runtime to serve with: `auto` (default), `ort` or `tract` for ONNX, `candle` for safetensors.
    pub runtime: Option<RuntimeChoice>,
    /// Comma-separated class labels, overriding `id2label` of config.json.
    pub labels: Option<String>,
    /// Model description (set when the model is created or when given).
    pub description: Option<String>,
    /// Point this alias (e.g. `production`) at the new version once it is ready.
    #[param(value_type = Option<AliasName>)]
    pub alias: Option<AliasName>,
    /// Most rows (texts, tensor rows) merged into one batch (1 = no batching);
    /// for a text-generation version, the sequences decoded together (default 4).
    pub max_batch_size: Option<u32>,
    /// Longest a request waits for others to join its batch, in milliseconds.
    pub max_queue_delay_ms: Option<u32>,
    /// Copies of the model, each on its own inference thread.
    pub instances: Option<u32>,
    /// `eager` (load and warm up at deploy) or `lazy` (on the first request).
    pub load: Option<LoadPolicy>,
    /// Most texts or rows in one request (at most the server's limit).
    pub max_items: Option<u32>,
    /// Most tokens in one text, before truncation (at most the server's limit).
    pub max_tokens: Option<u32>,
    /// Longest a predict request may take, in seconds (at most the server's limit).
    pub timeout_secs: Option<u32>,
    /// Largest predict body, in bytes (at most the server's limit).
    pub max_body_bytes: Option<u64>,
    /// Largest total size of one run's output tensors, in bytes (at most the server's limit).
    pub max_output_bytes: Option<u64>,
}

impl DeployQuery {
    /// The serving settings given with the upload.
    pub fn serving(&self) -> ServingConfig {
        ServingConfig {
            max_batch_size: self.max_batch_size,
            max_queue_delay_ms: self.max_queue_delay_ms,
            instances: self.instances,
            load: self.load,
            max_items: self.max_items,
            max_tokens: self.max_tokens,
            timeout_secs: self.timeout_secs,
            max_body_bytes: self.max_body_bytes,
            max_output_bytes: self.max_output_bytes,
        }
    }
}

/// When a version is loaded into its runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LoadPolicy {
    /// At deploy, with a warm-up run (the default).
    Eager,
    /// On the first request.
    Lazy,
}

/// How one version is served, as set at deploy; unset fields take the server's
/// defaults, and limits can only tighten the server's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ServingConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queue_delay_ms: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_items: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_bytes: Option<u64>,
}

/// The serving settings in effect for a version on this server: its own, else the
/// server's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EffectiveServing {
    /// Rows merged into one batch at most (1 when the model cannot batch); for
    /// text generation, the sequences decoded together.
    pub max_batch_size: u32,
    pub max_queue_delay_ms: u32,
    pub instances: u32,
    pub load: LoadPolicy,
    /// Whether the model's signature has a batch axis, so that requests are merged.
    pub batched: bool,
    pub max_items: u32,
    pub max_tokens: u32,
    pub timeout_secs: u32,
    pub max_body_bytes: u64,
    /// Largest total size of one run's output tensors, in bytes: a larger answer
    /// fails with `inference_failed` instead of being sent.
    #[serde(default)]
    pub max_output_bytes: u64,
    /// Rows per second the loaded model ran on this server at each batch size,
    /// measured once loaded while no request waited (batched versions, while
    /// loaded; empty until measured). Unless the version set
    /// its own `max_batch_size` at deploy, `max_batch_size` is capped at the
    /// smallest size within 5 % of the best: larger batches would only add waiting.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measured_batches: Vec<BatchRate>,
}

/// The throughput a loaded model reached at one batch size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BatchRate {
    pub batch: u32,
    pub rows_per_s: f64,
}

/// One recorded alias move.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AliasMove {
    pub alias: String,
    /// The version it pointed at before (`null`: it was new).
    pub from: Option<String>,
    /// The version it points at after (`null`: it was removed).
    pub to: Option<String>,
    pub at: DateTime<Utc>,
    /// Id of the API key that moved it.
    pub by: String,
}

/// `GET /v1/models/{name}/aliases`: the aliases and every move, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AliasList {
    pub model: String,
    /// Alias name -> version.
    pub aliases: BTreeMap<String, String>,
    pub history: Vec<AliasMove>,
}

/// Body of `POST /v1/auth/session` (the key may come in `Authorization` instead).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct SessionRequest {
    pub key: Option<String>,
}

/// A browser session: who it is, until when, and the CSRF token that requests
/// changing state with it must send in `x-csrf-token`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SessionInfo {
    pub key_id: String,
    pub scopes: Vec<Scope>,
    pub models: Vec<String>,
    pub expires_at: DateTime<Utc>,
    pub csrf_token: String,
}

/// Body of `PUT /v1/models/{name}/aliases/{alias}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SetAliasRequest {
    /// The version the alias points at from now on.
    pub version: VersionName,
}

/// An alias after it was set or removed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AliasInfo {
    pub model: String,
    pub alias: String,
    /// The version it points at now (`null` once removed).
    pub version: Option<String>,
    /// The version it pointed at before (`null` when it is new).
    pub previous: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeChoice {
    #[default]
    Auto,
    Ort,
    Tract,
    Candle,
    Torch,
    Sklearn,
}

impl RuntimeChoice {
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeChoice::Auto => "auto",
            RuntimeChoice::Ort => "ort",
            RuntimeChoice::Tract => "tract",
            RuntimeChoice::Candle => "candle",
            RuntimeChoice::Torch => "torch",
            RuntimeChoice::Sklearn => "sklearn",
        }
    }
}

/// Body of `POST .../predict`. Its shape depends on the version's task:
///
/// - `tensor`: `{"inputs": {"<input name>": <nested array>, ...}}` (a model with one
///   input also takes `{"inputs": <nested array>}`);
/// - `text-classification`: `{"inputs": "text"}` or `{"inputs": ["a", "b"]}`,
///   optional `top_k`;
/// - `feature-extraction`: the same text inputs, optional `normalize`;
/// - MLflow versions also take MLflow's scoring formats: `dataframe_split`
///   (`{"columns": [...], "data": [[...]]}`), `dataframe_records` (`[{"col": v}]`),
///   `instances` (a list of rows, or of `{"input": value}` objects) or `inputs`, and
///   answer `{"predictions": ...}` like `mlflow models serve`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct PredictRequest {
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    #[schema(value_type = Object)]
    pub inputs: serde_json::Value,
    /// text-classification: how many labels to return per text (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, minimum = 1)]
    pub top_k: Option<usize>,
    /// feature-extraction: L2-normalise the embeddings (default from the bundle's
    /// sentence-transformers config, else false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub normalize: Option<bool>,
    /// MLflow versions: a pandas DataFrame in `split` orientation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>, nullable = false)]
    pub dataframe_split: Option<serde_json::Value>,
    /// MLflow versions: a pandas DataFrame in `records` orientation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>, nullable = false)]
    pub dataframe_records: Option<serde_json::Value>,
    /// MLflow versions: TF-serving style rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>, nullable = false)]
    pub instances: Option<serde_json::Value>,
    /// text-generation: how to generate (`max_new_tokens`, `temperature`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub parameters: Option<openai::GenerationParameters>,
}

/// Response of MLflow versions, as `mlflow models serve` answers: one output's
/// values, or one record per row when the model has several outputs.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MlflowPredictions {
    /// JSON text, written straight from the output tensors.
    #[schema(value_type = Object)]
    pub predictions: Box<serde_json::value::RawValue>,
}

/// Response of `tensor` predictions.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TensorResponse {
    /// Output name -> nested array (JSON text, written straight from the tensors).
    #[schema(value_type = Object)]
    pub outputs: BTreeMap<String, Box<serde_json::value::RawValue>>,
}

/// One label of a text-classification response (the Hugging Face Inference API shape).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LabelScore {
    pub label: String,
    pub score: f32,
}

/// One entity of a token-classification response, as transformers' pipeline
/// answers with `aggregation_strategy="simple"`: adjacent tokens of one entity
/// grouped, `start`..`end` its characters in the text (Unicode scalar values).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Entity {
    /// The entity's type (`PER` from `B-PER`/`I-PER`).
    pub entity_group: String,
    /// The mean score of its tokens.
    pub score: f32,
    /// Its tokens, decoded.
    pub word: String,
    pub start: usize,
    pub end: usize,
}

/// Response of `POST .../predict`, by task: `tensor` -> `{"outputs": {...}}`;
/// `text-classification` -> `[{"label", "score"}, ...]` for one text, a list of those
/// for a list of texts; `feature-extraction` -> `[float, ...]` for one text, a list
/// of those for a list; `token-classification` -> `[{"entity_group", "score",
/// "word", "start", "end"}, ...]` for one text, a list of those for a list;
/// `text-generation` -> `[{"generated_text": ...}]`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum PredictResponse {
    Tensor(TensorResponse),
    Mlflow(MlflowPredictions),
    Labels(Vec<LabelScore>),
    LabelsBatch(Vec<Vec<LabelScore>>),
    Embedding(Vec<f32>),
    EmbeddingBatch(Vec<Vec<f32>>),
    Entities(Vec<Entity>),
    EntitiesBatch(Vec<Vec<Entity>>),
    Generated(Vec<openai::GeneratedText>),
}

/// What a key may do. `admin` includes every other scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// List and show models and versions, download artifacts, read per-model docs.
    Read,
    /// Call predict routes.
    Predict,
    /// Upload and delete versions (and models).
    Deploy,
    /// Manage API keys; implies every other scope.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Predict => "predict",
            Scope::Deploy => "deploy",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "read" => Some(Scope::Read),
            "predict" => Some(Scope::Predict),
            "deploy" => Some(Scope::Deploy),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
}

/// Body of `POST /v1/keys`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateKeyRequest {
    /// A label for people (who or what uses the key): 1-200 characters, not only
    /// spaces, no control characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    pub name: String,
    /// At least one; `admin` includes every other.
    #[schema(min_items = 1)]
    pub scopes: Vec<Scope>,
    /// Model-name patterns the key is limited to (`*` matches any run of
    /// characters); empty means every model. At most 100.
    #[serde(default)]
    #[schema(max_items = 100)]
    pub models: Vec<ModelPattern>,
    /// When the key stops working (RFC 3339, in the future); absent means never.
    #[serde(default)]
    #[schema(
        pattern = "^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]+)?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
    )]
    pub expires_at: Option<DateTime<Utc>>,
}

/// An API key as listed (never with its secret).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeyInfo {
    /// The public id, also the `zk_<id>_` prefix of the key.
    pub id: String,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub models: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked: bool,
}

/// Response of `POST /v1/keys`: the secret is shown here once and never again.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedKey {
    /// The whole key to send as `Authorization: Bearer <key>`.
    pub key: String,
    pub info: KeyInfo,
}

/// Query of `DELETE /v1/keys/{id}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RevokeQuery {
    /// `true` to revoke the key this request is made with.
    pub confirm: Option<bool>,
}

/// `GET /v1/keys`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyInfo>,
}

/// Names of the headers zoo reads or writes.
pub mod headers {
    /// Hex sha256 of the upload body; the server refuses a body that does not match.
    pub const SHA256: &str = "x-zoo-sha256";
    /// Alternative to `Authorization: Bearer`.
    pub const API_KEY: &str = "x-api-key";
    /// The version that answered a prediction.
    pub const MODEL_VERSION: &str = "x-zoo-model-version";
    /// Time spent in the runtime, in milliseconds.
    pub const INFERENCE_TIME: &str = "x-inference-time";
    /// Time spent waiting in the model's queue, in milliseconds.
    pub const QUEUE_TIME: &str = "x-queue-time";
    /// Rows of the batch a prediction ran in.
    pub const BATCH_SIZE: &str = "x-batch-size";
    /// Request id, echoed or generated.
    pub const REQUEST_ID: &str = "x-request-id";
}

pub mod typed;
pub use typed::{AliasName, KeyId, ModelName, ModelPattern, NameError, Sha256Hex, VersionName};

/// Naming rules shared by client and server.
pub mod names {
    /// `[a-z0-9][a-z0-9._-]{0,127}`.
    pub fn valid_model_name(s: &str) -> bool {
        let b = s.as_bytes();
        !b.is_empty()
            && b.len() <= 128
            && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
            && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(c))
    }

    /// `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`, and not only dots.
    pub fn valid_version(s: &str) -> bool {
        let b = s.as_bytes();
        !b.is_empty()
            && b.len() <= 64
            && b[0].is_ascii_alphanumeric()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c))
    }

    /// `[a-z][a-z0-9._-]{0,63}`: aliases start with a letter, so that they never
    /// look like an integer version.
    pub fn valid_alias(s: &str) -> bool {
        let b = s.as_bytes();
        !b.is_empty()
            && b.len() <= 64
            && b[0].is_ascii_lowercase()
            && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(c))
    }

    /// Turn a file or directory name into a valid model name, if it has any usable
    /// character (`My Model.onnx` -> `my-model`).
    pub fn model_name_from(stem: &str) -> Option<String> {
        let mut out = String::new();
        for c in stem.chars() {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '_' || c == '-' {
                out.push(c);
            } else if !out.ends_with('-') {
                out.push('-');
            }
        }
        let out = out.trim_matches(|c| c == '-' || c == '.' || c == '_');
        let out: String = out.chars().take(128).collect();
        valid_model_name(&out).then_some(out)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn model_names() {
            assert!(valid_model_name("text-classifier"));
            assert!(valid_model_name("a.b_c-1"));
            assert!(!valid_model_name("Upper"));
            assert!(!valid_model_name("-lead"));
            assert!(!valid_model_name("../etc"));
            assert!(!valid_model_name(""));
            assert!(!valid_model_name(&"a".repeat(129)));
            assert_eq!(model_name_from("My Model").as_deref(), Some("my-model"));
            assert_eq!(model_name_from("???"), None);
        }

        #[test]
        fn versions() {
            assert!(valid_version("1"));
            assert!(valid_version("1.2.0"));
            assert!(valid_version("v2-rc_1"));
            assert!(!valid_version(".."));
            assert!(!valid_version("a/b"));
            assert!(!valid_version(""));
        }

        #[test]
        fn aliases() {
            assert!(valid_alias("production"));
            assert!(valid_alias("canary-2"));
            assert!(!valid_alias("2"), "an alias never looks like a version number");
            assert!(!valid_alias("Prod"));
            assert!(!valid_alias("a/b"));
            assert!(!valid_alias(""));
        }
    }
}
