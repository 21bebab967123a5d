//! S3 (and S3-compatible) object store: `s3://bucket/prefix`, path-style addressing,
//! multipart uploads streamed from the staged file, ranged streamed downloads.

use std::path::Path;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_util::io::ReaderStream;

use super::{Object, ObjectStore, Range, StorageKey};
use crate::error::{Error, Result};

/// Parts of a multipart upload (S3 allows 5 MiB .. 5 GiB, at most 10 000 parts).
const PART_SIZE: u64 = 16 * 1024 * 1024;

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

    async fn multipart(&self, key: &str, path: &Path, size: u64) -> Result<()> {
        let create = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| store_error("create multipart upload", e))?;
        let upload_id = create.upload_id().ok_or_else(|| Error::Internal("multipart upload without an id".into()))?;
        let result = async {
            let mut parts = Vec::new();
            let mut offset = 0u64;
            let mut number = 1i32;
            while offset < size {
                let len = PART_SIZE.min(size - offset);
                let body = ByteStream::read_from()
                    .path(path)
                    .offset(offset)
                    .length(Length::Exact(len))
                    .build()
                    .await
                    .map_err(|e| Error::Internal(format!("read staged upload: {e}")))?;
                let part = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .part_number(number)
                    .content_length(len as i64)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| store_error("upload part", e))?;
                parts.push(
                    CompletedPart::builder().part_number(number).set_e_tag(part.e_tag().map(str::to_string)).build(),
                );
                offset += len;
                number += 1;
            }
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
                .send()
                .await
                .map_err(|e| store_error("complete multipart upload", e))?;
            Ok(())
        }
        .await;
        if result.is_err() {
            let _ =
                self.client.abort_multipart_upload().bucket(&self.bucket).key(key).upload_id(upload_id).send().await;
        }
        result
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
        if size > PART_SIZE {
            return self.multipart(&k, path, size).await;
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
