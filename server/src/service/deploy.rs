//! Deploy: upload -> validate -> store -> register -> load. A version becomes
//! visible only at the end; any failure on the way removes what was started.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use zoo_api::{DeployQuery, LoadPolicy, ModelName, RuntimeChoice, Task, VersionInfo, VersionName};

use super::loader::LoadRequest;
use super::{Services, remove_dir_quietly};
use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::registry::ReadyVersion;
use crate::store::StorageKey;

/// An upload as it arrives.
pub struct Upload<S> {
    pub model: ModelName,
    /// `None` takes the next integer version.
    pub version: Option<VersionName>,
    pub query: DeployQuery,
    pub expected_sha256: Option<String>,
    pub content_length: Option<u64>,
    pub body: S,
}

struct Received {
    path: PathBuf,
    sha256: String,
    size: u64,
}

impl Services {
    #[tracing::instrument(skip_all, fields(model = %upload.model, version))]
    pub async fn deploy<S, E>(&self, caller: &Caller, upload: Upload<S>) -> Result<VersionInfo>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin + Send,
        E: std::fmt::Display,
    {
        if let Some(expected) = &upload.expected_sha256
            && !crate::store::is_sha256_hex(expected)
        {
            return Err(Error::InvalidRequest(format!("{} must be 64 hex digits", zoo_api::headers::SHA256)));
        }
        if let Some(len) = upload.content_length
            && len > self.config.max_upload_bytes
        {
            return Err(too_large(len, self.config.max_upload_bytes));
        }
        let model = upload.model.clone();
        let version = self
            .registry
            .begin_version(&model, upload.version.as_deref(), upload.query.description.as_deref(), &caller.key_id)
            .await?;
        tracing::Span::current().record("version", version.as_str());

        let work = self.config.work_dir().join(format!("upload-{}", uuid::Uuid::new_v4()));
        let result = async {
            tokio::fs::create_dir_all(&work).await?;
            self.deploy_reserved(caller, &model, &version, upload, &work).await
        }
        .await;
        remove_dir_quietly(&work).await;
        match result {
            Ok(info) => Ok(info),
            Err(e) => {
                match self.registry.abort_version(&model, &version).await {
                    Ok(Some(sha)) => {
                        if let Err(e2) = self.release_blob(&sha).await {
                            tracing::warn!(error = %e2, "could not release the blob of a failed upload; the sweeper will");
                        }
                    }
                    Ok(None) => {}
                    Err(e2) => tracing::warn!(error = %e2, "could not remove a failed upload; the sweeper will"),
                }
                self.unload(&model, &version);
                Err(e)
            }
        }
    }

