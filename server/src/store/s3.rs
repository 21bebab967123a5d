//! S3 (and S3-compatible) object store: `s3://bucket/prefix`, path-style addressing,
//! multipart uploads streamed from the staged file, ranged streamed downloads.

use std::path::Path;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, SdkBody};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::io::ReaderStream;

use super::{BlobWriter, Object, ObjectStore, Range, StorageKey};
use crate::error::{Error, Result};

pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
}

/// `s3://bucket/prefix` -> (bucket, prefix without slashes at either end).
pub fn parse_url(url: &str) -> anyhow::Result<(String, String)> {
    let rest = url.strip_prefix("s3://").ok_or_else(|| anyhow::anyhow!("not an s3:// URL: {url}"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        anyhow::bail!("the store URL '{url}' names no bucket");
    }
    Ok((bucket.to_string(), prefix.trim_matches('/').to_string()))
}

fn describe<E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(e: &SdkError<E, R>) -> String {
    match e {
        SdkError::ServiceError(s) => {
            let err = s.err();
            format!("{}: {}", err.code().unwrap_or("error"), err.message().unwrap_or(""))
        }
        SdkError::DispatchFailure(d) => format!("cannot connect: {d:?}"),
        SdkError::TimeoutError(_) => "timed out".to_string(),
        other => format!("{other:?}"),
    }
}

/// Map an SDK error: unreachable or missing bucket -> 503, anything else -> 500.
fn store_error<E: ProvideErrorMetadata + std::fmt::Debug>(what: &str, e: SdkError<E, HttpResponse>) -> Error {
    let text = describe(&e);
    match &e {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            Error::Unavailable(format!("the object store is unreachable ({what}): {text}"))
        }
        SdkError::ServiceError(s) if s.err().code() == Some("NoSuchBucket") => {
            Error::Unavailable(format!("the object store bucket is missing ({what}): {text}"))
        }
        SdkError::ServiceError(s) if s.raw().status().as_u16() >= 500 => {
            Error::Unavailable(format!("the object store failed ({what}): {text}"))
        }
        _ => Error::Internal(format!("object store ({what}): {text}")),
    }
}

fn is_not_found<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> bool {
    match e {
        // A missing bucket is an outage (503), not a missing object.
        SdkError::ServiceError(s) if s.err().code() == Some("NoSuchBucket") => false,
        SdkError::ServiceError(s) => {
            matches!(s.err().code(), Some("NoSuchKey" | "NotFound")) || s.raw().status().as_u16() == 404
        }
        _ => false,
    }
}

/// HEAD bucket says the bucket does not exist.
fn bucket_missing<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> bool {
    match e {
        SdkError::ServiceError(s) => s.err().code() == Some("NoSuchBucket") || s.raw().status().as_u16() == 404,
        _ => false,
    }
}

impl S3Store {
    /// Connect with the standard AWS environment (`AWS_ENDPOINT_URL`, `AWS_REGION`,
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, ...). The bucket must exist
    /// unless `create_bucket` is set.
    pub async fn open(url: &str, create_bucket: bool) -> anyhow::Result<S3Store> {
        let (bucket, prefix) = parse_url(url)?;
        let sdk = aws_config::load_from_env().await;
        let conf = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            // Plain Content-Length uploads: S3-compatible servers do not all take
            // streaming checksum trailers.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        let client = Client::from_conf(conf);
        let store = S3Store { client, bucket, prefix };
        match store.client.head_bucket().bucket(&store.bucket).send().await {
            Ok(_) => {}
            Err(e) if bucket_missing(&e) && create_bucket => {
                store
                    .client
                    .create_bucket()
                    .bucket(&store.bucket)
                    .send()
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot create bucket '{}': {}", store.bucket, describe(&e)))?;
                tracing::info!(bucket = %store.bucket, "created the bucket");
            }
            Err(e) if bucket_missing(&e) => {
                anyhow::bail!("bucket '{}' does not exist: create it, or start zoo with --create-bucket", store.bucket)
            }
            Err(e) => anyhow::bail!("cannot reach bucket '{}': {}", store.bucket, describe(&e)),
        }
        Ok(store)
    }

    fn key(&self, key: &StorageKey) -> String {
        if self.prefix.is_empty() { key.path() } else { format!("{}/{}", self.prefix, key.path()) }
    }

    fn blob_prefix(&self) -> String {
        self.key(&StorageKey::blob(""))
    }

    /// A multipart upload to `key` (the full object key).
    async fn writer(&self, key: String, size_hint: Option<u64>) -> Result<S3BlobWriter> {
        let create = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| store_error("create multipart upload", e))?;
        let upload_id =
            create.upload_id().ok_or_else(|| Error::Internal("multipart upload without an id".into()))?.to_string();
        Ok(S3BlobWriter {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key,
            upload_id,
            part_size: part_size(size_hint),
            next: 1,
            in_flight: tokio::task::JoinSet::new(),
            done: Vec::new(),
            failed: false,
            settled: false,
        })
    }

    /// Upload a staged file in parts, several at a time, each read into memory
    /// just before it goes (at most `PARTS_IN_FLIGHT` parts are held).
    async fn multipart(&self, key: String, path: &Path, size: u64) -> Result<()> {
        let mut w = self.writer(key, Some(size)).await?;
        let sent = async {
            let mut file = tokio::fs::File::open(path).await?;
            let mut left = size;
            while left > 0 {
                let len = (w.part_size as u64).min(left) as usize;
                let mut buf = vec![0u8; len];
                file.read_exact(&mut buf).await?;
                w.send(Bytes::from(buf)).await?;
                left -= len as u64;
            }
            Ok::<_, Error>(())
        }
        .await;
        match sent {
            Ok(()) => Box::new(w).complete().await,
            Err(e) => {
                Box::new(w).abort().await;
                Err(e)
            }
        }
    }
}

