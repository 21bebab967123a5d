//! Harness for end-to-end tests: the real `zoo` binary serving on 127.0.0.1:0 with
//! its own data directory, the real CLI, and the fixtures tests deploy.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub mod fixtures;
pub mod helpers;
pub mod production;

/// The `zoo` binary next to the test executable (built by `cargo test --workspace`).
pub fn zoo_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target directory");
    let bin = dir.join("zoo");
    assert!(
        bin.is_file(),
        "the zoo binary is not built at {}: run `cargo build --workspace --all-targets`",
        bin.display()
    );
    bin
}

/// A running `zoo serve`.
pub struct Server {
    pub url: String,
    pub admin_key: String,
    pub data_dir: PathBuf,
    child: Option<Child>,
    _tmp: Option<tempfile::TempDir>,
    /// Where the CLI keeps its login during the test.
    pub cli_config: PathBuf,
    /// The server's stderr (its logs); printed when a test fails.
    pub log_path: PathBuf,
}

/// How to start a server.
#[derive(Default, Clone)]
pub struct Options {
    /// Extra `zoo serve` arguments.
    pub args: Vec<String>,
    /// Environment for the server process.
    pub env: Vec<(String, String)>,
    /// Reuse this data directory (for restarts).
    pub data_dir: Option<PathBuf>,
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(Options::default())
    }

    pub fn start_with(opts: Options) -> Server {
        let (tmp, data_dir) = match opts.data_dir {
            Some(d) => (None, d),
            None => {
                let t = tempfile::tempdir().expect("tempdir");
                let d = t.path().join("data");
                (Some(t), d)
            }
        };
        let mut cmd = Command::new(zoo_bin());
        // A fixed address when the options name one (ZOO_LISTEN), else any free port.
        let listen = opts.env.iter().find(|(k, _)| k == "ZOO_LISTEN").map_or("127.0.0.1:0", |(_, v)| v.as_str());
        cmd.arg("serve").arg("--listen").arg(listen).arg("--data-dir").arg(&data_dir).args(&opts.args);
        cmd.env_remove("ZOO_ADMIN_KEY").env("RUST_LOG", "info,zoo_server=debug");
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let log_path = data_dir.with_extension(format!("log.{}", std::process::id()));
        let log = std::fs::File::create(&log_path).expect("server log file");
        cmd.stdout(Stdio::piped()).stderr(Stdio::from(log));
        let mut child = cmd.spawn().expect("spawn zoo serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                println!("[zoo] {line}");
                if let Some(url) = line.strip_prefix("zoo: listening on ") {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(u) => u,
            Err(_) => {
                let _ = child.kill();
                panic!("zoo serve did not report its address within 60 s");
            }
        };
        let admin_key =
            opts.env.iter().find(|(k, _)| k == "ZOO_ADMIN_KEY").map(|(_, v)| v.clone()).unwrap_or_else(|| {
                std::fs::read_to_string(data_dir.join("admin.key")).expect("admin.key").trim().to_string()
            });
        let cli_config = data_dir.parent().unwrap_or(&data_dir).join("cli.toml");
        Server { url, admin_key, data_dir, child: Some(child), _tmp: tmp, cli_config, log_path }
    }

    /// Stop with SIGTERM and wait; returns the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.terminate();
        self.wait(Duration::from_secs(30))
    }

    /// Send SIGTERM and return at once (`wait` waits for the exit).
    pub fn terminate(&self) {
        let id = self.child.as_ref().expect("server running").id();
        let _ = Command::new("kill").arg("-TERM").arg(id.to_string()).status();
    }

    /// Wait at most `within` for the process to exit; returns its exit status
    /// (panics, after killing it, if it is still running).
    pub fn wait(&mut self, within: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("server running");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("zoo serve did not stop within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    /// Kill the process at once (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Keep the data directory after this server stops (for a restart).
    pub fn keep_data(&mut self) -> Option<tempfile::TempDir> {
        self._tmp.take()
    }

    /// The `zoo` CLI set up to talk to this server with `key`.
    pub fn cli_command(&self, key: &str) -> Command {
        let mut c = Command::new(zoo_bin());
        c.env("ZOO_URL", &self.url).env("ZOO_API_KEY", key).env("ZOO_CONFIG", &self.cli_config);
        c
    }

    /// Run the `zoo` CLI against this server with `key`.
    pub fn cli_with_key(&self, key: &str, args: &[&str]) -> Output {
        let out = self.cli_command(key).args(args).output().expect("run zoo");
        println!(
            "$ zoo {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Run the CLI as admin.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_with_key(&self.admin_key, args)
    }

    /// A raw HTTP client and the full URL of a path.
    pub fn http(&self) -> reqwest::Client {
        reqwest::Client::new()
    }

    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    pub fn client(&self, key: &str) -> zoo_client::Client {
        zoo_client::Client::new(&self.url, Some(key.to_string())).expect("client")
    }
}

impl Server {
    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(200).collect();
            eprintln!("--- zoo serve log ({}) ---", self.log_path.display());
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        let _ = std::fs::remove_file(&self.log_path);
    }
}

/// Stdout of a successful CLI run, or a panic with what it printed.
pub fn ok(out: &Output) -> String {
    assert!(out.status.success(), "zoo failed ({:?}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The path of ONNX Runtime the tests expect the server to find, if any.
pub fn models_cache() -> PathBuf {
    let dir = std::env::var_os("ZOO_TEST_MODELS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/zoo")))
        .expect("set ZOO_TEST_MODELS");
    assert!(
        dir.join("lib/libonnxruntime.so.1.31.1").is_file() && dir.join("minilm/tokenizer.json").is_file(),
        "test models missing in {}: run scripts/fetch-test-models (scripts/test does)",
        dir.display()
    );
    dir
}

/// Server options that point at the fetched ONNX Runtime.
pub fn with_ort() -> Options {
    let lib = models_cache().join("lib/libonnxruntime.so.1.31.1");
    Options { env: vec![("ZOO_ORT_DYLIB".into(), lib.display().to_string())], ..Default::default() }
}

/// Largest absolute difference between two nested JSON number arrays.
pub fn max_abs_diff(a: &serde_json::Value, b: &serde_json::Value) -> f64 {
    match (a, b) {
        (serde_json::Value::Array(x), serde_json::Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "shapes differ: {a} vs {b}");
            x.iter().zip(y).map(|(p, q)| max_abs_diff(p, q)).fold(0.0, f64::max)
        }
        (p, q) => (p.as_f64().expect("number") - q.as_f64().expect("number")).abs(),
    }
}

