//! The `tensor` task: named tensors in, named tensors out, as the model's
//! signature gives them (an MLflow version: MLflow's formats in, `predictions` out).

use std::path::Path;

use serde_json::{Map, Value, json};
use zoo_api::kserve::{V2TensorMetadata, datatype};
use zoo_api::{
    DType, Dim, EffectiveServing, MlflowPredictions, PredictResponse, Signature, Task, TensorResponse, TensorSpec,
    ValueKind, VersionInfo,
};

use super::{TaskKind, TaskPipeline};
use crate::error::{Error, Result};
use crate::pipeline::mlflow;
use crate::pipeline::request::{Answer, Inputs, RawPredict, check_rows, refuse_mlflow_formats};
use crate::pipeline::tensor::{
    TensorLimits, element, example_inputs, example_value, nested, outputs_json, parse_inputs, tensor_schema,
};
use crate::runtime::{Tensor, Tensors};

pub struct TensorTask;

/// A loaded tensor version: nothing to hold beyond its signature.
struct Loaded;

impl TaskKind for TensorTask {
    fn task(&self) -> Task {
        Task::Tensor
    }

    fn load(&self, _dir: &Path, _signature: &Signature, _labels: &[String]) -> Result<Box<dyn TaskPipeline>> {
        Ok(Box::new(Loaded))
    }

    fn v2_metadata(&self, signature: &Signature, _labels: &[String]) -> (Vec<V2TensorMetadata>, Vec<V2TensorMetadata>) {
        let shape_of = |dims: Option<&Vec<Dim>>| match dims {
            Some(d) => d.iter().map(|d| d.fixed().unwrap_or(-1)).collect(),
            None => vec![-1],
        };
        let convert = |specs: &[TensorSpec]| {
            specs
                .iter()
                .filter(|s| s.kind == ValueKind::Tensor)
                .map(|s| V2TensorMetadata::new(&s.name, s.dtype, shape_of(s.shape.as_ref())))
                .collect()
        };
        (convert(&signature.inputs), convert(&signature.outputs))
    }

    fn openapi(&self, info: &VersionInfo) -> (Value, Value, Value) {
        let sig = &info.signature;
        let max_rows = info.effective.max_items;
        let properties: Map<String, Value> =
            sig.inputs.iter().map(|s| (s.name.clone(), tensor_schema(s, max_rows))).collect();
        let required: Vec<&str> = sig.inputs.iter().filter(|s| !s.optional).map(|s| s.name.as_str()).collect();
        let request = json!({
            "type": "object",
            "required": ["inputs"],
            "properties": {"inputs": {
                "type": "object",
                "required": required,
                "additionalProperties": false,
                "properties": properties
            }}
        });
        let outputs: Map<String, Value> = sig
            .outputs
            .iter()
            .map(|s| {
                let schema = match &s.shape {
                    Some(dims) if s.kind == ValueKind::Tensor => nested(dims, element(s.dtype), u32::MAX, false),
                    _ => json!({}),
                };
                (s.name.clone(), schema)
            })
            .collect();
        let response = json!({
            "type": "object",
            "required": ["outputs"],
            "properties": {"outputs": {"type": "object", "properties": outputs}}
        });
        let example = json!({"inputs": sig.inputs.iter().filter(|s| !s.optional).map(|s| (s.name.clone(), example_value(s))).collect::<Map<_, _>>()});
        (request, response, example)
    }
}

impl TaskPipeline for Loaded {
    /// Zeros of the signature's shapes (symbolic dimensions 1).
    fn warmup_inputs(&self, signature: &Signature) -> Option<Tensors> {
        example_inputs(&signature.inputs)
    }

    /// Zeros may rightly be refused by a tensor model (too few audio samples, say).
    fn warmup_must_pass(&self) -> bool {
        false
    }

