//! Tasks as data: what a version takes and answers is decided by its task, one
//! file each in `task/`; the rest of this module is what tasks share (JSON
//! tensors, tokenization, MLflow's formats, the OpenAPI document's frame).

use std::path::Path;

use zoo_api::{EffectiveServing, PredictResponse, Signature, Task};

use crate::error::Result;
use crate::runtime::Tensors;

pub mod json;
pub mod mlflow;
pub mod openapi;
pub mod request;
pub mod task;
pub mod tensor;
pub mod text;

use request::{Answer, Inputs, RawPredict};
use task::TaskPipeline;
use text::TextPipeline;

/// Pre- and post-processing of a loaded version, as its task decides.
pub struct Pipeline {
    inner: Box<dyn TaskPipeline>,
}

impl Pipeline {
    /// The pipeline of a version of `task`, from its unpacked directory `dir`
    /// (`labels`: the class names given at deploy, if any).
    pub fn load(task: Task, dir: &Path, signature: &Signature, labels: &[String]) -> Result<Pipeline> {
        Ok(Pipeline { inner: task::kind(task).load(dir, signature, labels)? })
    }

    /// The tokenizer, for versions that take texts.
    pub fn text(&self) -> Option<&TextPipeline> {
        self.inner.text()
    }

    /// Inputs to warm a loaded model up with: real tokens for a text model, zeros
    /// of the signature's shapes (symbolic dimensions 1) for a tensor model.
    pub fn warmup_inputs(&self, signature: &Signature) -> Option<Tensors> {
        self.inner.warmup_inputs(signature)
    }

    /// Whether a failed warm-up rules the runtime out.
    pub fn warmup_must_pass(&self) -> bool {
        self.inner.warmup_must_pass()
    }

    /// What each input is padded with when requests of different lengths share a batch.
    pub fn padding(&self) -> Vec<(String, i64)> {
        self.inner.padding()
    }

    /// What the model is to run for a v1 request, within the version's limits.
    pub fn inputs(&self, signature: &Signature, limits: &EffectiveServing, req: &RawPredict<'_>) -> Result<Inputs> {
        self.inner.inputs(signature, limits, req)
    }

    /// The v1 response to a request, from the model's outputs.
    pub fn respond(
        &self,
        signature: &Signature,
        req: &RawPredict<'_>,
        answer: &Answer,
        outputs: &Tensors,
    ) -> Result<PredictResponse> {
        self.inner.respond(signature, req, answer, outputs)
    }

    /// How many inputs a v2 request may name at most.
    pub fn v2_input_count(&self, signature: &Signature) -> usize {
        self.inner.v2_input_count(signature)
    }

    /// What the model is to run for a v2 request's decoded tensors.
    pub fn v2_inputs(&self, signature: &Signature, limits: &EffectiveServing, given: Tensors) -> Result<Inputs> {
        self.inner.v2_inputs(signature, limits, given)
    }

    /// The v2 output tensors from the model's outputs.
    pub fn v2_outputs(&self, answer: &Answer, outputs: Tensors) -> Result<Tensors> {
        self.inner.v2_outputs(answer, outputs)
    }
}