/// Parts of a multipart upload: S3 takes 5 MiB .. 5 GiB per part and at most
/// 10 000 parts, so a larger object gets larger parts.
const PART_SIZE: usize = 8 << 20;
const MAX_PARTS: u64 = 10_000;
/// Parts sent at once: the store's write path works on several while the upload
/// is still arriving. Memory held: at most this many parts plus the one filling.
const PARTS_IN_FLIGHT: usize = 2;
/// How long an abort waits for the parts in flight to finish.
const ABORT_DRAIN: std::time::Duration = std::time::Duration::from_secs(30);

fn part_size(size_hint: Option<u64>) -> usize {
    let needed = size_hint.map_or(0, |s| s.div_ceil(MAX_PARTS).next_multiple_of(1 << 20));
    PART_SIZE.max(usize::try_from(needed).unwrap_or(usize::MAX))
}

/// A part's bytes as the SDK sends them: a streaming body of slices of the part
/// (no copy), retryable. A streaming body goes out unsigned (UNSIGNED-PAYLOAD, as
/// the SDK sends files) instead of with a SHA-256 of every part that both zoo and
/// the store would compute; the part's CRC32C (`part_crc32c`), which the store
/// checks, stands for its integrity on the way.
fn part_body(bytes: Bytes) -> ByteStream {
    ByteStream::new(SdkBody::retryable(move || SdkBody::from_body_1_x(PartBody { rest: bytes.clone() })))
}

/// The base64 CRC32C of a part, as S3's `x-amz-checksum-crc32c` takes it.
fn part_crc32c(bytes: &[u8]) -> String {
    use base64::Engine as _;
    let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, bytes) as u32;
    base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
}

/// Slices handed to the HTTP client at a time.
const PART_FRAME: usize = 256 << 10;

struct PartBody {
    rest: Bytes,
}

impl http_body::Body for PartBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<std::result::Result<http_body::Frame<Bytes>, Self::Error>>> {
        if self.rest.is_empty() {
            return std::task::Poll::Ready(None);
        }
        let n = self.rest.len().min(PART_FRAME);
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(self.rest.split_to(n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.rest.len() as u64)
    }
}

/// One multipart upload in progress (see [`BlobWriter`]).
struct S3BlobWriter {
    client: Client,
    bucket: String,
    key: String,
    upload_id: String,
    part_size: usize,
    next: i32,
    in_flight: tokio::task::JoinSet<Result<CompletedPart>>,
    done: Vec<CompletedPart>,
    failed: bool,
    /// Completed or aborted; a writer dropped before either (its request went
    /// away: the client hung up) aborts itself in the background.
    settled: bool,
}

impl Drop for S3BlobWriter {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let in_flight = std::mem::take(&mut self.in_flight);
        let (client, bucket, key, id) =
            (self.client.clone(), self.bucket.clone(), self.key.clone(), self.upload_id.clone());
        runtime.spawn(give_up(client, bucket, key, id, in_flight));
    }
}

