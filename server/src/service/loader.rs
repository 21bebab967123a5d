//! Loading versions: the local artifact cache, runtime choice and warm-up. The
//! loaded versions themselves are kept by the pool (`pool.rs`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use zoo_api::{EffectiveServing, RuntimeChoice, ServingConfig, Signature, Task};

use super::pool::{LastUsed, LoadedVersion};
use super::{Services, remove_dir_quietly};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::registry::VersionRecord;
use crate::runtime::generate::{EngineSettings, Observer, Timings};
use crate::runtime::host::{BatchObserver, HostSettings, MeasureSettings, ModelHost};
use crate::runtime::{RunLimits, Runtime, Tensors};
use crate::store::StorageKey;

/// Outcome of trying to load a version at deploy.
pub struct LoadOutcome {
    /// It can be served: it loaded, or (lazy loading) a runtime for it exists.
    pub servable: bool,
    pub served: Option<Arc<LoadedVersion>>,
    pub runtime: Option<String>,
    pub reason: Option<String>,
    pub warmup_ms: Option<f64>,
}

/// The model file inside a materialised artifact directory.
pub fn model_file(dir: &Path, signature: &Signature) -> Result<PathBuf> {
    if !signature.bundle {
        return Ok(dir.join(zoo_formats::single_file_name(signature.format)));
    }
    let rel = zoo_formats::bundle_model_path(signature).map_err(Error::Artifact)?;
    Ok(dir.join(rel))
}

/// A version to load from its local directory.
pub struct LoadRequest {
    pub model: String,
    pub version: String,
    pub sha256: String,
    pub dir: PathBuf,
    pub signature: Signature,
    pub task: Task,
    pub labels: Vec<String>,
    pub serving: ServingConfig,
    pub size: i64,
}

/// What a load needs, detached from `Services` so it can run on a blocking thread.
struct LoadJob {
    req: LoadRequest,
    runtimes: Vec<Arc<dyn Runtime>>,
    queue_capacity: usize,
    effective: EffectiveServing,
    metrics: Arc<Metrics>,
}

/// Sequences a text-generation version decodes together unless its deploy
/// says otherwise (`max_batch_size`); more wait their turn in its queue.
pub const GENERATION_SEQUENCES: u32 = 4;

/// Whether requests to a version can be merged into batches: every input and
/// output has a leading batch axis (token inputs of text models do).
pub fn batchable(signature: &Signature) -> bool {
    let all = |specs: &[zoo_api::TensorSpec]| {
        !specs.is_empty() && specs.iter().all(|s| s.kind == zoo_api::ValueKind::Tensor && s.has_batch_dim())
    };
    all(&signature.inputs) && all(&signature.outputs)
}

