//! Runtimes: load an artifact into a `LoadedModel` that runs named tensors.
//!
//! The traits are synchronous; a `ModelHost` (host.rs) owns each loaded model on a
//! dedicated thread so inference never blocks the async executor.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ndarray::ArrayD;
use zoo_api::{DType, RuntimeChoice, Signature};
use zoo_formats::Engine;

use crate::config::Config;

pub mod batch;
pub mod candle;
pub mod generate;
pub mod host;
pub mod llama;
pub mod ort;
pub mod q4_1;
pub mod sklearn;
pub mod torch;
pub mod tract;

/// A tensor of one of the element types zoo exchanges.
#[derive(Debug, Clone, PartialEq)]
pub enum Tensor {
    F32(ArrayD<f32>),
    F64(ArrayD<f64>),
    I64(ArrayD<i64>),
    I32(ArrayD<i32>),
    I16(ArrayD<i16>),
    I8(ArrayD<i8>),
    U8(ArrayD<u8>),
    U16(ArrayD<u16>),
    U32(ArrayD<u32>),
    U64(ArrayD<u64>),
    F16(ArrayD<half::f16>),
    BF16(ArrayD<half::bf16>),
    Bool(ArrayD<bool>),
    /// UTF-8 strings (ONNX `string`, KServe `BYTES`, class labels).
    Str(ArrayD<String>),
}

impl Tensor {
    pub fn shape(&self) -> &[usize] {
        match self {
            Tensor::F32(a) => a.shape(),
            Tensor::F64(a) => a.shape(),
            Tensor::I64(a) => a.shape(),
            Tensor::I32(a) => a.shape(),
            Tensor::I16(a) => a.shape(),
            Tensor::I8(a) => a.shape(),
            Tensor::U8(a) => a.shape(),
            Tensor::U16(a) => a.shape(),
            Tensor::U32(a) => a.shape(),
            Tensor::U64(a) => a.shape(),
            Tensor::F16(a) => a.shape(),
            Tensor::BF16(a) => a.shape(),
            Tensor::Bool(a) => a.shape(),
            Tensor::Str(a) => a.shape(),
        }
    }

    pub fn dtype(&self) -> DType {
        match self {
            Tensor::F32(_) => DType::Float32,
            Tensor::F64(_) => DType::Float64,
            Tensor::I64(_) => DType::Int64,
            Tensor::I32(_) => DType::Int32,
            Tensor::I16(_) => DType::Int16,
            Tensor::I8(_) => DType::Int8,
            Tensor::U8(_) => DType::Uint8,
            Tensor::U16(_) => DType::Uint16,
            Tensor::U32(_) => DType::Uint32,
            Tensor::U64(_) => DType::Uint64,
            Tensor::F16(_) => DType::Float16,
            Tensor::BF16(_) => DType::Bfloat16,
            Tensor::Bool(_) => DType::Bool,
            Tensor::Str(_) => DType::String,
        }
    }

    /// Bytes of the element data (strings: their UTF-8 length).
    pub fn byte_size(&self) -> u64 {
        let n = self.shape().iter().product::<usize>() as u64;
        match self {
            Tensor::F64(_) | Tensor::I64(_) | Tensor::U64(_) => 8 * n,
            Tensor::F32(_) | Tensor::I32(_) | Tensor::U32(_) => 4 * n,
            Tensor::I16(_) | Tensor::U16(_) | Tensor::F16(_) | Tensor::BF16(_) => 2 * n,
            Tensor::I8(_) | Tensor::U8(_) | Tensor::Bool(_) => n,
            Tensor::Str(a) => a.iter().map(|s| s.len() as u64 + 8).sum(),
        }
    }

    /// Values as f32 (for post-processing logits and hidden states).
    pub fn to_f32(&self) -> Option<ArrayD<f32>> {
        match self {
            Tensor::F32(a) => Some(a.clone()),
            Tensor::F64(a) => Some(a.mapv(|v| v as f32)),
            Tensor::F16(a) => Some(a.mapv(half::f16::to_f32)),
            Tensor::BF16(a) => Some(a.mapv(half::bf16::to_f32)),
            _ => None,
        }
    }
}

/// Named tensors, in the order of the signature.
pub type Tensors = Vec<(String, Tensor)>;

/// Why a runtime could not load or run a model.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    #[error("{runtime} cannot load this model: {message}")]
    Load { runtime: &'static str, message: String },
    #[error("{0}")]
    Run(String),
    #[error("{0}")]
    Input(String),
}

