//! A v1 predict request as it arrives, what a task makes of it for the model to
//! run ([`Inputs`]), and what the task needs to answer ([`Answer`]). Each task's
//! own decisions are in `pipeline/task/`.

use std::num::NonZeroUsize;

use ndarray::ArrayD;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokenizers::Encoding;
use zoo_api::{PredictRequest, Signature};

use super::json;
use crate::error::{Error, Result};
use crate::runtime::Tensors;

/// A predict request as it arrives: its bulk fields kept as JSON text (borrowed
/// from the body) for the task to parse into exactly what it needs.
///
/// A field that is present must hold a value: `null` is refused like any other
/// wrong type (each model's OpenAPI document gives no field a null).
#[derive(Debug, Default, Deserialize)]
pub struct RawPredict<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    pub inputs: Option<&'a RawValue>,
    #[serde(default, deserialize_with = "present")]
    pub top_k: Option<NonZeroUsize>,
    #[serde(default, deserialize_with = "present")]
    pub normalize: Option<bool>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub dataframe_split: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub dataframe_records: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub instances: Option<&'a RawValue>,
    /// text-generation: how to generate.
    #[serde(default, deserialize_with = "present")]
    pub parameters: Option<zoo_api::openai::GenerationParameters>,
}

/// An optional field that, when present, is never `null`.
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> std::result::Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// Most JSON values an MLflow scoring request (`dataframe_split`,
/// `dataframe_records`, `instances`) may hold: these are read as a JSON tree.
pub const MLFLOW_MAX_VALUES: usize = 1 << 20;

impl RawPredict<'_> {
    fn uses_mlflow_format(&self) -> bool {
        self.dataframe_split.is_some() || self.dataframe_records.is_some() || self.instances.is_some()
    }

    /// The request as a JSON tree, for MLflow's formats; its size is counted first.
    pub fn to_tree(&self) -> Result<PredictRequest> {
        let fields = [self.inputs, self.dataframe_split, self.dataframe_records, self.instances];
        let mut total = 0usize;
        for raw in fields.into_iter().flatten() {
            match json::count_values(raw.get(), MLFLOW_MAX_VALUES - total).map_err(Error::InvalidRequest)? {
                Some(n) => total += n,
                None => {
                    return Err(Error::InvalidInput(format!(
                        "an MLflow request may hold at most {MLFLOW_MAX_VALUES} JSON values; send fewer rows per request"
                    )));
                }
            }
        }
        let tree = |raw: Option<&RawValue>| -> Result<Option<serde_json::Value>> {
            raw.map(|r| serde_json::from_str(r.get()).map_err(|e| Error::InvalidRequest(e.to_string()))).transpose()
        };
        Ok(PredictRequest {
            inputs: tree(self.inputs)?.unwrap_or(serde_json::Value::Null),
            top_k: self.top_k.map(NonZeroUsize::get),
            normalize: self.normalize,
            dataframe_split: tree(self.dataframe_split)?,
            dataframe_records: tree(self.dataframe_records)?,
            instances: tree(self.instances)?,
            parameters: self.parameters.clone(),
        })
    }
}

/// What a request asks the model to run.
pub enum Inputs {
    /// Tensors of `rows` rows.
    Tensors { tensors: Tensors, rows: usize },
    /// Texts to tokenize (by the caller: off the async threads when long); `many`:
    /// the request sent a list, so the answer is one.
    Texts { texts: Vec<String>, many: bool },
    /// Encoded images (JPEG or PNG) to decode and prepare (by the caller, off the
    /// async threads); `many`: the answer is a list.
    Images { images: Vec<bytes::Bytes>, many: bool },
}

/// What `respond` needs besides the outputs: for texts and images, whether a list was sent,
/// the attention mask (embeddings are pooled over it) and the tokenizer's
/// encodings (entities are read from their tokens and offsets).
pub enum Answer {
    Tensors,
    Texts { many: bool, mask: ArrayD<i64>, encodings: Vec<Encoding>, texts: Vec<String> },
    Images { many: bool },
}

impl Answer {
    /// Whether the request sent a list of texts (the answer is one).
    pub fn many(&self) -> Result<bool> {
        match self {
            Answer::Texts { many, .. } | Answer::Images { many } => Ok(*many),
            Answer::Tensors => Err(Error::internal("a text version answered without its texts")),
        }
    }

    /// The texts' encodings, and the texts.
    pub fn encodings(&self) -> Result<(&[Encoding], &[String])> {
        match self {
            Answer::Texts { encodings, texts, .. } => Ok((encodings, texts)),
            _ => Err(Error::internal("a text version answered without its texts' tokens")),
        }
    }

    /// The texts' attention mask.
    pub fn mask(&self) -> Result<&ArrayD<i64>> {
        match self {
            Answer::Texts { mask, .. } => Ok(mask),
            _ => Err(Error::internal("a text version answered without its texts' mask")),
        }
    }
}

/// MLflow's formats are for MLflow versions only.
pub fn refuse_mlflow_formats(signature: &Signature, req: &RawPredict<'_>) -> Result<()> {
    if signature.mlflow.is_none() && req.uses_mlflow_format() {
        return Err(Error::InvalidInput(
            "dataframe_split, dataframe_records and instances are for MLflow versions; send {\"inputs\": ...}".into(),
        ));
    }
    Ok(())
}

/// The rows of a request (its first input's first axis), at most `max`.
pub fn check_rows(inputs: &Tensors, max: usize) -> Result<usize> {
    for (name, t) in inputs {
        if let Some(&n) = t.shape().first()
            && n > max
        {
            return Err(Error::InvalidInput(format!("input '{name}' has {n} rows; at most {max} per request")));
        }
    }
    Ok(inputs.first().and_then(|(_, t)| t.shape().first().copied()).unwrap_or(1))
}
