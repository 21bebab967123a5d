//! Detect and validate model artifacts, and derive their signature and task.
//!
//! Pure and synchronous: no HTTP, no async, no database. Limits in, a described
//! artifact or a precise error out. Nothing here executes or unpickles anything.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use prost::bytes::Bytes;
use zoo_api::{BundleFile, DType, Dim, Format, Signature, Task, TensorSpec, TextInfo, ValueKind};

#[cfg(feature = "fixtures")]
pub mod build;
pub mod bundle;
#[cfg(feature = "fixtures")]
pub mod hostile;
pub mod mlflow;
pub mod onnx;
pub mod onnx_proto;
pub mod safetensors;
pub mod skops;
mod text;
pub mod torchscript;
pub mod torchscript_ops;
pub mod zip;

pub use text::{derive_task, derive_task_at};

/// Size limits applied while validating.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest ONNX protobuf (protobuf itself stops at 2 GiB).
    pub max_onnx_size: u64,
    /// Largest total size of an unpacked bundle.
    pub max_bundle_size: u64,
    /// Most members in a bundle archive.
    pub max_bundle_files: usize,
    /// Largest side file (config.json, tokenizer.json).
    pub max_side_file: u64,
    /// Most tensors in a safetensors header.
    pub max_tensors: usize,
    /// Refuse TorchScript whose code calls operators that do I/O (see
    /// `torchscript_ops`).
    pub torchscript_op_check: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_onnx_size: 2 * 1024 * 1024 * 1024,
            max_bundle_size: 4 * 1024 * 1024 * 1024,
            max_bundle_files: 1000,
            max_side_file: 64 * 1024 * 1024,
            max_tensors: 100_000,
            torchscript_op_check: true,
        }
    }
}

/// Why an artifact was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not a format zoo knows.
    #[error("{0}")]
    UnknownFormat(String),
    /// A known format that breaks a rule.
    #[error("invalid {format} artifact ({rule}): {message}", format = format.as_str())]
    Invalid { format: Format, rule: &'static str, message: String },
    /// The bundle archive or directory is unacceptable.
    #[error("invalid bundle ({rule}): {message}")]
    InvalidBundle { rule: &'static str, message: String },
    /// A size limit was exceeded.
    #[error("{what} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { what: String, size: u64, limit: u64 },
    /// Reading the artifact failed (not the client's fault).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// What an upload looks like from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    Tar,
    Zip,
    Safetensors,
    /// Anything else: may be ONNX (protobuf has no magic number).
    Other,
}

/// Recognise a container or format from the first 512 bytes (or fewer) of a file.
pub fn sniff(head: &[u8]) -> Sniffed {
    if head.len() >= 262 && &head[257..262] == b"ustar" {
        return Sniffed::Tar;
    }
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return Sniffed::Zip;
    }
    if head.len() >= 9 && head[8] == b'{' {
        // An 8-byte length, then a JSON object: also when the length is absurd, so
        // that such a file gets the safetensors rule it breaks.
        let n = u64::from_le_bytes(head[..8].try_into().unwrap_or([0; 8]));
        let object_follows = head.get(9).is_none_or(|c| matches!(c, b'"' | b'}' | b' ' | b'\n' | b'\r' | b'\t'));
        if n > 1 && (n < 100 * 1024 * 1024 || object_follows) {
            return Sniffed::Safetensors;
        }
    }
    Sniffed::Other
}

/// A validated artifact, ready to store and serve.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub signature: Signature,
    /// Task derived from the files (may be overridden at deploy time).
    pub task: Task,
    pub labels: Vec<String>,
    /// Path of the model file: the upload itself, or a file inside `bundle_dir`.
    pub model_path: PathBuf,
    /// Root of the unpacked bundle, for bundles.
    pub bundle_dir: Option<PathBuf>,
}

