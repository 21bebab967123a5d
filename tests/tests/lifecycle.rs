//! End to end, the registry's life cycle: the real `zoo` binary on 127.0.0.1:0,
//! driven by the real CLI and by plain HTTP: deploy, list, predict, download and
//! delete; keys and scopes; refused uploads; restarts and crashes; aliases.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use zoo_tests::helpers::{code, json_of, peak_rss_kib, tmp};
use zoo_tests::{Options, Server, fixtures, max_abs_diff, ok, with_ort};

#[tokio::test(flavor = "multi_thread")]
async fn mlp_deploy_list_predict_download_delete() {
    let dir = tmp();
    let fx = fixtures::tiny_mlp(dir.path());
    println!("tiny MLP from {}", fx.source);
    let s = Server::start_with(with_ort());

    let out = ok(&s.cli(&["deploy", fx.path.to_str().unwrap(), "--name", "mlp", "--version", "1"]));
    assert!(out.contains("deployed mlp version 1"), "{out}");
    assert!(out.contains("/v1/models/mlp/predict"), "prints the endpoint: {out}");
    assert!(out.contains("curl -H"), "prints a curl example: {out}");

    let list = ok(&s.cli(&["models", "list", "-o", "json"]));
    let list: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list["models"][0]["name"], "mlp");
    assert_eq!(list["models"][0]["task"], "tensor");

    // Predict through the CLI.
    let req = dir.path().join("req.json");
    std::fs::write(&req, json!({"inputs": {fx.input_name.clone(): fx.x.clone()}}).to_string()).unwrap();
    let out = ok(&s.cli(&["predict", "mlp", "--json", req.to_str().unwrap(), "-o", "json"]));
    let body: Value = serde_json::from_str(&out).unwrap();
    let diff = max_abs_diff(&body["outputs"]["y"], &fx.y);
    assert!(diff < 1e-4, "ort output differs from the reference by {diff}");

    // And with raw HTTP.
    let r = s
        .http()
        .post(s.at("/v1/models/mlp/versions/1/predict"))
        .bearer_auth(&s.admin_key)
        .json(&json!({"inputs": {"x": fx.x}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-zoo-model-version"], "1");
    assert!(r.headers().contains_key("x-inference-time"));
    let (status, body) = json_of(r).await;
    assert_eq!(status, 200, "{body}");
    assert!(max_abs_diff(&body["outputs"]["y"], &fx.y) < 1e-4);

    // Download: whole, then a range; the bytes are the upload's.
    let original = std::fs::read(&fx.path).unwrap();
    let r = s.http().get(s.at("/v1/models/mlp/versions/1/artifact")).bearer_auth(&s.admin_key).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), original.as_slice());
    let r = s
        .http()
        .get(s.at("/v1/models/mlp/versions/1/artifact"))
        .bearer_auth(&s.admin_key)
        .header("Range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], format!("bytes 10-19/{}", original.len()).as_str());
    assert_eq!(r.bytes().await.unwrap().as_ref(), &original[10..20]);
    let pulled = dir.path().join("pulled.onnx");
    ok(&s.cli(&["pull", "mlp", "--version", "1", "-O", pulled.to_str().unwrap()]));
    assert_eq!(std::fs::read(&pulled).unwrap(), original);

    // Delete: the version, its blob and its route go.
    ok(&s.cli(&["rm", "mlp", "--version", "1"]));
    let r = s
        .http()
        .post(s.at("/v1/models/mlp/versions/1/predict"))
        .bearer_auth(&s.admin_key)
        .json(&json!({"inputs": {"x": fx.x}}))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(r).await;
    assert_eq!((status, code(&body)), (404, "version_not_found"));
    let blobs = std::fs::read_dir(s.data_dir.join("objects/blobs/sha256")).unwrap().count();
    assert_eq!(blobs, 0, "the deleted version's blob is removed");
}

#[tokio::test(flavor = "multi_thread")]
async fn authentication_and_scopes() {
    let s = Server::start();
    let http = s.http();
    let list = s.at("/v1/models");
    let (st, body) = json_of(http.get(&list).send().await.unwrap()).await;
    assert_eq!((st, code(&body)), (401, "unauthorized"));
    let (st, body) =
        json_of(http.get(&list).bearer_auth("zk_000000000000_".to_string() + &"0".repeat(64)).send().await.unwrap())
            .await;
    assert_eq!((st, code(&body)), (401, "unauthorized"));
    let (st, _) = json_of(http.get(&list).header("x-api-key", &s.admin_key).send().await.unwrap()).await;
    assert_eq!(st, 200, "x-api-key works too");
    for open in ["/healthz", "/readyz", "/openapi.json", "/docs/"] {
        assert_eq!(http.get(s.at(open)).send().await.unwrap().status(), 200, "{open} needs no key");
    }
    // Swagger UI is served from the binary (no CDN): its page and script load.
    let page = http.get(s.at("/docs/")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("swagger-ui"), "{page}");
    let js = http.get(s.at("/docs/swagger-ui-bundle.js")).send().await.unwrap();
    assert_eq!(js.status(), 200);
    assert!(js.bytes().await.unwrap().len() > 100_000);
    let spec: Value = http.get(s.at("/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert!(spec["paths"]["/v1/models/{name}/predict"]["post"].is_object());

    // A read-only key limited to text-* models.
    let created =
        ok(&s.cli(&["keys", "create", "--name", "reader", "--scope", "read", "--model", "text-*", "-o", "json"]));
    let created: Value = serde_json::from_str(&created).unwrap();
    let reader = created["key"].as_str().unwrap().to_string();
    let id = created["info"]["id"].as_str().unwrap().to_string();
    assert!(reader.starts_with(&format!("zk_{id}_")));
    let (st, _) = json_of(http.get(&list).bearer_auth(&reader).send().await.unwrap()).await;
    assert_eq!(st, 200);
    let (st, body) = json_of(http.get(s.at("/v1/models/mlp")).bearer_auth(&reader).send().await.unwrap()).await;
    assert_eq!((st, code(&body)), (403, "forbidden"), "model outside the key's patterns");
    let (st, body) = json_of(http.get(s.at("/v1/models/text-x")).bearer_auth(&reader).send().await.unwrap()).await;
    assert_eq!((st, code(&body)), (404, "model_not_found"), "allowed model, missing");
    let (st, body) =
        json_of(http.put(s.at("/v1/models/text-x/versions/1")).bearer_auth(&reader).body("x").send().await.unwrap())
            .await;
    assert_eq!((st, code(&body)), (403, "forbidden"), "read cannot deploy");
    let (st, body) = json_of(
        http.post(s.at("/v1/models/text-x/predict"))
            .bearer_auth(&reader)
            .json(&json!({"inputs": "x"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((st, code(&body)), (403, "forbidden"), "read cannot predict");
    let (st, body) = json_of(http.get(s.at("/v1/keys")).bearer_auth(&reader).send().await.unwrap()).await;
    assert_eq!((st, code(&body)), (403, "forbidden"), "keys are admin-only");
    let out = s.cli_with_key(&reader, &["keys", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("forbidden"));

    // Listing keys never shows secrets; the hash is not the secret.
    let keys = ok(&s.cli(&["keys", "list", "-o", "json"]));
    assert!(!keys.contains(reader.rsplit('_').next().unwrap()));

    // Revoked: 401 at once.
    ok(&s.cli(&["keys", "revoke", &id]));
    let (st, body) = json_of(http.get(&list).bearer_auth(&reader).send().await.unwrap()).await;
    assert_eq!((st, code(&body)), (401, "unauthorized"));
    assert!(body["error"]["message"].as_str().unwrap().contains("revoked"));
    let (st, body) =
        json_of(http.delete(s.at("/v1/keys/ffffffffffff")).bearer_auth(&s.admin_key).send().await.unwrap()).await;
    assert_eq!((st, code(&body)), (404, "key_not_found"));

    // Keys never appear in the server's log...
    let log = s.log();
    assert!(log.contains("API key revoked"), "the log is captured");
    for k in [&reader, &s.admin_key] {
        assert!(!log.contains(k.rsplit('_').next().unwrap()), "a key secret leaked into the log");
    }
    // ...nor in its data files in clear.
    let db = std::fs::read(s.data_dir.join("zoo.db")).unwrap();
    let secret = reader.rsplit('_').next().unwrap().as_bytes();
    assert!(!db.windows(secret.len()).any(|w| w == secret));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(s.data_dir.join("admin.key")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_uploads_store_nothing() {
    let dir = tmp();
    let fx = fixtures::tiny_mlp(dir.path());
    let s =
        Server::start_with(Options { args: vec!["--max-upload-bytes".into(), "100000".into()], ..Default::default() });
    // A fresh connection per request: the server answers some of these before the
    // body is read and then closes, and a pooled connection could be reused in
    // that moment.
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let put =
        |name: &str, v: &str| http.put(s.at(&format!("/v1/models/{name}/versions/{v}"))).bearer_auth(&s.admin_key);
    let original = std::fs::read(&fx.path).unwrap();

    let (st, body) = json_of(put("m", "1").body(original[..original.len() / 2].to_vec()).send().await.unwrap()).await;
    assert_eq!((st, code(&body)), (422, "invalid_artifact"), "truncated: {body}");
    let (st, body) = json_of(put("m", "1").body(b"hello, this is not a model".to_vec()).send().await.unwrap()).await;
    assert_eq!((st, code(&body)), (422, "unknown_format"), "{body}");
    let (st, body) = json_of(put("m", "1").body(vec![7u8; 200_000]).send().await.unwrap()).await;
    assert_eq!((st, code(&body)), (413, "payload_too_large"), "{body}");
    let wrong = hex::encode(Sha256::digest(b"something else"));
    let (st, body) =
        json_of(put("m", "1").header("x-zoo-sha256", &wrong).body(original.clone()).send().await.unwrap()).await;
    assert_eq!((st, code(&body)), (400, "sha256_mismatch"), "{body}");
    let (st, body) = json_of(put("../etc", "1").body(original.clone()).send().await.unwrap()).await;
    assert!(st == 400 || st == 404, "{st} {body}");
    let (st, body) = json_of(put("Bad Name", "1").body(original.clone()).send().await.unwrap()).await;
    assert_eq!((st, code(&body)), (400, "invalid_name"));
    let (st, body) = json_of(
        put("m", "1")
            .header("content-type", "multipart/form-data; boundary=x")
            .body(original.clone())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((st, code(&body)), (415, "unsupported_media_type"));

    // Nothing of the failures is visible or stored.
    let (st, body) = json_of(http.get(s.at("/v1/models")).bearer_auth(&s.admin_key).send().await.unwrap()).await;
    assert_eq!(st, 200);
    assert_eq!(body["models"], json!([]), "no half-registered model: {body}");
    assert_eq!(std::fs::read_dir(s.data_dir.join("objects/blobs/sha256")).unwrap().count(), 0);
    let (st, body) = json_of(http.get(s.at("/v1/models/m")).bearer_auth(&s.admin_key).send().await.unwrap()).await;
    assert_eq!((st, code(&body)), (404, "model_not_found"));

    // The right sha256 passes; the same version again is a conflict.
    let sha = hex::encode(Sha256::digest(&original));
    let (st, body) =
        json_of(put("m", "1").header("x-zoo-sha256", &sha).body(original.clone()).send().await.unwrap()).await;
    assert_eq!(st, 201, "{body}");
    assert_eq!(body["sha256"], sha);
    let (st, body) = json_of(put("m", "1").body(original.clone()).send().await.unwrap()).await;
    assert_eq!((st, code(&body)), (409, "version_exists"));
    let (st, body) =
        json_of(http.get(s.at("/v1/models/m/versions/9")).bearer_auth(&s.admin_key).send().await.unwrap()).await;
    assert_eq!((st, code(&body)), (404, "version_not_found"));
    let (st, body) = json_of(http.get(s.at("/v1/nothing")).bearer_auth(&s.admin_key).send().await.unwrap()).await;
    assert_eq!((st, code(&body)), (404, "not_found"));

    // Wrong inputs name the input.
    let pred = |b: Value| http.post(s.at("/v1/models/m/predict")).bearer_auth(&s.admin_key).json(&b).send();
    let (st, body) = json_of(pred(json!({"inputs": {"nope": [[1, 2, 3, 4]]}})).await.unwrap()).await;
    assert_eq!((st, code(&body)), (400, "invalid_input"));
    assert!(body["error"]["message"].as_str().unwrap().contains("'nope'"));
    let (st, body) = json_of(pred(json!({"inputs": {"x": [[1, 2, 3]]}})).await.unwrap()).await;
    assert_eq!((st, code(&body)), (400, "invalid_input"));
    assert!(body["error"]["message"].as_str().unwrap().contains("'x'"));
    let (st, body) = json_of(
        http.post(s.at("/v1/models/m/predict")).bearer_auth(&s.admin_key).body("{not json").send().await.unwrap(),
    )
    .await;
    assert_eq!((st, code(&body)), (400, "invalid_request"));
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_corpus_refused_over_http_while_serving() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let dir = tmp();
    let fx = fixtures::tiny_mlp(dir.path());
    let s = Server::start_with(with_ort());
    ok(&s.cli(&["deploy", fx.path.to_str().unwrap(), "--name", "mlp"]));
    let before = peak_rss_kib(s.pid());

    // A client keeps predicting all along; none of its requests may fail.
    let stop = Arc::new(AtomicBool::new(false));
    let (oks, failures) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let client = {
        let (stop, oks, failures) = (stop.clone(), oks.clone(), failures.clone());
        let (url, key, x) = (s.at("/v1/models/mlp/predict"), s.admin_key.clone(), fx.x.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            while !stop.load(Ordering::Relaxed) {
                let r = http.post(&url).bearer_auth(&key).json(&json!({"inputs": {"x": x}})).send().await;
                match r {
                    Ok(r) if r.status() == 200 => oks.fetch_add(1, Ordering::Relaxed),
                    _ => failures.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };

    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let corpus = zoo_formats::hostile::corpus();
    for case in &corpus {
        let r = http.post(s.at("/v1/models/hostile/versions")).bearer_auth(&s.admin_key).body(case.bytes.clone());
        let (status, body) = json_of(r.send().await.unwrap()).await;
        assert_eq!(status, 422, "{}: {body}", case.name);
        match case.expect {
            zoo_formats::hostile::Expect::Unknown => assert_eq!(code(&body), "unknown_format", "{}", case.name),
            zoo_formats::hostile::Expect::Invalid { format, rule } => {
                assert_eq!(code(&body), "invalid_artifact", "{}: {body}", case.name);
                assert_eq!(
                    (body["error"]["format"].as_str(), body["error"]["rule"].as_str()),
                    (Some(format), Some(rule)),
                    "{}: {body}",
                    case.name
                );
                assert!(body["error"]["message"].as_str().unwrap().contains(rule), "{}: {body}", case.name);
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    client.await.unwrap();
    println!(
        "{} hostile artifacts refused; {} predictions meanwhile, {} failed",
        corpus.len(),
        oks.load(Ordering::Relaxed),
        failures.load(Ordering::Relaxed)
    );
    assert_eq!(failures.load(Ordering::Relaxed), 0, "the server kept serving");
    assert!(oks.load(Ordering::Relaxed) > 0);

    // Nothing of them was stored or left behind, and memory stayed bounded.
    let (_, list) = json_of(http.get(s.at("/v1/models")).bearer_auth(&s.admin_key).send().await.unwrap()).await;
    let names: Vec<&str> = list["models"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["mlp"], "{list}");
    assert_eq!(std::fs::read_dir(s.data_dir.join("objects/blobs/sha256")).unwrap().count(), 1);
    assert_eq!(std::fs::read_dir(s.data_dir.join("work")).unwrap().count(), 0, "no upload left in the work directory");
    let after = peak_rss_kib(s.pid());
    println!("server peak RSS: {} MiB before, {} MiB after", before / 1024, after / 1024);
    assert!(after < before + 100 * 1024, "peak RSS grew from {before} KiB to {after} KiB");
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_keeps_models_and_loads_lazily() {
    let dir = tmp();
    let fx = fixtures::tiny_mlp(dir.path());
    let data = dir.path().join("data");
    let opts = Options { data_dir: Some(data.clone()), ..with_ort() };
    let mut s = Server::start_with(opts.clone());
    let key = s.admin_key.clone();
    ok(&s.cli(&["deploy", fx.path.to_str().unwrap(), "--name", "mlp"]));
    let status = s.stop();
    assert!(status.success(), "SIGTERM is a clean shutdown: {status:?}");

    // A stale upload row and a stray blob, as a crash would leave them.
    let s2 = Server::start_with(opts);
    assert_eq!(s2.admin_key, key, "the admin key is kept");
    let req =
        zoo_api::PredictRequest { inputs: json!({"x": fx.x}), top_k: None, normalize: None, ..Default::default() };
    let p = s2.client(&key).predict("mlp", None, &req).await.unwrap();
    assert_eq!(p.version.as_deref(), Some("1"));
    assert!(max_abs_diff(&p.body["outputs"]["y"], &fx.y) < 1e-4);
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_mid_upload_leaves_nothing_visible() {
    use tokio::io::AsyncWriteExt;
    let dir = tmp();
    let fx = fixtures::tiny_mlp(dir.path());
    let data = dir.path().join("data");
    let opts = Options { data_dir: Some(data.clone()), ..Default::default() };
    let mut s = Server::start_with(opts.clone());
    // Start an upload that never finishes: headers and half the body.
    let addr = s.url.trim_start_matches("http://").to_string();
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "PUT /v1/models/half/versions/1 HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Length: 100000\r\n\r\n",
        s.admin_key
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(&[8u8; 5000]).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    s.kill();
    drop(sock);

    let s2 = Server::start_with(opts);
    let list: Value =
        s2.http().get(s2.at("/v1/models")).bearer_auth(&s2.admin_key).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["models"], json!([]), "the interrupted upload is not visible: {list}");
    // The same version can be deployed now: the stale reservation was swept.
    ok(&s2.cli(&["deploy", fx.path.to_str().unwrap(), "--name", "half", "--version", "1"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_exit_codes() {
    let s = Server::start();
    let usage = s.cli(&["deploy"]);
    assert_eq!(usage.status.code(), Some(2), "usage errors exit 2");
    let missing = s.cli(&["models", "show", "nope"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("model 'nope' does not exist"));
    let empty = ok(&s.cli(&["models", "list"]));
    assert!(empty.contains("no models yet"), "{empty}");
    let down = std::process::Command::new(zoo_tests::zoo_bin())
        .args(["models", "list"])
        .env("ZOO_URL", "http://127.0.0.1:9")
        .env("ZOO_API_KEY", "x")
        .output()
        .unwrap();
    assert_eq!(down.status.code(), Some(1));
    let said = String::from_utf8_lossy(&down.stderr);
    assert!(said.contains("cannot reach"), "{said}");
    // Each cause of the failure is printed once.
    assert_eq!(said.matches("error sending request").count(), 1, "{said}");

    // login saves the URL and key; later commands use them.
    let cfg = s.cli_config.clone();
    let login = std::process::Command::new(zoo_tests::zoo_bin())
        .args(["login", "--url", &s.url, "--key", &s.admin_key])
        .env("ZOO_CONFIG", &cfg)
        .env_remove("ZOO_URL")
        .env_remove("ZOO_API_KEY")
        .output()
        .unwrap();
    assert!(login.status.success(), "{}", String::from_utf8_lossy(&login.stderr));
    let after = std::process::Command::new(zoo_tests::zoo_bin())
        .args(["models", "list"])
        .env("ZOO_CONFIG", &cfg)
        .env_remove("ZOO_URL")
        .env_remove("ZOO_API_KEY")
        .output()
        .unwrap();
    assert!(after.status.success(), "{}", String::from_utf8_lossy(&after.stderr));
    let bad_login = s.cli(&["login", "--url", &s.url, "--key", "zk_nope"]);
    assert_eq!(bad_login.status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn predict_body_limit() {
    let dir = tmp();
    let fx = fixtures::tiny_mlp(dir.path());
    let s =
        Server::start_with(Options { args: vec!["--max-predict-bytes".into(), "2000".into()], ..Default::default() });
    ok(&s.cli(&["deploy", fx.path.to_str().unwrap(), "--name", "mlp"]));
    let rows: Vec<[f32; 4]> = vec![[1.0, 2.0, 3.0, 4.0]; 200];
    let r = s
        .http()
        .post(s.at("/v1/models/mlp/predict"))
        .bearer_auth(&s.admin_key)
        .json(&json!({"inputs": {"x": rows}}))
        .send()
        .await
        .unwrap();
    let (st, body) = json_of(r).await;
    assert_eq!((st, code(&body)), (413, "payload_too_large"), "{body}");
    // The server keeps serving.
    let r = s
        .http()
        .post(s.at("/v1/models/mlp/predict"))
        .bearer_auth(&s.admin_key)
        .json(&json!({"inputs": {"x": fx.x}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn aliases_route_traffic_and_keep_history() {
    let dir = tmp();
    let fx = fixtures::tiny_mlp(dir.path());
    let s = Server::start_with(with_ort());
    let path = fx.path.to_str().unwrap();
    let out = ok(&s.cli(&["deploy", path, "--name", "mlp", "--version", "1", "--alias", "production"]));
    assert!(out.contains("alias production -> 1"), "{out}");
    ok(&s.cli(&["deploy", path, "--name", "mlp", "--version", "2"]));
    let body = json!({"inputs": {"x": fx.x}});
    let predict = |route: &str| s.http().post(s.at(route)).bearer_auth(&s.admin_key).json(&body).send();
    // The default route follows production, not the newest version.
    let r = predict("/v1/models/mlp/predict").await.unwrap();
    assert_eq!(r.headers()["x-zoo-model-version"], "1");
    let r = predict("/v1/models/mlp/aliases/production/predict").await.unwrap();
    assert_eq!(r.headers()["x-zoo-model-version"], "1");
    let (status, out) = json_of(r).await;
    assert_eq!(status, 200);
    assert!(max_abs_diff(&out["outputs"]["y"], &fx.y) < 1e-4);

    let moved: Value =
        serde_json::from_str(&ok(&s.cli(&["alias", "set", "mlp", "production", "2", "-o", "json"]))).unwrap();
    assert_eq!((moved["version"].as_str(), moved["previous"].as_str()), (Some("2"), Some("1")));
    assert_eq!(predict("/v1/models/mlp/predict").await.unwrap().headers()["x-zoo-model-version"], "2");
    let shown: Value = serde_json::from_str(&ok(&s.cli(&["models", "show", "mlp", "-o", "json"]))).unwrap();
    assert_eq!(shown["aliases"], json!({"production": "2"}));

    // Errors: unknown alias, alias to a missing version, bad alias name, missing scope.
    let (status, out) = json_of(predict("/v1/models/mlp/aliases/staging/predict").await.unwrap()).await;
    assert_eq!((status, code(&out)), (404, "version_not_found"), "{out}");
    assert!(out["error"]["message"].as_str().unwrap().contains("no alias 'staging'"), "{out}");
    let set = |alias: &str, version: &str, key: &str| {
        s.http()
            .put(s.at(&format!("/v1/models/mlp/aliases/{alias}")))
            .bearer_auth(key.to_string())
            .json(&json!({"version": version}))
            .send()
    };
    let (status, out) = json_of(set("staging", "9", &s.admin_key).await.unwrap()).await;
    assert_eq!((status, code(&out)), (404, "version_not_found"), "{out}");
    let (status, out) = json_of(set("Prod", "1", &s.admin_key).await.unwrap()).await;
    assert_eq!((status, code(&out)), (400, "invalid_name"), "{out}");
    let key: Value =
        serde_json::from_str(&ok(&s.cli(&["keys", "create", "--name", "p", "--scope", "predict", "-o", "json"])))
            .unwrap();
    let (status, out) = json_of(set("staging", "1", key["key"].as_str().unwrap()).await.unwrap()).await;
    assert_eq!((status, code(&out)), (403, "forbidden"), "{out}");

    // Removing production sends the default route back to the newest version.
    let out = ok(&s.cli(&["alias", "rm", "mlp", "production"]));
    assert!(out.contains("removed mlp alias production (was 2)"), "{out}");
    let st = s.cli(&["alias", "rm", "mlp", "production"]);
    assert_eq!(st.status.code(), Some(1), "removing a missing alias is an error");
    ok(&s.cli(&["alias", "set", "mlp", "production", "1"]));
    // The version production points at cannot be deleted from under it.
    let r = s.http().delete(s.at("/v1/models/mlp/versions/1")).bearer_auth(&s.admin_key).send().await.unwrap();
    let (status, out) = json_of(r).await;
    assert_eq!((status, code(&out)), (409, "version_in_use"), "{out}");
    assert!(out["error"]["message"].as_str().unwrap().contains("production"), "{out}");
    assert_eq!(predict("/v1/models/mlp/predict").await.unwrap().headers()["x-zoo-model-version"], "1");
    ok(&s.cli(&["alias", "set", "mlp", "production", "2"]));
    ok(&s.cli(&["rm", "mlp", "--version", "1"]));
    assert_eq!(predict("/v1/models/mlp/predict").await.unwrap().headers()["x-zoo-model-version"], "2");
}

/// A body that sends `bytes` in `pieces` parts, one every `every`, then ends
/// (or, with `forever`, keeps sending one byte at a time and never ends).
fn trickle(bytes: Vec<u8>, pieces: usize, every: std::time::Duration, forever: bool) -> reqwest::Body {
    let size = bytes.len().div_ceil(pieces);
    let parts: Vec<Vec<u8>> = bytes.chunks(size).map(<[u8]>::to_vec).collect();
    let stream = futures::stream::unfold(0usize, move |i| {
        let next = parts.get(i).cloned().or_else(|| forever.then(|| vec![0u8]));
        async move {
            let part = next?;
            tokio::time::sleep(every).await;
            Some((Ok::<_, std::io::Error>(part), i + 1))
        }
    });
    reqwest::Body::wrap_stream(stream)
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_then_finishes_requests_in_flight() {
    use std::time::{Duration, Instant};
    let dir = tmp();
    let fx = fixtures::tiny_mlp(dir.path());
    let data = dir.path().join("data");
    let mut opts = Options { data_dir: Some(data.clone()), ..with_ort() };
    opts.env.push(("ZOO_SHUTDOWN_DELAY_SECS".into(), "2".into()));
    opts.env.push(("ZOO_SHUTDOWN_TIMEOUT_SECS".into(), "20".into()));
    let mut s = Server::start_with(opts.clone());
    let key = s.admin_key.clone();
    ok(&s.cli(&["deploy", fx.path.to_str().unwrap(), "--name", "mlp"]));
    let http = s.http();
    assert_eq!(http.get(s.at("/readyz")).send().await.unwrap().status(), 200);

    // An upload that takes about 6 s, started before SIGTERM.
    let artifact = std::fs::read(&fx.path).unwrap();
    let upload = http
        .post(s.at("/v1/models/mlp/versions"))
        .bearer_auth(&key)
        .body(trickle(artifact, 12, Duration::from_millis(500), false))
        .send();
    let upload = tokio::spawn(upload);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let signalled = Instant::now();
    s.terminate();

    // Draining: not ready, still alive, still serving new connections.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fresh = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let (status, body) = json_of(fresh.get(s.at("/readyz")).send().await.unwrap()).await;
    assert_eq!((status, body["status"].as_str()), (503, Some("draining")), "{body}");
    assert_eq!(fresh.get(s.at("/healthz")).send().await.unwrap().status(), 200);
    let req = zoo_api::PredictRequest { inputs: json!({"x": fx.x}), ..Default::default() };
    let p = s.client(&key).predict("mlp", None, &req).await.expect("a prediction during the drain delay is served");
    assert!(max_abs_diff(&p.body["outputs"]["y"], &fx.y) < 1e-4);

    // After the delay the listener is closed: new connections are refused while
    // the upload goes on.
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(signalled.elapsed()) + Duration::from_millis(700)).await;
    assert!(!upload.is_finished(), "the trickled upload is still running");
    let refused = fresh.get(s.at("/healthz")).send().await;
    assert!(refused.is_err(), "a new connection after the delay is refused: {refused:?}");

    // The upload in flight completes, and the process exits by itself.
    let (status, body) = json_of(upload.await.unwrap().expect("the upload in flight is answered")).await;
    assert_eq!(status, 201, "{body}");
    let version = body["version"].as_str().unwrap().to_string();
    let status = tokio::task::spawn_blocking(move || s.wait(Duration::from_secs(30))).await.unwrap();
    let took = signalled.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(took >= Duration::from_secs(2), "exited {took:?} after SIGTERM, before the drain delay");
    println!("SIGTERM to exit: {took:?} (delay 2 s, upload finished meanwhile)");

    // The version uploaded during the drain is stored and serves.
    let s2 = Server::start_with(opts);
    let p = s2.client(&key).predict("mlp", Some(&version), &req).await.unwrap();
    assert_eq!(p.version.as_deref(), Some(version.as_str()));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_exits_within_the_shutdown_timeout_and_stores_nothing_half_sent() {
    use std::time::{Duration, Instant};
    let dir = tmp();
    let fx = fixtures::tiny_mlp(dir.path());
    let data = dir.path().join("data");
    let mut opts = Options { data_dir: Some(data.clone()), ..with_ort() };
    opts.env.push(("ZOO_SHUTDOWN_TIMEOUT_SECS".into(), "2".into()));
    let mut s = Server::start_with(opts.clone());
    let key = s.admin_key.clone();
    ok(&s.cli(&["deploy", fx.path.to_str().unwrap(), "--name", "mlp"]));

    // An upload that never ends holds its connection open.
    let artifact = std::fs::read(&fx.path).unwrap();
    let upload = s
        .http()
        .post(s.at("/v1/models/mlp/versions"))
        .bearer_auth(&key)
        .body(trickle(artifact, 4, Duration::from_millis(200), true))
        .send();
    let upload = tokio::spawn(upload);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let signalled = Instant::now();
    s.terminate();
    let status = tokio::task::spawn_blocking(move || s.wait(Duration::from_secs(30))).await.unwrap();
    let took = signalled.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(took >= Duration::from_secs(2), "exited after {took:?}, before the timeout, with an upload in flight");
    println!("SIGTERM to exit with an endless upload: {took:?} (timeout 2 s)");
    assert!(upload.await.unwrap().is_err(), "the endless upload is cut off");

    // Nothing of the cut-off upload became a version.
    let s2 = Server::start_with(opts);
    let (_, list) = json_of(s2.http().get(s2.at("/v1/models/mlp")).bearer_auth(&key).send().await.unwrap()).await;
    let versions: Vec<&str> =
        list["versions"].as_array().unwrap().iter().map(|v| v["version"].as_str().unwrap()).collect();
    assert_eq!(versions, ["1"], "{list}");
}
