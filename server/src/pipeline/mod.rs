//! Tasks as data: pre- and post-processing chosen by a version's task.

pub mod json;
pub mod mlflow;
pub mod tensor;
pub mod text;