/// Validate an uploaded file. Bundles (tar archives) are unpacked into `work_dir`,
/// which must be an empty directory the caller owns and removes.
pub fn inspect_upload(path: &Path, work_dir: &Path, limits: &Limits) -> Result<Artifact, Error> {
    let mut head = [0u8; 512];
    let n = read_head(path, &mut head)?;
    match sniff(&head[..n]) {
        Sniffed::Tar => {
            let files = bundle::extract_tar(path, work_dir, limits)?;
            let root = bundle::bundle_root(work_dir)?;
            let prefix = root.strip_prefix(work_dir).map(Path::to_path_buf).unwrap_or_default();
            let files = files
                .into_iter()
                .filter_map(|f| {
                    let p = Path::new(&f.path).strip_prefix(&prefix).ok()?.to_string_lossy().into_owned();
                    Some(BundleFile { path: p, size: f.size })
                })
                .collect();
            inspect_dir(&root, files, limits)
        }
        Sniffed::Zip => match torchscript::inspect(path, limits) {
            Ok((inputs, outputs, info)) => Ok(Artifact {
                signature: Signature {
                    inputs,
                    outputs,
                    torchscript: Some(info),
                    ..Signature::empty(Format::Torchscript, false)
                },
                task: Task::Tensor,
                labels: vec![],
                model_path: path.to_path_buf(),
                bundle_dir: None,
            }),
            Err(Error::Invalid { rule: "not_torchscript", message, .. }) => Err(Error::UnknownFormat(format!(
                "a zip archive that is not a TorchScript model ({message}); send other bundles as a tar archive \
                 (`zoo deploy DIR` does this)"
            ))),
            Err(e) => Err(e),
        },
        Sniffed::Safetensors => {
            let info = safetensors::inspect(path, limits)?;
            Ok(Artifact {
                signature: Signature { safetensors: Some(info), ..Signature::empty(Format::Safetensors, false) },
                task: Task::Tensor,
                labels: vec![],
                model_path: path.to_path_buf(),
                bundle_dir: None,
            })
        }
        Sniffed::Other => {
            let bytes = read_limited(path, limits.max_onnx_size, "model file")?;
            if !onnx::looks_like_onnx(&bytes) {
                if n == 0 {
                    return Err(Error::UnknownFormat("the upload is empty".into()));
                }
                // A protobuf that almost parses is far more likely a broken ONNX file.
                if bytes.first() == Some(&0x08) {
                    onnx::inspect(bytes.clone(), None, limits)?;
                }
                return Err(Error::UnknownFormat(format!(
                    "not a recognised model format: zoo accepts {}",
                    ACCEPTED.join("; ")
                )));
            }
            let signature = onnx::inspect(bytes, None, limits)?;
            let derived = derive_task(&signature, None, limits)?;
            Ok(Artifact {
                signature: Signature { text: derived.text, ..signature },
                task: derived.task,
                labels: derived.labels,
                model_path: path.to_path_buf(),
                bundle_dir: None,
            })
        }
    }
}

/// Validate an unpacked bundle directory.
pub fn inspect_dir(dir: &Path, files: Vec<BundleFile>, limits: &Limits) -> Result<Artifact, Error> {
    if files.iter().any(|f| f.path == "MLmodel") {
        return inspect_mlflow(dir, files, limits);
    }
    if !files.iter().any(|f| f.path.ends_with(".onnx")) && files.iter().any(|f| f.path == "model.safetensors") {
        return inspect_hf(dir, dir, "tokenizer.json", files, limits);
    }
    let model = bundle_model_file(&files)?.to_string();
    let model_path = dir.join(&model);
    let bytes = read_limited(&model_path, limits.max_onnx_size, "model file")?;
    let mut signature = onnx::inspect(bytes, Some(dir), limits)?;
    let derived = derive_task(&signature, Some(dir), limits)?;
    signature.bundle = true;
    signature.text = derived.text;
    signature.files = files;
    Ok(Artifact {
        signature,
        task: derived.task,
        labels: derived.labels,
        model_path,
        bundle_dir: Some(dir.to_path_buf()),
    })
}

