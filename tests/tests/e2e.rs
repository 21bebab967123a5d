//! End to end: the real `zoo` binary on 127.0.0.1:0, driven by the real CLI and
//! by plain HTTP.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use zoo_tests::{Options, Server, fixtures, max_abs_diff, ok, with_ort};

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

async fn json_of(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<no error code>")
}

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
async fn ort_and_tract_agree() {
    let dir = tmp();
    let fx = fixtures::tiny_mlp(dir.path());
    let s = Server::start_with(with_ort());
    let ready: Value = s.http().get(s.at("/readyz")).send().await.unwrap().json().await.unwrap();
    assert!(ready["runtimes"].as_array().unwrap().contains(&json!("ort")), "ONNX Runtime must be loaded: {ready}");
    let p = fx.path.to_str().unwrap();
    let a: Value = serde_json::from_str(&ok(&s.cli(&[
        "deploy",
        p,
        "--name",
        "m",
        "--version",
        "ort",
        "--runtime",
        "ort",
        "-o",
        "json",
    ])))
    .unwrap();
    let b: Value = serde_json::from_str(&ok(&s.cli(&[
        "deploy",
        p,
        "--name",
        "m",
        "--version",
        "tract",
        "--runtime",
        "tract",
        "-o",
        "json",
    ])))
    .unwrap();
    assert_eq!(a["runtime"], "ort");
    assert_eq!(b["runtime"], "tract");
    assert_eq!(a["sha256"], b["sha256"], "the same artifact");
    let mut outs = vec![];
    for v in ["ort", "tract"] {
        let r = s.client(&s.admin_key);
        let req =
            zoo_api::PredictRequest { inputs: json!({"x": fx.x}), top_k: None, normalize: None, ..Default::default() };
        outs.push(r.predict("m", Some(v), &req).await.unwrap().body["outputs"]["y"].clone());
    }
    let diff = max_abs_diff(&outs[0], &outs[1]);
    assert!(diff < 1e-4, "ort and tract differ by {diff}");
    assert!(max_abs_diff(&outs[1], &fx.y) < 1e-4);
    // Identical artifact, stored once.
    assert_eq!(std::fs::read_dir(s.data_dir.join("objects/blobs/sha256")).unwrap().count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn text_classifier_labels() {
    let dir = tmp();
    let fx = fixtures::text_classifier(dir.path());
    println!("text classifier: {}", fx.source);
    let s = Server::start_with(with_ort());
    let out = ok(&s.cli(&["deploy", fx.dir.to_str().unwrap(), "--name", "text-classifier", "--version", "1"]));
    assert!(out.contains("text-classification"), "{out}");

    // Scores are compared with the same runtime run here, one text at a time: the
    // shared classifier is int8, whose kernels differ from one CPU to the next
    // (0.927 on the CPU its documentation was made on, 0.934 on an AVX2-only EPYC).
    let texts: Vec<&str> = fx.cases.iter().map(|c| c.0).collect();
    let reference = zoo_tests::classify_in_process(&fx.dir, &texts);
    for ((text, label, documented), want) in fx.cases.iter().zip(&reference) {
        let out = ok(&s.cli(&["predict", "text-classifier", text, "-o", "json"]));
        let body: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(body[0]["label"], *label, "{text}: {body}");
        assert_eq!(body[0]["label"], want[0].label, "{text}: {body}");
        let got = body[0]["score"].as_f64().unwrap();
        println!("{text}: {label} {got:.4} (in-process {:.4}, documented {documented})", want[0].score);
        assert!((got - f64::from(want[0].score)).abs() < 1e-5, "{text}: score {got}, in-process {}", want[0].score);
        let sum: f64 = body.as_array().unwrap().iter().map(|l| l["score"].as_f64().unwrap()).sum();
        assert!((sum - 1.0).abs() < 1e-4);
    }
    // The CLI's text output shows the label.
    let out = ok(&s.cli(&["predict", "text-classifier", fx.cases[0].0]));
    assert!(out.starts_with(fx.cases[0].1), "{out}");

    // curl's default form Content-Type is accepted; a list gives one result per text.
    let texts: Vec<&str> = fx.cases.iter().map(|c| c.0).collect();
    let r = s
        .http()
        .post(s.at("/v1/models/text-classifier/predict"))
        .bearer_auth(&s.admin_key)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(json!({"inputs": texts, "top_k": 1}).to_string())
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(r).await;
    assert_eq!(status, 200, "{body}");
    let rows = body.as_array().unwrap();
    assert_eq!(rows.len(), fx.cases.len());
    for (row, (text, label, _)) in rows.iter().zip(&fx.cases) {
        assert_eq!(row.as_array().unwrap().len(), 1, "top_k=1");
        assert_eq!(row[0]["label"], *label, "{text} in a batch");
    }
    // A text far longer than the model takes is truncated, not refused.
    let long = "good ".repeat(3000);
    let out = ok(&s.cli(&["predict", "text-classifier", &long, "-o", "json"]));
    let body: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(body[0]["label"], "POSITIVE");

    // Wrong input shape for a text model.
    let r = s
        .http()
        .post(s.at("/v1/models/text-classifier/predict"))
        .bearer_auth(&s.admin_key)
        .json(&json!({"inputs": {"x": [1]}}))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(r).await;
    assert_eq!((status, code(&body)), (400, "invalid_input"));
}

#[tokio::test(flavor = "multi_thread")]
async fn minilm_embeddings() {
    let dir = tmp();
    let bundle = fixtures::minilm_bundle(dir.path());
    let s = Server::start_with(with_ort());
    let info: Value =
        serde_json::from_str(&ok(&s.cli(&["deploy", bundle.to_str().unwrap(), "--name", "minilm", "-o", "json"])))
            .unwrap();
    assert_eq!(info["task"], "feature-extraction");
    assert_eq!(info["version"], "1", "versions auto-increment from 1");
    let c = s.client(&s.admin_key);
    let req = zoo_api::PredictRequest {
        inputs: json!([
            "A man is eating food.",
            "A man is eating a piece of bread.",
            "The stock market fell sharply today."
        ]),
        top_k: None,
        normalize: None,
        ..Default::default()
    };
    let body = c.predict("minilm", None, &req).await.unwrap().body;
    let e: Vec<Vec<f64>> = serde_json::from_value(body).unwrap();
    assert_eq!(e.len(), 3);
    assert_eq!(e[0].len(), 384);
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    for v in &e {
        assert!((dot(v, v) - 1.0).abs() < 1e-3, "normalised by default (modules.json has Normalize)");
    }
    assert!(dot(&e[0], &e[1]) > dot(&e[0], &e[2]) + 0.2, "similar sentences are closer");
    // Padding per batch does not change an embedding.
    let one = c
        .predict(
            "minilm",
            None,
            &zoo_api::PredictRequest {
                inputs: json!("A man is eating food."),
                top_k: None,
                normalize: None,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .body;
    let one: Vec<f64> = serde_json::from_value(one).unwrap();
    assert!(one.iter().zip(&e[0]).all(|(a, b)| (a - b).abs() < 1e-4));
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

/// Peak resident memory of a process (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
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
async fn without_onnx_runtime_tract_serves() {
    let dir = tmp();
    let fx = fixtures::tiny_mlp(dir.path());
    let missing = dir.path().join("no-such-libonnxruntime.so");
    let opts = Options { env: vec![("ZOO_ORT_DYLIB".into(), missing.display().to_string())], ..Default::default() };
    let s = Server::start_with(opts);
    let ready: Value = s.http().get(s.at("/readyz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        ready["runtimes"],
        json!(["tract", "candle", "torch", "sklearn"]),
        "no ort, the others are there: {ready}"
    );
    let log = s.log();
    assert_eq!(log.matches("ONNX Runtime library not found").count(), 1, "said once at start: {log}");

    let info: Value =
        serde_json::from_str(&ok(&s.cli(&["deploy", fx.path.to_str().unwrap(), "--name", "mlp", "-o", "json"])))
            .unwrap();
    assert_eq!(info["runtime"], "tract");
    let req =
        zoo_api::PredictRequest { inputs: json!({"x": fx.x}), top_k: None, normalize: None, ..Default::default() };
    let p = s.client(&s.admin_key).predict("mlp", None, &req).await.unwrap();
    assert!(max_abs_diff(&p.body["outputs"]["y"], &fx.y) < 1e-4);

    // Asking for ort explicitly stores the version as not servable, with the reason.
    let out = ok(&s.cli(&["deploy", fx.path.to_str().unwrap(), "--name", "mlp", "--runtime", "ort", "-o", "json"]));
    let info: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(info["servable"], false);
    assert!(info["reason"].as_str().unwrap().contains("ONNX Runtime library not found"), "{info}");
    let r = s
        .http()
        .post(s.at("/v1/models/mlp/versions/2/predict"))
        .bearer_auth(&s.admin_key)
        .json(&json!({"inputs": {"x": fx.x}}))
        .send()
        .await
        .unwrap();
    let (st, body) = json_of(r).await;
    assert_eq!((st, code(&body)), (409, "not_servable"));
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

#[tokio::test(flavor = "multi_thread")]
async fn bare_safetensors_weights_are_stored_but_not_served() {
    let dir = tmp();
    let s = Server::start_with(with_ort());
    let weights = zoo_tests::models_cache().join("minilm/model.safetensors");
    let out = ok(&s.cli(&["deploy", weights.to_str().unwrap(), "--name", "minilm-weights", "-o", "json"]));
    let info: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(info["format"], "safetensors");
    assert_eq!(info["servable"], false);
    assert!(info["reason"].as_str().unwrap().contains("weights only"), "{info}");
    let tensors = info["signature"]["safetensors"]["tensors"].as_array().unwrap();
    assert!(tensors.iter().any(|t| t["name"].as_str().unwrap().ends_with("word_embeddings.weight")), "{info}");

    // Listed, downloadable byte for byte, and predict says why it cannot answer.
    let list: Value = serde_json::from_str(&ok(&s.cli(&["models", "list", "-o", "json"]))).unwrap();
    assert_eq!(list["models"][0]["format"], "safetensors");
    let pulled = dir.path().join("w.safetensors");
    ok(&s.cli(&["pull", "minilm-weights", "--version", "1", "-O", pulled.to_str().unwrap()]));
    assert_eq!(std::fs::read(&pulled).unwrap(), std::fs::read(&weights).unwrap());
    let r = s
        .http()
        .post(s.at("/v1/models/minilm-weights/predict"))
        .bearer_auth(&s.admin_key)
        .json(&json!({"inputs": {"x": [[1.0]]}}))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(r).await;
    assert_eq!((status, code(&body)), (409, "not_servable"), "{body}");

    // A hostile header: 422 naming the rule, and nothing stored.
    let header = br#"{"w":{"dtype":"F32","shape":[1000000],"data_offsets":[0,4000000]}}"#;
    let mut bad = (header.len() as u64).to_le_bytes().to_vec();
    bad.extend_from_slice(header);
    bad.extend_from_slice(&[0u8; 16]);
    let r = s.http().put(s.at("/v1/models/evil/versions/1")).bearer_auth(&s.admin_key).body(bad).send().await.unwrap();
    let (status, body) = json_of(r).await;
    assert_eq!((status, code(&body)), (422, "invalid_artifact"), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("(offsets)"), "{body}");
    let r = s.http().get(s.at("/v1/models/evil")).bearer_auth(&s.admin_key).send().await.unwrap();
    assert_eq!(r.status(), 404, "a refused upload leaves no model behind");
}

#[tokio::test(flavor = "multi_thread")]
async fn mlflow_bundles_onnx_served_pickles_refused() {
    let dir = tmp();
    let fx = fixtures::tiny_mlp(dir.path());
    let s = Server::start_with(with_ort());
    // An MLflow bundle as mlflow.onnx writes it, around the tiny MLP.
    let bundle = dir.path().join("mlflow-mlp");
    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::copy(&fx.path, bundle.join("model.onnx")).unwrap();
    std::fs::write(
        bundle.join("MLmodel"),
        "flavors:\n  onnx:\n    data: model.onnx\n    onnx_version: 1.23.2\n  python_function:\n    data: model.onnx\n    \
         loader_module: mlflow.onnx\nmlflow_version: 3.17.2\n",
    )
    .unwrap();
    let info: Value =
        serde_json::from_str(&ok(&s.cli(&["deploy", bundle.to_str().unwrap(), "--name", "mlflow-mlp", "-o", "json"])))
            .unwrap();
    assert_eq!((info["format"].as_str(), info["servable"].as_bool()), (Some("mlflow"), Some(true)), "{info}");
    assert_eq!(info["signature"]["mlflow"]["flavors"], json!(["onnx", "python_function"]));
    let r = s
        .http()
        .post(s.at("/v1/models/mlflow-mlp/predict"))
        .bearer_auth(&s.admin_key)
        .json(&json!({"inputs": {"x": fx.x}}))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(r).await;
    assert_eq!(status, 200, "{body}");
    assert!(max_abs_diff(&body["predictions"], &fx.y) < 1e-4, "MLflow versions answer like MLflow: {body}");

    // MLflow's scoring formats, answered like `mlflow models serve`.
    let post =
        |route: &'static str, body: Value| s.http().post(s.at(route)).bearer_auth(&s.admin_key).json(&body).send();
    let split = json!({"dataframe_split": {"columns": ["a", "b", "c", "d"], "data": fx.x}});
    let (status, body) = json_of(post("/v1/models/mlflow-mlp/predict", split.clone()).await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert!(max_abs_diff(&body["predictions"], &fx.y) < 1e-4, "{body}");
    let (status, body) =
        json_of(post("/v1/models/mlflow-mlp/predict", json!({"instances": fx.x})).await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert!(max_abs_diff(&body["predictions"], &fx.y) < 1e-4, "{body}");
    let records = json!({"dataframe_records": [{"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}]});
    let (status, body) = json_of(post("/v1/models/mlflow-mlp/predict", records).await.unwrap()).await;
    assert_eq!((status, code(&body)), (400, "invalid_input"), "no column signature to order records by: {body}");
    let both = json!({"inputs": fx.x, "instances": fx.x});
    let (status, body) = json_of(post("/v1/models/mlflow-mlp/predict", both).await.unwrap()).await;
    assert_eq!((status, code(&body)), (400, "invalid_input"), "{body}");
    ok(&s.cli(&["deploy", fx.path.to_str().unwrap(), "--name", "plain-mlp"]));
    let (status, body) = json_of(post("/v1/models/plain-mlp/predict", split).await.unwrap()).await;
    assert_eq!((status, code(&body)), (400, "invalid_input"), "MLflow formats are for MLflow versions: {body}");

    // A pickle flavor: stored and listed with the reason, never loaded.
    let pickled = dir.path().join("mlflow-pickle");
    std::fs::create_dir_all(&pickled).unwrap();
    std::fs::write(pickled.join("model.pkl"), b"\x80\x04 zoo never reads this").unwrap();
    std::fs::write(
        pickled.join("MLmodel"),
        "flavors:\n  sklearn:\n    pickled_model: model.pkl\n    serialization_format: cloudpickle\n  python_function:\n    \
         loader_module: mlflow.sklearn\n    model_path: model.pkl\n",
    )
    .unwrap();
    let info: Value =
        serde_json::from_str(&ok(&s.cli(&["deploy", pickled.to_str().unwrap(), "--name", "pickled", "-o", "json"])))
            .unwrap();
    assert_eq!(info["servable"], false);
    assert!(info["reason"].as_str().unwrap().contains("mlflow.onnx"), "{info}");

    // An MLmodel pointing out of the bundle: 422, nothing stored.
    let evil = dir.path().join("mlflow-evil");
    std::fs::create_dir_all(&evil).unwrap();
    std::fs::write(evil.join("MLmodel"), "flavors:\n  onnx:\n    data: ../../../etc/passwd\n").unwrap();
    let out = s.cli(&["deploy", evil.to_str().unwrap(), "--name", "evil"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid_artifact"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s.cli(&["models", "show", "evil"]).status.code(), Some(1));

    // The real iris bundle logged by MLflow, when ../shared is here.
    let iris = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/models/mlflow/iris-onnx");
    if iris.join("MLmodel").is_file() {
        ok(&s.cli(&["deploy", iris.to_str().unwrap(), "--name", "iris"]));
        let r = s
            .http()
            .post(s.at("/v1/models/iris/predict"))
            .bearer_auth(&s.admin_key)
            .json(&json!({"inputs": {"X": [[5.1, 3.5, 1.4, 0.2], [6.3, 3.4, 5.6, 2.4]]}}))
            .send()
            .await
            .unwrap();
        let (status, body) = json_of(r).await;
        assert_eq!(status, 200, "{body}");
        println!("iris-onnx: {body}");
        let labels: Vec<&Value> = body["predictions"].as_array().unwrap().iter().map(|p| &p["label"]).collect();
        assert_eq!(labels, [&json!(0), &json!(2)], "setosa, virginica: {body}");
        // MLflow's own serving example: one record per row with both outputs, the
        // same answers as the tensor route.
        let example: Value = serde_json::from_str(
            &std::fs::read_to_string(iris.join("../iris-sklearn/serving_input_example.json")).unwrap(),
        )
        .unwrap();
        let rows = example["dataframe_split"]["data"].clone();
        let (status, body) = json_of(post("/v1/models/iris/predict", example).await.unwrap()).await;
        assert_eq!(status, 200, "{body}");
        let (_, tensors) =
            json_of(post("/v1/models/iris/predict", json!({"inputs": {"X": rows}})).await.unwrap()).await;
        let predictions = body["predictions"].as_array().unwrap();
        assert_eq!(predictions.len(), 3, "{body}");
        for (i, p) in predictions.iter().enumerate() {
            assert_eq!(p["label"], tensors["predictions"][i]["label"], "{body}");
            assert!(max_abs_diff(&p["probabilities"], &tensors["predictions"][i]["probabilities"]) < 1e-6);
        }
        assert_eq!((predictions[0]["label"].as_i64(), predictions[2]["label"].as_i64()), (Some(2), Some(0)), "{body}");
    } else {
        println!("../shared/models/mlflow/iris-onnx absent: checked the generated bundles only");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn safetensors_bert_directory_served_with_candle_matches_onnx() {
    let dir = tmp();
    let s = Server::start_with(with_ort());
    let hf = fixtures::minilm_hf_dir(dir.path());
    let onnx = fixtures::minilm_bundle(dir.path());
    let info: Value =
        serde_json::from_str(&ok(&s.cli(&["deploy", hf.to_str().unwrap(), "--name", "minilm-st", "-o", "json"])))
            .unwrap();
    assert_eq!(
        (info["format"].as_str(), info["task"].as_str(), info["runtime"].as_str(), info["servable"].as_bool()),
        (Some("safetensors"), Some("feature-extraction"), Some("candle"), Some(true)),
        "{info}"
    );
    assert_eq!(info["signature"]["outputs"][0]["name"], "last_hidden_state");
    ok(&s.cli(&["deploy", onnx.to_str().unwrap(), "--name", "minilm-onnx"]));

    let texts = json!(["A man is eating food.", "The stock market fell sharply today.", "good job"]);
    let c = s.client(&s.admin_key);
    let req = zoo_api::PredictRequest { inputs: texts, ..Default::default() };
    let st: Vec<Vec<f64>> = serde_json::from_value(c.predict("minilm-st", None, &req).await.unwrap().body).unwrap();
    let ox: Vec<Vec<f64>> = serde_json::from_value(c.predict("minilm-onnx", None, &req).await.unwrap().body).unwrap();
    // The same model: fp32 weights through candle against the int8 ONNX export
    // through ONNX Runtime.
    for (a, b) in st.iter().zip(&ox) {
        assert_eq!(a.len(), 384);
        let cos = a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
        let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
        println!("candle vs ONNX int8: cosine {cos:.5}, max abs diff {diff:.5}");
        assert!(cos > 0.995, "candle and ONNX embeddings disagree: cosine {cos}");
    }

    // A safetensors directory of a model type zoo does not run: stored, not served.
    let other = dir.path().join("gpt");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::copy(hf.join("model.safetensors"), other.join("model.safetensors")).unwrap();
    std::fs::write(other.join("config.json"), r#"{"model_type": "gpt2"}"#).unwrap();
    let info: Value =
        serde_json::from_str(&ok(&s.cli(&["deploy", other.to_str().unwrap(), "--name", "gpt", "-o", "json"]))).unwrap();
    assert_eq!(info["servable"], false);
    assert!(info["reason"].as_str().unwrap().contains("bert"), "{info}");
}

#[tokio::test(flavor = "multi_thread")]
async fn safetensors_bert_sequence_classifier_served_as_text_classification() {
    let dir = tmp();
    let s = Server::start_with(with_ort());
    let (cls_dir, head) = fixtures::minilm_classifier_dir(dir.path());
    let reference = fixtures::minilm_cls_bundle(dir.path());
    let info: Value =
        serde_json::from_str(&ok(&s.cli(&["deploy", cls_dir.to_str().unwrap(), "--name", "minilm-cls", "-o", "json"])))
            .unwrap();
    assert_eq!(
        (info["format"].as_str(), info["task"].as_str(), info["runtime"].as_str(), info["servable"].as_bool()),
        (Some("safetensors"), Some("text-classification"), Some("candle"), Some(true)),
        "{info}"
    );
    assert_eq!(info["labels"], json!(["NEGATIVE", "POSITIVE"]));
    assert_eq!(info["signature"]["outputs"][0]["name"], "logits");
    assert_eq!(info["signature"]["outputs"][0]["shape"], json!(["batch", 2]));
    ok(&s.cli(&["deploy", reference.to_str().unwrap(), "--name", "minilm-cls-onnx"]));

    // Reference: the [CLS] state of the same encoder through ONNX Runtime (int8
    // export), then BERT's pooler and the classifier computed here.
    let texts = json!(["This movie was absolutely wonderful!", "A dull, lifeless and boring film.", "good job"]);
    let c = s.client(&s.admin_key);
    let req = zoo_api::PredictRequest { inputs: texts.clone(), top_k: Some(2), ..Default::default() };
    let got: Vec<Vec<zoo_api::LabelScore>> =
        serde_json::from_value(c.predict("minilm-cls", None, &req).await.unwrap().body).unwrap();
    let req = zoo_api::PredictRequest { inputs: texts, ..Default::default() };
    let cls: Vec<Vec<f64>> =
        serde_json::from_value(c.predict("minilm-cls-onnx", None, &req).await.unwrap().body).unwrap();
    for (scores, cls) in got.iter().zip(&cls) {
        let want = head.scores(cls);
        for (i, label) in head.labels.iter().enumerate() {
            let score = scores.iter().find(|l| l.label == *label).unwrap().score as f64;
            println!("{label}: candle {score:.4}, ONNX encoder + head {:.4}", want[i]);
            assert!((score - want[i]).abs() < 0.02, "{label}: {score} vs {}", want[i]);
        }
    }

    // A classifier whose head weights are missing is refused, naming them.
    let broken = dir.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    let tensors: Vec<_> = fixtures::read_safetensors(&cls_dir.join("model.safetensors"))
        .into_iter()
        .filter(|t| !t.name.starts_with("classifier."))
        .collect();
    fixtures::write_safetensors(&broken.join("model.safetensors"), &tensors);
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(cls_dir.join(f), broken.join(f)).unwrap();
    }
    let out = s.cli(&["deploy", broken.to_str().unwrap(), "--name", "broken"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid_artifact") && err.contains("classifier"), "{err}");
}

/// Whether `got` matches `want`: labels and strings exactly, numbers within a
/// relative tolerance.
fn same_predictions(got: &Value, want: &Value, tol: f64) -> bool {
    match (got, want) {
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_predictions(x, y, tol))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| same_predictions(v, w, tol)))
        }
        (Value::Number(x), Value::Number(y)) if y.is_i64() => x.as_i64() == y.as_i64(),
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= tol * y.abs().max(1.0)
        }
        (a, b) => a == b,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sklearn_skops_bundles_match_scikit_learn() {
    let s = Server::start_with(with_ort());
    let dir = fixtures::sklearn_bundles();
    let index: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(dir.join("index.json")).unwrap()).unwrap();
    let predict = |model: &str, body: &Value| {
        let (url, key, body) = (s.at(&format!("/v1/models/{model}/predict")), s.admin_key.clone(), body.clone());
        async move { json_of(reqwest::Client::new().post(url).bearer_auth(key).json(&body).send().await.unwrap()).await }
    };
    let (mut rows, mut requests, mut cases) = (0usize, 0usize, 0usize);
    for case in &index {
        let name = case["case"].as_str().unwrap();
        let expected: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(name).join("expected.json")).unwrap()).unwrap();
        let model = format!("sk-{}", name.replace('_', "-"));
        let info: Value = serde_json::from_str(&ok(&s.cli(&[
            "deploy",
            dir.join(name).to_str().unwrap(),
            "--name",
            &model,
            "-o",
            "json",
        ])))
        .unwrap();
        assert_eq!(info["format"], "mlflow", "{name}: {info}");
        if !expected["servable"].as_bool().unwrap() {
            let reason = info["reason"].as_str().unwrap_or_default();
            assert_eq!(info["servable"], false, "{name}: {info}");
            let why = if name.contains("pickle") { "never loads" } else { "KNeighborsClassifier" };
            assert!(reason.contains(why) && reason.contains("skl2onnx"), "{name}: {reason}");
            let (status, body) = predict(&model, &json!({"dataframe_split": {"columns": [], "data": [[]]}})).await;
            assert_eq!((status, code(&body)), (409, "not_servable"), "{body}");
            continue;
        }
        assert_eq!(
            (info["servable"].as_bool(), info["runtime"].as_str()),
            (Some(true), Some("sklearn")),
            "{name}: {info}"
        );
        if let Some(classes) = expected["classes"].as_array() {
            let labels: Vec<String> =
                classes.iter().map(|c| c.as_str().map_or_else(|| c.to_string(), str::to_string)).collect();
            assert_eq!(info["labels"], json!(labels), "{name}");
        }
        // float32 models: scikit-learn itself is not bit-stable across batch sizes.
        let tol = if expected["input_dtype"] == "float32" { 2e-6 } else { 1e-9 };
        let mut checks: Vec<(String, &Value)> =
            expected["row_sets"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), &v["serving"])).collect();
        if let Some(variants) = expected["serving_variants"].as_object() {
            checks.extend(variants.iter().map(|(k, v)| (k.clone(), v)));
        }
        for (what, serving) in checks {
            let (status, body) = predict(&model, &serving["request"]).await;
            requests += 1;
            if serving["status"] == 200 {
                assert_eq!(status, 200, "{name}/{what}: {body}");
                let want = &serving["response"]["predictions"];
                assert!(
                    same_predictions(&body["predictions"], want, tol),
                    "{name}/{what}: zoo {body} vs MLflow {want}"
                );
                rows += want.as_array().map_or(0, Vec::len);
            } else {
                assert_eq!(
                    (status, code(&body)),
                    (400, "invalid_input"),
                    "{name}/{what}: MLflow refused it too: {body}"
                );
            }
        }
        cases += 1;
    }
    println!(
        "{cases} scikit-learn models: {requests} requests, {rows} predictions equal to MLflow's and scikit-learn's"
    );
    assert!(cases >= 25 && rows > 500, "too little was compared: {cases} cases, {rows} rows");

    // The shared iris bundle (float32 StandardScaler + LogisticRegression), against
    // what MLflow serves for its own serving input example.
    let reference = dir.join("shared-iris-sklearn.json");
    let shared = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/models/mlflow/iris-sklearn");
    if shared.is_dir() {
        let want: Value = serde_json::from_str(&std::fs::read_to_string(&reference).unwrap()).unwrap();
        ok(&s.cli(&["deploy", shared.to_str().unwrap(), "--name", "iris-sklearn"]));
        let (status, body) = predict("iris-sklearn", &want["request"]).await;
        assert_eq!(status, 200, "{body}");
        println!("iris-sklearn: zoo {} vs MLflow {}", body["predictions"], want["response"]["predictions"]);
        assert!(same_predictions(&body["predictions"], &want["response"]["predictions"], 0.0));
    } else {
        println!("../shared/models/mlflow/iris-sklearn absent: checked the generated bundles only");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mlflow_transformers_flavor_served_through_safetensors() {
    let dir = tmp();
    let s = Server::start_with(with_ort());
    let (cls_dir, _) = fixtures::minilm_classifier_dir(dir.path());
    let bundle = fixtures::mlflow_transformers_bundle(dir.path(), &cls_dir, "text-classification");
    let info: Value =
        serde_json::from_str(&ok(&s.cli(&["deploy", bundle.to_str().unwrap(), "--name", "mlflow-cls", "-o", "json"])))
            .unwrap();
    assert_eq!(
        (info["format"].as_str(), info["task"].as_str(), info["runtime"].as_str(), info["servable"].as_bool()),
        (Some("mlflow"), Some("text-classification"), Some("candle"), Some(true)),
        "{info}"
    );
    assert_eq!(info["signature"]["mlflow"]["served_flavor"], "transformers");
    ok(&s.cli(&["deploy", cls_dir.to_str().unwrap(), "--name", "plain-cls"]));
    let texts = ["This movie was absolutely wonderful!", "A dull, lifeless and boring film."];
    let c = s.client(&s.admin_key);
    let req = zoo_api::PredictRequest { inputs: json!(texts), ..Default::default() };
    let plain: Vec<Vec<zoo_api::LabelScore>> =
        serde_json::from_value(c.predict("plain-cls", None, &req).await.unwrap().body).unwrap();
    // MLflow's request shapes, answered as mlflow models serve does: one
    // {label, score} record per row.
    for body in [
        json!({"inputs": texts}),
        json!({"instances": texts}),
        json!({"dataframe_split": {"columns": ["text"], "data": [[texts[0]], [texts[1]]]}}),
        json!({"dataframe_records": [{"text": texts[0]}, {"text": texts[1]}]}),
    ] {
        let r = s
            .http()
            .post(s.at("/v1/models/mlflow-cls/predict"))
            .bearer_auth(&s.admin_key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let (status, got) = json_of(r).await;
        assert_eq!(status, 200, "{body}: {got}");
        let predictions = got["predictions"].as_array().unwrap();
        assert_eq!(predictions.len(), 2, "{got}");
        for (p, want) in predictions.iter().zip(&plain) {
            assert_eq!(p["label"], want[0].label.as_str(), "{got}");
            assert!((p["score"].as_f64().unwrap() - want[0].score as f64).abs() < 1e-6);
        }
    }

    // Weights kept as a pickle are stored with the reason, never loaded.
    let pickled = dir.path().join("pickled");
    std::fs::create_dir_all(pickled.join("model")).unwrap();
    std::fs::copy(bundle.join("MLmodel"), pickled.join("MLmodel")).unwrap();
    std::fs::copy(bundle.join("model/config.json"), pickled.join("model/config.json")).unwrap();
    std::fs::write(pickled.join("model/pytorch_model.bin"), b"\x80\x02not loaded").unwrap();
    let info: Value =
        serde_json::from_str(&ok(&s.cli(&["deploy", pickled.to_str().unwrap(), "--name", "pickled", "-o", "json"])))
            .unwrap();
    assert_eq!(info["servable"], false);
    assert!(info["reason"].as_str().unwrap().contains("pytorch_model.bin"), "{info}");
}

/// Live child processes of `pid` whose command name starts with `name` (Linux /proc).
fn children_named(pid: u32, name: &str) -> Vec<u32> {
    let mut v = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // pid (comm) state ppid ...
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let comm = &stat[open + 1..close];
        let mut fields = stat[close + 2..].split(' ');
        let state = fields.next();
        let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) && name.starts_with(comm) && state != Some("Z") {
            v.push(stat[..open].trim().parse().unwrap());
        }
    }
    v
}

/// 512 samples at 16 kHz: a voiced-like mix of tones.
fn audio_chunk() -> Vec<f32> {
    (0..512)
        .map(|i| {
            let t = i as f32 / 16000.0;
            0.5 * (2.0 * std::f32::consts::PI * 220.0 * t).sin() + 0.2 * (2.0 * std::f32::consts::PI * 1100.0 * t).sin()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn torchscript_served_by_libtorch_matches_its_references() {
    let dir = tmp();
    let s = Server::start_with(with_ort());
    let predict = |model: &str, body: Value| {
        let (url, key) = (s.at(&format!("/v1/models/{model}/predict")), s.admin_key.clone());
        async move { json_of(reqwest::Client::new().post(url).bearer_auth(key).json(&body).send().await.unwrap()).await }
    };

    // MLPs: one traced by libtorch here (reference computed in Rust), and the
    // shared one made by PyTorch (reference computed by PyTorch).
    for (i, f) in fixtures::torch_mlps(dir.path()).iter().enumerate() {
        let name = format!("mlp-pt-{i}");
        let out = ok(&s.cli(&["deploy", f.path.to_str().unwrap(), "--name", &name]));
        assert!(out.contains("(torchscript file"), "the CLI says what it detected: {out}");
        let info: Value =
            serde_json::from_str(&ok(&s.cli(&["models", "show", &name, "--version", "1", "-o", "json"]))).unwrap();
        assert_eq!((info["runtime"].as_str(), info["servable"].as_bool()), (Some("torch"), Some(true)), "{info}");
        let input = info["signature"]["inputs"][0]["name"].as_str().unwrap().to_string();
        if !f.input_name.is_empty() {
            assert_eq!(input, f.input_name);
        }
        let (status, body) = predict(&name, json!({"inputs": {input: f.x}})).await;
        assert_eq!(status, 200, "{body}");
        let diff = max_abs_diff(&body["outputs"]["output_0"], &f.y);
        println!("{}: max abs diff {diff:e}", f.source);
        assert!(diff < 1e-5, "{}: {body} vs {}", f.source, f.y);
    }

    // Silero VAD: the TorchScript model against its ONNX export from the same
    // package, run by ONNX Runtime. The ONNX graph takes the 64 samples of context
    // that the TorchScript module keeps itself (zeros at the start) and the state.
    let cache = zoo_tests::models_cache();
    ok(&s.cli(&["deploy", cache.join("silero/silero_vad.jit").to_str().unwrap(), "--name", "silero-pt"]));
    ok(&s.cli(&["deploy", cache.join("silero/silero_vad.onnx").to_str().unwrap(), "--name", "silero-onnx"]));
    for chunk in [audio_chunk(), vec![0.0; 512], audio_chunk().iter().map(|v| v * 0.01).collect()] {
        let (status, pt) = predict("silero-pt", json!({"inputs": {"x": [chunk], "sr": 16000}})).await;
        assert_eq!(status, 200, "{pt}");
        let mut with_context = vec![0.0f32; 64];
        with_context.extend(&chunk);
        let state = vec![vec![vec![0.0f32; 128]; 1]; 2];
        let onnx_req = json!({"inputs": {"input": [with_context], "state": state, "sr": 16000}});
        let (status, onnx) = predict("silero-onnx", onnx_req).await;
        assert_eq!(status, 200, "{onnx}");
        let (p, q) =
            (pt["outputs"]["output_0"][0][0].as_f64().unwrap(), onnx["outputs"]["output"][0][0].as_f64().unwrap());
        println!("silero speech probability: TorchScript {p:.6}, ONNX Runtime {q:.6}");
        assert!((p - q).abs() < 1e-4, "TorchScript {p} vs ONNX {q}");
        // Requests are independent: the module's state is reset before each one.
        let (_, again) = predict("silero-pt", json!({"inputs": {"x": [chunk], "sr": 16000}})).await;
        assert_eq!(again["outputs"], pt["outputs"]);
    }

    // The model's own input check (a ValueError in its TorchScript code) is the
    // client's error, with the model's message; zoo's checks come first.
    let (status, body) = predict("silero-pt", json!({"inputs": {"x": [[0.0, 0.1]], "sr": 16000}})).await;
    assert_eq!((status, code(&body)), (400, "invalid_input"), "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("refused the input: ValueError: Input audio chunk is too short"),
        "{body}"
    );
    let (status, body) = predict("silero-pt", json!({"inputs": {"x": [vec![0.0; 600]], "sr": 16000}})).await;
    assert_eq!((status, code(&body)), (400, "invalid_input"), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("number of samples is 600"), "{body}");
    let (status, body) = predict("silero-pt", json!({"inputs": {"x": [[0.0]]}})).await;
    assert_eq!((status, code(&body)), (400, "invalid_input"), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("missing input 'sr'"), "{body}");
    let (status, body) = predict("silero-pt", json!({"inputs": {"x": [[0.0]], "sr": 1.5}})).await;
    assert_eq!((status, code(&body)), (400, "invalid_input"), "{body}");

    // One worker process per loaded version; one killed while idle is replaced on
    // the next request, which succeeds.
    let workers = children_named(s.pid(), zoo_torch::WORKER_BIN);
    assert_eq!(workers.len(), 3, "one worker per TorchScript version: {workers:?}");
    for w in &workers {
        std::process::Command::new("kill").arg("-KILL").arg(w.to_string()).status().unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let (status, body) = predict("silero-pt", json!({"inputs": {"x": [audio_chunk()], "sr": 16000}})).await;
    assert_eq!(status, 200, "a killed worker is restarted: {body}");
    assert!(!children_named(s.pid(), zoo_torch::WORKER_BIN).iter().any(|p| workers.contains(p)));

    // Deleting the version stops its worker.
    let before = children_named(s.pid(), zoo_torch::WORKER_BIN).len();
    ok(&s.cli(&["rm", "silero-pt", "--all"]));
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(children_named(s.pid(), zoo_torch::WORKER_BIN).len(), before - 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn torchscript_without_the_worker_is_stored_not_served() {
    let mut opts = with_ort();
    opts.env.push(("ZOO_TORCH_WORKER".into(), "/nonexistent/zoo-torch-worker".into()));
    let s = Server::start_with(opts);
    let jit = zoo_tests::models_cache().join("silero/silero_vad.jit");
    let out = ok(&s.cli(&["deploy", jit.to_str().unwrap(), "--name", "silero"]));
    assert!(out.contains("(torchscript file"), "the CLI says what it detected: {out}");
    assert!(out.contains("NOT servable") && out.contains("--features zoo-torch/torch"), "{out}");
    let info: Value =
        serde_json::from_str(&ok(&s.cli(&["models", "show", "silero", "--version", "1", "-o", "json"]))).unwrap();
    assert_eq!(info["format"], "torchscript");
    let inputs: Vec<(&str, &str)> = info["signature"]["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["name"].as_str().unwrap(), i["type_text"].as_str().unwrap()))
        .collect();
    assert_eq!(inputs, [("x", "Tensor"), ("sr", "int")], "{info}");
    let r = s
        .http()
        .post(s.at("/v1/models/silero/predict"))
        .bearer_auth(&s.admin_key)
        .json(&json!({"inputs": {"x": [[0.0]], "sr": 16000}}))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(r).await;
    assert_eq!((status, code(&body)), (409, "not_servable"), "{body}");
}
