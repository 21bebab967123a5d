//! One file per task. A task decides, for every front end, what its versions
//! take and answer: the loaded pipeline (request -> what the model runs ->
//! response, in v1 and in KServe v2), the version's OpenAPI request and response
//! schemas, its KServe v2 metadata and the catalogue's try-it form.
//!
//! Adding a task: a new file here implementing [`TaskKind`] (and the
//! [`TaskPipeline`] its `load` returns), its line in [`kind`], and its variant in
//! `zoo_api::Task`.

use std::path::Path;

use serde_json::Value;
use zoo_api::kserve::V2TensorMetadata;
use zoo_api::{EffectiveServing, PredictResponse, Signature, Task, VersionInfo};

use super::generation::Generator;
use super::image::ImagePipeline;
use super::request::{Answer, Inputs, RawPredict};
use super::text::TextPipeline;
use crate::error::Result;
use crate::runtime::Tensors;

pub mod feature_extraction;
pub mod image_classification;
pub mod tensor;
pub mod text_classification;
pub mod text_generation;
pub mod token_classification;

/// The registration of every task: its one line each.
pub fn kind(task: Task) -> &'static dyn TaskKind {
    match task {
        Task::Tensor => &tensor::TensorTask,
        Task::TextClassification => &text_classification::TextClassification,
        Task::FeatureExtraction => &feature_extraction::FeatureExtraction,
        Task::TokenClassification => &token_classification::TokenClassification,
        Task::ImageClassification => &image_classification::ImageClassification,
        Task::TextGeneration => &text_generation::TextGeneration,
    }
}

/// What a task decides from a version's stored record, with nothing loaded.
pub trait TaskKind: Sync {
    fn task(&self) -> Task;

    /// Load the pipeline of a version from its unpacked directory `dir`
    /// (`labels`: the class names given at deploy, if any).
    fn load(&self, dir: &Path, signature: &Signature, labels: &[String]) -> Result<Box<dyn TaskPipeline>>;

    /// The version's inputs and outputs in KServe v2 metadata.
    fn v2_metadata(&self, signature: &Signature, labels: &[String]) -> (Vec<V2TensorMetadata>, Vec<V2TensorMetadata>);

    /// The request schema, response schema and example request of the version's
    /// OpenAPI document (MLflow versions take MLflow's formats instead, see
    /// `pipeline/openapi.rs`).
    fn openapi(&self, info: &VersionInfo) -> (Value, Value, Value);

    /// Request bodies the version takes besides JSON, by media type (an image
    /// task: the image itself, or a form), for its OpenAPI document.
    fn request_media(&self, _info: &VersionInfo) -> serde_json::Map<String, Value> {
        serde_json::Map::new()
    }

    /// Whether a version of this task needs labels (from `id2label` or the deploy).
    fn needs_labels(&self) -> bool {
        false
    }

    /// The JSON Schema of one cell of an MLflow request to a version of this task.
    fn mlflow_cell(&self) -> Value {
        serde_json::json!({"type": ["number", "null"]})
    }

    /// The catalogue's try-it form for a version: a text box for versions that
    /// take a bare text (`Task::takes_text`, which the CLI shares), a file picker
    /// for those that take an image, else a JSON body.
    fn try_it(&self, signature: &Signature) -> TryIt {
        if self.task().takes_text(signature) {
            TryIt::Text
        } else if self.task().takes_image(signature) {
            TryIt::Image
        } else {
            TryIt::Json
        }
    }
}

/// A loaded version's task: reads requests into what the model runs and turns
/// the model's outputs into answers.
pub trait TaskPipeline: Send + Sync {
    /// The tokenizer, for tasks that take texts.
    fn text(&self) -> Option<&TextPipeline> {
        None
    }

    /// The image preparation, for tasks that take images.
    fn image(&self) -> Option<&ImagePipeline> {
        None
    }

    /// The model, tokenizer and engine, for text generation (which does not run
    /// through the batching host).
    fn generator(&self) -> Option<&std::sync::Arc<Generator>> {
        None
    }

    /// Inputs to warm a loaded model up with (a task with a tokenizer: real
    /// tokens; with images: a grey image of the model's size).
    fn warmup_inputs(&self, _signature: &Signature) -> Option<Tensors> {
        self.text().and_then(TextPipeline::warmup_inputs).or_else(|| self.image().map(ImagePipeline::warmup_inputs))
    }

    /// Whether a failed warm-up rules the runtime out (real inputs must run;
    /// made-up zeros may rightly be refused).
    fn warmup_must_pass(&self) -> bool {
        true
    }

    /// What each input is padded with when requests of different lengths share a
    /// batch (a task with a tokenizer: its token inputs).
    fn padding(&self) -> Vec<(String, i64)> {
        self.text().map(TextPipeline::padding).unwrap_or_default()
    }