/// The Python with the test tools (tritonclient, openapi-spec-validator) that
/// `scripts/test` installs into a virtual environment (`ZOO_TEST_PYTHON`).
pub fn test_python() -> PathBuf {
    let py = std::env::var_os("ZOO_TEST_PYTHON").map(PathBuf::from);
    match py {
        Some(p) if p.is_file() => p,
        _ => panic!(
            "ZOO_TEST_PYTHON must name the Python of the test tools' virtual environment (scripts/test makes it \
             from tests/python/requirements-tools.txt)"
        ),
    }
}

/// A script under `tests/python`.
pub fn python_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python").join(name)
}

/// The fetched ONNX Runtime, loaded into this (test) process once.
pub fn ort_in_process() -> &'static zoo_server::runtime::ort::OrtRuntime {
    static ORT: std::sync::OnceLock<zoo_server::runtime::ort::OrtRuntime> = std::sync::OnceLock::new();
    ORT.get_or_init(|| {
        zoo_server::runtime::ort::OrtRuntime::init(&models_cache().join("lib/libonnxruntime.so.1.31.1"), 0)
            .expect("ONNX Runtime")
    })
}

/// A text classifier run in this process, one text at a time, through the same
/// ONNX Runtime library, tokenizer and post-processing that zoo serves it with:
/// the reference for scores that depend on this CPU's kernels (int8 matrix
/// products differ between AVX2, AVX-512 VNNI and ARM), computed where the test runs.
pub fn classify_in_process(bundle: &Path, texts: &[&str]) -> Vec<Vec<zoo_api::LabelScore>> {
    use zoo_server::runtime::Runtime;
    let rt = ort_in_process();
    let files: Vec<zoo_api::BundleFile> = std::fs::read_dir(bundle)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| zoo_api::BundleFile { path: e.file_name().to_string_lossy().into_owned(), size: 0 })
        .collect();
    let artifact = zoo_formats::inspect_dir(bundle, files, &zoo_formats::Limits::default()).unwrap();
    let text = artifact.signature.text.clone().expect("a text bundle");
    let limits = zoo_server::runtime::RunLimits { timeout: Duration::from_secs(60), max_output_bytes: u64::MAX };
    let mut model = rt.load(&artifact.model_path, &artifact.signature, &limits).unwrap();
    let pipeline = zoo_server::pipeline::text::TextPipeline::load(
        bundle,
        &artifact.signature,
        text,
        zoo_server::pipeline::text::Reads::Labels,
    )
    .expect("tokenizer");
    texts
        .iter()
        .map(|t| {
            let enc = pipeline.encode(vec![t.to_string()], usize::MAX).unwrap();
            let out = model.run(enc.inputs).unwrap();
            pipeline.classify(&out, None).unwrap().remove(0)
        })
        .collect()
}
