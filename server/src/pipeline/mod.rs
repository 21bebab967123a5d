//! Tasks as data: pre- and post-processing chosen by a version's task.

use std::path::Path;

use zoo_api::{Signature, Task, TextInfo};

use crate::error::{Error, Result};
use crate::runtime::Tensors;

pub mod json;
pub mod mlflow;
pub mod openapi;
pub mod request;
pub mod tensor;
pub mod text;
pub mod v2;

/// Pre/post-processing of a loaded version.
pub enum Pipeline {
    Tensor,
    Text(Box<text::TextPipeline>),
}

impl Pipeline {
    /// The pipeline of a version of `task`, from its unpacked directory `dir`
    /// (`labels`: the class names given at deploy, if any).
    pub fn load(task: Task, dir: &Path, signature: &Signature, labels: &[String]) -> Result<Pipeline> {
        Ok(match task {
            Task::Tensor => Pipeline::Tensor,
            Task::TextClassification | Task::FeatureExtraction => {
                let mut info: TextInfo = signature
                    .text
                    .clone()
                    .ok_or_else(|| Error::NotServable("a text task needs a bundle with tokenizer.json".into()))?;
                if !labels.is_empty() {
                    info.labels = labels.to_vec();
                }
                let classifier = task == Task::TextClassification;
                Pipeline::Text(Box::new(text::TextPipeline::load(dir, signature, info, classifier)?))
            }
        })
    }

    /// Inputs to warm a loaded model up with: real tokens for a text model, zeros
    /// of the signature's shapes (symbolic dimensions 1) for a tensor model.
    pub fn warmup_inputs(&self, signature: &Signature) -> Option<Tensors> {
        match self {
            Pipeline::Tensor => tensor::example_inputs(&signature.inputs),
            Pipeline::Text(p) => p.encode(&["zoo warm-up".to_string()], usize::MAX).ok().map(|e| e.inputs),
        }
    }

    /// Whether a failed warm-up rules the runtime out. Real tokens must run; zeros
    /// may rightly be refused by a tensor model (too few audio samples, say).
    pub fn warmup_must_pass(&self) -> bool {
        !matches!(self, Pipeline::Tensor)
    }

    /// What each input is padded with when requests of different lengths share a batch.
    pub fn padding(&self) -> Vec<(String, i64)> {
        match self {
            Pipeline::Text(p) => vec![
                ("input_ids".to_string(), p.pad_id()),
                ("attention_mask".to_string(), 0),
                ("token_type_ids".to_string(), 0),
            ],
            Pipeline::Tensor => vec![],
        }
    }
}