/// An MLflow bundle, validated and described through the flavor zoo serves it
/// with (`onnx`, `transformers` with safetensors weights, `sklearn` with skops);
/// other flavors are stored and catalogued, with the reason zoo cannot serve them.
fn inspect_mlflow(dir: &Path, files: Vec<BundleFile>, limits: &Limits) -> Result<Artifact, Error> {
    let info = mlflow::inspect(dir)?;
    let model_path = dir.join(info.model_file.as_deref().unwrap_or("MLmodel"));
    let (mut signature, task, labels) = match info.served_flavor.as_deref() {
        Some("onnx") => {
            let bytes = read_limited(&model_path, limits.max_onnx_size, "model file")?;
            (onnx::inspect(bytes, Some(dir), limits)?, Task::Tensor, vec![])
        }
        Some("transformers") => {
            let model_dir = model_path.parent().unwrap_or(dir);
            let tokenizer = info.tokenizer.as_deref().unwrap_or("components/tokenizer/tokenizer.json");
            let a = inspect_hf(dir, model_dir, tokenizer, vec![], limits)?;
            (a.signature, a.task, a.labels)
        }
        Some("sklearn") => {
            let model = skops::inspect(&model_path, limits)?;
            let signature = skops::signature(&model, &info);
            let labels = model
                .classes
                .iter()
                .flatten()
                .map(|c| c.as_str().map_or_else(|| c.to_string(), str::to_string))
                .collect();
            (Signature { skops: Some(model), ..signature }, Task::Tensor, labels)
        }
        _ => (Signature::empty(Format::Mlflow, true), Task::Tensor, vec![]),
    };
    signature.format = Format::Mlflow;
    signature.bundle = true;
    signature.files = files;
    signature.mlflow = Some(info);
    Ok(Artifact { signature, task, labels, model_path, bundle_dir: Some(dir.to_path_buf()) })
}

/// Model types zoo runs natively from safetensors (with candle).
pub const NATIVE_MODEL_TYPES: &[&str] = &["bert"];

/// A Hugging Face directory: `config.json` + `model.safetensors` (+ a tokenizer) in
/// `model_dir`, the tokenizer at `tokenizer` (relative to the bundle `root`). A
/// BERT encoder takes token ids and returns its last hidden state, which the text
/// tasks pool like an ONNX export of the same model; a BERT sequence classifier
/// returns logits.
fn inspect_hf(
    root: &Path,
    model_dir: &Path,
    tokenizer: &str,
    files: Vec<BundleFile>,
    limits: &Limits,
) -> Result<Artifact, Error> {
    let dir = model_dir;
    let weights = dir.join("model.safetensors");
    let info = safetensors::inspect(&weights, limits)?;
    let config: serde_json::Value = match bundle::read_small(&dir.join("config.json"), limits.max_side_file)? {
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Invalid {
            format: Format::Safetensors,
            rule: "config",
            message: format!("config.json is not valid JSON: {e}"),
        })?,
        None => serde_json::Value::Null,
    };
    let model_type = config.get("model_type").and_then(serde_json::Value::as_str).unwrap_or("");
    let hidden = config.get("hidden_size").and_then(serde_json::Value::as_i64);
    if NATIVE_MODEL_TYPES.contains(&model_type) {
        let heads = config.get("num_attention_heads").and_then(serde_json::Value::as_i64).unwrap_or(0);
        if heads < 1 || hidden.is_none_or(|h| h < 1 || h % heads != 0) {
            return Err(Error::Invalid {
                format: Format::Safetensors,
                rule: "config",
                message: format!(
                    "config.json: hidden_size ({hidden:?}) must be a positive multiple of num_attention_heads ({heads})"
                ),
            });
        }
    }
    let (inputs, outputs) = if NATIVE_MODEL_TYPES.contains(&model_type) {
        let ids = |name: &str| TensorSpec {
            name: name.into(),
            kind: ValueKind::Tensor,
            dtype: DType::Int64,
            shape: Some(vec![Dim::Symbolic("batch".into()), Dim::Symbolic("sequence".into())]),
            type_text: "tensor(int64)[batch,sequence]".into(),
            doc: String::new(),
            optional: false,
        };
        let hidden_dim = hidden.map(Dim::Fixed).unwrap_or(Dim::Unknown(None));
        let out = match sequence_classifier(&config, &info)? {
            // BertForSequenceClassification: pooled [CLS] state -> logits.
            Some(labels) => TensorSpec {
                name: "logits".into(),
                kind: ValueKind::Tensor,
                dtype: DType::Float32,
                type_text: format!("tensor(float)[batch,{labels}]"),
                shape: Some(vec![Dim::Symbolic("batch".into()), Dim::Fixed(labels)]),
                doc: String::new(),
                optional: false,
            },
            None => TensorSpec {
                name: "last_hidden_state".into(),
                kind: ValueKind::Tensor,
                dtype: DType::Float32,
                type_text: format!("tensor(float)[batch,sequence,{hidden_dim}]"),
                shape: Some(vec![Dim::Symbolic("batch".into()), Dim::Symbolic("sequence".into()), hidden_dim]),
                doc: String::new(),
                optional: false,
            },
        };
        (vec![ids("input_ids"), ids("attention_mask"), ids("token_type_ids")], vec![out])
    } else {
        (vec![], vec![])
    };
    let mut signature =
        Signature { inputs, outputs, safetensors: Some(info), files, ..Signature::empty(Format::Safetensors, true) };
    let derived = derive_task_at(&signature, root, dir, tokenizer, limits)?;
    signature.text = derived.text;
    Ok(Artifact {
        signature,
        task: derived.task,
        labels: derived.labels,
        model_path: weights,
        bundle_dir: Some(root.to_path_buf()),
    })
}

