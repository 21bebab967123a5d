//! Predict: resolve the version, take it from the pool, let its pipeline read the
//! request, run it on its host, and let the pipeline answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use zoo_api::PredictResponse;

use super::Services;
use super::pool::LoadedVersion;
use crate::error::{Error, Result};
use crate::metrics::Phase;
use crate::pipeline::json;
use crate::pipeline::request::{Answer, Inputs, RawPredict};
use crate::pipeline::text::Encoded;
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
    pub async fn prepare(&self, model: &str, target: Target<'_>) -> Result<(Arc<VersionRecord>, Arc<LoadedVersion>)> {
        let record = self.resolve(model, target).await?;
        let served = self.served(&record).await?;
        Ok((record, served))
    }

    /// Predict with a loaded version from a request body (JSON).
    #[tracing::instrument(skip_all, fields(model = %served.model, version = %served.version))]
    pub async fn predict_on(&self, served: &Arc<LoadedVersion>, body: &[u8]) -> Result<Prediction> {
        let started = Instant::now();
        let req: RawPredict = json::parse(body)?;
        let result = if served.pipeline.generator().is_some() {
            self.predict_generate(served, &req).await
        } else {
            self.predict_inner(served, &req, None).await
        };
        self.record(served, started, &result);
        result
    }

    /// A prediction's queue, inference and total times in the metrics.
    fn record(&self, served: &LoadedVersion, started: Instant, result: &Result<Prediction>) {
        if let Ok(p) = result {
            let m = &self.metrics;
            m.predict(&served.model, &served.version, Phase::Queue, p.queue);
            m.predict(&served.model, &served.version, Phase::Inference, p.inference);
            m.predict(&served.model, &served.version, Phase::Total, started.elapsed());
        }
    }

    /// Predict with a loaded image version from images sent as the body or in a
    /// form (`many`: answer with a list).
    #[tracing::instrument(skip_all, fields(model = %served.model, version = %served.version))]
    pub async fn predict_images(
        &self,
        served: &Arc<LoadedVersion>,
        images: Vec<bytes::Bytes>,
        many: bool,
        top_k: Option<std::num::NonZeroUsize>,
    ) -> Result<Prediction> {
        takes_images(served)?;
        let max = served.effective.max_items as usize;
        if images.len() > max {
            return Err(Error::InvalidInput(format!("at most {max} images per request, got {}", images.len())));
        }
        let started = Instant::now();
        let req = RawPredict { top_k, ..RawPredict::default() };
        let result = self.predict_inner(served, &req, Some(Inputs::Images { images, many })).await;
        self.record(served, started, &result);
        result
    }

    /// The v1 predict path in a straight line: the pipeline reads the request
    /// (unless the images came as the body), the host runs it, the pipeline answers.
    async fn predict_inner(
        &self,
        served: &Arc<LoadedVersion>,
        req: &RawPredict<'_>,
        given: Option<Inputs>,
    ) -> Result<Prediction> {
        let p = &served.pipeline;
        let inputs = match given {
            Some(i) => i,
            None => p.inputs(&served.signature, &served.effective, req)?,
        };
        let (answer, done) = self.execute(served, inputs).await?;
        let response = p.respond(&served.signature, req, &answer, &done.outputs)?;
        Ok(Prediction {
            version: served.version.clone(),
            queue: done.queue,
            inference: done.inference,
            batch_rows: done.batch_rows,
            response,
        })
    }

    /// Run what a version's pipeline made of a request (texts are tokenized
    /// first); returns what the pipeline needs to answer, and the run.
    pub async fn execute(&self, served: &Arc<LoadedVersion>, inputs: Inputs) -> Result<(Answer, Done)> {
        match inputs {
            Inputs::Tensors { tensors, rows } => Ok((Answer::Tensors, self.run(served, tensors, rows).await?)),
            Inputs::Texts { texts, many } => {
                let Encoded { inputs, mask, encodings, texts } =
                    self.tokenize(served, texts, served.effective.max_tokens as usize).await?;
                let rows = mask.shape()[0];
                let done = self.run(served, inputs, rows).await?;
                Ok((Answer::Texts { many, mask, encodings, texts }, done))
            }
            Inputs::Images { images, many } => {
                let rows = images.len();
                let inputs = self.prepare_images(served, images).await?;
                let done = self.run(served, inputs, rows).await?;
                Ok((Answer::Images { many }, done))
            }
        }
    }

    /// Decode and prepare images for an image version, on a blocking thread
    /// (decoding and resizing a photo takes milliseconds), as many requests at a
    /// time as there are cores, within the version's timeout.
    async fn prepare_images(&self, served: &Arc<LoadedVersion>, images: Vec<bytes::Bytes>) -> Result<Tensors> {
        static PREPARING: std::sync::OnceLock<Arc<tokio::sync::Semaphore>> = std::sync::OnceLock::new();
        let slots = PREPARING
            .get_or_init(|| {
                let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
                Arc::new(tokio::sync::Semaphore::new(cores))
            })
            .clone();
        let timeout = Duration::from_secs(served.effective.timeout_secs.into());
        let deadline = Instant::now() + timeout;
        let late = || Error::Timeout(format!("the images were not prepared within {} seconds", timeout.as_secs()));
        let slot =
            tokio::time::timeout(timeout, slots.acquire_owned()).await.map_err(|_| late())?.map_err(Error::internal)?;
        let no_images = || Error::internal("images sent to a version that takes none");
        let served = served.clone();
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            served.pipeline.image().ok_or_else(no_images)?.encode(&images, deadline)
        })
        .await?
    }

    /// Tokenize texts for a text version: short requests on this task, longer ones
    /// on a blocking thread (never a long tokenization on the async threads).
    async fn tokenize(&self, served: &Arc<LoadedVersion>, texts: Vec<String>, max_tokens: usize) -> Result<Encoded> {
        let no_tokenizer = || Error::internal("tokenize on a version without a tokenizer");
        let p = served.pipeline.text().ok_or_else(no_tokenizer)?;
        if texts.iter().map(String::len).sum::<usize>() <= INLINE_TOKENIZE_BYTES {
            return p.encode(texts, max_tokens);
        }
        let served = served.clone();
        tokio::task::spawn_blocking(move || served.pipeline.text().ok_or_else(no_tokenizer)?.encode(texts, max_tokens))
            .await?
    }

    /// Run inputs of `rows` rows on a loaded version, within its timeout.
    pub async fn run(&self, served: &LoadedVersion, inputs: Tensors, rows: usize) -> Result<Done> {
        let timeout = Duration::from_secs(served.effective.timeout_secs.into());
        served.touch();
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

/// Whether a version takes images as the body or in a form (an image task), else
/// 415: it takes JSON.
pub fn takes_images(served: &LoadedVersion) -> Result<()> {
    if served.pipeline.image().is_none() {
        return Err(Error::UnsupportedMediaType(format!(
            "model '{}' version '{}' is a {} version: it takes JSON (application/json), not an image or a form",
            served.model,
            served.version,
            served.task.as_str()
        )));
    }
    Ok(())
}

/// How long a resolved route is reused without asking the registry.
const ROUTE_TTL: Duration = Duration::from_secs(2);
