//! Deploy: upload -> validate -> store -> register -> load. A version becomes
//! visible only at the end; any failure on the way removes what was started.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use std::io::Write;
use zoo_api::{DeployQuery, LoadPolicy, ModelName, RuntimeChoice, Task, VersionInfo, VersionName};

use super::loader::LoadRequest;
use super::{Services, remove_dir_quietly};
use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::registry::ReadyVersion;
use crate::store::{BlobWriter, StorageKey};

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

/// What [`Services::receive`] made of a body.
struct Received {
    /// The upload staged on disk: single files, and bundles the store did not take
    /// while they arrived.
    path: Option<PathBuf>,
    sha256: String,
    size: u64,
    /// A tar bundle unpacked as it arrived (no staged copy): its files, or why it
    /// was refused.
    extracted: Option<std::result::Result<Vec<zoo_api::BundleFile>, zoo_formats::Error>>,
    /// The store's copy, written as the upload arrived: completed once the upload
    /// is accepted, aborted otherwise.
    blob: Option<Box<dyn BlobWriter>>,
}

/// Uploads larger than this go to a store that takes parts while they arrive
/// (S3) at once; smaller ones are stored whole once accepted.
const STREAM_ABOVE: u64 = 8 << 20;
/// Bytes of the body on their way from the connection to the thread that hashes,
/// writes and unpacks them: a bounded number of chunks.
const CHUNKS_QUEUED: usize = 8;

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
        // Into the store while it arrives, when the client named the content (the
        // blob's key) and the store takes parts: nothing is visible under the key
        // until the upload is accepted below.
        let blob = match &upload.expected_sha256 {
            Some(sha) if upload.content_length.is_none_or(|n| n > STREAM_ABOVE) => {
                let key = StorageKey::blob(&sha.to_ascii_lowercase());
                if self.store.exists(&key).await? {
                    None
                } else {
                    self.store.begin_blob(&key, upload.content_length).await?
                }
            }
            _ => None,
        };
        let unpack = work.join("unpacked");
        tokio::fs::create_dir_all(&unpack).await?;
        let mut received = self.receive(upload.body, work, &unpack, blob).await?;
        let mut blob = received.blob.take();
        let extracted = received.extracted.take();
        let accepted =
            self.accept(&upload.query, upload.expected_sha256.as_deref(), &received, extracted, &unpack).await;
        let (artifact, signature, labels, task) = match accepted {
            Ok(a) => a,
            Err(e) => {
                if let Some(w) = blob {
                    w.abort().await;
                }
                return Err(e);
            }
        };

        // Store the blob (content-addressed; the row points at it first so the
        // sweeper never takes it for an orphan, under the blob's lock so a concurrent
        // delete of another version with the same content cannot remove it).
        let stored = async {
            let guard = self.lock_blob(&received.sha256).await?;
            self.registry.attach_blob(model, version, &received.sha256).await?;
            match (blob.take(), &received.path) {
                (Some(w), _) => w.complete().await?,
                (None, Some(path)) => self.store.put_file(&StorageKey::blob(&received.sha256), path).await?,
                (None, None) => {
                    return Err(Error::Internal("an upload unpacked as it arrived, with no store writer".into()));
                }
            }
            Ok(guard)
        }
        .await;
        let blob_guard = match stored {
            Ok(g) => g,
            Err(e) => {
                if let Some(w) = blob {
                    w.abort().await;
                }
                return Err(e);
            }
        };

        // Local copy for serving: the unpacked bundle, or the single file.
        let cache = self.cache_path(&received.sha256);
        if !tokio::fs::try_exists(&cache).await? {
            let prepared = match &artifact.bundle_dir {
                Some(root) => root.clone(),
                None => {
                    let staged =
                        received.path.as_ref().ok_or_else(|| Error::Internal("a file upload not staged".into()))?;
                    let single = work.join("single");
                    tokio::fs::create_dir_all(&single).await?;
                    tokio::fs::rename(staged, single.join(zoo_formats::single_file_name(signature.format))).await?;
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

    /// Check an upload against the sha256 its client declared, validate it (a tar
    /// bundle unpacked as it arrived, or the staged file) and settle its task.
    async fn accept(
        &self,
        query: &DeployQuery,
        expected: Option<&str>,
        received: &Received,
        extracted: Option<std::result::Result<Vec<zoo_api::BundleFile>, zoo_formats::Error>>,
        unpack: &Path,
    ) -> Result<(zoo_formats::Artifact, zoo_api::Signature, Vec<String>, Task)> {
        if let Some(expected) = expected
            && !expected.eq_ignore_ascii_case(&received.sha256)
        {
            return Err(Error::Sha256Mismatch {
                expected: expected.to_ascii_lowercase(),
                actual: received.sha256.clone(),
            });
        }
        // Validate (pure, blocking) into the unpack directory.
        let (dir, limits) = (unpack.to_path_buf(), self.limits());
        let artifact = match (extracted, &received.path) {
            (Some(files), _) => {
                let files = files?;
                tokio::task::spawn_blocking(move || zoo_formats::bundle::inspect_extracted(&dir, files, &limits))
                    .await??
            }
            (None, Some(path)) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || zoo_formats::inspect_upload(&path, &dir, &limits)).await??
            }
            (None, None) => return Err(Error::Internal("an upload neither staged nor unpacked".into())),
        };

        let mut signature = artifact.signature.clone();
        let mut labels = artifact.labels.clone();
        if let Some(given) = &query.labels {
            labels = given.split(',').map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect();
            if let Some(text) = &mut signature.text {
                text.labels = labels.clone();
            }
            if let Some(image) = &mut signature.image {
                image.labels = labels.clone();
            }
        }
        let task = match query.task {
            None => artifact.task,
            Some(Task::Tensor) if !signature.generates() => Task::Tensor,
            Some(t) if t == artifact.task => t,
            Some(Task::TextGeneration) | Some(Task::Tensor) => {
                return Err(Error::InvalidRequest(format!(
                    "task '{}' is not this artifact's: text-generation is a GGUF file's or a Hugging Face decoder \
                     directory's ({}), and a language model generates text, not tensors",
                    query.task.map_or("", |t| t.as_str()),
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
        Ok((artifact, signature, labels, task))
    }

    /// Take the body in, with the size limit, an idle timeout and a minimum rate.
    /// A thread hashes each chunk and writes it: into the staged file, or, for a
    /// tar bundle going to a store that takes it while it arrives (`blob`), straight
    /// into its unpacked files under `unpack`; and hands `blob` its parts as they
    /// fill. Errors abort `blob`; a refused bundle is still read to its end, so
    /// that the client hears why.
    async fn receive<S, E>(
        &self,
        mut body: S,
        work: &Path,
        unpack: &Path,
        blob: Option<Box<dyn BlobWriter>>,
    ) -> Result<Received>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin + Send,
        E: std::fmt::Display,
    {
        let (chunks, chunks_rx) = tokio::sync::mpsc::channel::<Bytes>(CHUNKS_QUEUED);
        let parts = blob.as_ref().map(|w| {
            let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
            (tx, rx, w.part_size())
        });
        let (part_tx, part_rx) = match parts {
            Some((tx, rx, size)) => (Some((tx, size)), Some(rx)),
            None => (None, None),
        };
        // The store's parts go out from here, several at once (the writer bounds
        // them); after a failure the rest are dropped and the error kept.
        let forward = tokio::spawn(async move {
            let (Some(mut w), Some(mut rx)) = (blob, part_rx) else { return (None, Ok(())) };
            let mut failed = Ok(());
            loop {
                // A free slot first, then the next part: no part waits here.
                if failed.is_ok()
                    && let Err(e) = w.ready().await
                {
                    failed = Err(e);
                }
                let Some(part) = rx.recv().await else { break };
                if failed.is_ok()
                    && let Err(e) = w.part(part).await
                {
                    failed = Err(e);
                }
            }
            (Some(w), failed)
        });
        let staged = work.join("upload");
        let sink = {
            let (staged, unpack, limits) = (staged.clone(), unpack.to_path_buf(), self.limits());
            let stream_tar = part_tx.is_some();
            tokio::task::spawn_blocking(move || {
                Tee::new(chunks_rx, part_tx).sink(&staged, stream_tar.then_some((unpack.as_path(), &limits)))
            })
        };

        let limit = self.config.max_upload_bytes;
        let idle = self.config.upload_idle_timeout();
        let min_rate = self.config.upload_min_bytes_per_sec;
        let started = std::time::Instant::now();
        let taken = async {
            let mut size: u64 = 0;
            loop {
                let chunk = match tokio::time::timeout(idle, body.next()).await {
                    Err(_) => {
                        return Err(Error::Timeout(format!("the upload sent nothing for {} seconds", idle.as_secs())));
                    }
                    Ok(None) => return Ok(size),
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
                if chunks.send(chunk).await.is_err() {
                    // The writing thread stopped: its error is the answer.
                    return Ok(size);
                }
            }
        }
        .await;
        drop(chunks);
        let sunk = sink.await.map_err(|e| Error::Internal(format!("the upload's writer: {e}")));
        let (writer, sent) = forward.await.map_err(|e| Error::Internal(format!("the upload's parts: {e}")))?;
        let outcome = (|| {
            let size = taken?;
            let sunk = sunk??;
            sent?;
            if size == 0 {
                return Err(Error::InvalidRequest("the upload is empty: send the artifact as the request body".into()));
            }
            Ok(Received { path: sunk.staged, sha256: sunk.sha256, size, extracted: sunk.extracted, blob: None })
        })();
        match (outcome, writer) {
            (Ok(mut r), w) => {
                r.blob = w;
                Ok(r)
            }
            (Err(e), w) => {
                if let Some(w) = w {
                    w.abort().await;
                }
                Err(e)
            }
        }
    }
}

/// What the writing thread made of an upload.
struct Sunk {
    sha256: String,
    staged: Option<PathBuf>,
    extracted: Option<std::result::Result<Vec<zoo_api::BundleFile>, zoo_formats::Error>>,
}

/// The body's chunks as they come off the connection, each hashed, written to the
/// staged file (once there is one) and gathered into the store's parts as it is
/// taken; readable as a byte stream for the tar unpacker.
struct Tee {
    chunks: tokio::sync::mpsc::Receiver<Bytes>,
    hasher: Sha256,
    file: Option<std::fs::File>,
    parts: Option<(tokio::sync::mpsc::Sender<Bytes>, usize, bytes::BytesMut)>,
    /// Taken from the connection (hashed) but not yet read.
    pending: std::collections::VecDeque<Bytes>,
}

impl Tee {
    fn new(
        chunks: tokio::sync::mpsc::Receiver<Bytes>,
        parts: Option<(tokio::sync::mpsc::Sender<Bytes>, usize)>,
    ) -> Tee {
        Tee {
            chunks,
            hasher: Sha256::new(),
            file: None,
            parts: parts.map(|(tx, size)| (tx, size, bytes::BytesMut::with_capacity(size))),
            pending: Default::default(),
        }
    }

    /// The next chunk off the connection, passed through the hash, the staged
    /// file and the parts; `None` at the end of the body (the last part goes).
    fn take(&mut self) -> std::io::Result<Option<Bytes>> {
        let Some(chunk) = self.chunks.blocking_recv() else {
            if let Some((tx, _, buf)) = self.parts.take()
                && !buf.is_empty()
            {
                let _ = tx.blocking_send(buf.freeze());
            }
            return Ok(None);
        };
        self.hasher.update(&chunk);
        if let Some(f) = &mut self.file {
            f.write_all(&chunk)?;
        }
        if let Some((tx, size, buf)) = &mut self.parts {
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                let n = rest.len().min(*size - buf.len());
                buf.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
                if buf.len() == *size {
                    let full = std::mem::replace(buf, bytes::BytesMut::with_capacity(*size)).freeze();
                    if tx.blocking_send(full).is_err() {
                        // The store writer is gone (it failed): no more parts.
                        self.parts = None;
                        break;
                    }
                }
            }
        }
        Ok(Some(chunk))
    }

    /// Take the whole body. A tar bundle bound for a store that takes it while it
    /// arrives (`unpack`) is unpacked on the way and not staged; anything else is
    /// staged at `staged`.
    #[allow(clippy::disallowed_methods, reason = "runs on a blocking thread")]
    fn sink(mut self, staged: &Path, unpack: Option<(&Path, &zoo_formats::Limits)>) -> Result<Sunk> {
        let mut head = 0;
        while head < 512 {
            match self.take()? {
                Some(c) => {
                    head += c.len();
                    self.pending.push_back(c);
                }
                None => break,
            }
        }
        let first: Vec<u8> = self.pending.iter().flat_map(|c| c.iter().copied()).take(512).collect();
        let tar = zoo_formats::sniff(&first) == zoo_formats::Sniffed::Tar;
        let (staged, extracted) = match unpack {
            Some((dir, limits)) if tar => {
                let extracted = zoo_formats::bundle::extract_tar_from(&mut self, dir, limits);
                if extracted.is_err() {
                    // Refused: the store gets no more of it; the rest is read so
                    // that the client hears why.
                    self.parts = None;
                }
                (None, Some(extracted))
            }
            _ => {
                let mut f = std::fs::File::create(staged)?;
                for c in self.pending.drain(..) {
                    f.write_all(&c)?;
                }
                self.file = Some(f);
                (Some(staged.to_path_buf()), None)
            }
        };
        while self.take()?.is_some() {}
        Ok(Sunk { sha256: hex::encode(self.hasher.finalize()), staged, extracted })
    }
}

impl std::io::Read for Tee {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if let Some(front) = self.pending.front_mut() {
                let n = front.len().min(buf.len());
                buf[..n].copy_from_slice(&front[..n]);
                bytes::Buf::advance(front, n);
                if front.is_empty() {
                    self.pending.pop_front();
                }
                return Ok(n);
            }
            match self.take()? {
                Some(c) => self.pending.push_back(c),
                None => return Ok(0),
            }
        }
    }
}

fn too_large(size: u64, limit: u64) -> Error {
    Error::PayloadTooLarge(format!(
        "the upload is larger than the limit of {limit} bytes (got at least {size}); raise ZOO_MAX_UPLOAD_BYTES on the server"
    ))
}
