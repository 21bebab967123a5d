//! The `text-classification` task: a text (or a list) in, labels with scores
//! out, best first; in KServe v2 a `text` BYTES input and `label`, `score` and
//! `scores` outputs.

use std::num::NonZeroUsize;
use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use serde_json::{Value, json};
use zoo_api::kserve::V2TensorMetadata;
use zoo_api::{DType, EffectiveServing, MlflowPredictions, PredictResponse, Signature, Task, VersionInfo};

use super::{TaskKind, TaskPipeline, v2_meta};
use crate::error::{Error, Result};
use crate::pipeline::json;
use crate::pipeline::request::{Answer, Inputs, RawPredict};
use crate::pipeline::text::{self, Reads, TextPipeline, texts_schema};
use crate::runtime::{Tensor, Tensors};

pub struct TextClassification;

struct Loaded(TextPipeline);

impl TaskKind for TextClassification {
    fn task(&self) -> Task {
        Task::TextClassification
    }

    fn load(&self, dir: &Path, signature: &Signature, labels: &[String]) -> Result<Box<dyn TaskPipeline>> {
        Ok(Box::new(Loaded(TextPipeline::for_version(dir, signature, labels, Reads::Labels)?)))
    }

    fn v2_metadata(&self, signature: &Signature, labels: &[String]) -> (Vec<V2TensorMetadata>, Vec<V2TensorMetadata>) {
        let n =
            if labels.is_empty() { signature.text.as_ref().map_or(0, |t| t.labels.len()) } else { labels.len() } as i64;
        (
            vec![v2_meta("text", DType::String, vec![-1])],
            vec![
                v2_meta("label", DType::String, vec![-1]),
                v2_meta("score", DType::Float32, vec![-1]),
                v2_meta("scores", DType::Float32, vec![-1, n]),
            ],
        )
    }

    fn openapi(&self, info: &VersionInfo) -> (Value, Value, Value) {
        let label = json!({
            "type": "object",
            "required": ["label", "score"],
            "properties": {
                "label": {"type": "string", "enum": info.labels},
                "score": {"type": "number", "minimum": 0, "maximum": 1}
            }
        });
        let request = json!({
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "inputs": texts_schema(info.effective.max_items),
                "top_k": {"type": "integer", "minimum": 1, "description": "how many labels to return per text (all by default)"}
            }
        });
        let response = json!({
            "description": "labels with scores, best first; a list of those for a list of texts",
            "oneOf": [
                {"type": "array", "items": label},
                {"type": "array", "items": {"type": "array", "items": label}}
            ]
        });
        (request, response, text::example_request())
    }

    fn needs_labels(&self) -> bool {
        true
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
        Ok(if signature.mlflow.is_some() {
            // MLflow's transformers pyfunc: one record (label, score) per row.
            let best: Vec<_> = self.0.classify(outputs, Some(1))?.into_iter().flatten().collect();
            PredictResponse::Mlflow(MlflowPredictions { predictions: json::raw(&best) })
        } else {
            let mut labels = self.0.classify(outputs, req.top_k.map(NonZeroUsize::get))?;
            if many { PredictResponse::LabelsBatch(labels) } else { PredictResponse::Labels(labels.remove(0)) }
        })
    }

    fn v2_input_count(&self, _signature: &Signature) -> usize {
        1
    }

    fn v2_inputs(&self, _signature: &Signature, limits: &EffectiveServing, given: Tensors) -> Result<Inputs> {
        text::v2_texts(given, limits)
    }

    /// `label` and `score` (the best of each text) and `scores` (every label's, in
    /// the labels' order).
    fn v2_outputs(&self, answer: &Answer, outputs: Tensors) -> Result<Tensors> {
        let n = answer.mask()?.shape().first().copied().unwrap_or(0);
        let labels = &self.0.info().labels;
        let scored = self.0.classify(&outputs, None)?;
        let best: Vec<String> = scored.iter().map(|s| s[0].label.clone()).collect();
        let top: Vec<f32> = scored.iter().map(|s| s[0].score).collect();
        let k = labels.len().max(scored.first().map_or(0, Vec::len));
        let mut all = vec![0f32; n * k];
        for (row, s) in scored.iter().enumerate() {
            for ls in s {
                let i = labels
                    .iter()
                    .position(|l| *l == ls.label)
                    .unwrap_or_else(|| ls.label.strip_prefix("LABEL_").and_then(|i| i.parse().ok()).unwrap_or(0));
                if i < k {
                    all[row * k + i] = ls.score;
                }
            }
        }
        let shaped = |shape: &[usize]| IxDyn(shape);
        Ok(vec![
            ("label".to_string(), Tensor::Str(ArrayD::from_shape_vec(shaped(&[n]), best).map_err(Error::internal)?)),
            ("score".to_string(), Tensor::F32(ArrayD::from_shape_vec(shaped(&[n]), top).map_err(Error::internal)?)),
            ("scores".to_string(), Tensor::F32(ArrayD::from_shape_vec(shaped(&[n, k]), all).map_err(Error::internal)?)),
        ])
    }
}
