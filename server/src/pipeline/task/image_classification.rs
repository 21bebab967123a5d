//! The `image-classification` task: a JPEG or PNG in (the request body itself,
//! a `multipart/form-data` file, or base64 in JSON), labels with scores out, best
//! first (the best 5 unless `top_k` says); in KServe v2 an `image` BYTES input
//! (base64) and `label`, `score` and `scores` outputs.

use std::num::NonZeroUsize;
use std::path::Path;

use serde_json::{Map, Value, json};
use zoo_api::kserve::V2TensorMetadata;
use zoo_api::{DType, EffectiveServing, PredictResponse, Signature, Task, VersionInfo};

use super::{TaskKind, TaskPipeline};
use crate::error::{Error, Result};
use crate::pipeline::image::{self, ImagePipeline};
use crate::pipeline::request::{Answer, Inputs, RawPredict};
use crate::pipeline::scores;
use crate::runtime::Tensors;

pub struct ImageClassification;

struct Loaded {
    image: ImagePipeline,
    /// The model's logits output.
    output: String,
}

/// Labels per image when the request does not say (as transformers' pipeline).
pub const DEFAULT_TOP_K: usize = 5;

/// A 4x4 PNG, the example request's image.
const EXAMPLE_PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAQAAAAECAIAAAAmkwkpAAAAKUlEQVR42g3HMQEAAAzCMIRVGGdFIXDLlyQSGxcTBIvjU6mt62cyOzcPp2MTQQYaK1UAAAAASUVORK5CYII=";

fn labels_of<'a>(signature: &'a Signature, labels: &'a [String]) -> &'a [String] {
    if labels.is_empty() { signature.image.as_ref().map_or(&[], |i| &i.labels) } else { labels }
}

impl TaskKind for ImageClassification {
    fn task(&self) -> Task {
        Task::ImageClassification
    }

    fn load(&self, _dir: &Path, signature: &Signature, labels: &[String]) -> Result<Box<dyn TaskPipeline>> {
        let image = ImagePipeline::for_version(signature, labels)?;
        let output = signature
            .outputs
            .iter()
            .find(|o| o.name == "logits" && o.shape.as_ref().is_some_and(|s| s.len() == 2))
            .or_else(|| signature.outputs.iter().find(|o| o.shape.as_ref().is_some_and(|s| s.len() == 2)))
            .map(|o| o.name.clone())
            .ok_or_else(|| Error::NotServable("an image classifier needs a [batch, labels] output".into()))?;
        Ok(Box::new(Loaded { image, output }))
    }

    fn v2_metadata(&self, signature: &Signature, labels: &[String]) -> (Vec<V2TensorMetadata>, Vec<V2TensorMetadata>) {
        let n = labels_of(signature, labels).len();
        (vec![V2TensorMetadata::new("image", DType::String, vec![-1])], scores::v2_label_outputs(n))
    }

    fn openapi(&self, info: &VersionInfo) -> (Value, Value, Value) {
        let image = json!({"type": "string", "contentEncoding": "base64",
                           "description": "a JPEG or PNG in base64 (a data:image/...;base64, prefix is allowed; URLs are not fetched)"});
        let request = json!({
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "inputs": {
                    "description": "an image, or a list of images (one answer per image)",
                    "oneOf": [image, {"type": "array", "items": image, "minItems": 1, "maxItems": info.effective.max_items}]
                },
                "top_k": top_k_schema()
            }
        });
        let response = scores::labels_response(&info.labels, "image");
        (request, response, json!({"inputs": EXAMPLE_PNG}))
    }

    /// The image itself as the body, or files in a form.
    fn request_media(&self, info: &VersionInfo) -> Map<String, Value> {
        let binary = json!({"schema": {"type": "string", "contentMediaType": "image/*",
                                       "description": "the image's bytes (top 5 labels)"}});
        let mut media = Map::new();
        media.insert("image/jpeg".into(), binary.clone());
        media.insert("image/png".into(), binary);
        media.insert(
            "multipart/form-data".into(),
            json!({"schema": {
                "type": "object",
                "required": ["image"],
                "properties": {
                    "image": {
                        "description": "the image file; several parts named image answer with a list",
                        "type": "array",
                        "items": {"type": "string", "contentMediaType": "image/*"},
                        "minItems": 1,
                        "maxItems": info.effective.max_items
                    },
                    "top_k": top_k_schema()
                }
            }}),
        );
        media
    }

    fn needs_labels(&self) -> bool {
        true
    }
}

fn top_k_schema() -> Value {
    json!({"type": "integer", "minimum": 1, "description": "how many labels to return per image (5 by default)"})
}

impl TaskPipeline for Loaded {
    fn image(&self) -> Option<&ImagePipeline> {
        Some(&self.image)
    }

    fn padding(&self) -> Vec<(String, i64)> {
        Vec::new()
    }

    fn inputs(&self, signature: &Signature, limits: &EffectiveServing, req: &RawPredict<'_>) -> Result<Inputs> {
        if signature.mlflow.is_some() {
            return Err(Error::InvalidInput("MLflow image models are not served".into()));
        }
        image::request_images(signature, limits, req)
    }

    fn respond(
        &self,
        _signature: &Signature,
        req: &RawPredict<'_>,
        answer: &Answer,
        outputs: &Tensors,
    ) -> Result<PredictResponse> {
        let many = answer.many()?;
        let k = req.top_k.map_or(DEFAULT_TOP_K, NonZeroUsize::get);
        let mut labels = scores::classify(&self.logits(outputs)?, &self.image.info().labels, Some(k))?;
        Ok(if many { PredictResponse::LabelsBatch(labels) } else { PredictResponse::Labels(labels.remove(0)) })
    }

    fn v2_input_count(&self, _signature: &Signature) -> usize {
        1
    }

    fn v2_inputs(&self, _signature: &Signature, limits: &EffectiveServing, given: Tensors) -> Result<Inputs> {
        image::v2_images(given, limits)
    }

    fn v2_outputs(&self, _answer: &Answer, outputs: Tensors) -> Result<Tensors> {
        let scored = scores::classify(&self.logits(&outputs)?, &self.image.info().labels, None)?;
        scores::v2_labels(&scored, &self.image.info().labels)
    }
}

impl Loaded {
    fn logits(&self, outputs: &Tensors) -> Result<ndarray::ArrayD<f32>> {
        outputs
            .iter()
            .find(|(n, _)| *n == self.output)
            .ok_or_else(|| Error::Inference(format!("the model returned no '{}' output", self.output)))?
            .1
            .to_f32()
            .ok_or_else(|| Error::Inference(format!("'{}' is not floating point", self.output)))
    }
}