/// A model loaded into a runtime, owned by one thread.
pub trait LoadedModel: Send {
    /// Run the model on named inputs; returns the tensor outputs by name.
    fn run(&mut self, inputs: Tensors) -> Result<Tensors, RuntimeError>;
}

/// What one run of a loaded model may take. Runtimes that run the model in
/// another process (TorchScript) enforce them there; for every runtime the
/// outputs' size is checked again before they are answered.
#[derive(Debug, Clone, Copy)]
pub struct RunLimits {
    /// Longest one run may take, in wall-clock and in CPU time.
    pub timeout: std::time::Duration,
    /// Largest total size of one run's output tensors, in bytes.
    pub max_output_bytes: u64,
}

/// A runtime that can load models of some format.
pub trait Runtime: Send + Sync {
    fn name(&self) -> &'static str;
    fn load(
        &self,
        model: &Path,
        signature: &Signature,
        limits: &RunLimits,
    ) -> Result<Box<dyn LoadedModel>, RuntimeError>;
}

/// The runtimes this server has, chosen per version.
#[derive(Clone)]
pub struct Runtimes {
    pub ort: Option<Arc<ort::OrtRuntime>>,
    pub tract: Arc<tract::TractRuntime>,
    /// BERT-family encoders from safetensors.
    pub candle: Arc<candle::CandleRuntime>,
    /// TorchScript in a libtorch worker process.
    pub torch: Option<Arc<torch::TorchRuntime>>,
    /// scikit-learn models from skops archives.
    pub sklearn: Arc<sklearn::SklearnRuntime>,
    /// Why ort is not available, when it is not.
    pub ort_missing: Option<String>,
    /// Why TorchScript cannot be served, when it cannot.
    pub torch_missing: Option<String>,
}

impl Runtimes {
    /// Load ONNX Runtime from the configured or known places (else serve ONNX with
    /// tract), and find the TorchScript worker.
    pub fn init(config: &Config) -> Runtimes {
        let (ort, ort_missing) = match init_ort(config.ort_dylib.as_deref(), &config.data_dir, config.intra_op_threads)
        {
            Ok(rt) => (Some(Arc::new(rt)), None),
            Err(why) => {
                tracing::warn!("{why}; serving ONNX with tract only");
                (None, Some(why))
            }
        };
        let torch = torch::TorchRuntime::find(&torch::TorchSettings {
            worker: config.torch_worker.clone(),
            libtorch: config.libtorch.clone(),
            data_dir: config.data_dir.clone(),
            threads: config.intra_op_threads,
            sandbox: config.torchscript_sandbox,
            memory_bytes: config.torch_worker_memory,
        });
        let (torch, torch_missing) = match torch {
            Ok(rt) => {
                tracing::info!(
                    worker = %rt.worker().display(),
                    sandbox = %rt.sandbox().summary(),
                    mode = rt.sandbox().mode,
                    "TorchScript served by zoo-torch-worker, confined"
                );
                (Some(Arc::new(rt)), None)
            }
            Err(why) => {
                tracing::info!("{why}");
                (None, Some(why))
            }
        };
        Runtimes {
            ort,
            tract: Arc::new(tract::TractRuntime),
            candle: Arc::new(candle::CandleRuntime),
            torch,
            sklearn: Arc::new(sklearn::SklearnRuntime),
            ort_missing,
            torch_missing,
        }
    }

    /// How TorchScript workers are confined here (None: no TorchScript).
    pub fn sandbox_status(&self) -> Option<zoo_api::SandboxStatus> {
        let report = self.torch.as_ref()?.sandbox();
        let mut protections = Vec::new();
        for (on, name) in [
            (report.landlock_abi > 0, "landlock"),
            (report.seccomp, "seccomp"),
            (report.network_namespace, "network_namespace"),
            (report.no_new_privs, "no_new_privs"),
            (report.rlimits, "rlimits"),
            (report.non_dumpable, "not_dumpable"),
        ] {
            if on {
                protections.push(name.to_string());
            }
        }
        Some(zoo_api::SandboxStatus {
            mode: report.mode.clone(),
            enforced: report.enforced(),
            protections,
            missing: report.missing.clone(),
        })
    }

    pub fn names(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.ort.is_some() {
            v.push("ort".to_string());
        }
        v.push("tract".to_string());
        v.push("candle".to_string());
        if self.torch.is_some() {
            v.push("torch".to_string());
        }
        v.push("sklearn".to_string());
        v
    }

