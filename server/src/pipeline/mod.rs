//! Tasks as data: what a version takes and answers is decided by its task, one
//! file each in `task/`; the rest of this module is what tasks share (JSON
//! tensors, tokenization, image preparation, labels from logits, MLflow's formats,
//! the OpenAPI document's frame).

use std::path::Path;

use zoo_api::{Signature, Task};

use crate::error::Result;

pub mod generation;
pub mod image;
pub mod json;
pub mod mlflow;
pub mod openapi;
pub mod request;
pub mod scores;
pub mod task;
pub mod tensor;
pub mod text;

use task::TaskPipeline;

/// Pre- and post-processing of a loaded version, as its task decides: the
/// task's [`TaskPipeline`], whose methods it offers.
pub struct Pipeline(Box<dyn TaskPipeline>);

impl Pipeline {
    /// The pipeline of a version of `task`, from its unpacked directory `dir`
    /// (`labels`: the class names given at deploy, if any).
    pub fn load(task: Task, dir: &Path, signature: &Signature, labels: &[String]) -> Result<Pipeline> {
        Ok(Pipeline(task::kind(task).load(dir, signature, labels)?))
    }
}

impl std::ops::Deref for Pipeline {
    type Target = dyn TaskPipeline;

    fn deref(&self) -> &(dyn TaskPipeline + 'static) {
        self.0.as_ref()
    }
}
