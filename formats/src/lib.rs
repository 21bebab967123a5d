//! Detect and validate model artifacts, and derive their signature and task.
//!
//! Pure and synchronous: no HTTP, no async, no database. Limits in, a described
//! artifact or a precise error out. Nothing here executes or unpickles anything.
//!
//! One module per format, each registered in one of two tables: [`UPLOADS`] (a
//! single upload, chosen by its first bytes: a tar bundle, TorchScript, a bare
//! safetensors file, ONNX) and [`BUNDLES`] (a bundle directory, chosen by its
//! files: MLflow, Hugging Face, ONNX with side files). Adding a format: its module
//! with an `UPLOAD` or `BUNDLE` entry, and that entry's line in the table.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use prost::bytes::Bytes;
use zoo_api::{BundleFile, Format, Signature, Task};

#[cfg(feature = "fixtures")]
pub mod build;
pub mod bundle;
pub mod decoder;
pub mod gguf;
pub mod hf;
#[cfg(feature = "fixtures")]
pub mod hostile;
pub mod image;
pub mod mlflow;
pub mod onnx;
pub mod onnx_proto;
pub mod safetensors;
mod serving;
pub mod skops;
mod text;
pub mod torchscript;
pub mod torchscript_ops;
pub mod zip;

pub use hf::native_model_types;
pub use serving::{Engine, bundle_model_file, bundle_model_path, engine, never_servable, single_file_name};
pub use text::{Derived, derive_task, derive_task_at};

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
    Gguf,
    /// Anything else: may be ONNX (protobuf has no magic number).
    Other,
}

/// Recognise a container or format from the first 512 bytes (or fewer) of a file.
pub fn sniff(head: &[u8]) -> Sniffed {
    if head.len() >= 262 && &head[257..262] == b"ustar" {
        return Sniffed::Tar;
    }
    if head.starts_with(crate::gguf::MAGIC) {
        return Sniffed::Gguf;
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

/// What an upload is handed to its format's validator with.
pub struct Upload<'a> {
    pub path: &'a Path,
    /// Its first bytes (up to 512; fewer for a shorter file).
    pub head: &'a [u8],
    /// An empty directory the caller owns and removes, for a bundle to be unpacked into.
    pub work_dir: &'a Path,
    pub limits: &'a Limits,
}

/// One kind of single upload: what its first bytes look like, its validator, and
/// how it is stored and loaded.
pub struct UploadKind {
    /// How an `unknown_format` error names it; `None` for a container whose
    /// contents the [`BundleKind`]s name.
    pub accepted: Option<&'static str>,
    pub sniffed: Sniffed,
    pub inspect: fn(&Upload<'_>) -> Result<Artifact, Error>,
    /// How a file of this format is stored and loaded (`None`: a container).
    pub stored: Option<Stored>,
}

/// How a single-file format is stored and what loads it.
#[derive(Debug, Clone, Copy)]
pub struct Stored {
    pub format: Format,
    /// The file's name in the server's local cache.
    pub file_name: &'static str,
    pub engine: Engine,
}

/// One kind of bundle directory: which files make it one and its validator.
pub struct BundleKind {
    /// How an `unknown_format` error names it.
    pub accepted: &'static str,
    pub claims: fn(&[BundleFile]) -> bool,
    pub inspect: fn(&Path, Vec<BundleFile>, &Limits) -> Result<Artifact, Error>,
}

/// Every upload zoo takes, by what its first bytes look like.
pub const UPLOADS: &[UploadKind] =
    &[bundle::UPLOAD, torchscript::UPLOAD, safetensors::UPLOAD, gguf::UPLOAD, onnx::UPLOAD];

/// Every bundle zoo takes, the first that claims a directory's files first.
pub const BUNDLES: &[BundleKind] = &[mlflow::BUNDLE, hf::BUNDLE, onnx::BUNDLE];

/// What an upload may be, one entry per kind above: the `unknown_format` message
/// lists them, so it stays true as formats are added.
pub fn accepted() -> Vec<&'static str> {
    UPLOADS.iter().filter_map(|u| u.accepted).chain(BUNDLES.iter().map(|b| b.accepted)).collect()
}

/// Validate an uploaded file. Bundles (tar archives) are unpacked into `work_dir`,
/// which must be an empty directory the caller owns and removes.
pub fn inspect_upload(path: &Path, work_dir: &Path, limits: &Limits) -> Result<Artifact, Error> {
    let mut head = [0u8; 512];
    let n = read_head(path, &mut head)?;
    let sniffed = sniff(&head[..n]);
    let kind = UPLOADS.iter().find(|u| u.sniffed == sniffed).ok_or_else(|| unknown_format(n))?;
    (kind.inspect)(&Upload { path, head: &head[..n], work_dir, limits })
}

/// Validate an unpacked bundle directory.
pub fn inspect_dir(dir: &Path, files: Vec<BundleFile>, limits: &Limits) -> Result<Artifact, Error> {
    match BUNDLES.iter().find(|b| (b.claims)(&files)) {
        Some(kind) => (kind.inspect)(dir, files, limits),
        None => Err(unknown_format(1)),
    }
}

/// The refusal of an upload that is none of the kinds zoo takes (`len`: its size).
pub fn unknown_format(len: usize) -> Error {
    if len == 0 {
        return Error::UnknownFormat("the upload is empty".into());
    }
    Error::UnknownFormat(format!("not a recognised model format: zoo accepts {}", accepted().join("; ")))
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

pub(crate) fn read_limited(path: &Path, limit: u64, what: &str) -> Result<Bytes, Error> {
    let len = fs::metadata(path)?.len();
    if len > limit {
        return Err(Error::TooLarge { what: what.into(), size: len, limit });
    }
    Ok(Bytes::from(fs::read(path)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_first_bytes_has_exactly_one_validator() {
        for s in [Sniffed::Tar, Sniffed::Zip, Sniffed::Safetensors, Sniffed::Gguf, Sniffed::Other] {
            assert_eq!(UPLOADS.iter().filter(|u| u.sniffed == s).count(), 1, "{s:?}");
        }
    }

    #[test]
    fn every_single_file_format_is_stored_under_its_own_name() {
        for f in [Format::Onnx, Format::Torchscript, Format::Safetensors, Format::Gguf] {
            let entries: Vec<Stored> = UPLOADS.iter().filter_map(|u| u.stored).filter(|s| s.format == f).collect();
            assert_eq!(entries.len(), 1, "{f:?}");
            assert_eq!(single_file_name(f), entries[0].file_name);
            assert!(entries[0].file_name.starts_with("model."), "{f:?}");
        }
    }

    #[test]
    fn every_bundle_directory_has_a_validator_and_the_refusal_names_every_kind() {
        let file = |p: &str| BundleFile { path: p.into(), size: 1 };
        let claimed = |files: &[BundleFile]| BUNDLES.iter().position(|b| (b.claims)(files));
        assert_eq!(claimed(&[file("MLmodel"), file("model.onnx")]), Some(0));
        assert_eq!(claimed(&[file("config.json"), file("model.safetensors")]), Some(1));
        assert_eq!(claimed(&[file("model.onnx"), file("model.safetensors")]), Some(2));
        assert_eq!(claimed(&[file("notes.txt")]), Some(2));
        let Error::UnknownFormat(m) = unknown_format(10) else { panic!("not unknown_format") };
        for kind in accepted() {
            assert!(m.contains(kind), "{m}");
        }
        assert_eq!(accepted().len(), UPLOADS.iter().filter(|u| u.accepted.is_some()).count() + BUNDLES.len());
    }
}
