//! A v1 predict request, from its body to what the model runs and back to the
//! answer: the one place that decides, per task, what a request holds and what
//! its response is (`service/predict.rs` only moves it along).

use std::num::NonZeroUsize;

use ndarray::ArrayD;
use serde::Deserialize;
use serde_json::value::RawValue;
use zoo_api::{EffectiveServing, MlflowPredictions, PredictRequest, PredictResponse, Signature, Task, TensorResponse};

use super::Pipeline;
use super::tensor::{TensorLimits, outputs_json, parse_inputs};
use super::text::BYTES_PER_TOKEN;
use super::{json, mlflow};
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
    fn to_tree(&self) -> Result<PredictRequest> {
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
}

/// What `respond` needs besides the outputs: for texts, whether a list was sent
/// and the attention mask (embeddings are pooled over it).
pub enum Answer {
    Tensors,
    Texts { many: bool, mask: ArrayD<i64> },
}

impl Pipeline {
    /// What the model is to run for a request, within the version's limits.
    pub fn inputs(&self, signature: &Signature, limits: &EffectiveServing, req: &RawPredict<'_>) -> Result<Inputs> {
        let mlflow = signature.mlflow.as_ref();
        if mlflow.is_none() && req.uses_mlflow_format() {
            return Err(Error::InvalidInput(
                "dataframe_split, dataframe_records and instances are for MLflow versions; send {\"inputs\": ...}"
                    .into(),
            ));
        }
        let max_items = limits.max_items as usize;
        match (self, mlflow, req.inputs) {
            (_, None, None) => Err(Error::InvalidInput("the request needs \"inputs\"".into())),
            (Pipeline::Tensor, Some(info), _) => {
                let given = mlflow::request_inputs(&req.to_tree()?, &signature.inputs, info)?;
                let given = serde_json::value::to_raw_value(&given).map_err(Error::internal)?;
                let tensor_limits = TensorLimits { null_is_nan: true, ..Default::default() };
                let tensors = parse_inputs(&given, &signature.inputs, tensor_limits)?;
                let rows = check_rows(&tensors, max_items)?;
                Ok(Inputs::Tensors { tensors, rows })
            }
            (Pipeline::Tensor, None, Some(raw)) => {
                let tensors = parse_inputs(raw, &signature.inputs, TensorLimits::default())?;
                let rows = check_rows(&tensors, max_items)?;
                Ok(Inputs::Tensors { tensors, rows })
            }
            (Pipeline::Text(_), Some(_), _) => {
                let max_bytes = (limits.max_tokens as usize).saturating_mul(BYTES_PER_TOKEN);
                let texts = mlflow::request_texts(&req.to_tree()?)?;
                if texts.len() > max_items {
                    return Err(Error::InvalidInput(format!(
                        "at most {max_items} texts per request, got {}",
                        texts.len()
                    )));
                }
                if let Some((i, t)) = texts.iter().enumerate().find(|(_, t)| t.len() > max_bytes) {
                    return Err(Error::InvalidInput(format!(
                        "text {i} is {} bytes, more than the limit of {max_bytes} bytes per text; split it",
                        t.len()
                    )));
                }
                Ok(Inputs::Texts { texts, many: true })
            }
            (Pipeline::Text(_), None, Some(raw)) => {
                let max_bytes = (limits.max_tokens as usize).saturating_mul(BYTES_PER_TOKEN);
                let (texts, many) = super::text::parse_texts(raw, max_items, max_bytes)?;
                Ok(Inputs::Texts { texts, many })
            }
        }
    }

    /// The response to a request, from the model's outputs.
    pub fn respond(
        &self,
        task: Task,
        signature: &Signature,
        req: &RawPredict<'_>,
        answer: &Answer,
        outputs: &Tensors,
    ) -> Result<PredictResponse> {
        let mlflow = signature.mlflow.is_some();
        Ok(match (self, answer) {
            (Pipeline::Tensor, _) if mlflow => {
                PredictResponse::Mlflow(MlflowPredictions { predictions: mlflow::predictions(outputs) })
            }
            (Pipeline::Tensor, _) => PredictResponse::Tensor(TensorResponse { outputs: outputs_json(outputs) }),
            (Pipeline::Text(p), Answer::Texts { many, mask }) => {
                let normalize = req.normalize.unwrap_or(p.info().normalize);
                if mlflow {
                    // MLflow's transformers pyfunc: one record (label, score) or one
                    // embedding per row.
                    let predictions = if task == Task::TextClassification {
                        json::raw(&p.classify(outputs, Some(1))?.into_iter().flatten().collect::<Vec<_>>())
                    } else {
                        json::raw(&p.embed(outputs, mask, normalize)?)
                    };
                    PredictResponse::Mlflow(MlflowPredictions { predictions })
                } else if task == Task::TextClassification {
                    let mut labels = p.classify(outputs, req.top_k.map(NonZeroUsize::get))?;
                    if *many { PredictResponse::LabelsBatch(labels) } else { PredictResponse::Labels(labels.remove(0)) }
                } else {
                    let mut emb = p.embed(outputs, mask, normalize)?;
                    if *many { PredictResponse::EmbeddingBatch(emb) } else { PredictResponse::Embedding(emb.remove(0)) }
                }
            }
            (Pipeline::Text(_), Answer::Tensors) => {
                return Err(Error::internal("a text version answered without its texts' mask"));
            }
        })
    }
}

/// The rows of a request (its first input's first axis), at most `max`.
fn check_rows(inputs: &Tensors, max: usize) -> Result<usize> {
    for (name, t) in inputs {
        if let Some(&n) = t.shape().first()
            && n > max
        {
            return Err(Error::InvalidInput(format!("input '{name}' has {n} rows; at most {max} per request")));
        }
    }
    Ok(inputs.first().and_then(|(_, t)| t.shape().first().copied()).unwrap_or(1))
}
