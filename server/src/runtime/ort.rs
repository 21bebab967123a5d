//! ONNX Runtime, loaded dynamically from `libonnxruntime.so`.

use std::path::Path;

use ort::environment::{Environment, GlobalThreadPoolOptions};
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, TensorElementType, ValueType};
use zoo_api::Signature;

use super::{LoadedModel, RunLimits, Runtime, RuntimeError, Tensor, Tensors};

/// The newest IR version ONNX Runtime 1.31 reads ("max supported IR version: 13").
pub const MAX_IR_VERSION: i64 = 13;
/// The newest version of the default `ai.onnx` operator set it supports ("official
/// support for domain ai.onnx is till opset 26"). Both are checked against the
/// loaded library by the tests (`tests/tests/onnx_conformance.rs`).
pub const MAX_DEFAULT_OPSET: i64 = 26;
/// The release the two limits above belong to.
pub const RELEASE: &str = "1.31";

/// Why ONNX Runtime cannot run a model of this IR version and these opsets, if it cannot.
pub fn beyond(signature: &zoo_api::Signature) -> Option<String> {
    let onnx = signature.onnx.as_ref()?;
    let opset = onnx.opsets.iter().filter(|o| o.domain.is_empty() || o.domain == "ai.onnx").map(|o| o.version).max();
    if onnx.ir_version > MAX_IR_VERSION {
        return Some(format!(
            "the model's IR version {} is newer than ONNX Runtime {RELEASE} reads (up to {MAX_IR_VERSION}); it is stored \
             and described, and is served once zoo runs a newer ONNX Runtime",
            onnx.ir_version
        ));
    }
    match opset {
        Some(v) if v > MAX_DEFAULT_OPSET => Some(format!(
            "the model uses opset {v} of ai.onnx, newer than ONNX Runtime {RELEASE} supports (up to \
             {MAX_DEFAULT_OPSET}); it is stored and described, and is served once zoo runs a newer ONNX Runtime"
        )),
        _ => None,
    }
}

pub struct OrtRuntime {
    env: Environment,
}

impl OrtRuntime {
    /// Load the library at `path` and create the process-wide environment, with
    /// one thread pool that every session shares: `intra_op_threads` threads (0 =
    /// one per core) whatever the number of loaded models and their instances, so
    /// models that run at once share the cores instead of oversubscribing them.
    pub fn init(path: &Path, intra_op_threads: usize) -> Result<OrtRuntime, String> {
        let threads = if intra_op_threads == 0 {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        } else {
            intra_op_threads
        };
        // The library is loaded by init_from; the pool options need it.
        let builder =
            ort::init_from(path).map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", path.display()))?;
        let pool = GlobalThreadPoolOptions::default()
            .with_intra_threads(threads)
            .and_then(|p| p.with_inter_threads(1))
            .and_then(|p| p.with_spin_control(false))
            .map_err(|e| format!("ONNX Runtime thread pool: {e}"))?;
        let env = builder
            .with_name("zoo")
            .with_global_thread_pool(pool)
            .build()
            .map_err(|e| format!("cannot start ONNX Runtime from {}: {e}", path.display()))?;
        Ok(OrtRuntime { env })
    }
}

fn load_err(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Load { runtime: "ort", message: e.to_string() }
}

impl Runtime for OrtRuntime {
    fn name(&self) -> &'static str {
        "ort"
    }

    fn load(
        &self,
        model: &Path,
        _signature: &Signature,
        _limits: &RunLimits,
    ) -> Result<Box<dyn LoadedModel>, RuntimeError> {
        // The environment's shared thread pool runs it (no threads of its own).
        let session = Session::builder(&self.env).map_err(load_err)?.commit_from_file(model).map_err(load_err)?;
        Ok(Box::new(OrtModel { session }))
    }
}

struct OrtModel {
    session: Session,
}

fn run_err(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Run(e.to_string())
}

fn to_value(t: Tensor) -> Result<SessionInputValue<'static>, RuntimeError> {
    use ort::value::Tensor as OrtTensor;
    Ok(match t {
        Tensor::F32(a) => OrtTensor::from_array(a).map_err(run_err)?.into(),
        Tensor::F64(a) => OrtTensor::from_array(a).map_err(run_err)?.into(),
        Tensor::I64(a) => OrtTensor::from_array(a).map_err(run_err)?.into(),
        Tensor::I32(a) => OrtTensor::from_array(a).map_err(run_err)?.into(),
        Tensor::I16(a) => OrtTensor::from_array(a).map_err(run_err)?.into(),
        Tensor::I8(a) => OrtTensor::from_array(a).map_err(run_err)?.into(),
        Tensor::U8(a) => OrtTensor::from_array(a).map_err(run_err)?.into(),
        Tensor::U16(a) => OrtTensor::from_array(a).map_err(run_err)?.into(),
        Tensor::U32(a) => OrtTensor::from_array(a).map_err(run_err)?.into(),
        Tensor::U64(a) => OrtTensor::from_array(a).map_err(run_err)?.into(),
        Tensor::F16(a) => OrtTensor::from_array(a).map_err(run_err)?.into(),
        Tensor::BF16(a) => OrtTensor::from_array(a).map_err(run_err)?.into(),
        Tensor::Bool(a) => OrtTensor::from_array(a).map_err(run_err)?.into(),
        Tensor::Str(a) => OrtTensor::from_string_array(&a).map_err(run_err)?.into(),
    })
}

fn from_value(name: &str, v: &DynValue) -> Result<Option<Tensor>, RuntimeError> {
    let ValueType::Tensor { ty, .. } = v.dtype() else {
        // Sequences and maps (e.g. a ZipMap of class probabilities) are not tensors.
        return Ok(None);
    };
    macro_rules! extract {
        ($t:ty, $variant:ident) => {
            Tensor::$variant(v.try_extract_array::<$t>().map_err(run_err)?.to_owned())
        };
    }
    Ok(Some(match ty {
        TensorElementType::Float32 => extract!(f32, F32),
        TensorElementType::Float64 => extract!(f64, F64),
        TensorElementType::Int64 => extract!(i64, I64),
        TensorElementType::Int32 => extract!(i32, I32),
        TensorElementType::Int16 => extract!(i16, I16),
        TensorElementType::Int8 => extract!(i8, I8),
        TensorElementType::Uint8 => extract!(u8, U8),
        TensorElementType::Uint16 => extract!(u16, U16),
        TensorElementType::Uint32 => extract!(u32, U32),
        TensorElementType::Uint64 => extract!(u64, U64),
        TensorElementType::Float16 => extract!(half::f16, F16),
        TensorElementType::Bfloat16 => extract!(half::bf16, BF16),
        TensorElementType::Bool => extract!(bool, Bool),
        TensorElementType::String => Tensor::Str(v.try_extract_string_array().map_err(run_err)?),
        other => {
            return Err(RuntimeError::Run(format!(
                "output '{name}' has element type {other:?}, which zoo cannot return yet"
            )));
        }
    }))
}

impl LoadedModel for OrtModel {
    fn run(&mut self, inputs: Tensors) -> Result<Tensors, RuntimeError> {
        let values = inputs
            .into_iter()
            .map(|(n, t)| Ok((n, to_value(t)?)))
            .collect::<Result<Vec<(String, SessionInputValue<'static>)>, RuntimeError>>()?;
        let outputs = self.session.run(values).map_err(run_err)?;
        let mut out = Vec::with_capacity(outputs.len());
        for (name, value) in outputs.iter() {
            if let Some(t) = from_value(name, &value)? {
                out.push((name.to_string(), t));
            }
        }
        Ok(out)
    }
}
