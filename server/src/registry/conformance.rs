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
        signature: Signature::empty(Format::Onnx, false),
        labels: vec![],
        warmup_ms: Some(1.5),
        serving: zoo_api::ServingConfig { max_batch_size: Some(8), ..Default::default() },
        alias: None,
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
    assert_eq!(rec.serving.max_batch_size, Some(8));
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

/// Alias moves that read before they write, racing other writers: every one
/// succeeds (they wait for each other instead of failing with a lock error).
pub async fn concurrent_alias_moves(r: std::sync::Arc<dyn Registry>) {
    for v in ["1", "2"] {
        r.begin_version("busy", Some(v), None, "k").await.unwrap();
        r.attach_blob("busy", v, &v.repeat(64)).await.unwrap();
        r.finish_version("busy", v, &ready(&v.repeat(64))).await.unwrap();
    }
    let mut tasks = Vec::new();
    for t in 0..6 {
        let r = r.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                if t % 2 == 0 {
                    let v = if (t + i) % 2 == 0 { "1" } else { "2" };
                    r.set_alias("busy", &format!("a{t}"), v, "k").await.map(|_| ())?;
                } else {
                    let v = r.begin_version("other", Some(&format!("{t}-{i}")), None, "k").await?;
                    r.abort_version("other", &v).await.map(|_| ())?;
                }
            }
            Ok::<(), Error>(())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
}

/// Concurrent uploads of the same version: exactly one wins, the others get 409.
pub async fn concurrent_same_version(r: std::sync::Arc<dyn Registry>) {
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let r = r.clone();
            tokio::spawn(async move { r.begin_version("race", Some("1"), None, &format!("k{i}")).await })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(v) => {
                assert_eq!(v, "1");
                won += 1;
            }
            Err(Error::VersionExists(_)) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(won, 1, "exactly one concurrent upload reserves the version");
    // Automatic numbering under concurrency hands out distinct versions.
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let r = r.clone();
            tokio::spawn(async move { r.begin_version("auto", None, None, "k").await })
        })
        .collect();
    let mut got = Vec::new();
    for t in tasks {
        if let Ok(v) = t.await.unwrap() {
            got.push(v);
        }
    }
    got.sort();
    got.dedup();
    assert!(!got.is_empty());
    assert_eq!(got.len(), got.iter().collect::<std::collections::HashSet<_>>().len());
}

/// Aliases: set, move, remove, history; only ready versions; gone with their version.
pub async fn aliases(r: &dyn Registry) {
    for v in ["1", "2"] {
        r.begin_version("al", Some(v), None, "k").await.unwrap();
        r.finish_version("al", v, &ready(v)).await.unwrap();
    }
    assert_eq!(r.default_version("al").await.unwrap().unwrap().version, "2");
    assert_eq!(r.set_alias("al", "production", "1", "alice").await.unwrap(), None);
    assert_eq!(r.default_version("al").await.unwrap().unwrap().version, "1", "production wins over the newest");
    assert_eq!(r.get_alias("al", "production").await.unwrap().as_deref(), Some("1"));
    assert_eq!(r.set_alias("al", "production", "2", "bob").await.unwrap().as_deref(), Some("1"));
    assert_eq!(r.set_alias("al", "production", "2", "bob").await.unwrap().as_deref(), Some("2"), "a no-op move");
    r.set_alias("al", "staging", "1", "bob").await.unwrap();
    assert_eq!(
        r.aliases("al").await.unwrap().into_iter().collect::<Vec<_>>(),
        [("production".to_string(), "2".to_string()), ("staging".to_string(), "1".to_string())]
    );
    assert!(matches!(r.set_alias("al", "production", "9", "bob").await, Err(Error::VersionNotFound { .. })));
    r.begin_version("al", Some("3"), None, "k").await.unwrap();
    assert!(
        matches!(r.set_alias("al", "production", "3", "bob").await, Err(Error::VersionNotFound { .. })),
        "an uploading version cannot take an alias"
    );
    assert_eq!(r.delete_alias("al", "staging", "carol").await.unwrap().as_deref(), Some("1"));
    assert_eq!(r.delete_alias("al", "staging", "carol").await.unwrap(), None);
    let h = r.alias_history("al").await.unwrap();
    let moves: Vec<_> =
        h.iter().map(|c| (c.alias.as_str(), c.from.as_deref(), c.to.as_deref(), c.by.as_str())).collect();
    assert_eq!(
        moves,
        [
            ("staging", Some("1"), None, "carol"),
            ("staging", None, Some("1"), "bob"),
            ("production", Some("1"), Some("2"), "bob"),
            ("production", None, Some("1"), "alice"),
        ]
    );
    // The version an alias points at cannot be deleted until the alias moves.
    assert!(matches!(r.delete_version("al", "2").await, Err(Error::VersionInUse { .. })));
    assert!(r.get_version("al", "2").await.unwrap().is_some());
    r.delete_alias("al", "production", "carol").await.unwrap();
    r.delete_version("al", "2").await.unwrap();
    assert_eq!(r.default_version("al").await.unwrap().unwrap().version, "1");
    // Finishing an upload can move an alias in the same step.
    r.abort_version("al", "3").await.unwrap();
    r.begin_version("al", Some("4"), None, "dave").await.unwrap();
    let mut with_alias = ready("4");
    with_alias.alias = Some("production".into());
    r.finish_version("al", "4", &with_alias).await.unwrap();
    assert_eq!(r.get_alias("al", "production").await.unwrap().as_deref(), Some("4"));
    let last = &r.alias_history("al").await.unwrap()[0];
    assert_eq!((last.from.as_deref(), last.to.as_deref(), last.by.as_str()), (None, Some("4"), "dave"));
    // Deleting the model takes its aliases with it.
    r.delete_model("al").await.unwrap();
    assert_eq!(r.get_alias("al", "production").await.unwrap(), None);
}