/// The number of labels of a `BertForSequenceClassification` (its `classifier`
/// weights), or `None` for a plain encoder. Refuses a classifier without the
/// pooler or classifier weights it needs.
fn sequence_classifier(config: &serde_json::Value, info: &zoo_api::SafetensorsInfo) -> Result<Option<i64>, Error> {
    let is_classifier = config
        .get("architectures")
        .and_then(serde_json::Value::as_array)
        .is_some_and(|a| a.iter().any(|x| x.as_str() == Some("BertForSequenceClassification")));
    if !is_classifier {
        return Ok(None);
    }
    let missing = |what: &str| Error::Invalid {
        format: Format::Safetensors,
        rule: "weights",
        message: format!("a BertForSequenceClassification needs the {what} weights, which model.safetensors lacks"),
    };
    let find = |name: &str| info.tensors.iter().find(|t| t.name == name || t.name == format!("bert.{name}"));
    find("pooler.dense.weight").ok_or_else(|| missing("pooler.dense"))?;
    let classifier =
        info.tensors.iter().find(|t| t.name == "classifier.weight").ok_or_else(|| missing("classifier"))?;
    match classifier.shape.as_slice() {
        [labels, _] if *labels > 0 => Ok(Some(*labels as i64)),
        other => Err(Error::Invalid {
            format: Format::Safetensors,
            rule: "weights",
            message: format!("classifier.weight must be [labels, hidden], not {other:?}"),
        }),
    }
}

/// The name zoo gives a single-file artifact of this format in its local cache.
pub fn single_file_name(format: Format) -> &'static str {
    match format {
        Format::Onnx => "model.onnx",
        Format::Safetensors => "model.safetensors",
        Format::Torchscript => "model.pt",
        Format::Mlflow => "MLmodel",
    }
}

/// The kind of model file a version's runtime loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Onnx,
    /// A Hugging Face directory (config.json + model.safetensors).
    Safetensors,
    Torchscript,
    /// A scikit-learn model in the skops format.
    Skops,
}

/// What loads this version: its format, or for an MLflow bundle the flavor zoo
/// serves it with. `None` when nothing can.
pub fn engine(signature: &Signature) -> Option<Engine> {
    match signature.format {
        Format::Onnx => Some(Engine::Onnx),
        Format::Safetensors => Some(Engine::Safetensors),
        Format::Torchscript => Some(Engine::Torchscript),
        Format::Mlflow => {
            let m = signature.mlflow.as_ref()?;
            match m.served_flavor.as_deref() {
                Some("onnx") => Some(Engine::Onnx),
                Some("transformers") => Some(Engine::Safetensors),
                Some("sklearn") => Some(Engine::Skops),
                // Versions stored before served_flavor was recorded.
                None if m.model_file.as_deref().is_some_and(|f| f.ends_with(".onnx")) => Some(Engine::Onnx),
                _ => None,
            }
        }
    }
}