    /// Runtimes to try, in order, for a choice and a version's signature.
    pub fn candidates(&self, choice: RuntimeChoice, signature: &Signature) -> Result<Vec<Arc<dyn Runtime>>, String> {
        let only = |wanted: RuntimeChoice, what: &str| -> Result<(), String> {
            match choice {
                RuntimeChoice::Auto => Ok(()),
                c if c == wanted => Ok(()),
                other => Err(format!("runtime {} cannot run {what}: use auto or {}", other.as_str(), wanted.as_str())),
            }
        };
        match zoo_formats::engine(signature) {
            None => Err("no runtime serves this version".into()),
            Some(Engine::Safetensors) => {
                only(RuntimeChoice::Candle, "safetensors")?;
                Ok(vec![self.candle.clone() as Arc<dyn Runtime>])
            }
            Some(Engine::Gguf) => {
                only(RuntimeChoice::Candle, "GGUF language models")?;
                Ok(vec![self.candle.clone() as Arc<dyn Runtime>])
            }
            Some(Engine::Skops) => {
                only(RuntimeChoice::Sklearn, "scikit-learn (skops) models")?;
                Ok(vec![self.sklearn.clone() as Arc<dyn Runtime>])
            }
            Some(Engine::Torchscript) => {
                only(RuntimeChoice::Torch, "TorchScript")?;
                match &self.torch {
                    Some(t) => Ok(vec![t.clone() as Arc<dyn Runtime>]),
                    None => Err(self.torch_missing.clone().unwrap_or_else(|| torch::ENABLE_HINT.into())),
                }
            }
            Some(Engine::Onnx) => {
                // What the ONNX runtime zoo ships reads decides what is servable.
                if let Some(why) = ort::beyond(signature) {
                    return Err(why);
                }
                let ort = self.ort.clone().map(|o| o as Arc<dyn Runtime>);
                let tract = self.tract.clone() as Arc<dyn Runtime>;
                match choice {
                    RuntimeChoice::Auto => Ok(ort.into_iter().chain([tract]).collect()),
                    RuntimeChoice::Ort => match ort {
                        Some(o) => Ok(vec![o]),
                        None => Err(self.ort_missing.clone().unwrap_or_else(|| "ONNX Runtime is not available".into())),
                    },
                    RuntimeChoice::Tract => Ok(vec![tract]),
                    other => Err(format!("{} does not run ONNX: use auto, ort or tract", other.as_str())),
                }
            }
        }
    }

    /// A runtime by the name stored with a version.
    pub fn by_name(&self, name: &str) -> Option<Arc<dyn Runtime>> {
        match name {
            "ort" => self.ort.clone().map(|o| o as Arc<dyn Runtime>),
            "tract" => Some(self.tract.clone() as Arc<dyn Runtime>),
            "candle" => Some(self.candle.clone() as Arc<dyn Runtime>),
            "torch" => self.torch.clone().map(|t| t as Arc<dyn Runtime>),
            "sklearn" => Some(self.sklearn.clone() as Arc<dyn Runtime>),
            _ => None,
        }
    }
}

fn init_ort(configured: Option<&Path>, data_dir: &Path, intra_op_threads: usize) -> Result<ort::OrtRuntime, String> {
    let candidates = ort_candidates(configured, data_dir);
    let Some(path) = candidates.iter().find(|p| p.is_file()) else {
        let looked = candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
        return Err(format!(
            "ONNX Runtime library not found (looked in: {looked}); set ZOO_ORT_DYLIB to libonnxruntime.so.1.31.1 \
             from the PyPI wheel onnxruntime==1.31.1 (scripts/fetch-test-models installs it)"
        ));
    };
    let rt = ort::OrtRuntime::init(path, intra_op_threads)?;
    tracing::info!(path = %path.display(), "ONNX Runtime loaded");
    Ok(rt)
}

fn ort_candidates(configured: Option<&Path>, data_dir: &Path) -> Vec<PathBuf> {
    const LIB: &str = "libonnxruntime.so.1.31.1";
    let mut v = Vec::new();
    if let Some(p) = configured {
        // An explicit setting is the only place looked at.
        v.push(p.to_path_buf());
        return v;
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        v.push(PathBuf::from(p));
    }
    v.push(data_dir.join("lib").join(LIB));
    if let Some(cache) = std::env::var_os("ZOO_CACHE_DIR") {
        v.push(PathBuf::from(cache).join("lib").join(LIB));
    }
    if let Some(home) = std::env::var_os("HOME") {
        v.push(PathBuf::from(home).join(".cache/zoo/lib").join(LIB));
    }
    v
}
