//! Predict: resolve the version, prepare inputs for its task, run it on its host,
//! and shape the response.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::value::RawValue;
use zoo_api::{MlflowPredictions, PredictRequest, PredictResponse, Task, TensorResponse};

use super::Services;
use super::loader::{Pipeline, Served};
use crate::error::{Error, Result};
use crate::metrics::Phase;
use crate::pipeline::tensor::{TensorLimits, outputs_json, parse_inputs};
use crate::pipeline::text::BYTES_PER_TOKEN;
use crate::pipeline::{json, mlflow};
use crate::registry::VersionRecord;
use crate::runtime::Tensors;
use crate::runtime::host::{Done, HostError};

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
    /// Time in the model's queue.
    pub queue: Duration,
    /// Time in the runtime.
    pub inference: Duration,
    /// Rows of the batch it ran in.
    pub batch_rows: usize,
    pub response: PredictResponse,
}

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

/// Texts up to this many bytes in all are tokenized on the request's own task
/// (a few microseconds); longer ones on a blocking thread.
const INLINE_TOKENIZE_BYTES: usize = 4096;

impl Services {
    /// The version a target names. Answers are cached for a short time (and
    /// dropped at once when this server or, through the registry's change feed,
    /// another replica changes the model), so the predict path rarely reads the
    /// registry.
    pub async fn resolve(&self, model: &str, target: Target<'_>) -> Result<Arc<VersionRecord>> {
        let key = (
            model.to_string(),
            match target {
                Target::Default => String::new(),
                Target::Version(v) => format!("v:{v}"),
                Target::Alias(a) => format!("a:{a}"),
            },
        );
        let cached = self.routes.read().expect("routes").get(&key).cloned();
        if let Some((at, v)) = &cached
            && at.elapsed() < ROUTE_TTL
        {
            return Ok(v.clone());
        }
        // The registry is away: keep answering with what this server last knew of
        // the route (the model is loaded; the registry will tell of changes when back).
        if let Some((_, v)) = &cached
            && self.breaker.use_stale()
        {
            return Ok(v.clone());
        }
        let generation = self.route_generation(model);
        let looked_up = self.look_up(model, target).await;
        self.breaker.record(&looked_up);
        let record = match (looked_up, cached) {
            (Err(Error::Unavailable(why)), Some((_, v))) => {
                tracing::warn!(model, %why, "the registry is unreachable; serving the last known version");
                return Ok(v);
            }
            (r, _) => Arc::new(r?),
        };
        // Not cached when the model changed while it was being read.
        if self.route_generation(model) == generation {
            self.routes.write().expect("routes").insert(key, (Instant::now(), record.clone()));
        }
        Ok(record)
    }

    async fn look_up(&self, model: &str, target: Target<'_>) -> Result<VersionRecord> {
        Ok(match target {
            Target::Version(v) => self.require_version(model, v).await?,
            Target::Alias(a) => match self.registry.get_alias(model, a).await? {
                Some(v) => self.require_version(model, &v).await?,
                None => return Err(self.alias_not_found(model, a).await?),
            },
            Target::Default => match self.registry.default_version(model).await? {
                Some(v) => v,
                None => return Err(self.not_found(model, "(default)").await?),
            },
        })
    }

    /// Resolve a target and make sure its version is loaded.
    pub async fn prepare(&self, model: &str, target: Target<'_>) -> Result<(Arc<VersionRecord>, Arc<Served>)> {
        let record = self.resolve(model, target).await?;
        let served = self.served(&record).await?;
        Ok((record, served))
    }

    /// Predict with a loaded version from a request body (JSON).
    #[tracing::instrument(skip_all, fields(model = %served.model, version = %served.version))]
    pub async fn predict_on(&self, served: &Arc<Served>, body: &[u8]) -> Result<Prediction> {
        let started = Instant::now();
        let req: RawPredict = crate::api::parse_json(body)?;
        let result = self.predict_inner(served, &req).await;
        if let Ok(p) = &result {
            let m = &self.metrics;
            m.predict(&served.model, &served.version, Phase::Queue, p.queue);
            m.predict(&served.model, &served.version, Phase::Inference, p.inference);
            m.predict(&served.model, &served.version, Phase::Total, started.elapsed());
        }
        result
    }

