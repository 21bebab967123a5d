//! The registry: models, versions, aliases and API keys, behind one trait so that
//! SQLite (embedded) and Postgres (production) share the services above them.

use std::collections::{BTreeMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use zoo_api::{Format, Scope, ServingConfig, Signature, Task, VersionStatus};

use crate::error::Result;

pub mod breaker;
pub mod postgres;
mod rows;
mod sql;
pub mod sqlite;

/// A version row.
#[derive(Debug, Clone)]
pub struct VersionRecord {
    pub model: String,
    pub version: String,
    pub seq: i64,
    pub status: VersionStatus,
    pub format: Format,
    pub sha256: String,
    pub size: i64,
    pub task: Task,
    pub runtime: Option<String>,
    pub servable: bool,
    pub reason: Option<String>,
    pub signature: Signature,
    pub labels: Vec<String>,
    pub warmup_ms: Option<f64>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    /// Serving settings given at deploy.
    pub serving: ServingConfig,
}

/// What a finished upload records on its version.
#[derive(Debug, Clone)]
pub struct ReadyVersion {
    pub format: Format,
    pub sha256: String,
    pub size: i64,
    pub task: Task,
    pub runtime: Option<String>,
    pub servable: bool,
    pub reason: Option<String>,
    pub signature: Signature,
    pub labels: Vec<String>,
    pub warmup_ms: Option<f64>,
    pub serving: ServingConfig,
    /// Point this alias at the version in the same transaction.
    pub alias: Option<String>,
}

/// A model row with a summary of its ready versions.
#[derive(Debug, Clone)]
pub struct ModelRecord {
    pub name: String,
    pub description: String,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub updated_at: DateTime<Utc>,
    pub latest: Option<VersionRecord>,
    pub version_count: i64,
    pub total_size: i64,
}

/// Filters of the model list.
#[derive(Debug, Clone, Default)]
pub struct ModelFilter {
    pub q: Option<String>,
    pub format: Option<Format>,
    pub task: Option<Task>,
    pub after: Option<String>,
    pub limit: u32,
}

/// An API key row (the secret itself is never stored, only its hash).
#[derive(Debug, Clone)]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    pub hash: String,
    pub scopes: Vec<Scope>,
    pub models: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A change another replica made, for caches to follow.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RegistryEvent {
    VersionReady {
        model: String,
        version: String,
    },
    VersionRemoved {
        model: String,
        version: String,
    },
    ModelRemoved {
        model: String,
    },
    KeyRevoked {
        id: String,
    },
    /// An alias now points at `version` (`None`: removed).
    AliasMoved {
        model: String,
        alias: String,
        version: Option<String>,
    },
    /// The change feed was interrupted: changes may have been missed, so forget
    /// everything cached. Produced locally, never sent.
    Resync,
}

/// One recorded alias move.
#[derive(Debug, Clone)]
pub struct AliasChange {
    pub model: String,
    pub alias: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub at: DateTime<Utc>,
    pub by: String,
}

/// Exclusive hold on one blob across every process sharing the registry, while it
/// is stored or checked-and-deleted. Released when dropped.
pub struct BlobLock {
    _held: Option<Box<dyn std::any::Any + Send>>,
}

impl BlobLock {
    /// Nothing to hold: this process is the only one (its own lock suffices).
    pub fn local() -> BlobLock {
        BlobLock { _held: None }
    }

    pub fn holding(held: impl std::any::Any + Send) -> BlobLock {
        BlobLock { _held: Some(Box::new(held)) }
    }
}

/// Storage of registry metadata. Every method is one transaction.
#[async_trait]
pub trait Registry: Send + Sync + 'static {
    /// The database answers.
    async fn ping(&self) -> Result<()>;

    /// Only one server process can use this registry (SQLite), so at start every
    /// upload still marked `uploading` is known to be dead.
    fn single_process(&self) -> bool;

    /// Changes made through any replica, when the backend can tell (Postgres
    /// LISTEN/NOTIFY). `None` when this process is the only writer.
    fn events(&self) -> Option<tokio::sync::broadcast::Receiver<RegistryEvent>> {
        None
    }

    /// Reserve a version in state `uploading`, creating the model if needed. With no
    /// version, the next integer after the highest integer version is taken.
    /// Fails with `VersionExists` if the version exists in any state.
    async fn begin_version(
        &self,
        model: &str,
        version: Option<&str>,
        description: Option<&str>,
        by: &str,
    ) -> Result<String>;

    /// Record the blob an upload is about to store, so the sweeper keeps it.
    async fn attach_blob(&self, model: &str, version: &str, sha256: &str) -> Result<()>;

    /// Make an uploading version `ready` with everything known about it (and move
    /// `ready.alias` to it, atomically).
    async fn finish_version(&self, model: &str, version: &str, ready: &ReadyVersion) -> Result<VersionRecord>;

    /// Remove an uploading version that failed (and its model, if it has no other
    /// version). Returns the blob it had attached, if any.
    async fn abort_version(&self, model: &str, version: &str) -> Result<Option<String>>;

    async fn list_models(&self, filter: &ModelFilter) -> Result<Vec<ModelRecord>>;
    async fn get_model(&self, name: &str) -> Result<Option<ModelRecord>>;
    /// Ready versions of a model, newest first.
    async fn list_versions(&self, model: &str) -> Result<Vec<VersionRecord>>;
    /// The version the default routes serve: alias `production` if set, else the
    /// newest ready version.
    async fn default_version(&self, model: &str) -> Result<Option<VersionRecord>>;
    /// A ready version.
    async fn get_version(&self, model: &str, version: &str) -> Result<Option<VersionRecord>>;
    /// Delete a ready version; returns it. `VersionInUse` while an alias points
    /// at it.
    async fn delete_version(&self, model: &str, version: &str) -> Result<Option<VersionRecord>>;
    /// Delete a model and all its versions; returns the deleted versions, or `None`
    /// when the model does not exist.
    async fn delete_model(&self, name: &str) -> Result<Option<Vec<VersionRecord>>>;
    async fn aliases(&self, model: &str) -> Result<BTreeMap<String, String>>;
    /// The version an alias points at.
    async fn get_alias(&self, model: &str, alias: &str) -> Result<Option<String>>;
    /// Point `alias` at a ready version, atomically, and record the move. Returns
    /// the version it pointed at before; `VersionNotFound` when the version is not
    /// ready.
    async fn set_alias(&self, model: &str, alias: &str, version: &str, by: &str) -> Result<Option<String>>;
    /// Remove an alias and record it; returns the version it pointed at (`None`
    /// when there was no such alias).
    async fn delete_alias(&self, model: &str, alias: &str, by: &str) -> Result<Option<String>>;
    /// Recorded alias moves of a model, newest first.
    async fn alias_history(&self, model: &str) -> Result<Vec<AliasChange>>;

    /// Lock one blob against other replicas (Postgres advisory lock); a no-op for
    /// a single-process registry.
    async fn lock_blob(&self, _sha256: &str) -> Result<BlobLock> {
        Ok(BlobLock::local())
    }

    /// Whether any version (in any state) references this blob.
    async fn blob_referenced(&self, sha256: &str) -> Result<bool>;
    /// Every blob that any version references.
    async fn referenced_blobs(&self) -> Result<HashSet<String>>;
    /// Delete `uploading` rows created before `before`; returns their attached blobs.
    async fn sweep_uploading(&self, before: DateTime<Utc>) -> Result<Vec<String>>;

    async fn create_key(&self, key: &KeyRecord) -> Result<()>;
    async fn get_key(&self, id: &str) -> Result<Option<KeyRecord>>;
    async fn list_keys(&self) -> Result<Vec<KeyRecord>>;
    /// Mark a key revoked. With `keep_an_admin`, the last active key with every
    /// right (admin scope, no model patterns, not expired) is not revoked: checked
    /// and done in one transaction, so two revocations cannot both pass.
    async fn revoke_key(&self, id: &str, at: DateTime<Utc>, keep_an_admin: bool) -> Result<Revoked>;
    async fn touch_key(&self, id: &str, at: DateTime<Utc>) -> Result<()>;
    async fn count_keys(&self) -> Result<i64>;
}

/// What a revocation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    Done,
    NotFound,
    /// Refused: the key is the last active admin key.
    LastAdmin,
}

impl KeyRecord {
    /// An admin key for every model that is neither revoked nor expired.
    pub fn full_admin_at(&self, now: DateTime<Utc>) -> bool {
        self.scopes.contains(&zoo_api::Scope::Admin)
            && self.models.is_empty()
            && self.revoked_at.is_none()
            && self.expires_at.is_none_or(|e| e > now)
    }
}

/// Open the registry named by a database URL and run its migrations.
pub async fn open(url: &str) -> anyhow::Result<std::sync::Arc<dyn Registry>> {
    if url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(sqlite::SqliteRegistry::open(url).await?))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(std::sync::Arc::new(postgres::PgRegistry::open(url).await?))
    } else {
        anyhow::bail!("unsupported database URL '{url}': expected sqlite://PATH or postgres://...")
    }
}

#[cfg(test)]
pub(crate) mod conformance;