/// A key record as the key service makes them (the registry stores what it is given).
fn key(name: &str, scope: zoo_api::Scope, models: &[&str]) -> super::KeyRecord {
    let id = format!("{:012x}", rand::random::<u64>() >> 16);
    super::KeyRecord {
        hash: format!("{:064x}", rand::random::<u128>()),
        id,
        name: name.to_string(),
        scopes: vec![scope],
        models: models.iter().map(|m| m.to_string()).collect(),
        created_at: Utc::now(),
        expires_at: None,
        last_used_at: None,
        revoked_at: None,
    }
}

/// Keys: create, read, list, revoke, touch.
pub async fn keys(r: &dyn Registry) {
    let k = key("ci", zoo_api::Scope::Predict, &["text-*"]);
    r.create_key(&k).await.unwrap();
    assert_eq!(r.count_keys().await.unwrap(), 1);
    let got = r.get_key(&k.id).await.unwrap().unwrap();
    assert_eq!(got.hash, k.hash);
    assert_eq!(got.models, ["text-*"]);
    r.touch_key(&k.id, Utc::now()).await.unwrap();
    assert!(r.get_key(&k.id).await.unwrap().unwrap().last_used_at.is_some());
    assert_eq!(r.revoke_key(&k.id, Utc::now(), true).await.unwrap(), super::Revoked::Done);
    assert_eq!(r.revoke_key("nope", Utc::now(), true).await.unwrap(), super::Revoked::NotFound);
    assert!(r.list_keys().await.unwrap()[0].revoked_at.is_some());

    // The last active admin key stays, even when two revocations race.
    let a = key("a", zoo_api::Scope::Admin, &[]);
    let b = key("b", zoo_api::Scope::Admin, &[]);
    let limited = key("l", zoo_api::Scope::Admin, &["text-*"]);
    for k in [&a, &b, &limited] {
        r.create_key(k).await.unwrap();
    }
    let now = Utc::now();
    let (ra, rb) = tokio::join!(r.revoke_key(&a.id, now, true), r.revoke_key(&b.id, now, true));
    let mut outcomes = [ra.unwrap(), rb.unwrap()];
    outcomes.sort_by_key(|o| format!("{o:?}"));
    assert_eq!(outcomes, [super::Revoked::Done, super::Revoked::LastAdmin]);
    let active: Vec<_> = r.list_keys().await.unwrap().into_iter().filter(|k| k.full_admin_at(Utc::now())).collect();
    assert_eq!(active.len(), 1, "one admin key for every model stays active");
    // Without the guard (an admin key in the environment remains), it goes.
    assert_eq!(r.revoke_key(&active[0].id, Utc::now(), false).await.unwrap(), super::Revoked::Done);
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

    #[tokio::test]
    async fn keys() {
        super::keys(&SqliteRegistry::memory().await).await;
    }

    #[tokio::test]
    async fn aliases() {
        super::aliases(&SqliteRegistry::memory().await).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn concurrent_alias_moves() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("zoo.db").display());
        let r = SqliteRegistry::open(&url).await.unwrap();
        super::concurrent_alias_moves(std::sync::Arc::new(r)).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn concurrent_same_version() {
        // A file database: several connections, like the server.
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("zoo.db").display());
        let r = SqliteRegistry::open(&url).await.unwrap();
        super::concurrent_same_version(std::sync::Arc::new(r)).await;
    }
}

