//! Server configuration: one struct, every field a `--flag` and a `ZOO_*` variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use zoo_api::LoadPolicy;
use zoo_torch::sandbox::Mode as SandboxMode;

fn parse_load(s: &str) -> Result<LoadPolicy, String> {
    match s {
        "eager" => Ok(LoadPolicy::Eager),
        "lazy" => Ok(LoadPolicy::Lazy),
        _ => Err(format!("'{s}' is not a load policy: eager or lazy")),
    }
}

fn parse_sandbox(s: &str) -> Result<SandboxMode, String> {
    SandboxMode::parse(s)
        .ok_or_else(|| format!("'{s}' is not a sandbox mode: required, unsafe-best-effort or unsafe-off"))
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" | "true" | "1" => Ok(true),
        "off" | "false" | "0" => Ok(false),
        _ => Err(format!("'{s}' is not on or off")),
    }
}

/// `zoo serve` options.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port (the bound address is printed).
    #[arg(long, env = "ZOO_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Directory for the embedded database, objects, cache and admin key.
    #[arg(long, env = "ZOO_DATA_DIR", default_value = "./zoo-data")]
    pub data_dir: PathBuf,

    /// Registry database URL (default: sqlite://<data-dir>/zoo.db).
    #[arg(long, env = "ZOO_DATABASE_URL")]
    pub database_url: Option<String>,

    /// Object store URL (default: file://<data-dir>/objects).
    #[arg(long, env = "ZOO_STORE")]
    pub store: Option<String>,

    /// Create the S3 bucket when it does not exist (otherwise a missing bucket is an error).
    #[arg(long, env = "ZOO_CREATE_BUCKET", default_value_t = false)]
    pub create_bucket: bool,

    /// Admin API key accepted in addition to stored keys. When set, no key is
    /// generated at first start.
    #[arg(long, env = "ZOO_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,

    /// Secret that signs browser sessions (at least 32 characters; the same on
    /// every replica). Default: generated at first start into <data-dir>/session.secret.
    #[arg(long, env = "ZOO_SESSION_SECRET", hide_env_values = true)]
    pub session_secret: Option<String>,

    /// Lifetime of a browser session, in seconds.
    #[arg(long, env = "ZOO_SESSION_TTL_SECS", default_value_t = 3600)]
    pub session_ttl_secs: u64,

    /// Mark the session cookie Secure (send it over HTTPS only): set this behind TLS.
    #[arg(long, env = "ZOO_SECURE_COOKIES", default_value_t = false)]
    pub secure_cookies: bool,

    /// Path of libonnxruntime (also read from ORT_DYLIB_PATH). Without it zoo looks
    /// in <data-dir>/lib and the fetch cache, then falls back to tract.
    #[arg(long, env = "ZOO_ORT_DYLIB")]
    pub ort_dylib: Option<PathBuf>,

    /// Path of zoo-torch-worker, which serves TorchScript with libtorch (default:
    /// next to this executable; without it TorchScript versions are not servable).
    #[arg(long, env = "ZOO_TORCH_WORKER")]
    pub torch_worker: Option<PathBuf>,

    /// libtorch 2.13.0 directory (with lib/) for the TorchScript worker (default:
    /// <data-dir>/libtorch, then the fetch cache ~/.cache/zoo/libtorch).
    #[arg(long, env = "ZOO_LIBTORCH")]
    pub libtorch: Option<PathBuf>,

    /// How TorchScript workers are confined: `required` (Landlock, seccomp,
    /// namespaces and limits, all in force, else TorchScript versions are stored
    /// but not served), `unsafe-best-effort` (serve with whatever the kernel
    /// offers) or `unsafe-off` (no sandbox: uploaded TorchScript can then read and
    /// write every file the server can).
    #[arg(long, env = "ZOO_TORCHSCRIPT_SANDBOX", default_value = "required", value_parser = parse_sandbox)]
    pub torchscript_sandbox: SandboxMode,

    /// Address-space limit of each TorchScript worker, in bytes (0: libtorch's own
    /// size plus 1 GiB plus four times the model file).
    #[arg(long, env = "ZOO_TORCH_WORKER_MEMORY", default_value_t = 0)]
    pub torch_worker_memory: u64,

    /// Refuse TorchScript uploads whose code calls operators that do file,
    /// network or process I/O or load native code (`on`), or leave that to the
    /// sandbox alone (`off`).
    #[arg(long, env = "ZOO_TORCHSCRIPT_OP_CHECK", default_value = "on", value_parser = parse_on_off, action = clap::ArgAction::Set)]
    pub torchscript_op_check: bool,

    /// Threads each ONNX Runtime session uses inside one operator (0 = all cores).
    #[arg(long, env = "ZOO_INTRA_OP_THREADS", default_value_t = 0)]
    pub intra_op_threads: usize,

    /// Largest artifact upload, in bytes.
    #[arg(long, env = "ZOO_MAX_UPLOAD_BYTES", default_value_t = 4 * 1024 * 1024 * 1024)]
    pub max_upload_bytes: u64,

    /// Largest predict request body, in bytes.
    #[arg(long, env = "ZOO_MAX_PREDICT_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub max_predict_bytes: usize,

    /// Largest total size of the output tensors of one model run, in bytes (a
    /// version may set less); a larger answer fails instead of being sent.
    #[arg(long, env = "ZOO_MAX_OUTPUT_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_output_bytes: u64,

    /// Request bodies held in memory at once, across all requests, in bytes;
    /// past it new bodies are refused with 429.
    #[arg(long, env = "ZOO_MAX_INFLIGHT_BODY_BYTES", default_value_t = 512 * 1024 * 1024)]
    pub max_inflight_body_bytes: u64,

    /// Most texts (or batch rows) in one predict request.
    #[arg(long, env = "ZOO_MAX_BATCH_ITEMS", default_value_t = 256)]
    pub max_batch_items: usize,

    /// Most rows (texts, tensor rows) merged into one batch, unless a version says
    /// otherwise at deploy (1 = no batching).
    #[arg(long, env = "ZOO_MAX_BATCH_SIZE", default_value_t = 32)]
    pub max_batch_size: u32,

    /// Longest a request waits for others to join its batch, in milliseconds (0:
    /// batches only form from requests already waiting).
    #[arg(long, env = "ZOO_MAX_QUEUE_DELAY_MS", default_value_t = 0)]
    pub max_queue_delay_ms: u32,

    /// Copies of each model, each on its own inference thread.
    #[arg(long, env = "ZOO_INSTANCES", default_value_t = 1)]
    pub instances: u32,

    /// When versions are loaded: eager (at deploy, with a warm-up run) or lazy (on
    /// their first request).
    #[arg(long, env = "ZOO_LOAD", default_value = "eager", value_parser = parse_load)]
    pub load: LoadPolicy,

    /// Most tokens in one text, before truncation to the model's length.
    #[arg(long, env = "ZOO_MAX_TOKENS", default_value_t = 8192)]
    pub max_tokens: u32,

    /// Memory budget for loaded models, in bytes (estimated from their artifact
    /// sizes); beyond it the least recently used idle versions are unloaded. 0 = no
    /// budget.
    #[arg(long, env = "ZOO_MODEL_MEMORY_BUDGET", default_value_t = 0)]
    pub model_memory_budget: u64,

    /// Requests waiting for one model before new ones get 429.
    #[arg(long, env = "ZOO_QUEUE_CAPACITY", default_value_t = 256)]
    pub queue_capacity: usize,

    /// Timeout of a predict or metadata request, in seconds.
    #[arg(long, env = "ZOO_REQUEST_TIMEOUT_SECS", default_value_t = 60)]
    pub request_timeout_secs: u64,

    /// An upload that sends nothing for this many seconds is cut off.
    #[arg(long, env = "ZOO_UPLOAD_IDLE_TIMEOUT_SECS", default_value_t = 30)]
    pub upload_idle_timeout_secs: u64,

    /// An upload slower than this many bytes per second on average, once it has
    /// run for the idle timeout, is cut off (a client trickling bytes holds a
    /// connection and a disk file open).
    #[arg(long, env = "ZOO_UPLOAD_MIN_BYTES_PER_SEC", default_value_t = 1024)]
    pub upload_min_bytes_per_sec: u64,

    /// Uploads still `uploading` after this many seconds are swept.
    #[arg(long, env = "ZOO_STALE_UPLOAD_SECS", default_value_t = 3600)]
    pub stale_upload_secs: u64,

    /// How often the sweeper runs, in seconds.
    #[arg(long, env = "ZOO_SWEEP_INTERVAL_SECS", default_value_t = 600)]
    pub sweep_interval_secs: u64,

    /// On SIGTERM, seconds during which `/readyz` answers 503 `draining` while
    /// requests are still accepted and served, so that a load balancer's health
    /// check takes this replica out before it stops listening. Set it longer
    /// than the balancer needs to notice (Kubernetes: endpoint removal, a few
    /// seconds). SIGINT (Ctrl-C) skips it.
    #[arg(long, env = "ZOO_SHUTDOWN_DELAY_SECS", default_value_t = 0)]
    pub shutdown_delay_secs: u64,

    /// After the delay, the server stops accepting connections and waits at most
    /// this many seconds for the requests in flight (uploads, predictions,
    /// streams) to finish, then exits.
    #[arg(long, env = "ZOO_SHUTDOWN_TIMEOUT_SECS", default_value_t = 30)]
    pub shutdown_timeout_secs: u64,

    /// Log as JSON lines instead of text.
    #[arg(long, env = "ZOO_LOG_JSON", default_value_t = false)]
    pub log_json: bool,
}

