//! Transport-independent operations: the HTTP handlers (and later other front
//! ends) call these.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use zoo_api::{Endpoints, VersionInfo, VersionStatus};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::registry::{Registry, VersionRecord};
use crate::runtime::Runtimes;
use crate::store::{ObjectStore, StorageKey};

pub mod deploy;
pub mod generate;
pub mod keys;
pub mod kserve;
pub mod loader;
pub mod models;
pub mod pool;
pub mod predict;
pub mod sweeper;

use pool::ModelPool;

/// A held blob lock (see `Services::lock_blob`); the shared lock goes first.
pub struct BlobGuard {
    _shared: crate::registry::BlobLock,
    _local: tokio::sync::OwnedMutexGuard<()>,
}

/// A resolved route and when it was read from the registry.
type CachedRoute = (std::time::Instant, Arc<VersionRecord>);

/// Everything the services share.
pub struct Services {
    pub config: Config,
    pub registry: Arc<dyn Registry>,
    pub store: Arc<dyn ObjectStore>,
    pub runtimes: Runtimes,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Whether the registry is reachable (shared with the key checker).
    pub breaker: Arc<crate::registry::breaker::Breaker>,
    /// Loaded versions.
    pub pool: ModelPool,
    /// Resolved routes: (model, target) -> version, with when it was read.
    routes: RwLock<HashMap<(String, String), CachedRoute>>,
    /// Per model, how many times its routes were invalidated (reads that started
    /// before a change are not cached).
    route_generations: Mutex<HashMap<String, u64>>,
    /// Storing and releasing one blob never interleave in this process.
    blob_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Set once the process is asked to stop: `/readyz` answers 503 so that load
    /// balancers take this replica out while it finishes what it has.
    pub draining: std::sync::atomic::AtomicBool,
}

