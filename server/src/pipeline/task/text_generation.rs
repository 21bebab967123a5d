//! The `text-generation` task: a prompt in, the model's continuation out
//! (`[{"generated_text": ...}]`, as transformers' pipeline answers); a chat
//! through the OpenAI routes; in KServe v2 the `generate` extension's
//! `text_input` and `text_output`. The model runs in its own engine
//! (`runtime/generate.rs`), not through the batching host.

use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};
use zoo_api::kserve::V2TensorMetadata;
use zoo_api::{DType, EffectiveServing, PredictResponse, Signature, Task, VersionInfo};

use super::{TaskKind, TaskPipeline, TryIt};
use crate::error::{Error, Result};
use crate::pipeline::generation::{self, Generator};
use crate::pipeline::request::{Answer, Inputs, RawPredict};
use crate::runtime::Tensors;

pub struct TextGeneration;

struct Loaded(Arc<Generator>);

/// A request that must go through the generation routes, not the tensor path.
fn not_here() -> Error {
    Error::InvalidRequest(
        "a text-generation version generates text: send {\"inputs\": \"a prompt\"} to predict, or use \
         /v1/chat/completions, /v1/completions or KServe v2 generate"
            .into(),
    )
}

impl TaskKind for TextGeneration {
    fn task(&self) -> Task {
        Task::TextGeneration
    }

    fn load(&self, dir: &Path, signature: &Signature, _labels: &[String]) -> Result<Box<dyn TaskPipeline>> {
        let generator = match &signature.decoder {
            Some(d) => Generator::load_hf(dir, d.chat_template.as_deref())?,
            None => Generator::load(&dir.join(zoo_formats::single_file_name(signature.format)))?,
        };
        Ok(Box::new(Loaded(Arc::new(generator))))
    }

    fn v2_metadata(
        &self,
        _signature: &Signature,
        _labels: &[String],
    ) -> (Vec<V2TensorMetadata>, Vec<V2TensorMetadata>) {
        (
            vec![V2TensorMetadata::new("text_input", DType::String, vec![1])],
            vec![V2TensorMetadata::new("text_output", DType::String, vec![-1])],
        )
    }

    fn openapi(&self, info: &VersionInfo) -> (Value, Value, Value) {
        let context = info.signature.context_length();
        let mut max_new = json!({"type": "integer", "minimum": 1,
            "description": format!("most tokens to generate (default {})", generation::DEFAULT_NEW_TOKENS)});
        if let Some(c) = context {
            max_new["description"] = format!(
                "most tokens to generate (default {}; the prompt and the answer share the model's context of {c} tokens)",
                generation::DEFAULT_NEW_TOKENS
            )
            .into();
        }
        let request = json!({
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "inputs": {"type": "string", "description": "the prompt to continue"},
                "parameters": {
                    "type": "object",
                    "additionalProperties": false,
                    "properties": {
                        "max_new_tokens": max_new,
                        "do_sample": {"type": "boolean", "description": "sample instead of taking the most likely token (default: false unless a temperature is given)"},
                        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
                        "top_k": {"type": "integer", "minimum": 0},
                        "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                        "repetition_penalty": {"type": "number", "exclusiveMinimum": 0, "maximum": 10},
                        "seed": {"type": "integer"},
                        "stop": {"type": "array", "maxItems": generation::MAX_STOPS,
                            "items": {"type": "string", "minLength": 1, "maxLength": generation::MAX_STOP_BYTES}},
                        "return_full_text": {"type": "boolean", "description": "answer with the prompt followed by the generated text (default true)"}
                    }
                }
            }
        });
        let response = json!({
            "type": "array", "minItems": 1, "maxItems": 1,
            "items": {"type": "object", "required": ["generated_text"],
                "properties": {"generated_text": {"type": "string"}}}
        });
        let example = json!({"inputs": "Once upon a time", "parameters": {"max_new_tokens": 32}});
        (request, response, example)
    }

    fn try_it(&self, _signature: &Signature) -> TryIt {
        TryIt::Chat
    }
}

impl TaskPipeline for Loaded {
    fn generator(&self) -> Option<&Arc<Generator>> {
        Some(&self.0)
    }

    fn inputs(&self, _signature: &Signature, _limits: &EffectiveServing, _req: &RawPredict<'_>) -> Result<Inputs> {
        Err(not_here())
    }

    fn respond(
        &self,
        _signature: &Signature,
        _req: &RawPredict<'_>,
        _answer: &Answer,
        _outputs: &Tensors,
    ) -> Result<PredictResponse> {
        Err(not_here())
    }

    fn v2_input_count(&self, _signature: &Signature) -> usize {
        1
    }

    fn v2_inputs(&self, _signature: &Signature, _limits: &EffectiveServing, _given: Tensors) -> Result<Inputs> {
        Err(not_here())
    }

    fn v2_outputs(&self, _answer: &Answer, _outputs: Tensors) -> Result<Tensors> {
        Err(not_here())
    }
}