impl Config {
    /// A configuration for tests and embedding: defaults, with the given data dir
    /// and an ephemeral port.
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Config {
        Config {
            listen: "127.0.0.1:0".parse().expect("static address"),
            data_dir: data_dir.into(),
            database_url: None,
            store: None,
            create_bucket: false,
            admin_key: None,
            session_secret: None,
            session_ttl_secs: 3600,
            secure_cookies: false,
            ort_dylib: None,
            torch_worker: None,
            libtorch: None,
            torchscript_sandbox: SandboxMode::Required,
            torch_worker_memory: 0,
            torchscript_op_check: true,
            intra_op_threads: 0,
            max_upload_bytes: 4 * 1024 * 1024 * 1024,
            max_predict_bytes: 32 * 1024 * 1024,
            max_output_bytes: 64 * 1024 * 1024,
            max_inflight_body_bytes: 512 * 1024 * 1024,
            max_batch_items: 256,
            max_batch_size: 32,
            max_queue_delay_ms: 0,
            instances: 1,
            load: LoadPolicy::Eager,
            max_tokens: 8192,
            model_memory_budget: 0,
            queue_capacity: 256,
            request_timeout_secs: 60,
            upload_idle_timeout_secs: 30,
            upload_min_bytes_per_sec: 1024,
            stale_upload_secs: 3600,
            sweep_interval_secs: 600,
            shutdown_delay_secs: 0,
            shutdown_timeout_secs: 30,
            log_json: false,
        }
    }

    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("zoo.db").display()))
    }

    pub fn store_url(&self) -> String {
        self.store.clone().unwrap_or_else(|| format!("file://{}", self.data_dir.join("objects").display()))
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    pub fn upload_idle_timeout(&self) -> Duration {
        Duration::from_secs(self.upload_idle_timeout_secs)
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.data_dir.join("cache")
    }

    pub fn work_dir(&self) -> PathBuf {
        self.data_dir.join("work")
    }
}