/// Why a version cannot be served whatever runtimes the server has, if it cannot.
pub fn never_servable(signature: &Signature) -> Option<String> {
    if let Some(why) = signature.mlflow.as_ref().and_then(|m| m.unservable_reason.clone()) {
        return Some(why);
    }
    match engine(signature) {
        None => Some("no flavor of this bundle can be served".into()),
        Some(Engine::Safetensors) if !signature.bundle => Some(
            "a bare safetensors file holds weights only (no architecture, no tokenizer), so no runtime can run it; \
             it is stored and catalogued with its tensor table"
                .into(),
        ),
        Some(Engine::Safetensors) if signature.inputs.is_empty() => Some(format!(
            "zoo runs safetensors directories of these model types natively: {}; this config.json names another \
             (export the model to ONNX to serve it)",
            NATIVE_MODEL_TYPES.join(", ")
        )),
        Some(Engine::Safetensors) if signature.text.is_none() => {
            Some("a safetensors encoder needs its tokenizer.json in the directory to be served".into())
        }
        Some(Engine::Skops) => signature.skops.as_ref().and_then(|m| m.unservable_reason.clone()),
        _ => None,
    }
}

/// The file a runtime loads, relative to the bundle: the MLflow `onnx` flavor's
/// data, else the bundle's only `.onnx` file, or `model.onnx` among several.
pub fn bundle_model_path(signature: &Signature) -> Result<&str, Error> {
    if let Some(file) = signature.mlflow.as_ref().and_then(|m| m.model_file.as_deref()) {
        return Ok(file);
    }
    if signature.format == Format::Safetensors {
        return Ok("model.safetensors");
    }
    bundle_model_file(&signature.files)
}

/// What an upload may be, one entry per format `detect` recognises: the
/// `unknown_format` message lists them, so it stays true as formats are added.
pub const ACCEPTED: &[&str] = &[
    "an ONNX file (.onnx)",
    "a TorchScript archive (torch.jit.save, .pt)",
    "a safetensors file (stored, not served alone)",
    "a tar bundle of a model directory (model.onnx with optional tokenizer.json, config.json and external data; or a Hugging Face config.json + model.safetensors + tokenizer.json)",
    "a tar bundle of an MLflow model directory (MLmodel and its files)",
];

/// The model file of a bundle: its only `.onnx` file, or `model.onnx` among several.
pub fn bundle_model_file(files: &[BundleFile]) -> Result<&str, Error> {
    let onnx_files: Vec<&BundleFile> = files.iter().filter(|f| f.path.ends_with(".onnx")).collect();
    match onnx_files.as_slice() {
        [] => Err(Error::UnknownFormat(format!(
            "the bundle has no model file zoo knows (expected model.onnx); it holds: {}",
            files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>().join(", ")
        ))),
        [one] => Ok(one.path.as_str()),
        many => {
            many.iter().find(|f| f.path == "model.onnx").map(|f| f.path.as_str()).ok_or_else(|| Error::InvalidBundle {
                rule: "model_file",
                message: format!(
                    "the bundle has several .onnx files and none is named model.onnx: {}",
                    many.iter().map(|f| f.path.as_str()).collect::<Vec<_>>().join(", ")
                ),
            })
        }
    }
}

fn read_head(path: &Path, buf: &mut [u8]) -> Result<usize, Error> {
    let mut f = fs::File::open(path)?;
    let mut n = 0;
    while n < buf.len() {
        let k = f.read(&mut buf[n..])?;
        if k == 0 {
            break;
        }
        n += k;
    }
    Ok(n)
}

fn read_limited(path: &Path, limit: u64, what: &str) -> Result<Bytes, Error> {
    let len = fs::metadata(path)?.len();
    if len > limit {
        return Err(Error::TooLarge { what: what.into(), size: len, limit });
    }
    Ok(Bytes::from(fs::read(path)?))
}

/// The derived task of a version with its labels and text settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Derived {
    pub task: Task,
    pub labels: Vec<String>,
    pub text: Option<TextInfo>,
}