    /// What the model is to run for a v1 request (`{"inputs": ...}` or, for an
    /// MLflow version, MLflow's formats), within the version's limits.
    fn inputs(&self, signature: &Signature, limits: &EffectiveServing, req: &RawPredict<'_>) -> Result<Inputs>;

    /// The v1 response from the model's outputs.
    fn respond(
        &self,
        signature: &Signature,
        req: &RawPredict<'_>,
        answer: &Answer,
        outputs: &Tensors,
    ) -> Result<PredictResponse>;

    /// How many inputs a v2 request may name at most.
    fn v2_input_count(&self, signature: &Signature) -> usize;

    /// What the model is to run for a v2 request's decoded input tensors.
    fn v2_inputs(&self, signature: &Signature, limits: &EffectiveServing, given: Tensors) -> Result<Inputs>;

    /// The v2 output tensors from the model's outputs.
    fn v2_outputs(&self, answer: &Answer, outputs: Tensors) -> Result<Tensors>;
}

/// The catalogue's try-it form: a text box for a bare text, a file picker for
/// an image, or a JSON body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryIt {
    Text,
    Image,
    Json,
    /// A chat box that streams the answer (text generation).
    Chat,
}

impl TryIt {
    /// The text the form is filled with at first, from the version's example request.
    pub fn prefill(self, example: &Value) -> String {
        match self {
            TryIt::Text => example["inputs"].as_str().unwrap_or("").to_string(),
            TryIt::Image => String::new(),
            TryIt::Chat => "Write a haiku about a zoo.".to_string(),
            TryIt::Json => serde_json::to_string_pretty(example).unwrap_or_default(),
        }
    }

    /// The predict request body for what was typed into the form (an image
    /// form's file is sent as an image, not through here).
    pub fn body(self, input: &str) -> Vec<u8> {
        match self {
            TryIt::Text | TryIt::Chat => serde_json::json!({ "inputs": input }).to_string().into_bytes(),
            TryIt::Json | TryIt::Image => input.as_bytes().to_vec(),
        }
    }

    /// The form field's label.
    pub fn label(self) -> &'static str {
        match self {
            TryIt::Text => "Text",
            TryIt::Image => "Image (JPEG or PNG)",
            TryIt::Chat => "Message",
            TryIt::Json => "Request (JSON)",
        }
    }

    /// The CLI line that sends the example request (`zoo predict NAME ...`).
    pub fn cli(self, model: &str, example: &Value) -> String {
        match self {
            TryIt::Text => format!("zoo predict {model} \"{}\"", example["inputs"].as_str().unwrap_or("good job")),
            TryIt::Image => format!("zoo predict {model} --file cat.jpg"),
            TryIt::Chat => format!("zoo chat {model}"),
            TryIt::Json => format!(
                "echo '{}' > request.json\nzoo predict {model} --json request.json",
                serde_json::to_string(example).unwrap_or_default()
            ),
        }
    }
}

/// One tensor of v2 metadata.
#[cfg(test)]
mod tests {
    use super::*;

    fn signature(mlflow: bool) -> Signature {
        let mut s = serde_json::json!({"format": "onnx", "bundle": true, "inputs": [], "outputs": []});
        if mlflow {
            s["format"] = "mlflow".into();
            s["mlflow"] = serde_json::json!({"flavors": ["onnx"]});
        }
        serde_json::from_value(s).unwrap()
    }

    #[test]
    fn every_task_is_registered_under_its_own_name() {
        for t in Task::ALL {
            assert_eq!(kind(t).task(), t, "{} is registered as another task", t.as_str());
            assert_eq!(Task::parse(t.as_str()), Some(t));
        }
    }

    #[test]
    fn text_tasks_take_a_bare_text_image_tasks_a_file_and_generators_a_chat_except_in_mlflow_bundles() {
        for t in Task::ALL {
            let text = matches!(t, Task::TextClassification | Task::FeatureExtraction | Task::TokenClassification);
            assert_eq!(kind(t).try_it(&signature(false)) == TryIt::Text, text, "{}", t.as_str());
            let image = t == Task::ImageClassification;
            assert_eq!(kind(t).try_it(&signature(false)) == TryIt::Image, image, "{}", t.as_str());
            // A generator is a chat box whatever holds it: only GGUF files generate.
            let bundle = if t == Task::TextGeneration { TryIt::Chat } else { TryIt::Json };
            assert_eq!(kind(t).try_it(&signature(true)), bundle, "{}", t.as_str());
        }
    }

    #[test]
    fn the_try_it_form_sends_what_was_typed_as_the_task_takes_it() {
        let example = serde_json::json!({"inputs": "a film"});
        assert_eq!(TryIt::Text.prefill(&example), "a film");
        let body: Value = serde_json::from_slice(&TryIt::Text.body("it's \"great\"")).unwrap();
        assert_eq!(body, serde_json::json!({"inputs": "it's \"great\""}));
        assert_eq!(TryIt::Json.body("{\"inputs\": {}}"), b"{\"inputs\": {}}");
        let prefill = TryIt::Json.prefill(&example);
        assert_eq!(serde_json::from_str::<Value>(&prefill).unwrap(), example);
        assert_eq!(TryIt::Text.cli("m", &example), "zoo predict m \"a film\"");
        assert!(TryIt::Json.cli("m", &example).contains("zoo predict m --json request.json"));
        assert_eq!(TryIt::Image.cli("vit", &example), "zoo predict vit --file cat.jpg");
        assert_eq!(TryIt::Image.prefill(&example), "");
    }
}