/// Each test gets its own database next to `ZOO_TEST_DATABASE_URL`.
mod postgres {
    use crate::registry::postgres::{PgRegistry, scratch_database};

    async fn fresh() -> PgRegistry {
        let base = std::env::var("ZOO_TEST_DATABASE_URL").expect(
            "ZOO_TEST_DATABASE_URL is not set: the Postgres registry tests need a server (scripts/test starts one)",
        );
        let url = scratch_database(&base).await.expect("create a scratch database");
        PgRegistry::open(&url).await.expect("open the Postgres registry")
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn version_lifecycle() {
        super::version_lifecycle(&fresh().await).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn abort_and_delete() {
        super::abort_and_delete(&fresh().await).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn sweep() {
        super::sweep(&fresh().await).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn listing() {
        super::listing(&fresh().await).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn keys() {
        super::keys(&fresh().await).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn aliases() {
        super::aliases(&fresh().await).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn concurrent_same_version() {
        super::concurrent_same_version(std::sync::Arc::new(fresh().await)).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn concurrent_alias_moves() {
        super::concurrent_alias_moves(std::sync::Arc::new(fresh().await)).await;
    }

    async fn next_event(
        rx: &mut tokio::sync::broadcast::Receiver<crate::registry::RegistryEvent>,
    ) -> crate::registry::RegistryEvent {
        tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv()).await.unwrap().unwrap()
    }

    /// Two replicas never store and delete the same blob at once.
    #[tokio::test(flavor = "multi_thread")]
    async fn blob_lock_is_exclusive_across_replicas() {
        use crate::registry::Registry;
        let base = std::env::var("ZOO_TEST_DATABASE_URL").expect("ZOO_TEST_DATABASE_URL");
        let url = scratch_database(&base).await.unwrap();
        let a = PgRegistry::open(&url).await.unwrap();
        let b = std::sync::Arc::new(PgRegistry::open(&url).await.unwrap());
        let sha = "ab".repeat(32);
        let held = a.lock_blob(&sha).await.unwrap();
        let (b2, sha2) = (b.clone(), sha.clone());
        let waiter = tokio::spawn(async move {
            let _lock = b2.lock_blob(&sha2).await.unwrap();
        });
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        assert!(!waiter.is_finished(), "the other replica must wait while the blob is locked");
        let other = tokio::time::timeout(std::time::Duration::from_secs(10), b.lock_blob(&"cd".repeat(32))).await;
        assert!(other.unwrap().is_ok(), "another blob is not blocked");
        drop(held);
        tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
            .await
            .expect("the lock is released when its holder drops it")
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn changes_reach_other_replicas() {
        use crate::registry::{Registry, RegistryEvent};
        let base = std::env::var("ZOO_TEST_DATABASE_URL").expect("ZOO_TEST_DATABASE_URL");
        let url = scratch_database(&base).await.unwrap();
        let a = PgRegistry::open(&url).await.unwrap();
        let b = PgRegistry::open(&url).await.unwrap();
        let mut events = b.events().expect("Postgres reports changes");
        // Give b's listener a moment to subscribe.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        a.begin_version("m", Some("1"), None, "k").await.unwrap();
        a.finish_version("m", "1", &super::ready("aa")).await.unwrap();
        a.set_alias("m", "production", "1", "k").await.unwrap();
        a.delete_alias("m", "production", "k").await.unwrap();
        a.delete_version("m", "1").await.unwrap();
        assert_eq!(
            next_event(&mut events).await,
            RegistryEvent::VersionReady { model: "m".into(), version: "1".into() }
        );
        assert_eq!(
            next_event(&mut events).await,
            RegistryEvent::AliasMoved { model: "m".into(), alias: "production".into(), version: Some("1".into()) }
        );
        assert_eq!(
            next_event(&mut events).await,
            RegistryEvent::AliasMoved { model: "m".into(), alias: "production".into(), version: None }
        );
        assert_eq!(
            next_event(&mut events).await,
            RegistryEvent::VersionRemoved { model: "m".into(), version: "1".into() }
        );
    }
}
