//! The sweeper: removes uploads that never finished, blobs no version references,
//! and leftovers of interrupted work. Runs at start and periodically.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;

use super::{Services, remove_dir_quietly};
use crate::error::Result;
use crate::store::StorageKey;

/// What one sweep removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub uploads: usize,
    /// Multipart uploads to the store that a dead process left open.
    pub parts: usize,
    pub blobs: usize,
    pub cached: usize,
}

impl Services {
    /// One sweep. `at_start` treats every unfinished upload of a single-process
    /// registry as dead (its server was this one, and it stopped).
    pub async fn sweep(&self, at_start: bool) -> Result<Swept> {
        let stale = chrono::TimeDelta::seconds(self.config.stale_upload_secs as i64);
        let before = if at_start && self.registry.single_process() {
            Utc::now() + chrono::TimeDelta::seconds(1)
        } else {
            Utc::now() - stale
        };
        let dead = self.registry.sweep_uploading(before).await?;
        let parts = self.store.abort_stale_uploads(Utc::now() - stale).await?;
        let referenced = self.registry.referenced_blobs().await?;
        let mut swept = Swept { uploads: dead.len(), parts, ..Default::default() };
        for sha in self.store.list_blobs().await? {
            if referenced.contains(&sha) {
                continue;
            }
            // An upload may have attached it since `referenced` was read: check again
            // under the blob's lock, which uploads hold while they store.
            let _guard = self.lock_blob(&sha).await?;
            if !self.registry.blob_referenced(&sha).await? {
                self.store.delete(&StorageKey::blob(&sha)).await?;
                swept.blobs += 1;
            }
        }
        swept.cached = self.sweep_cache(&referenced).await?;
        if at_start {
            remove_dir_quietly(&self.config.work_dir()).await;
        }
        if swept != Swept::default() {
            tracing::info!(
                uploads = swept.uploads,
                parts = swept.parts,
                blobs = swept.blobs,
                cached = swept.cached,
                "sweeper removed leftovers"
            );
        }
        Ok(swept)
    }

    async fn sweep_cache(&self, referenced: &HashSet<String>) -> Result<usize> {
        let dir = self.config.cache_dir();
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        let mut n = 0;
        while let Some(e) = entries.next_entry().await? {
            let name = e.file_name().to_string_lossy().into_owned();
            if !referenced.contains(&name) {
                remove_dir_quietly(&e.path()).await;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Sweep every `interval` until the process ends.
    pub fn spawn_sweeper(self: &std::sync::Arc<Self>, interval: Duration) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = this.sweep(false).await {
                    tracing::warn!(error = %e, "sweep failed; will retry");
                }
            }
        });
    }
}
