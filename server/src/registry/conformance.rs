//! Behaviour every `Registry` implementation must have. Each backend's tests call
//! these functions with a fresh, empty registry.

use chrono::{TimeDelta, Utc};
use zoo_api::{Format, Signature, Task, VersionStatus};

use super::{ModelFilter, ReadyVersion, Registry};
use crate::error::Error;

fn ready(sha: &str) -> ReadyVersion {
    ReadyVersion {
        format: Format::Onnx,
        sha256: sha.to_string(),
        size: 10,
        task: Task::Tensor,
        runtime: Some("tract".into()),
        servable: true,
        reason: None,
        signature: Signature {
            format: Format::Onnx,
            bundle: false,
            inputs: vec![],
            outputs: vec![],
            onnx: None,
            text: None,
            files: vec![],
        },
        labels: vec![],
        warmup_ms: Some(1.5),
    }
}

/// Uploading versions are invisible; finishing makes them visible; versions
/// auto-increment; a taken version is refused.
pub async fn version_lifecycle(r: &dyn Registry) {
    let v = r.begin_version("m", None, Some("desc"), "k1").await.unwrap();
    assert_eq!(v, "1");
    assert!(r.get_version("m", "1").await.unwrap().is_none(), "an uploading version must be invisible");
    assert!(r.list_versions("m").await.unwrap().is_empty());
    assert!(matches!(r.begin_version("m", Some("1"), None, "k1").await, Err(Error::VersionExists(_))));
    r.attach_blob("m", "1", "aa").await.unwrap();
    assert!(r.blob_referenced("aa").await.unwrap());
    let rec = r.finish_version("m", "1", &ready("aa")).await.unwrap();
    assert_eq!(rec.status, VersionStatus::Ready);
    assert_eq!(rec.warmup_ms, Some(1.5));
    assert_eq!(r.begin_version("m", None, None, "k1").await.unwrap(), "2");
    r.abort_version("m", "2").await.unwrap();
    assert_eq!(r.begin_version("m", Some("1.5.0"), None, "k1").await.unwrap(), "1.5.0");
    r.finish_version("m", "1.5.0", &ready("bb")).await.unwrap();
    assert_eq!(r.begin_version("m", None, None, "k1").await.unwrap(), "2", "non-integer versions do not count");
    r.abort_version("m", "2").await.unwrap();
    let versions = r.list_versions("m").await.unwrap();
    assert_eq!(versions.iter().map(|v| v.version.as_str()).collect::<Vec<_>>(), ["1.5.0", "1"]);
    assert_eq!(r.default_version("m").await.unwrap().unwrap().version, "1.5.0", "the newest by upload order");
    assert!(r.default_version("nope").await.unwrap().is_none());
    let m = r.get_model("m").await.unwrap().unwrap();
    assert_eq!(m.description, "desc");
    assert_eq!(m.version_count, 2);
    assert_eq!(m.latest.unwrap().version, "1.5.0");
}

/// A failed first upload leaves no model behind; deleting returns what went.
pub async fn abort_and_delete(r: &dyn Registry) {
    r.begin_version("ghost", Some("1"), None, "k").await.unwrap();
    r.attach_blob("ghost", "1", "cc").await.unwrap();
    assert_eq!(r.abort_version("ghost", "1").await.unwrap().as_deref(), Some("cc"));
    assert!(r.get_model("ghost").await.unwrap().is_none());
    assert!(!r.blob_referenced("cc").await.unwrap());

    r.begin_version("d", Some("1"), None, "k").await.unwrap();
    r.finish_version("d", "1", &ready("dd")).await.unwrap();
    assert_eq!(r.delete_version("d", "1").await.unwrap().unwrap().sha256, "dd");
    assert!(r.delete_version("d", "1").await.unwrap().is_none());
    r.begin_version("d", Some("2"), None, "k").await.unwrap();
    r.finish_version("d", "2", &ready("ee")).await.unwrap();
    assert_eq!(r.delete_model("d").await.unwrap().unwrap().len(), 1);
    assert!(r.delete_model("d").await.unwrap().is_none());
}

/// Stale uploads are swept, fresh ones kept.
pub async fn sweep(r: &dyn Registry) {
    r.begin_version("s", Some("1"), None, "k").await.unwrap();
    r.attach_blob("s", "1", "ff").await.unwrap();
    assert!(r.sweep_uploading(Utc::now() - TimeDelta::hours(1)).await.unwrap().is_empty());
    assert_eq!(r.sweep_uploading(Utc::now() + TimeDelta::seconds(1)).await.unwrap(), vec!["ff".to_string()]);
    assert!(r.get_model("s").await.unwrap().is_none());
}

/// Listing pages by name and filters.
pub async fn listing(r: &dyn Registry) {
    for name in ["a", "b", "c"] {
        r.begin_version(name, Some("1"), None, "k").await.unwrap();
        r.finish_version(name, "1", &ready(name)).await.unwrap();
    }
    let page = r.list_models(&ModelFilter { limit: 2, ..Default::default() }).await.unwrap();
    assert_eq!(page.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    let next = r.list_models(&ModelFilter { limit: 2, after: Some("b".into()), ..Default::default() }).await.unwrap();
    assert_eq!(next.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), ["c"]);
    let q = r.list_models(&ModelFilter { limit: 10, q: Some("b".into()), ..Default::default() }).await.unwrap();
    assert_eq!(q.len(), 1);
    let none = r
        .list_models(&ModelFilter { limit: 10, task: Some(Task::TextClassification), ..Default::default() })
        .await
        .unwrap();
    assert!(none.is_empty());
    let refs = r.referenced_blobs().await.unwrap();
    assert!(refs.contains("a") && refs.contains("c"));
}

mod sqlite {
    use crate::registry::sqlite::SqliteRegistry;

    #[tokio::test]
    async fn version_lifecycle() {
        super::version_lifecycle(&SqliteRegistry::memory().await).await;
    }

    #[tokio::test]
    async fn abort_and_delete() {
        super::abort_and_delete(&SqliteRegistry::memory().await).await;
    }

    #[tokio::test]
    async fn sweep() {
        super::sweep(&SqliteRegistry::memory().await).await;
    }

    #[tokio::test]
    async fn listing() {
        super::listing(&SqliteRegistry::memory().await).await;
    }
}
