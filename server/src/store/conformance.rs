//! Behaviour every `ObjectStore` must have, run against the filesystem store and a
//! real S3-compatible server.

use futures::TryStreamExt;

use super::{ObjectStore, Range, StorageKey};

async fn read_all(store: &dyn ObjectStore, key: &StorageKey, range: Option<Range>) -> Option<Vec<u8>> {
    let obj = store.get(key, range).await.unwrap()?;
    Some(obj.body.map_ok(|b| b.to_vec()).try_concat().await.unwrap())
}

/// Put, dedupe, size, ranged reads, download to a file, list, delete.
pub async fn round_trip(store: &dyn ObjectStore) {
    let dir = tempfile::tempdir().unwrap();
    store.ping().await.unwrap();
    // Bigger than one multipart part, with a recognisable pattern.
    let data: Vec<u8> = (0..(17 * 1024 * 1024 + 123)).map(|i: u32| (i % 251) as u8).collect();
    let src = dir.path().join("src");
    std::fs::write(&src, &data).unwrap();
    let sha = format!("{:064x}", rand::random::<u128>());
    let key = StorageKey::blob(&sha);
    assert!(!store.exists(&key).await.unwrap());
    assert!(read_all(store, &key, None).await.is_none(), "a missing key reads as None");
    store.put_file(&key, &src).await.unwrap();
    store.put_file(&key, &src).await.unwrap(); // identical content: kept once
    assert_eq!(store.size(&key).await.unwrap(), Some(data.len() as u64));
    assert_eq!(read_all(store, &key, None).await.unwrap(), data);
    let r = Range { start: 5 * 1024 * 1024 - 3, end: 5 * 1024 * 1024 + 10 };
    assert_eq!(read_all(store, &key, Some(r)).await.unwrap(), &data[r.start as usize..r.end as usize]);
    let obj = store.get(&key, Some(r)).await.unwrap().unwrap();
    assert_eq!(obj.size, data.len() as u64, "size is the whole object's, also for a range");
    let dest = dir.path().join("dest");
    assert!(store.get_to_file(&key, &dest).await.unwrap());
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    assert!(store.list_blobs().await.unwrap().contains(&sha));
    store.delete(&key).await.unwrap();
    store.delete(&key).await.unwrap(); // deleting twice is fine
    assert!(!store.exists(&key).await.unwrap());
    assert!(!store.list_blobs().await.unwrap().contains(&sha));
    assert!(!store.get_to_file(&key, &dest.with_extension("2")).await.unwrap());
}

mod fs {
    #[tokio::test]
    async fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::fs::FsStore::open(dir.path()).await.unwrap();
        super::round_trip(&store).await;
    }
}

mod s3 {
    use crate::store::s3::S3Store;

    /// A fresh prefix in the bucket `ZOO_TEST_S3_URL` names.
    pub async fn fresh() -> S3Store {
        let base = std::env::var("ZOO_TEST_S3_URL").expect(
            "ZOO_TEST_S3_URL is not set: the S3 store tests need an S3-compatible server (scripts/test starts one)",
        );
        let url = format!("{}/test-{}", base.trim_end_matches('/'), uuid::Uuid::new_v4().simple());
        S3Store::open(&url, true).await.expect("open the S3 store")
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn round_trip() {
        super::round_trip(&fresh().await).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn missing_bucket_is_a_clear_error() {
        let base = std::env::var("ZOO_TEST_S3_URL").expect("ZOO_TEST_S3_URL");
        let _ = base;
        let err =
            S3Store::open(&format!("s3://zoo-missing-{}", uuid::Uuid::new_v4().simple()), false).await.err().unwrap();
        assert!(err.to_string().contains("--create-bucket"), "{err}");
    }
}
