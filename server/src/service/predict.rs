//! Predict: resolve the version, prepare inputs for its task, run it on its host,
//! and shape the response.

use std::time::Duration;

use serde_json::Value;
use zoo_api::{MlflowPredictions, PredictRequest, PredictResponse, Task, TensorResponse};

use super::Services;
use super::loader::{Pipeline, Served};
use crate::error::{Error, Result};
use crate::pipeline::mlflow;
use crate::pipeline::tensor::{TensorLimits, outputs_json, parse_inputs};
use crate::registry::VersionRecord;
use crate::runtime::Tensors;
use crate::runtime::host::HostError;

/// Which version a predict call names.
pub enum Target<'a> {
    /// Alias `production` if set, else the newest ready version.
    Default,
    Version(&'a str),
    Alias(&'a str),
}

/// A prediction with the facts that go into response headers.
pub struct Prediction {
    pub version: String,
    pub inference: Duration,
    pub response: PredictResponse,
}

/// Text inputs: one string or a list of strings.
fn texts(inputs: &Value) -> Result<(Vec<String>, bool)> {
    match inputs {
        Value::String(s) => Ok((vec![s.clone()], false)),
        Value::Array(items) if !items.is_empty() => {
            let v = items
                .iter()
                .map(|i| i.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| Error::InvalidInput("\"inputs\" must be a string or a list of strings".into()))?;
            Ok((v, true))
        }
        Value::Array(_) => Err(Error::InvalidInput("\"inputs\" is an empty list".into())),
        _ => Err(Error::InvalidInput("\"inputs\" must be a string or a list of strings for a text model".into())),
    }
}

impl Services {
    pub async fn resolve(&self, model: &str, target: Target<'_>) -> Result<VersionRecord> {
        match target {
            Target::Version(v) => self.require_version(model, v).await,
            Target::Alias(a) => match self.registry.get_alias(model, a).await? {
                Some(v) => self.require_version(model, &v).await,
                None => Err(self.alias_not_found(model, a).await?),
            },
            Target::Default => match self.registry.default_version(model).await? {
                Some(v) => Ok(v),
                None => Err(self.not_found(model, "(default)").await?),
            },
        }
    }

    #[tracing::instrument(skip_all, fields(model, version))]
    pub async fn predict(&self, model: &str, target: Target<'_>, req: PredictRequest) -> Result<Prediction> {
        let record = self.resolve(model, target).await?;
        tracing::Span::current().record("model", model).record("version", record.version.as_str());
        let served = self.served(&record).await?;
        let mlflow = served.signature.mlflow.as_ref();
        if mlflow.is_none() && mlflow::uses_mlflow_format(&req) {
            return Err(Error::InvalidInput(
                "dataframe_split, dataframe_records and instances are for MLflow versions; send {\"inputs\": ...}"
                    .into(),
            ));
        }
        if req.inputs.is_null() && mlflow.is_none() {
            return Err(Error::InvalidInput("the request needs \"inputs\"".into()));
        }
        let (response, inference) = match (&served.pipeline, served.task) {
            (Pipeline::Tensor, _) if mlflow.is_some() => {
                let info = mlflow.expect("checked above");
                let given = mlflow::request_inputs(&req, &served.signature.inputs, info)?;
                let limits = TensorLimits { null_is_nan: true, ..Default::default() };
                let inputs = parse_inputs(&given, &served.signature.inputs, limits)?;
                self.check_batch(&inputs)?;
                let (out, took) = self.run(&served, inputs).await?;
                (PredictResponse::Mlflow(MlflowPredictions { predictions: mlflow::predictions(&out) }), took)
            }
            (Pipeline::Tensor, _) => {
                let limits = TensorLimits::default();
                let inputs = parse_inputs(&req.inputs, &served.signature.inputs, limits)?;
                self.check_batch(&inputs)?;
                let (out, took) = self.run(&served, inputs).await?;
                (PredictResponse::Tensor(TensorResponse { outputs: outputs_json(&out) }), took)
            }
            (Pipeline::Text(p), task) => {
                let (texts, many) = match mlflow {
                    Some(_) => (mlflow::request_texts(&req)?, true),
                    None => texts(&req.inputs)?,
                };
                if texts.len() > self.config.max_batch_items {
                    let max = self.config.max_batch_items;
                    return Err(Error::InvalidInput(format!("at most {max} texts per request, got {}", texts.len())));
                }
                let enc = p.encode(&texts)?;
                let (out, took) = self.run(&served, enc.inputs).await?;
                let response = if mlflow.is_some() {
                    // MLflow's transformers pyfunc: one record (label, score) or one
                    // embedding per row.
                    let predictions = if task == Task::TextClassification {
                        serde_json::to_value(p.classify(&out, Some(1))?.into_iter().flatten().collect::<Vec<_>>())
                            .map_err(Error::internal)?
                    } else {
                        let normalize = req.normalize.unwrap_or(p.info().normalize);
                        serde_json::to_value(p.embed(&out, &enc.mask, normalize)?).map_err(Error::internal)?
                    };
                    PredictResponse::Mlflow(MlflowPredictions { predictions })
                } else if task == Task::TextClassification {
                    let mut labels = p.classify(&out, req.top_k)?;
                    if many { PredictResponse::LabelsBatch(labels) } else { PredictResponse::Labels(labels.remove(0)) }
                } else {
                    let normalize = req.normalize.unwrap_or(p.info().normalize);
                    let mut emb = p.embed(&out, &enc.mask, normalize)?;
                    if many { PredictResponse::EmbeddingBatch(emb) } else { PredictResponse::Embedding(emb.remove(0)) }
                };
                (response, took)
            }
        };
        Ok(Prediction { version: record.version, inference, response })
    }

    fn check_batch(&self, inputs: &Tensors) -> Result<()> {
        let max = self.config.max_batch_items;
        for (name, t) in inputs {
            if let Some(&n) = t.shape().first()
                && n > max
            {
                return Err(Error::InvalidInput(format!("input '{name}' has {n} rows; at most {max} per request")));
            }
        }
        Ok(())
    }

    async fn run(&self, served: &Served, inputs: Tensors) -> Result<(Tensors, Duration)> {
        let timeout = self.config.request_timeout();
        match tokio::time::timeout(timeout, served.host.infer(inputs)).await {
            Err(_) => Err(Error::Timeout(format!("the model did not answer within {} seconds", timeout.as_secs()))),
            Ok(Ok(r)) => Ok(r),
            Ok(Err(HostError::Busy)) => Err(Error::Overloaded { model: served.model.clone(), retry_after_secs: 1 }),
            Ok(Err(HostError::Stopped)) => Err(Error::Unavailable(format!(
                "model '{}' version '{}' is being unloaded; retry",
                served.model, served.version
            ))),
            Ok(Err(HostError::Runtime(e))) => Err(match e {
                crate::runtime::RuntimeError::Input(m) => Error::InvalidInput(m),
                other => Error::Inference(other.to_string()),
            }),
        }
    }
}
