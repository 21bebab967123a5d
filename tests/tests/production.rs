//! zoo on its production backends: Postgres + a real S3-compatible server,
//! several replicas, crashes and outages.

use std::time::Duration;

use futures::TryStreamExt;
use serde_json::{Value, json};
use zoo_server::store::{ObjectStore, StorageKey};
use zoo_tests::helpers::proc_kib;
use zoo_tests::production::{Backends, Proxy, database_addr, via};
use zoo_tests::{Options, Server, fixtures, max_abs_diff, ok};

fn predict_req(x: &Value) -> zoo_api::PredictRequest {
    zoo_api::PredictRequest { inputs: json!({"x": x}), top_k: None, normalize: None, ..Default::default() }
}

async fn status_code(r: reqwest::Response) -> (u16, String) {
    let st = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    (st, body["error"]["code"].as_str().unwrap_or("").to_string())
}

/// Status and error code of uploading `path` as version 2 of `mlp` with raw HTTP.
async fn upload_status(s: &Server, path: &std::path::Path) -> (u16, String) {
    let body = std::fs::read(path).unwrap();
    let r = s.http().put(s.at("/v1/models/mlp/versions/2")).bearer_auth(&s.admin_key).body(body).send().await.unwrap();
    status_code(r).await
}

#[tokio::test(flavor = "multi_thread")]
async fn deploy_predict_restart_on_postgres_and_s3() {
    let dir = tempfile::tempdir().unwrap();
    let fx = fixtures::tiny_mlp(dir.path());
    let b = Backends::fresh().await;
    let opts = b.options(Options { data_dir: Some(dir.path().join("data")), ..Default::default() });
    let mut s = Server::start_with(opts.clone());
    let info: Value =
        serde_json::from_str(&ok(&s.cli(&["deploy", fx.path.to_str().unwrap(), "--name", "mlp", "-o", "json"])))
            .unwrap();
    let p = s.client(&s.admin_key).predict("mlp", None, &predict_req(&fx.x)).await.unwrap();
    assert!(max_abs_diff(&p.body["outputs"]["y"], &fx.y) < 1e-4);

    // The bytes in the bucket are the upload's.
    let store = b.store().await;
    let sha = info["sha256"].as_str().unwrap();
    let obj = store.get(&StorageKey::blob(sha), None).await.unwrap().expect("the blob is in the bucket");
    let bytes: Vec<u8> = obj.body.map_ok(|b| b.to_vec()).try_concat().await.unwrap();
    assert_eq!(bytes, std::fs::read(&fx.path).unwrap());

    // Restart with an empty local cache: the model comes back from S3.
    assert!(s.stop().success());
    std::fs::remove_dir_all(dir.path().join("data")).unwrap();
    let s2 = Server::start_with(Options {
        env: opts
            .env
            .iter()
            .cloned()
            .chain([("ZOO_ADMIN_KEY".to_string(), "restart-admin-key-0123456789".to_string())])
            .collect(),
        ..opts.clone()
    });
    let p = s2.client(&s2.admin_key).predict("mlp", None, &predict_req(&fx.x)).await.unwrap();
    assert!(max_abs_diff(&p.body["outputs"]["y"], &fx.y) < 1e-4);
    let list: Value = serde_json::from_str(&ok(&s2.cli(&["models", "list", "-o", "json"]))).unwrap();
    assert_eq!(list["models"][0]["name"], "mlp");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_share_postgres_and_s3() {
    let dir = tempfile::tempdir().unwrap();
    let fx = fixtures::tiny_mlp(dir.path());
    let b = Backends::fresh().await;
    let key = "replicas-admin-key-0123456789";
    let with_key = |sub: &str| {
        let mut o = b.options(Options { data_dir: Some(dir.path().join(sub)), ..Default::default() });
        o.env.push(("ZOO_ADMIN_KEY".into(), key.into()));
        o
    };
    let a = Server::start_with(with_key("a"));
    let r2 = Server::start_with(with_key("b"));

    ok(&a.cli(&["deploy", fx.path.to_str().unwrap(), "--name", "mlp", "--version", "1"]));
    // Served by the other replica at once (lazily loaded from S3 into its own cache).
    let p = r2.client(key).predict("mlp", None, &predict_req(&fx.x)).await.unwrap();
    assert_eq!(p.version.as_deref(), Some("1"));
    assert!(max_abs_diff(&p.body["outputs"]["y"], &fx.y) < 1e-4);
    assert!(dir.path().join("b/cache").read_dir().unwrap().next().is_some(), "replica b cached the artifact");

    // A second version through b becomes the default on a.
    ok(&r2.cli(&["deploy", fx.path.to_str().unwrap(), "--name", "mlp", "--version", "2"]));
    let p = a.client(key).predict("mlp", None, &predict_req(&fx.x)).await.unwrap();
    assert_eq!(p.version.as_deref(), Some("2"));

    // Re-aliased through one replica: the other routes by it on its next request.
    ok(&a.cli(&["alias", "set", "mlp", "production", "1"]));
    let p = r2.client(key).predict("mlp", None, &predict_req(&fx.x)).await.unwrap();
    assert_eq!(p.version.as_deref(), Some("1"), "b follows the alias a moved");
    ok(&r2.cli(&["alias", "set", "mlp", "production", "2"]));
    let p = a.client(key).predict("mlp", None, &predict_req(&fx.x)).await.unwrap();
    assert_eq!(p.version.as_deref(), Some("2"), "a follows the alias b moved");
    ok(&a.cli(&["alias", "rm", "mlp", "production"]));
    let shown: Value = serde_json::from_str(&ok(&r2.cli(&["models", "show", "mlp", "-o", "json"]))).unwrap();
    assert_eq!(shown["aliases"], json!({}));

    // Deleted through a: gone on b.
    ok(&a.cli(&["rm", "mlp", "--version", "2"]));
    let r = r2
        .http()
        .post(r2.at("/v1/models/mlp/versions/2/predict"))
        .bearer_auth(key)
        .json(&json!({"inputs": {"x": fx.x}}))
        .send()
        .await
        .unwrap();
    assert_eq!(status_code(r).await, (404, "version_not_found".to_string()));
    let p = r2.client(key).predict("mlp", None, &predict_req(&fx.x)).await.unwrap();
    assert_eq!(p.version.as_deref(), Some("1"));

    // Version 2 deployed again through a with other weights: b answers with the new
    // weights, not the model it had loaded under that name.
    let other = dir.path().join("other.onnx");
    let model = zoo_formats::build::mlp(&[0.0; 32], &[0.0; 8], &[0.0; 24], &[1.0, 2.0, 3.0], 4, 8, 3);
    std::fs::write(&other, zoo_formats::build::encode(&model)).unwrap();
    ok(&a.cli(&["deploy", other.to_str().unwrap(), "--name", "mlp", "--version", "2"]));
    let p = r2.client(key).predict("mlp", Some("2"), &predict_req(&fx.x)).await.unwrap();
    let rows = fx.x.as_array().unwrap().len();
    assert!(max_abs_diff(&p.body["outputs"]["y"], &json!(vec![[1.0, 2.0, 3.0]; rows])) < 1e-6, "{}", p.body);

    // A key revoked through a stops working on b within the documented delay.
    let created: Value =
        serde_json::from_str(&ok(&a.cli(&["keys", "create", "--name", "t", "--scope", "read", "-o", "json"]))).unwrap();
    let k = created["key"].as_str().unwrap().to_string();
    let list = r2.at("/v1/models");
    assert_eq!(r2.http().get(&list).bearer_auth(&k).send().await.unwrap().status(), 200);
    ok(&a.cli(&["keys", "revoke", created["info"]["id"].as_str().unwrap()]));
    let start = std::time::Instant::now();
    loop {
        let st = r2.http().get(&list).bearer_auth(&k).send().await.unwrap().status();
        if st == 401 {
            break;
        }
        assert!(start.elapsed() < zoo_server::auth::KEY_CACHE_TTL + Duration::from_secs(2), "revoked key still works");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_mid_upload_is_swept_on_postgres() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let fx = fixtures::tiny_mlp(dir.path());
    let b = Backends::fresh().await;
    let mut opts = b.options(Options { data_dir: Some(dir.path().join("data")), ..Default::default() });
    opts.args.extend(["--stale-upload-secs".into(), "1".into()]);
    let mut s = Server::start_with(opts.clone());
    let addr = s.url.trim_start_matches("http://").to_string();
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "PUT /v1/models/half/versions/1 HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Length: 100000\r\n\r\n",
        s.admin_key
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(&[8u8; 5000]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.kill();
    drop(sock);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let s2 = Server::start_with(opts);
    let list: Value =
        s2.http().get(s2.at("/v1/models")).bearer_auth(&s2.admin_key).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["models"], json!([]), "no version of the interrupted upload is visible: {list}");
    ok(&s2.cli(&["deploy", fx.path.to_str().unwrap(), "--name", "half", "--version", "1"]));
    // Registry and store agree: exactly the one blob.
    let blobs = b.store().await.list_blobs().await.unwrap();
    assert_eq!(blobs.len(), 1, "{blobs:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn database_outage_is_503_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let fx = fixtures::tiny_mlp(dir.path());
    let b = Backends::fresh().await;
    let proxy = Proxy::start(database_addr(&b.database_url)).await;
    let through = Backends { database_url: via(&b.database_url, proxy.addr), store_url: b.store_url.clone() };
    let s = Server::start_with(through.options(Options::default()));
    ok(&s.cli(&["deploy", fx.path.to_str().unwrap(), "--name", "mlp", "--version", "1"]));

    proxy.cut();
    let r = s.http().get(s.at("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(upload_status(&s, &fx.path).await, (503, "unavailable".to_string()));

    proxy.restore();
    let start = std::time::Instant::now();
    loop {
        if s.http().get(s.at("/readyz")).send().await.unwrap().status() == 200 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "zoo did not recover after the database came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ok(&s.cli(&["deploy", fx.path.to_str().unwrap(), "--name", "mlp", "--version", "2"]));
    let list: Value = serde_json::from_str(&ok(&s.cli(&["models", "show", "mlp", "-o", "json"]))).unwrap();
    let versions: Vec<&str> =
        list["versions"].as_array().unwrap().iter().map(|v| v["version"].as_str().unwrap()).collect();
    assert_eq!(versions, ["2", "1"], "the failed upload left nothing behind");
}

#[tokio::test(flavor = "multi_thread")]
async fn store_outage_is_503_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let fx = fixtures::tiny_mlp(dir.path());
    let bin = std::env::var("ZOO_TEST_S3S_BIN").expect("ZOO_TEST_S3S_BIN (scripts/test sets it)");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let s3dir = dir.path().join("s3");
    std::fs::create_dir_all(&s3dir).unwrap();
    let start_s3 = || {
        let child = std::process::Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--access-key", "k", "--secret-key", "s"])
            .arg(&s3dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child
    };
    let mut s3 = start_s3();
    let db = zoo_server::registry::postgres::scratch_database(&zoo_tests::production::database_url()).await.unwrap();
    let opts = Options {
        args: vec!["--create-bucket".into()],
        env: vec![
            ("ZOO_DATABASE_URL".into(), db),
            ("ZOO_STORE".into(), "s3://outage/zoo".into()),
            ("AWS_ENDPOINT_URL".into(), format!("http://127.0.0.1:{port}")),
            ("AWS_ACCESS_KEY_ID".into(), "k".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "s".into()),
        ],
        ..Default::default()
    };
    let s = Server::start_with(opts);
    ok(&s.cli(&["deploy", fx.path.to_str().unwrap(), "--name", "mlp", "--version", "1"]));

    s3.kill().unwrap();
    s3.wait().unwrap();
    assert_eq!(s.http().get(s.at("/readyz")).send().await.unwrap().status(), 503);
    assert_eq!(upload_status(&s, &fx.path).await, (503, "unavailable".to_string()));
    // Loaded models keep answering while the store is away.
    let p = s.client(&s.admin_key).predict("mlp", None, &predict_req(&fx.x)).await.unwrap();
    assert_eq!(p.version.as_deref(), Some("1"));

    let mut s3 = start_s3();
    ok(&s.cli(&["deploy", fx.path.to_str().unwrap(), "--name", "mlp", "--version", "2"]));
    assert_eq!(s.http().get(s.at("/readyz")).send().await.unwrap().status(), 200);
    s3.kill().unwrap();
    let _ = s3.wait();
}

/// At least 1 GiB through the real CLI into S3: neither the client nor the server
/// holds the artifact in memory.
#[tokio::test(flavor = "multi_thread")]
async fn large_upload_to_s3_keeps_memory_flat() {
    let dir = tempfile::tempdir().unwrap();
    let size: u64 = 1024 * 1024 * 1024;
    let bundle = fixtures::large_bundle(dir.path(), size);
    let b = Backends::fresh().await;
    let s = Server::start_with(b.options(Options::default()));
    let before = proc_kib(s.pid(), "VmHWM").unwrap();
    let mut cli = s
        .cli_command(&s.admin_key)
        .args(["deploy", bundle.to_str().unwrap(), "--name", "big", "-o", "json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Sample the client's peak until it exits (the last sample is its peak so far).
    let mut client_peak = 0;
    while cli.try_wait().unwrap().is_none() {
        if let Some(k) = proc_kib(cli.id(), "VmHWM") {
            client_peak = client_peak.max(k);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = cli.wait_with_output().unwrap();
    assert!(out.status.success(), "zoo deploy failed");
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    let peak = proc_kib(s.pid(), "VmHWM").unwrap();
    println!(
        "peak RSS for a {} MiB upload: server {} MiB (before {} MiB), client {} MiB",
        size >> 20,
        peak / 1024,
        before / 1024,
        client_peak / 1024
    );
    assert!(info["size"].as_i64().unwrap() as u64 > size);
    assert!(
        peak < before + 128 * 1024,
        "the server's peak memory grew by {} MiB for a {} MiB upload",
        (peak - before) / 1024,
        size >> 20
    );
    assert!(
        client_peak < 128 * 1024,
        "the client peaked at {} MiB for a {} MiB upload",
        client_peak / 1024,
        size >> 20
    );
    let sha = info["sha256"].as_str().unwrap();
    let stored = b.store().await.size(&StorageKey::blob(sha)).await.unwrap();
    assert_eq!(stored, Some(info["size"].as_i64().unwrap() as u64), "the whole artifact is in the bucket");
}