    fn inputs(&self, signature: &Signature, limits: &EffectiveServing, req: &RawPredict<'_>) -> Result<Inputs> {
        refuse_mlflow_formats(signature, req)?;
        let max_items = limits.max_items as usize;
        let tensors = match (&signature.mlflow, req.inputs) {
            (Some(info), _) => {
                let given = mlflow::request_inputs(&req.to_tree()?, &signature.inputs, info)?;
                let given = serde_json::value::to_raw_value(&given).map_err(Error::internal)?;
                let tensor_limits = TensorLimits { null_is_nan: true, ..Default::default() };
                parse_inputs(&given, &signature.inputs, tensor_limits)?
            }
            (None, Some(raw)) => parse_inputs(raw, &signature.inputs, TensorLimits::default())?,
            (None, None) => return Err(Error::InvalidInput("the request needs \"inputs\"".into())),
        };
        let rows = check_rows(&tensors, max_items)?;
        Ok(Inputs::Tensors { tensors, rows })
    }

    fn respond(
        &self,
        signature: &Signature,
        _req: &RawPredict<'_>,
        _answer: &Answer,
        outputs: &Tensors,
    ) -> Result<PredictResponse> {
        Ok(if signature.mlflow.is_some() {
            PredictResponse::Mlflow(MlflowPredictions { predictions: mlflow::predictions(outputs) })
        } else {
            PredictResponse::Tensor(TensorResponse { outputs: outputs_json(outputs) })
        })
    }

    fn v2_input_count(&self, signature: &Signature) -> usize {
        signature.inputs.len()
    }

    /// The given tensors, each checked against its spec, in the signature's order.
    fn v2_inputs(&self, signature: &Signature, limits: &EffectiveServing, given: Tensors) -> Result<Inputs> {
        let specs = &signature.inputs;
        let mut tensors: Tensors = Vec::with_capacity(given.len());
        for (name, t) in given {
            let spec = specs.iter().find(|s| s.name == name).ok_or_else(|| {
                let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
                bad(format!("unknown input '{name}'; the model takes: {}", names.join(", ")))
            })?;
            check(spec, &t)?;
            tensors.push((name, t));
        }
        if let Some(missing) = specs.iter().find(|s| !s.optional && !tensors.iter().any(|(n, _)| *n == s.name)) {
            return Err(bad(format!("missing input '{}' ({})", missing.name, missing.type_text)));
        }
        // The signature's order, as runtimes that take inputs by position need.
        tensors.sort_by_key(|(n, _)| specs.iter().position(|s| s.name == *n));
        let rows = tensors.first().and_then(|(_, t)| t.shape().first().copied()).unwrap_or(1);
        let rows_limit = limits.max_items as usize;
        if limits.batched && rows > rows_limit {
            return Err(bad(format!("{rows} rows; at most {rows_limit} per request")));
        }
        Ok(Inputs::Tensors { tensors, rows })
    }

    fn v2_outputs(&self, _answer: &Answer, outputs: Tensors) -> Result<Tensors> {
        Ok(outputs)
    }
}

fn bad(m: impl Into<String>) -> Error {
    Error::InvalidInput(m.into())
}

/// A v2 input's dtype and shape against the signature.
fn check(spec: &TensorSpec, t: &Tensor) -> Result<()> {
    let name = &spec.name;
    if spec.kind != ValueKind::Tensor {
        return Err(bad(format!("input '{name}' is a {}, which zoo cannot build", spec.type_text)));
    }
    if spec.dtype != DType::Other && spec.dtype != t.dtype() {
        return Err(bad(format!(
            "input '{name}' is {} ({}), not {}",
            datatype(spec.dtype),
            spec.type_text,
            datatype(t.dtype())
        )));
    }
    if let Some(dims) = &spec.shape {
        if dims.len() != t.shape().len() {
            return Err(bad(format!(
                "input '{name}' must have {} dimensions ({}), got {:?}",
                dims.len(),
                spec.type_text,
                t.shape()
            )));
        }
        for (i, (d, got)) in dims.iter().zip(t.shape()).enumerate() {
            if let Dim::Fixed(n) = d
                && *n as usize != *got
            {
                return Err(bad(format!("input '{name}' dimension {i} must be {n} ({}), got {got}", spec.type_text)));
            }
        }
    }
    Ok(())
}