impl Services {
    pub fn new(
        config: Config,
        registry: Arc<dyn Registry>,
        store: Arc<dyn ObjectStore>,
        runtimes: Runtimes,
    ) -> Services {
        Services {
            pool: ModelPool::new(config.model_memory_budget),
            config,
            registry,
            store,
            runtimes,
            metrics: Arc::default(),
            breaker: Arc::default(),
            routes: RwLock::new(HashMap::new()),
            route_generations: Mutex::new(HashMap::new()),
            blob_locks: Mutex::new(HashMap::new()),
            draining: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Local directory holding the unpacked artifact with this sha256.
    pub fn cache_path(&self, sha256: &str) -> PathBuf {
        self.config.cache_dir().join(sha256)
    }

    pub fn limits(&self) -> zoo_formats::Limits {
        zoo_formats::Limits {
            max_bundle_size: self.config.max_upload_bytes.saturating_mul(4),
            torchscript_op_check: self.config.torchscript_op_check,
            ..Default::default()
        }
    }

    /// Drop a loaded version (its thread ends once queued requests are answered).
    pub fn unload(&self, model: &str, version: &str) {
        self.forget_routes(model);
        self.pool.remove(model, version);
    }

    /// Drop every loaded version (they load again on their next request).
    pub fn unload_all(&self) {
        self.routes.write().expect("routes").clear();
        self.route_generations.lock().expect("route generations").values_mut().for_each(|g| *g += 1);
        self.pool.clear();
    }

    /// Drop every loaded version of a model.
    pub fn unload_model(&self, model: &str) {
        self.forget_routes(model);
        self.pool.remove_model(model);
    }

    /// Whether this server resolved or loaded a model of this name (so it exists).
    pub fn knows_model(&self, model: &str) -> bool {
        self.routes.read().expect("routes").keys().any(|(m, _)| m == model) || self.pool.has_model(model)
    }

    /// Forget which versions a model's routes lead to (a version, alias or the
    /// default changed).
    pub fn forget_routes(&self, model: &str) {
        *self.route_generations.lock().expect("route generations").entry(model.to_string()).or_default() += 1;
        self.routes.write().expect("routes").retain(|(m, _), _| m != model);
    }

    fn route_generation(&self, model: &str) -> u64 {
        self.route_generations.lock().expect("route generations").get(model).copied().unwrap_or(0)
    }

    /// Hold this while attaching a blob to a version and storing it, or while
    /// checking it is unreferenced and deleting it: exclusive in this process and,
    /// through the registry, across replicas.
    pub async fn lock_blob(&self, sha256: &str) -> Result<BlobGuard> {
        let lock = self.blob_locks.lock().expect("blob locks").entry(sha256.to_string()).or_default().clone();
        let local = lock.lock_owned().await;
        {
            let mut locks = self.blob_locks.lock().expect("blob locks");
            // Drop entries nobody else holds, so the map does not grow without bound.
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        let shared = self.registry.lock_blob(sha256).await?;
        Ok(BlobGuard { _shared: shared, _local: local })
    }

    /// Drop the blob and its local copy when no version references it any more.
    pub async fn release_blob(&self, sha256: &str) -> Result<()> {
        if sha256.is_empty() {
            return Ok(());
        }
        let _guard = self.lock_blob(sha256).await?;
        if self.registry.blob_referenced(sha256).await? {
            return Ok(());
        }
        self.store.delete(&StorageKey::blob(sha256)).await?;
        remove_dir_quietly(&self.cache_path(sha256)).await;
        Ok(())
    }

    /// The API view of a version.
    pub fn version_info(&self, v: &VersionRecord) -> VersionInfo {
        let base = format!("/v1/models/{}", v.model);
        VersionInfo {
            model: v.model.clone(),
            version: v.version.clone(),
            format: v.format,
            sha256: v.sha256.clone(),
            size: v.size,
            task: v.task,
            servable: v.servable,
            reason: v.reason.clone(),
            runtime: v.runtime.clone(),
            status: v.status,
            signature: v.signature.clone(),
            labels: v.labels.clone(),
            warmup_ms: v.warmup_ms,
            created_at: v.created_at,
            created_by: v.created_by.clone(),
            serving: v.serving.clone(),
            effective: self
                .pool
                .effective(&v.model, &v.version)
                .unwrap_or_else(|| self.effective(&v.serving, &v.signature)),
            loaded: self.pool.contains(&v.model, &v.version),
            sandbox: (v.format == zoo_api::Format::Torchscript).then(|| self.runtimes.sandbox_status()).flatten(),
            endpoints: Endpoints {
                predict: format!("{base}/versions/{}/predict", v.version),
                predict_default: format!("{base}/predict"),
                artifact: format!("{base}/versions/{}/artifact", v.version),
                openapi: format!("{base}/versions/{}/openapi.json", v.version),
            },
        }
    }

    /// The OpenAPI document of the version a target names, with the bundle's own
    /// input example when it has one (MLflow's serving input example).
    pub async fn model_openapi(&self, model: &str, target: predict::Target<'_>) -> Result<serde_json::Value> {
        let pinned = matches!(target, predict::Target::Version(_));
        let record = self.resolve(model, target).await?;
        let info = self.version_info(&record);
        let example = self.bundle_example(&record).await?;
        Ok(crate::pipeline::openapi::document(&info, example, pinned))
    }

    /// The bundle's own input example (MLflow's serving input example), if any.
    async fn bundle_example(&self, record: &VersionRecord) -> Result<Option<serde_json::Value>> {
        match record.signature.mlflow.as_ref().and_then(|m| m.input_example.clone()) {
            Some(file) if record.signature.bundle => {
                let dir = self.materialize(&record.sha256, &record.signature).await?;
                Ok(tokio::fs::read(dir.join(file)).await.ok().and_then(|b| serde_json::from_slice(&b).ok()))
            }
            _ => Ok(None),
        }
    }

    /// An example predict request for a version.
    pub async fn example_request(&self, record: &VersionRecord) -> Result<serde_json::Value> {
        let example = self.bundle_example(record).await?;
        Ok(crate::pipeline::openapi::example(&self.version_info(record), example))
    }

    /// A ready version, or the matching 404.
    pub async fn require_version(&self, model: &str, version: &str) -> Result<VersionRecord> {
        match self.registry.get_version(model, version).await? {
            Some(v) if v.status == VersionStatus::Ready => Ok(v),
            _ => Err(self.not_found(model, version).await?),
        }
    }

    async fn alias_not_found(&self, model: &str, alias: &str) -> Result<Error> {
        Ok(match self.registry.get_model(model).await? {
            None => Error::ModelNotFound(model.to_string()),
            Some(_) => Error::AliasNotFound { model: model.to_string(), alias: alias.to_string() },
        })
    }

    async fn not_found(&self, model: &str, version: &str) -> Result<Error> {
        Ok(match self.registry.get_model(model).await? {
            None => Error::ModelNotFound(model.to_string()),
            Some(_) => Error::VersionNotFound { model: model.to_string(), version: version.to_string() },
        })
    }
}

pub(crate) async fn remove_dir_quietly(path: &Path) {
    if let Err(e) = tokio::fs::remove_dir_all(path).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "could not remove a directory");
    }
}
