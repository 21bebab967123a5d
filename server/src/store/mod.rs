//! Object storage for artifacts: content-addressed blobs behind one trait.

use std::path::Path;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

use crate::error::Result;

pub mod fs;
pub mod s3;

#[cfg(test)]
#[allow(clippy::disallowed_methods, reason = "test setup")]
pub(crate) mod conformance;

/// A typed storage key. Blobs are addressed by the sha256 of their content.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StorageKey {
    /// `blobs/sha256/<hex>`
    Blob { sha256: String },
}

impl StorageKey {
    pub fn blob(sha256: &str) -> StorageKey {
        StorageKey::Blob { sha256: sha256.to_string() }
    }

    /// The key as a relative path.
    pub fn path(&self) -> String {
        match self {
            StorageKey::Blob { sha256 } => format!("blobs/sha256/{sha256}"),
        }
    }
}

/// Whether `s` is a hex sha256, the only names blobs have.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// A byte range `start..end` (end exclusive) of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub start: u64,
    pub end: u64,
}

/// A stored object being read.
pub struct Object {
    /// Size of the whole object.
    pub size: u64,
    pub body: ByteStream,
}

#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// The store answers.
    async fn ping(&self) -> Result<()>;
    /// Store the file at `path` under `key`, durably. A key that exists is left as it
    /// is (content addressing makes it identical). The file may be moved or copied.
    async fn put_file(&self, key: &StorageKey, path: &Path) -> Result<()>;
    /// Whether `key` exists.
    async fn exists(&self, key: &StorageKey) -> Result<bool>;
    /// Size of `key`, or `None` when missing.
    async fn size(&self, key: &StorageKey) -> Result<Option<u64>>;
    /// Read `key` (a range of it, or all).
    async fn get(&self, key: &StorageKey, range: Option<Range>) -> Result<Option<Object>>;
    /// Write `key` into the local file `dest`.
    async fn get_to_file(&self, key: &StorageKey, dest: &Path) -> Result<bool>;
    /// Delete `key`; deleting a missing key is not an error.
    async fn delete(&self, key: &StorageKey) -> Result<()>;
    /// Every blob sha256 in the store, for the sweeper.
    async fn list_blobs(&self) -> Result<Vec<String>>;
    /// Abort uploads in progress since before `before` (left by a process that
    /// died mid-upload); returns how many. Stores without such uploads: 0.
    async fn abort_stale_uploads(&self, _before: chrono::DateTime<chrono::Utc>) -> Result<usize> {
        Ok(0)
    }
    /// Start writing `key` while its bytes are still arriving (`size_hint`: the
    /// size, when known, so that parts are large enough for it) (S3: a multipart
    /// upload whose parts go out as they fill, several at a time). `None`: the store
    /// takes whole files only ([`ObjectStore::put_file`]); the file store does, as
    /// it links the staged file in place.
    async fn begin_blob(&self, _key: &StorageKey, _size_hint: Option<u64>) -> Result<Option<Box<dyn BlobWriter>>> {
        Ok(None)
    }
}

/// A blob being written part by part. Nothing is visible under its key until
/// [`BlobWriter::complete`]; [`BlobWriter::abort`] leaves nothing behind.
#[async_trait]
pub trait BlobWriter: Send + Sync {
    /// How many bytes each part but the last holds.
    fn part_size(&self) -> usize;
    /// Send the next part (in order; only the last may be shorter). Waits while
    /// as many parts as the store takes at once are in flight. After an error the
    /// writer takes no more parts: abort it.
    async fn part(&mut self, bytes: Bytes) -> Result<()>;
    /// Wait until [`BlobWriter::part`] would not wait, so that a caller need not
    /// hold the next part while the store is busy.
    async fn ready(&mut self) -> Result<()> {
        Ok(())
    }
    /// Wait for every part and make the object visible under its key.
    async fn complete(self: Box<Self>) -> Result<()>;
    /// Give the upload up (best effort: the sweeper aborts what is left).
    async fn abort(self: Box<Self>);
}

/// Open the object store named by a URL (`file://PATH` or `s3://bucket/prefix`).
pub async fn open(url: &str, create_bucket: bool) -> anyhow::Result<std::sync::Arc<dyn ObjectStore>> {
    if let Some(path) = url.strip_prefix("file://") {
        Ok(std::sync::Arc::new(fs::FsStore::open(Path::new(path)).await?))
    } else if url.starts_with("s3://") {
        Ok(std::sync::Arc::new(s3::S3Store::open(url, create_bucket).await?))
    } else {
        anyhow::bail!("unsupported store URL '{url}': expected file://PATH or s3://BUCKET/PREFIX")
    }
}
