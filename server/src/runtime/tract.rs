//! tract: the pure-Rust ONNX runtime, used when ONNX Runtime is absent or asked for.

use std::path::Path;
use std::sync::Arc;

use tract_onnx::prelude::{
    DatumType, Framework, InferenceModelExt, IntoRunnable, IntoTValue, TValue, TVec, Tensor as TractTensor,
    TypedRunnableModel,
};
use zoo_api::Signature;

use super::{LoadedModel, RunLimits, Runtime, RuntimeError, Tensor, Tensors};

pub struct TractRuntime;

fn load_err(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Load { runtime: "tract", message: e.to_string() }
}

impl Runtime for TractRuntime {
    fn name(&self) -> &'static str {
        "tract"
    }

    fn load(
        &self,
        model: &Path,
        signature: &Signature,
        _limits: &RunLimits,
    ) -> Result<Box<dyn LoadedModel>, RuntimeError> {
        let plan = tract_onnx::onnx()
            .model_for_path(model)
            .map_err(|e| load_err(format!("{e:#}")))?
            .into_optimized()
            .map_err(|e| load_err(format!("{e:#}")))?
            .into_runnable()
            .map_err(|e| load_err(format!("{e:#}")))?;
        let input_names = signature.inputs.iter().map(|i| i.name.clone()).collect();
        let output_names = signature.outputs.iter().map(|o| o.name.clone()).collect();
        Ok(Box::new(TractModel { plan, input_names, output_names }))
    }
}

struct TractModel {
    plan: Arc<TypedRunnableModel>,
    input_names: Vec<String>,
    output_names: Vec<String>,
}

fn to_tract(t: Tensor) -> TractTensor {
    match t {
        Tensor::F32(a) => a.into(),
        Tensor::F64(a) => a.into(),
        Tensor::I64(a) => a.into(),
        Tensor::I32(a) => a.into(),
        Tensor::I16(a) => a.into(),
        Tensor::I8(a) => a.into(),
        Tensor::U8(a) => a.into(),
        Tensor::U16(a) => a.into(),
        Tensor::U32(a) => a.into(),
        Tensor::U64(a) => a.into(),
        Tensor::F16(a) => a.into(),
        Tensor::BF16(a) => a.mapv(half::bf16::to_f32).into(),
        Tensor::Bool(a) => a.into(),
        Tensor::Str(a) => a.into(),
    }
}

fn from_tract(name: &str, t: &TractTensor) -> Result<Tensor, RuntimeError> {
    let err = |e: tract_onnx::prelude::TractError| RuntimeError::Run(format!("output '{name}': {e}"));
    macro_rules! extract {
        ($t:ty, $variant:ident) => {
            Tensor::$variant(t.to_plain_array_view::<$t>().map_err(err)?.to_owned())
        };
    }
    Ok(match t.datum_type() {
        DatumType::F32 => extract!(f32, F32),
        DatumType::F64 => extract!(f64, F64),
        DatumType::I64 => extract!(i64, I64),
        DatumType::I32 => extract!(i32, I32),
        DatumType::I16 => extract!(i16, I16),
        DatumType::I8 => extract!(i8, I8),
        DatumType::U8 => extract!(u8, U8),
        DatumType::U16 => extract!(u16, U16),
        DatumType::U32 => extract!(u32, U32),
        DatumType::U64 => extract!(u64, U64),
        DatumType::F16 => extract!(half::f16, F16),
        DatumType::Bool => extract!(bool, Bool),
        DatumType::String => extract!(String, Str),
        other => {
            return Err(RuntimeError::Run(format!("output '{name}' has type {other:?}, which zoo cannot return yet")));
        }
    })
}

impl LoadedModel for TractModel {
    fn run(&mut self, mut inputs: Tensors) -> Result<Tensors, RuntimeError> {
        // tract takes inputs by position, in the graph's order.
        let mut ordered: TVec<TValue> = TVec::new();
        for name in &self.input_names {
            let pos = inputs
                .iter()
                .position(|(n, _)| n == name)
                .ok_or_else(|| RuntimeError::Input(format!("missing input '{name}'")))?;
            let (_, t) = inputs.swap_remove(pos);
            ordered.push(to_tract(t).into_tvalue());
        }
        let outputs = self.plan.run(ordered).map_err(|e| RuntimeError::Run(format!("{e:#}")))?;
        self.output_names.iter().zip(outputs.iter()).map(|(name, t)| Ok((name.clone(), from_tract(name, t)?))).collect()
    }
}