/// Abort a multipart upload. Parts already on their way are let finish first: a
/// part request cut off after its body went out can still land after the abort
/// and leave its part behind (S3 says as much). One that takes too long is cut
/// off; the sweeper takes what that leaves.
async fn give_up(
    client: Client,
    bucket: String,
    key: String,
    upload_id: String,
    mut in_flight: tokio::task::JoinSet<Result<CompletedPart>>,
) {
    let drained = tokio::time::timeout(ABORT_DRAIN, async { while in_flight.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        in_flight.abort_all();
        while in_flight.join_next().await.is_some() {}
    }
    let aborted = client.abort_multipart_upload().bucket(&bucket).key(&key).upload_id(&upload_id).send().await;
    if let Err(e) = aborted {
        tracing::warn!(key = %key, error = %describe(&e), "could not abort a multipart upload; the sweeper will");
    }
}

impl S3BlobWriter {
    /// Wait for one part in flight to finish.
    async fn reap(&mut self) -> Result<()> {
        let Some(joined) = self.in_flight.join_next().await else { return Ok(()) };
        match joined.map_err(|e| Error::Internal(format!("upload part: {e}"))).and_then(|r| r) {
            Ok(part) => {
                self.done.push(part);
                Ok(())
            }
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }

    /// Wait until fewer than `PARTS_IN_FLIGHT` parts are in flight.
    async fn free_slot(&mut self) -> Result<()> {
        while self.in_flight.len() >= PARTS_IN_FLIGHT {
            self.reap().await?;
        }
        Ok(())
    }

    async fn send(&mut self, bytes: Bytes) -> Result<()> {
        if self.failed {
            return Err(Error::Internal("a multipart upload takes no parts after an error".into()));
        }
        self.free_slot().await?;
        if self.next as u64 > MAX_PARTS {
            self.failed = true;
            return Err(Error::PayloadTooLarge(format!(
                "the upload is larger than the object store takes in {MAX_PARTS} parts of {} bytes",
                self.part_size
            )));
        }
        let number = self.next;
        self.next += 1;
        let (client, bucket, key, id) =
            (self.client.clone(), self.bucket.clone(), self.key.clone(), self.upload_id.clone());
        self.in_flight.spawn(async move {
            let len = bytes.len() as i64;
            let crc32c = part_crc32c(&bytes);
            let part = client
                .upload_part()
                .bucket(bucket)
                .key(key)
                .upload_id(id)
                .part_number(number)
                .content_length(len)
                .checksum_crc32_c(crc32c)
                .body(part_body(bytes))
                .send()
                .await
                .map_err(|e| store_error("upload part", e))?;
            Ok(CompletedPart::builder().part_number(number).set_e_tag(part.e_tag().map(str::to_string)).build())
        });
        Ok(())
    }

    async fn finish(&mut self) -> Result<()> {
        while !self.in_flight.is_empty() {
            self.reap().await?;
        }
        if self.failed {
            return Err(Error::Internal("a multipart upload cannot complete after an error".into()));
        }
        let mut parts = std::mem::take(&mut self.done);
        parts.sort_by_key(|p| p.part_number());
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map_err(|e| store_error("complete multipart upload", e))?;
        Ok(())
    }
}

#[async_trait]
impl BlobWriter for S3BlobWriter {
    fn part_size(&self) -> usize {
        self.part_size
    }

    async fn ready(&mut self) -> Result<()> {
        self.free_slot().await
    }

    async fn part(&mut self, bytes: Bytes) -> Result<()> {
        self.send(bytes).await
    }

    async fn complete(mut self: Box<Self>) -> Result<()> {
        let result = self.finish().await;
        match result {
            Ok(()) => self.settled = true,
            Err(_) => self.abort().await,
        }
        result
    }

    async fn abort(mut self: Box<Self>) {
        self.settled = true;
        let in_flight = std::mem::take(&mut self.in_flight);
        give_up(self.client.clone(), self.bucket.clone(), self.key.clone(), self.upload_id.clone(), in_flight).await;
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn ping(&self) -> Result<()> {
        self.client.head_bucket().bucket(&self.bucket).send().await.map_err(|e| store_error("head bucket", e))?;
        Ok(())
    }

    async fn put_file(&self, key: &StorageKey, path: &Path) -> Result<()> {
        if self.exists(key).await? {
            return Ok(());
        }
        let k = self.key(key);
        let size = tokio::fs::metadata(path).await?.len();
        if size > PART_SIZE as u64 {
            return self.multipart(k, path, size).await;
        }
        let body =
            ByteStream::from_path(path).await.map_err(|e| Error::Internal(format!("read staged upload: {e}")))?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&k)
            .content_length(size as i64)
            .body(body)
            .send()
            .await
            .map_err(|e| store_error("put object", e))?;
        Ok(())
    }

    async fn exists(&self, key: &StorageKey) -> Result<bool> {
        Ok(self.size(key).await?.is_some())
    }

    async fn size(&self, key: &StorageKey) -> Result<Option<u64>> {
        match self.client.head_object().bucket(&self.bucket).key(self.key(key)).send().await {
            Ok(h) => Ok(Some(h.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(store_error("head object", e)),
        }
    }

    async fn get(&self, key: &StorageKey, range: Option<Range>) -> Result<Option<Object>> {
        let mut req = self.client.get_object().bucket(&self.bucket).key(self.key(key));
        if let Some(r) = range {
            req = req.range(format!("bytes={}-{}", r.start, r.end.saturating_sub(1)));
        }
        let out = match req.send().await {
            Ok(o) => o,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(store_error("get object", e)),
        };
        let size = match (range, out.content_range()) {
            (Some(_), Some(cr)) => cr.rsplit('/').next().and_then(|t| t.parse().ok()).unwrap_or(0),
            _ => out.content_length().unwrap_or(0).max(0) as u64,
        };
        let body = ReaderStream::with_capacity(out.body.into_async_read(), 256 * 1024).boxed();
        Ok(Some(Object { size, body }))
    }

    async fn get_to_file(&self, key: &StorageKey, dest: &Path) -> Result<bool> {
        let Some(mut obj) = self.get(key, None).await? else { return Ok(false) };
        let mut file = tokio::fs::File::create(dest).await?;
        while let Some(chunk) = obj.body.next().await {
            let chunk = chunk.map_err(|e| Error::Unavailable(format!("the object store broke off a download: {e}")))?;
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        file.sync_all().await?;
        Ok(true)
    }

    async fn delete(&self, key: &StorageKey) -> Result<()> {
        match self.client.delete_object().bucket(&self.bucket).key(self.key(key)).send().await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(store_error("delete object", e)),
        }
    }

    async fn abort_stale_uploads(&self, before: chrono::DateTime<chrono::Utc>) -> Result<usize> {
        let prefix = self.blob_prefix();
        let mut aborted = 0;
        let (mut key_marker, mut id_marker) = (None::<String>, None::<String>);
        loop {
            let page = match self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(&prefix)
                .set_key_marker(key_marker.clone())
                .set_upload_id_marker(id_marker.clone())
                .send()
                .await
            {
                Ok(p) => p,
                // Some S3-compatible servers do not list uploads; they need a
                // lifecycle rule (AbortIncompleteMultipartUpload) instead.
                Err(SdkError::ServiceError(s)) if s.err().code() == Some("NotImplemented") => return Ok(0),
                Err(e) => return Err(store_error("list multipart uploads", e)),
            };
            for u in page.uploads() {
                let stale = u
                    .initiated()
                    .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), 0))
                    .is_some_and(|t| t < before);
                if let (true, Some(key), Some(id)) = (stale, u.key(), u.upload_id()) {
                    self.client
                        .abort_multipart_upload()
                        .bucket(&self.bucket)
                        .key(key)
                        .upload_id(id)
                        .send()
                        .await
                        .map_err(|e| store_error("abort multipart upload", e))?;
                    aborted += 1;
                }
            }
            if page.is_truncated() != Some(true) {
                return Ok(aborted);
            }
            key_marker = page.next_key_marker().map(str::to_string);
            id_marker = page.next_upload_id_marker().map(str::to_string);
        }
    }

    async fn begin_blob(&self, key: &StorageKey, size_hint: Option<u64>) -> Result<Option<Box<dyn BlobWriter>>> {
        Ok(Some(Box::new(self.writer(self.key(key), size_hint).await?)))
    }

    async fn list_blobs(&self) -> Result<Vec<String>> {
        let prefix = self.blob_prefix();
        let mut pages = self.client.list_objects_v2().bucket(&self.bucket).prefix(&prefix).into_paginator().send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| store_error("list objects", e))?;
            for o in page.contents() {
                if let Some(name) = o.key().and_then(|k| k.strip_prefix(&prefix))
                    && super::is_sha256_hex(name)
                {
                    out.push(name.to_string());
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls() {
        assert_eq!(super::parse_url("s3://b/p/q/").unwrap(), ("b".into(), "p/q".into()));
        assert_eq!(super::parse_url("s3://b").unwrap(), ("b".into(), "".into()));
        assert!(super::parse_url("s3:///x").is_err());
    }
}