impl LoadJob {
    /// Try each runtime in turn; the first that loads and warms up wins (when the
    /// pipeline says a warm-up may fail, the failure is only logged and the warm-up
    /// time left unknown).
    fn run(self) -> std::result::Result<(LoadedVersion, Option<f64>), String> {
        let LoadJob { req, runtimes, queue_capacity, effective, metrics } = self;
        let model_path = model_file(&req.dir, &req.signature).map_err(|e| e.to_string())?;
        let pipeline = Pipeline::load(req.task, &req.dir, &req.signature, &req.labels).map_err(|e| e.to_string())?;
        if let Some(generator) = pipeline.generator() {
            let (m, v, metrics) = (req.model.clone(), req.version.clone(), metrics.clone());
            let settings = EngineSettings {
                label: format!("{}-{}", req.model, req.version),
                max_sequences: effective.max_batch_size.max(1) as usize,
                queue_capacity,
            };
            let observe: Observer =
                Arc::new(move |t: Timings| metrics.generation(&m, &v, t.first_token, t.decoding, t.tokens));
            generator.start(settings, observe).map_err(|e| e.to_string())?;
        }
        let warmup = pipeline.warmup_inputs(&req.signature);
        let limits = RunLimits {
            timeout: Duration::from_secs(effective.timeout_secs.into()),
            max_output_bytes: effective.max_output_bytes,
        };
        let mut failures = Vec::new();
        for rt in &runtimes {
            let loaded = match rt.load(&model_path, &req.signature, &limits) {
                Ok(m) => m,
                Err(e) => {
                    failures.push(e.to_string());
                    continue;
                }
            };
            // More copies, each for its own inference thread.
            let mut copies = vec![loaded];
            for _ in 1..effective.instances.max(1) {
                copies.push(rt.load(&model_path, &req.signature, &limits).map_err(|e| e.to_string())?);
            }
            let mut warm_ms = None;
            let mut warm_failed = None;
            for copy in &mut copies {
                let start = Instant::now();
                match warmup.clone().map(|inputs: Tensors| copy.run(inputs)) {
                    None => {}
                    Some(Ok(_)) => warm_ms = Some(warm_ms.unwrap_or(start.elapsed().as_secs_f64() * 1000.0)),
                    Some(Err(e)) => warm_failed = Some(e),
                }
            }
            if let Some(e) = warm_failed {
                if pipeline.warmup_must_pass() {
                    failures.push(format!("{} loaded the model but its warm-up run failed: {e}", rt.name()));
                    continue;
                }
                tracing::info!(model = %req.model, version = %req.version, runtime = rt.name(), error = %e,
                    "the warm-up on zeros failed; serving without a warm-up time");
                warm_ms = None;
            }
            let pad = pipeline.padding();
            // How many rows per run pay is measured by the host on this machine,
            // with the warm-up inputs (a text of typical length for text models),
            // in its first idle moments; a size given at deploy is kept.
            let measure = warmup
                .clone()
                .filter(|_| effective.batched && warm_ms.is_some())
                .map(|probe| MeasureSettings { probe, keep_max: req.serving.max_batch_size.is_some() });
            let settings = HostSettings {
                label: format!("{}-{}", req.model, req.version),
                capacity: queue_capacity,
                max_batch_rows: effective.max_batch_size.max(1) as usize,
                max_queue_delay: Duration::from_millis(effective.max_queue_delay_ms.into()),
                pad,
                measure,
            };
            let (m, v) = (req.model.clone(), req.version.clone());
            let observe: BatchObserver = Arc::new(move |rows| metrics.batch(&m, &v, rows));
            let host = ModelHost::spawn(copies, settings, observe).map_err(|e| e.to_string())?;
            let served = LoadedVersion {
                model: req.model,
                version: req.version,
                sha256: req.sha256,
                task: req.task,
                signature: req.signature,
                runtime: rt.name(),
                host,
                pipeline,
                effective,
                size: req.size,
                last_used: LastUsed::now(),
            };
            return Ok((served, warm_ms));
        }
        Err(failures.join("; "))
    }
}

impl Services {
    fn load_job(&self, req: LoadRequest, runtimes: Vec<Arc<dyn Runtime>>) -> LoadJob {
        let effective = self.effective(&req.serving, &req.signature);
        LoadJob { req, runtimes, queue_capacity: self.config.queue_capacity, effective, metrics: self.metrics.clone() }
    }

    /// The serving settings in effect for a version: its own, else the server's;
    /// its limits never above the server's.
    pub fn effective(&self, serving: &ServingConfig, signature: &Signature) -> EffectiveServing {
        let c = &self.config;
        let batched = batchable(signature);
        let at_most = |given: Option<u32>, server: u32| given.map_or(server, |g| g.clamp(1, server));
        // A language model's batch: the sequences its engine decodes together.
        let max_batch_size = if signature.generates() {
            serving.max_batch_size.unwrap_or(GENERATION_SEQUENCES).clamp(1, 64)
        } else if batched {
            serving.max_batch_size.unwrap_or(c.max_batch_size).max(1)
        } else {
            1
        };
        EffectiveServing {
            max_batch_size,
            max_queue_delay_ms: serving.max_queue_delay_ms.unwrap_or(c.max_queue_delay_ms),
            instances: serving.instances.unwrap_or(c.instances).clamp(1, 64),
            load: serving.load.unwrap_or(c.load),
            batched,
            max_items: at_most(serving.max_items, c.max_batch_items as u32),
            max_tokens: at_most(serving.max_tokens, c.max_tokens),
            timeout_secs: at_most(serving.timeout_secs, c.request_timeout_secs as u32),
            max_body_bytes: serving
                .max_body_bytes
                .map_or(c.max_predict_bytes as u64, |b| b.clamp(1024, c.max_predict_bytes as u64)),
            max_output_bytes: serving
                .max_output_bytes
                .map_or(c.max_output_bytes, |b| b.clamp(1024, c.max_output_bytes.max(1024))),
            measured_batches: Vec::new(),
        }
    }

