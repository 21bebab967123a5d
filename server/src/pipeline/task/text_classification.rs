//! The `text-classification` task: a text (or a list) in, labels with scores
//! out, best first; in KServe v2 a `text` BYTES input and `label`, `score` and
//! `scores` outputs.

use std::num::NonZeroUsize;
use std::path::Path;

use serde_json::{Value, json};
use zoo_api::kserve::V2TensorMetadata;
use zoo_api::{DType, EffectiveServing, MlflowPredictions, PredictResponse, Signature, Task, VersionInfo};

use super::{TaskKind, TaskPipeline};
use crate::error::Result;
use crate::pipeline::request::{Answer, Inputs, RawPredict};
use crate::pipeline::text::{self, Reads, TextPipeline, texts_schema};
use crate::pipeline::{json, scores};
use crate::runtime::Tensors;

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
        let n = if labels.is_empty() { signature.text.as_ref().map_or(0, |t| t.labels.len()) } else { labels.len() };
        (vec![V2TensorMetadata::new("text", DType::String, vec![-1])], scores::v2_label_outputs(n))
    }

    fn openapi(&self, info: &VersionInfo) -> (Value, Value, Value) {
        let request = json!({
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "inputs": texts_schema(info.effective.max_items),
                "top_k": {"type": "integer", "minimum": 1, "description": "how many labels to return per text (all by default)"}
            }
        });
        let response = scores::labels_response(&info.labels, "text");
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
    fn v2_outputs(&self, _answer: &Answer, outputs: Tensors) -> Result<Tensors> {
        let scored = self.0.classify(&outputs, None)?;
        scores::v2_labels(&scored, &self.0.info().labels)
    }
}