    async fn predict_inner(&self, served: &Arc<Served>, req: &RawPredict<'_>) -> Result<Prediction> {
        let limits = &served.effective;
        let mlflow = served.signature.mlflow.as_ref();
        if mlflow.is_none() && req.uses_mlflow_format() {
            return Err(Error::InvalidInput(
                "dataframe_split, dataframe_records and instances are for MLflow versions; send {\"inputs\": ...}"
                    .into(),
            ));
        }
        if req.inputs.is_none() && mlflow.is_none() {
            return Err(Error::InvalidInput("the request needs \"inputs\"".into()));
        }
        let (response, done) = match (&served.pipeline, served.task) {
            (Pipeline::Tensor, _) if mlflow.is_some() => {
                let info = mlflow.expect("checked above");
                let given = mlflow::request_inputs(&req.to_tree()?, &served.signature.inputs, info)?;
                let given = serde_json::value::to_raw_value(&given).map_err(Error::internal)?;
                let tensor_limits = TensorLimits { null_is_nan: true, ..Default::default() };
                let inputs = parse_inputs(&given, &served.signature.inputs, tensor_limits)?;
                let rows = check_rows(&inputs, limits.max_items as usize)?;
                let done = self.run(served, inputs, rows).await?;
                (PredictResponse::Mlflow(MlflowPredictions { predictions: mlflow::predictions(&done.outputs) }), done)
            }
            (Pipeline::Tensor, _) => {
                let inputs = parse_inputs(
                    req.inputs.expect("checked above"),
                    &served.signature.inputs,
                    TensorLimits::default(),
                )?;
                let rows = check_rows(&inputs, limits.max_items as usize)?;
                let done = self.run(served, inputs, rows).await?;
                (PredictResponse::Tensor(TensorResponse { outputs: outputs_json(&done.outputs) }), done)
            }
            (Pipeline::Text(p), task) => {
                let max_items = limits.max_items as usize;
                let max_bytes = (limits.max_tokens as usize).saturating_mul(BYTES_PER_TOKEN);
                let (texts, many) = match (mlflow, req.inputs) {
                    (Some(_), _) => {
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
                        (texts, true)
                    }
                    (None, Some(raw)) => crate::pipeline::text::parse_texts(raw, max_items, max_bytes)?,
                    (None, None) => unreachable!("checked above"),
                };
                let enc = self.tokenize(served, texts, limits.max_tokens as usize).await?;
                let rows = enc.mask.shape()[0];
                let done = self.run(served, enc.inputs, rows).await?;
                let out = &done.outputs;
                let response = if mlflow.is_some() {
                    // MLflow's transformers pyfunc: one record (label, score) or one
                    // embedding per row.
                    let predictions = if task == Task::TextClassification {
                        json::raw(&p.classify(out, Some(1))?.into_iter().flatten().collect::<Vec<_>>())
                    } else {
                        let normalize = req.normalize.unwrap_or(p.info().normalize);
                        json::raw(&p.embed(out, &enc.mask, normalize)?)
                    };
                    PredictResponse::Mlflow(MlflowPredictions { predictions })
                } else if task == Task::TextClassification {
                    let mut labels = p.classify(out, req.top_k.map(NonZeroUsize::get))?;
                    if many { PredictResponse::LabelsBatch(labels) } else { PredictResponse::Labels(labels.remove(0)) }
                } else {
                    let normalize = req.normalize.unwrap_or(p.info().normalize);
                    let mut emb = p.embed(out, &enc.mask, normalize)?;
                    if many { PredictResponse::EmbeddingBatch(emb) } else { PredictResponse::Embedding(emb.remove(0)) }
                };
                (response, done)
            }
        };
        Ok(Prediction {
            version: served.version.clone(),
            queue: done.queue,
            inference: done.inference,
            batch_rows: done.batch_rows,
            response,
        })
    }

    /// Tokenize texts for a text version: short requests on this task, longer ones
    /// on a blocking thread (never a long tokenization on the async threads).
    pub async fn tokenize(
        &self,
        served: &Arc<Served>,
        texts: Vec<String>,
        max_tokens: usize,
    ) -> Result<crate::pipeline::text::Encoded> {
        let Pipeline::Text(p) = &served.pipeline else {
            return Err(Error::internal("tokenize on a version without a tokenizer"));
        };
        if texts.iter().map(String::len).sum::<usize>() <= INLINE_TOKENIZE_BYTES {
            return p.encode(&texts, max_tokens);
        }
        let served = served.clone();
        tokio::task::spawn_blocking(move || match &served.pipeline {
            Pipeline::Text(p) => p.encode(&texts, max_tokens),
            Pipeline::Tensor => Err(Error::internal("tokenize on a version without a tokenizer")),
        })
        .await?
    }

    /// Run inputs of `rows` rows on a loaded version, within its timeout.
    pub async fn run(&self, served: &Served, inputs: Tensors, rows: usize) -> Result<Done> {
        let timeout = Duration::from_secs(served.effective.timeout_secs.into());
        served.last_used.store(now_millis(), std::sync::atomic::Ordering::Relaxed);
        match tokio::time::timeout(timeout, served.host.infer(inputs, rows)).await {
            Err(_) => Err(Error::Timeout(format!("the model did not answer within {} seconds", timeout.as_secs()))),
            Ok(Ok(r)) => {
                // Every runtime's answer is bounded before it is encoded.
                let size: u64 = r.outputs.iter().map(|(_, t)| t.byte_size()).sum();
                let limit = served.effective.max_output_bytes;
                if size > limit {
                    return Err(Error::Inference(format!(
                        "the model's output is {size} bytes, more than this version's output limit of {limit} bytes"
                    )));
                }
                Ok(r)
            }
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

/// How long a resolved route is reused without asking the registry.
const ROUTE_TTL: Duration = Duration::from_secs(2);

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
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
