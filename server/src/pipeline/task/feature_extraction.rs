//! The `feature-extraction` task: a text (or a list) in, one embedding per text
//! out (pooled over the tokens as the bundle says, L2-normalised on request); in
//! KServe v2 a `text` BYTES input and an `embedding` output.

use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use serde_json::{Value, json};
use zoo_api::kserve::V2TensorMetadata;
use zoo_api::{DType, Dim, EffectiveServing, MlflowPredictions, PredictResponse, Signature, Task, VersionInfo};

use super::{TaskKind, TaskPipeline};
use crate::error::{Error, Result};
use crate::pipeline::json;
use crate::pipeline::request::{Answer, Inputs, RawPredict};
use crate::pipeline::text::{self, Reads, TextPipeline, texts_schema};
use crate::runtime::{Tensor, Tensors};

pub struct FeatureExtraction;

struct Loaded(TextPipeline);

/// The embedding's size, when the signature fixes it.
fn dimension(signature: &Signature) -> Option<i64> {
    signature.outputs.first().and_then(|o| o.shape.as_ref()).and_then(|s| s.last()).and_then(Dim::fixed)
}

impl TaskKind for FeatureExtraction {
    fn task(&self) -> Task {
        Task::FeatureExtraction
    }

    fn load(&self, dir: &Path, signature: &Signature, labels: &[String]) -> Result<Box<dyn TaskPipeline>> {
        Ok(Box::new(Loaded(TextPipeline::for_version(dir, signature, labels, Reads::Hidden)?)))
    }

    fn v2_metadata(&self, signature: &Signature, _labels: &[String]) -> (Vec<V2TensorMetadata>, Vec<V2TensorMetadata>) {
        (
            vec![V2TensorMetadata::new("text", DType::String, vec![-1])],
            vec![V2TensorMetadata::new("embedding", DType::Float32, vec![-1, dimension(signature).unwrap_or(-1)])],
        )
    }

    fn openapi(&self, info: &VersionInfo) -> (Value, Value, Value) {
        let mut vector = json!({"type": "array", "items": {"type": "number"}});
        if let Some(d) = dimension(&info.signature) {
            vector["minItems"] = d.into();
            vector["maxItems"] = d.into();
        }
        let request = json!({
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "inputs": texts_schema(info.effective.max_items),
                "normalize": {"type": "boolean", "description": "L2-normalise the embeddings (the model's own setting by default)"}
            }
        });
        let response = json!({
            "description": "one embedding per text",
            "oneOf": [vector.clone(), {"type": "array", "items": vector}]
        });
        (request, response, text::example_request())
    }

    fn mlflow_cell(&self) -> Value {
        json!({"type": "string"})
    }
}

impl TaskPipeline for Loaded {
    fn text(&self) -> Option<&TextPipeline> {
        Some(&self.0)
    }

    fn inputs(&self, signature: &Signature, limits: &EffectiveServing, req: &RawPredict<'_>) -> Result<Inputs> {
        text::request_texts(signature, limits, req)
    }

    fn respond(
        &self,
        signature: &Signature,
        req: &RawPredict<'_>,
        answer: &Answer,
        outputs: &Tensors,
    ) -> Result<PredictResponse> {
        let many = answer.many()?;
        let normalize = req.normalize.unwrap_or(self.0.info().normalize);
        let mut emb = self.0.embed(outputs, answer.mask()?, normalize)?;
        Ok(if signature.mlflow.is_some() {
            // MLflow's transformers pyfunc: one embedding per row.
            PredictResponse::Mlflow(MlflowPredictions { predictions: json::raw(&emb) })
        } else if many {
            PredictResponse::EmbeddingBatch(emb)
        } else {
            PredictResponse::Embedding(emb.remove(0))
        })
    }

    fn v2_input_count(&self, _signature: &Signature) -> usize {
        1
    }

    fn v2_inputs(&self, _signature: &Signature, limits: &EffectiveServing, given: Tensors) -> Result<Inputs> {
        text::v2_texts(given, limits)
    }

    fn v2_outputs(&self, answer: &Answer, outputs: Tensors) -> Result<Tensors> {
        let mask = answer.mask()?;
        let n = mask.shape().first().copied().unwrap_or(0);
        let emb = self.0.embed(&outputs, mask, self.0.info().normalize)?;
        let d = emb.first().map_or(0, Vec::len);
        let flat: Vec<f32> = emb.into_iter().flatten().collect();
        Ok(vec![(
            "embedding".to_string(),
            Tensor::F32(ArrayD::from_shape_vec(IxDyn(&[n, d]), flat).map_err(Error::internal)?),
        )])
    }
}