    /// Load a freshly validated version (at deploy). Failure is not an error: the
    /// version is stored as not servable, with the reason.
    /// With `lazy`, nothing is loaded: the version is servable when a runtime
    /// for it exists, and loads on its first request.
    pub async fn load_new(&self, req: LoadRequest, choice: RuntimeChoice, lazy: bool) -> LoadOutcome {
        let refused = |why: String| LoadOutcome {
            servable: false,
            served: None,
            runtime: None,
            reason: Some(why),
            warmup_ms: None,
        };
        if let Some(why) = zoo_formats::never_servable(&req.signature) {
            return refused(why);
        }
        let runtimes = match self.runtimes.candidates(choice, &req.signature) {
            Ok(r) => r,
            Err(why) => return refused(why),
        };
        if lazy {
            let runtime = runtimes.first().map(|r| r.name().to_string());
            return LoadOutcome { servable: true, served: None, runtime, reason: None, warmup_ms: None };
        }
        let req_engine = zoo_formats::engine(&req.signature);
        let job = self.load_job(req, runtimes);
        match tokio::task::spawn_blocking(move || job.run()).await {
            Ok(Ok((served, warm))) => {
                let served = self.pool.insert(served);
                LoadOutcome {
                    servable: true,
                    runtime: Some(served.runtime.to_string()),
                    served: Some(served),
                    reason: None,
                    warmup_ms: warm,
                }
            }
            Ok(Err(why)) => {
                let mut reason = format!("no runtime can serve this model: {why}");
                if self.runtimes.ort.is_none()
                    && choice != RuntimeChoice::Tract
                    && req_engine == Some(zoo_formats::Engine::Onnx)
                {
                    reason.push_str(". ONNX Runtime is not available on this server (set ZOO_ORT_DYLIB)");
                }
                refused(reason)
            }
            Err(e) => LoadOutcome {
                servable: false,
                served: None,
                runtime: None,
                reason: Some(format!("loader crashed: {e}")),
                warmup_ms: None,
            },
        }
    }

    /// The loaded version, loading it (once, even under concurrent requests) when
    /// it is not loaded yet.
    pub async fn served(&self, v: &VersionRecord) -> Result<Arc<LoadedVersion>> {
        let key = (v.model.clone(), v.version.clone());
        if let Some(s) = self.pool.get(&key, &v.sha256) {
            return Ok(s);
        }
        if !v.servable {
            return Err(Error::NotServable(format!(
                "version '{}' of model '{}' cannot be served: {}",
                v.version,
                v.model,
                v.reason.as_deref().unwrap_or("no reason recorded")
            )));
        }
        self.pool.get_or_load(&key, &v.sha256, || self.load_stored(v)).await
    }

    async fn load_stored(&self, v: &VersionRecord) -> Result<LoadedVersion> {
        let dir = self.materialize(&v.sha256, &v.signature).await?;
        // The runtime that served it at deploy first, then the others.
        let mut runtimes: Vec<Arc<dyn Runtime>> =
            v.runtime.as_deref().and_then(|n| self.runtimes.by_name(n)).into_iter().collect();
        for rt in self.runtimes.candidates(RuntimeChoice::Auto, &v.signature).unwrap_or_default() {
            if !runtimes.iter().any(|r| r.name() == rt.name()) {
                runtimes.push(rt);
            }
        }
        let req = LoadRequest {
            model: v.model.clone(),
            version: v.version.clone(),
            sha256: v.sha256.clone(),
            dir,
            signature: v.signature.clone(),
            task: v.task,
            labels: v.labels.clone(),
            serving: v.serving.clone(),
            size: v.size,
        };
        let job = self.load_job(req, runtimes);
        let started = Instant::now();
        let (served, _) = tokio::task::spawn_blocking(move || job.run()).await?.map_err(|why| {
            Error::NotServable(format!("version '{}' of model '{}' failed to load: {why}", v.version, v.model))
        })?;
        tracing::info!(model = %v.model, version = %v.version, runtime = served.runtime, ms = started.elapsed().as_millis() as u64, "loaded");
        Ok(served)
    }

