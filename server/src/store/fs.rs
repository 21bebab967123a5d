//! Filesystem object store: `<root>/blobs/sha256/<hex>`, written through a temporary
//! file, fsynced and renamed, so a blob is either whole or absent.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use super::{Object, ObjectStore, Range, StorageKey};
use crate::error::{Error, Result};

pub struct FsStore {
    root: PathBuf,
}

impl FsStore {
    pub async fn open(root: &Path) -> anyhow::Result<FsStore> {
        tokio::fs::create_dir_all(root.join("blobs/sha256")).await?;
        tokio::fs::create_dir_all(root.join("tmp")).await?;
        // Partial copies from a crash are never referenced: clear them at start.
        let mut tmp = tokio::fs::read_dir(root.join("tmp")).await?;
        while let Some(e) = tmp.next_entry().await? {
            let _ = tokio::fs::remove_file(e.path()).await;
        }
        Ok(FsStore { root: root.to_path_buf() })
    }

    fn path(&self, key: &StorageKey) -> PathBuf {
        self.root.join(key.path())
    }
}

fn unavailable(e: std::io::Error) -> Error {
    Error::Unavailable(format!("the object store is unreachable: {e}"))
}

/// Copy (or hard-link) `src` to `tmp`, make it durable and move it to `dest`.
#[allow(clippy::disallowed_methods, reason = "runs under spawn_blocking")]
fn put_durably(src: &Path, tmp: &Path, dest: &Path) -> std::io::Result<()> {
    // A hard link is instant when the source is on the same filesystem;
    // otherwise copy.
    if std::fs::hard_link(src, tmp).is_err() {
        std::fs::copy(src, tmp)?;
    }
    std::fs::File::open(tmp)?.sync_all()?;
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::rename(tmp, dest)?;
    if let Some(parent) = dest.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

#[async_trait]
impl ObjectStore for FsStore {
    async fn ping(&self) -> Result<()> {
        tokio::fs::metadata(self.root.join("blobs/sha256")).await.map_err(unavailable)?;
        Ok(())
    }

    async fn put_file(&self, key: &StorageKey, path: &Path) -> Result<()> {
        let dest = self.path(key);
        if tokio::fs::try_exists(&dest).await.map_err(unavailable)? {
            return Ok(());
        }
        let tmp = self.root.join("tmp").join(uuid::Uuid::new_v4().to_string());
        let (src, tmp2, dest2) = (path.to_path_buf(), tmp.clone(), dest.clone());
        match tokio::task::spawn_blocking(move || put_durably(&src, &tmp2, &dest2)).await? {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(unavailable(e))
            }
        }
    }

    async fn exists(&self, key: &StorageKey) -> Result<bool> {
        tokio::fs::try_exists(self.path(key)).await.map_err(unavailable)
    }

    async fn size(&self, key: &StorageKey) -> Result<Option<u64>> {
        match tokio::fs::metadata(self.path(key)).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn get(&self, key: &StorageKey, range: Option<Range>) -> Result<Option<Object>> {
        let mut file = match tokio::fs::File::open(self.path(key)).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(unavailable(e)),
        };
        let size = file.metadata().await.map_err(unavailable)?.len();
        let body = match range {
            Some(r) => {
                file.seek(std::io::SeekFrom::Start(r.start)).await.map_err(unavailable)?;
                ReaderStream::with_capacity(file.take(r.end.saturating_sub(r.start)), 256 * 1024).boxed()
            }
            None => ReaderStream::with_capacity(file, 256 * 1024).boxed(),
        };
        Ok(Some(Object { size, body }))
    }

    async fn get_to_file(&self, key: &StorageKey, dest: &Path) -> Result<bool> {
        match tokio::fs::copy(self.path(key), dest).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn delete(&self, key: &StorageKey) -> Result<()> {
        match tokio::fs::remove_file(self.path(key)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn list_blobs(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut dir = tokio::fs::read_dir(self.root.join("blobs/sha256")).await.map_err(unavailable)?;
        while let Some(e) = dir.next_entry().await.map_err(unavailable)? {
            if let Some(name) = e.file_name().to_str()
                && super::is_sha256_hex(name)
            {
                out.push(name.to_string());
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, reason = "test setup")]
mod tests {
    use super::*;
    use futures::TryStreamExt;

    #[tokio::test]
    async fn put_get_range_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(&dir.path().join("objects")).await.unwrap();
        let src = dir.path().join("src");
        std::fs::write(&src, b"0123456789").unwrap();
        let key = StorageKey::blob(&"a".repeat(64));
        assert!(!store.exists(&key).await.unwrap());
        store.put_file(&key, &src).await.unwrap();
        // Identical content stored twice is kept once.
        store.put_file(&key, &src).await.unwrap();
        assert_eq!(store.list_blobs().await.unwrap(), vec!["a".repeat(64)]);
        assert_eq!(store.size(&key).await.unwrap(), Some(10));
        let obj = store.get(&key, Some(Range { start: 2, end: 5 })).await.unwrap().unwrap();
        let body: Vec<u8> = obj.body.map_ok(|b| b.to_vec()).try_concat().await.unwrap();
        assert_eq!(body, b"234");
        assert_eq!(obj.size, 10);
        store.delete(&key).await.unwrap();
        store.delete(&key).await.unwrap();
        assert!(store.get(&key, None).await.unwrap().is_none());
    }
}