    async fn deploy_reserved<S, E>(
        &self,
        caller: &Caller,
        model: &str,
        version: &str,
        upload: Upload<S>,
        work: &Path,
    ) -> Result<VersionInfo>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin + Send,
        E: std::fmt::Display,
    {
        let received = self.receive(upload.body, work).await?;
        if let Some(expected) = &upload.expected_sha256
            && !expected.eq_ignore_ascii_case(&received.sha256)
        {
            return Err(Error::Sha256Mismatch { expected: expected.to_ascii_lowercase(), actual: received.sha256 });
        }

        // Validate (pure, blocking) into an unpack directory.
        let unpack = work.join("unpacked");
        tokio::fs::create_dir_all(&unpack).await?;
        let (path, dir, limits) = (received.path.clone(), unpack.clone(), self.limits());
        let artifact = tokio::task::spawn_blocking(move || zoo_formats::inspect_upload(&path, &dir, &limits)).await??;

        let mut signature = artifact.signature;
        let mut labels = artifact.labels;
        if let Some(given) = &upload.query.labels {
            labels = given.split(',').map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect();
            if let Some(text) = &mut signature.text {
                text.labels = labels.clone();
            }
            if let Some(image) = &mut signature.image {
                image.labels = labels.clone();
            }
        }
        let task = match upload.query.task {
            None => artifact.task,
            Some(Task::Tensor) if !signature.generates() => Task::Tensor,
            Some(t) if t == artifact.task => t,
            Some(Task::TextGeneration) | Some(Task::Tensor) => {
                return Err(Error::InvalidRequest(format!(
                    "task '{}' is not this artifact's: text-generation is a GGUF file's or a Hugging Face decoder                      directory's ({}), and a language model generates text, not tensors",
                    upload.query.task.map_or("", |t| t.as_str()),
                    zoo_formats::decoder::DECODER_TYPES.join(", ")
                )));
            }
            Some(Task::ImageClassification) if signature.image.is_none() => {
                return Err(Error::InvalidRequest(
                    "task 'image-classification' needs a bundle with preprocessor_config.json and one \
                     [batch, 3, height, width] float input"
                        .into(),
                ));
            }
            Some(t) => {
                if t != Task::ImageClassification && signature.text.is_none() {
                    return Err(Error::InvalidRequest(format!(
                        "task '{}' needs a bundle with tokenizer.json and an input named input_ids",
                        t.as_str()
                    )));
                }
                if crate::pipeline::task::kind(t).needs_labels() && labels.is_empty() {
                    return Err(Error::InvalidRequest(format!(
                        "task '{}' needs labels: add id2label to config.json or pass labels",
                        t.as_str()
                    )));
                }
                t
            }
        };

        // Store the blob (content-addressed; the row points at it first so the
        // sweeper never takes it for an orphan, under the blob's lock so a concurrent
        // delete of another version with the same content cannot remove it).
        let blob_guard = self.lock_blob(&received.sha256).await?;
        self.registry.attach_blob(model, version, &received.sha256).await?;
        self.store.put_file(&StorageKey::blob(&received.sha256), &received.path).await?;

        // Local copy for serving: the unpacked bundle, or the single file.
        let cache = self.cache_path(&received.sha256);
        if !tokio::fs::try_exists(&cache).await? {
            let prepared = match &artifact.bundle_dir {
                Some(root) => root.clone(),
                None => {
                    let single = work.join("single");
                    tokio::fs::create_dir_all(&single).await?;
                    tokio::fs::rename(&received.path, single.join(zoo_formats::single_file_name(signature.format)))
                        .await?;
                    single
                }
            };
            self.install(&prepared, &cache).await?;
        }
        drop(blob_guard);

        let choice = upload.query.runtime.unwrap_or(RuntimeChoice::Auto);
        let req = LoadRequest {
            model: model.to_string(),
            version: version.to_string(),
            sha256: received.sha256.clone(),
            dir: cache,
            signature: signature.clone(),
            task,
            labels: labels.clone(),
            serving: upload.query.serving(),
            size: received.size as i64,
        };
        // An alias moves only to a version that loaded and warmed up.
        let lazy =
            upload.query.alias.is_none() && self.effective(&req.serving, &req.signature).load == LoadPolicy::Lazy;
        let outcome = self.load_new(req, choice, lazy).await;
        if let Some(reason) = &outcome.reason {
            tracing::warn!(model, version, reason = %reason, "stored, but not servable");
        }
        // The alias moves with the version becoming ready, and only to a version
        // that loaded and warmed up above.
        let servable = outcome.servable;
        let alias = upload.query.alias.clone().filter(|_| servable);
        let ready = ReadyVersion {
            format: signature.format,
            sha256: received.sha256,
            size: received.size as i64,
            task,
            runtime: outcome.runtime,
            servable,
            reason: outcome.reason,
            signature,
            labels,
            warmup_ms: outcome.warmup_ms,
            serving: upload.query.serving(),
            alias: alias.as_ref().map(|a| a.to_string()),
        };
        let record = self.registry.finish_version(model, version, &ready).await?;
        self.forget_routes(model);
        tracing::info!(model, version, sha256 = %record.sha256, size = record.size, servable, alias = ?alias, by = %caller.key_id, "deployed");
        if let (Some(wanted), false) = (&upload.query.alias, servable) {
            return Err(Error::NotServable(format!(
                "version '{version}' of model '{model}' was stored, but it cannot be served ({}), so alias '{wanted}' was not moved",
                record.reason.as_deref().unwrap_or("no reason recorded")
            )));
        }
        Ok(self.version_info(&record))
    }

    /// Stream the body to a file, hashing and counting, with the size limit and an
    /// idle timeout.
    async fn receive<S, E>(&self, mut body: S, work: &Path) -> Result<Received>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin + Send,
        E: std::fmt::Display,
    {
        let path = work.join("upload");
        let mut file = tokio::fs::File::create(&path).await?;
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let limit = self.config.max_upload_bytes;
        let idle = self.config.upload_idle_timeout();
        let min_rate = self.config.upload_min_bytes_per_sec;
        let started = std::time::Instant::now();
        loop {
            let chunk = match tokio::time::timeout(idle, body.next()).await {
                Err(_) => {
                    return Err(Error::Timeout(format!("the upload sent nothing for {} seconds", idle.as_secs())));
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(Error::InvalidRequest(format!("the upload was interrupted: {e}"))),
                Ok(Some(Ok(c))) => c,
            };
            size += chunk.len() as u64;
            self.metrics.uploaded(chunk.len() as u64);
            let elapsed = started.elapsed();
            if elapsed > idle && (size as f64 / elapsed.as_secs_f64()) < min_rate as f64 {
                return Err(Error::Timeout(format!(
                    "the upload is slower than {min_rate} bytes per second ({size} bytes in {} s); it was cut off",
                    elapsed.as_secs()
                )));
            }
            if size > limit {
                return Err(too_large(size, limit));
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        file.sync_all().await?;
        if size == 0 {
            return Err(Error::InvalidRequest("the upload is empty: send the artifact as the request body".into()));
        }
        Ok(Received { path, sha256: hex::encode(hasher.finalize()), size })
    }
}

fn too_large(size: u64, limit: u64) -> Error {
    Error::PayloadTooLarge(format!(
        "the upload is larger than the limit of {limit} bytes (got at least {size}); raise ZOO_MAX_UPLOAD_BYTES on the server"
    ))
}