    /// Make sure the artifact with this sha256 is unpacked in the local cache, and
    /// return its directory.
    pub async fn materialize(&self, sha256: &str, signature: &Signature) -> Result<PathBuf> {
        let dest = self.cache_path(sha256);
        if tokio::fs::try_exists(&dest).await? {
            return Ok(dest);
        }
        let tmp = self.config.work_dir().join(format!("fetch-{}", uuid::Uuid::new_v4()));
        tokio::fs::create_dir_all(&tmp).await?;
        let result = async {
            let blob = tmp.join("blob");
            if !self.store.get_to_file(&StorageKey::blob(sha256), &blob).await? {
                return Err(Error::NotServable(format!("the artifact {sha256} is missing from the object store")));
            }
            let staged = tmp.join("dir");
            tokio::fs::create_dir_all(&staged).await?;
            if signature.bundle {
                let (blob2, staged2, limits) = (blob.clone(), staged.clone(), self.limits());
                tokio::task::spawn_blocking(move || zoo_formats::bundle::extract_tar(&blob2, &staged2, &limits))
                    .await??;
                let root = zoo_formats::bundle::bundle_root(&staged)?;
                self.install(&root, &dest).await
            } else {
                tokio::fs::rename(&blob, staged.join(zoo_formats::single_file_name(signature.format))).await?;
                self.install(&staged, &dest).await
            }
        }
        .await;
        remove_dir_quietly(&tmp).await;
        result.map(|_| dest)
    }

    /// Move a prepared directory into the cache (another request may have won).
    pub async fn install(&self, prepared: &Path, dest: &Path) -> Result<()> {
        tokio::fs::create_dir_all(self.config.cache_dir()).await?;
        match tokio::fs::rename(prepared, dest).await {
            Ok(()) => Ok(()),
            Err(_) if tokio::fs::try_exists(dest).await.unwrap_or(false) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use zoo_api::{Format, ServingConfig, Signature, Task, VersionStatus};

    use super::Services;
    use crate::config::Config;
    use crate::error::Error;
    use crate::registry::VersionRecord;
    use crate::registry::sqlite::SqliteRegistry;
    use crate::runtime::Runtimes;
    use crate::store::fs::FsStore;

    /// A version whose load fails (its artifact is gone from the store) leaves no
    /// loader gate behind: a server that sees many such versions keeps none.
    #[tokio::test]
    async fn a_failed_load_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Config::for_data_dir(dir.path());
        let store = FsStore::open(&dir.path().join("store")).await.expect("store");
        let runtimes = Runtimes::init(&config);
        let services = Services::new(config, Arc::new(SqliteRegistry::memory().await), Arc::new(store), runtimes);
        for n in 0..3 {
            let v = VersionRecord {
                model: "gone".into(),
                version: n.to_string(),
                seq: n,
                status: VersionStatus::Ready,
                format: Format::Onnx,
                sha256: "0".repeat(64),
                size: 10,
                task: Task::Tensor,
                runtime: Some("tract".into()),
                servable: true,
                reason: None,
                signature: Signature::empty(Format::Onnx, false),
                labels: vec![],
                warmup_ms: None,
                created_at: chrono::Utc::now(),
                created_by: "test".into(),
                serving: ServingConfig::default(),
            };
            let err = services.served(&v).await.err().expect("the artifact is missing");
            assert!(matches!(&err, Error::NotServable(m) if m.contains("missing from the object store")), "{err}");
        }
        assert_eq!(services.pool.loading(), 0);
        assert!(services.pool.list().is_empty());
    }
}
