//! The loaded versions: which are in memory, loading each once however many
//! requests ask for it at the same time, and the memory budget that unloads the
//! least recently used idle ones.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use zoo_api::{EffectiveServing, Signature, Task};

use crate::error::Result;
use crate::pipeline::Pipeline;
use crate::runtime::host::ModelHost;

/// (model, version)
pub type VersionKey = (String, String);

/// A loaded version, ready to answer.
pub struct LoadedVersion {
    pub model: String,
    pub version: String,
    /// The artifact it was loaded from: a version deleted and deployed again under
    /// the same name on another replica has another sha256.
    pub sha256: String,
    pub task: Task,
    pub signature: Signature,
    pub runtime: &'static str,
    pub host: ModelHost,
    pub pipeline: Pipeline,
    /// The serving settings it was loaded with.
    pub effective: EffectiveServing,
    /// Artifact size, the estimate of its memory for the loading budget.
    pub size: i64,
    /// When it last answered, for unloading the least recently used first.
    pub last_used: LastUsed,
}

/// When a loaded version last answered (milliseconds since the Unix epoch).
pub struct LastUsed(AtomicU64);

impl LastUsed {
    pub fn now() -> LastUsed {
        LastUsed(AtomicU64::new(now_millis()))
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl LoadedVersion {
    pub fn key(&self) -> VersionKey {
        (self.model.clone(), self.version.clone())
    }

    /// The serving settings in effect: `max_batch_size` as the host caps it now,
    /// with the batch sizes it measured.
    pub fn effective(&self) -> EffectiveServing {
        let mut e = self.effective.clone();
        let rates = self.host.measured();
        if !rates.is_empty() && e.batched && e.max_batch_size > 1 {
            e.max_batch_size = self.host.max_batch_rows() as u32;
            e.measured_batches = rates;
        }
        e
    }

    /// It is answering now (for least-recently-used unloading).
    pub fn touch(&self) {
        self.last_used.0.store(now_millis(), Ordering::Relaxed);
    }

    /// Memory it is counted for in the budget.
    fn cost(&self) -> u64 {
        self.size.max(0) as u64
    }
}

/// The table of loaded versions.
pub struct ModelPool {
    /// Bytes of artifacts that may be loaded at once; 0: no budget.
    budget: u64,
    loaded: RwLock<HashMap<VersionKey, Arc<LoadedVersion>>>,
    /// One loader at a time per version.
    loading: Mutex<HashMap<VersionKey, Arc<tokio::sync::Mutex<()>>>>,
}

impl ModelPool {
    pub fn new(budget: u64) -> ModelPool {
        ModelPool { budget, loaded: RwLock::default(), loading: Mutex::default() }
    }

    /// The loaded version under `key`, if it was loaded from the artifact `sha256`.
    pub fn get(&self, key: &VersionKey, sha256: &str) -> Option<Arc<LoadedVersion>> {
        self.loaded.read().expect("loaded map").get(key).filter(|s| s.sha256 == sha256).cloned()
    }

    /// The loaded version under `key` (loaded from `sha256`), or the one `load`
    /// makes, which is then kept. `load` runs once for concurrent callers: the
    /// others wait for it and take its result, or run again after it failed.
    pub async fn get_or_load<F, Fut>(&self, key: &VersionKey, sha256: &str, load: F) -> Result<Arc<LoadedVersion>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<LoadedVersion>>,
    {
        if let Some(s) = self.get(key, sha256) {
            return Ok(s);
        }
        let gate = self.loading.lock().expect("loading map").entry(key.clone()).or_default().clone();
        let guard = gate.lock().await;
        let loaded = match self.get(key, sha256) {
            Some(s) => Ok(s),
            None => load().await.map(|v| self.insert(v)),
        };
        // Whether it loaded or not, the gate goes (a failed load is tried again by
        // the next request, and a deleted version leaves nothing behind).
        self.loading.lock().expect("loading map").remove(key);
        drop(guard);
        loaded
    }

    /// Keep a loaded version (replacing one under the same key), then unload
    /// others as the budget requires.
    pub fn insert(&self, v: LoadedVersion) -> Arc<LoadedVersion> {
        let v = Arc::new(v);
        let key = v.key();
        self.loaded.write().expect("loaded map").insert(key.clone(), v.clone());
        self.enforce_budget(&key);
        v
    }

    /// Drop a loaded version (its thread ends once queued requests are answered).
    pub fn remove(&self, model: &str, version: &str) {
        self.loaded.write().expect("loaded map").remove(&(model.to_string(), version.to_string()));
    }

    /// Drop every loaded version of a model.
    pub fn remove_model(&self, model: &str) {
        self.loaded.write().expect("loaded map").retain(|(m, _), _| m != model);
    }

    /// Drop every loaded version.
    pub fn clear(&self) {
        self.loaded.write().expect("loaded map").clear();
    }

    /// The serving settings a loaded version runs with: with the batch sizes its
    /// host measured, and the cap it took from them.
    pub fn effective(&self, model: &str, version: &str) -> Option<EffectiveServing> {
        let loaded = self.loaded.read().expect("loaded map");
        loaded.get(&(model.to_string(), version.to_string())).map(|v| v.effective())
    }

    pub fn contains(&self, model: &str, version: &str) -> bool {
        self.loaded.read().expect("loaded map").contains_key(&(model.to_string(), version.to_string()))
    }

    pub fn has_model(&self, model: &str) -> bool {
        self.loaded.read().expect("loaded map").keys().any(|(m, _)| m == model)
    }

    /// (model, version, runtime, queued requests) of every loaded version, sorted.
    pub fn list(&self) -> Vec<(String, String, String, usize)> {
        let loaded = self.loaded.read().expect("loaded map");
        let mut v: Vec<_> = loaded
            .values()
            .map(|s| (s.model.clone(), s.version.clone(), s.runtime.to_string(), s.host.queued()))
            .collect();
        v.sort();
        v
    }

    /// Versions being loaded right now.
    pub fn loading(&self) -> usize {
        self.loading.lock().expect("loading map").len()
    }

    /// Unload the least recently used idle versions until the loaded ones fit the
    /// memory budget (estimated by artifact size); `keep` (just loaded) stays.
    /// A version with requests in flight or queued is never unloaded.
    fn enforce_budget(&self, keep: &VersionKey) {
        let budget = self.budget;
        if budget == 0 {
            return;
        }
        let mut loaded = self.loaded.write().expect("loaded map");
        let mut total: u64 = loaded.values().map(|s| s.cost()).sum();
        while total > budget {
            let victim = loaded
                .iter()
                .filter(|(k, s)| *k != keep && Arc::strong_count(s) == 1 && s.host.queued() == 0)
                .min_by_key(|(_, s)| s.last_used.get())
                .map(|(k, _)| k.clone());
            let Some(victim) = victim else {
                tracing::warn!(total, budget, "loaded models exceed the memory budget, but all are busy");
                return;
            };
            if let Some(s) = loaded.remove(&victim) {
                total = total.saturating_sub(s.cost());
                tracing::info!(model = %victim.0, version = %victim.1, "unloaded (least recently used, over the memory budget)");
            }
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
