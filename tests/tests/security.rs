//! zoo against hostile clients: contract testing of every route (schemathesis), the
//! authorization matrix, and hostile requests while others are being served.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use zoo_tests::{Options, Server, fixtures, ok, with_ort};

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_server_error_or_schema_violation() {
    let dir = tempfile::tempdir().unwrap();
    let admin = "admin-key-for-the-contract-tests-0123456789";
    let mut opts = with_ort();
    // A configured admin key: the tests may revoke any key they find, not this one.
    opts.env.push(("ZOO_ADMIN_KEY".into(), admin.into()));
    let s = Server::start_with(opts);
    let mlp = fixtures::tiny_mlp(dir.path());
    let tc = fixtures::text_classifier(dir.path());
    ok(&s.cli(&["deploy", mlp.path.to_str().unwrap(), "--name", "mlp"]));
    ok(&s.cli(&["deploy", tc.dir.to_str().unwrap(), "--name", "tc", "--alias", "production"]));
    let vit = fixtures::tiny_vit(dir.path());
    ok(&s.cli(&["deploy", vit.to_str().unwrap(), "--name", "vit"]));
    let schemathesis = zoo_tests::test_python().with_file_name("schemathesis");
    let config = zoo_tests::python_script("schemathesis.toml");
    let run = |schema: &str, seed: &str, examples: &str| {
        let out = std::process::Command::new(&schemathesis)
            .current_dir(dir.path())
            .arg("--config-file")
            .arg(&config)
            .args(["run", &s.at(schema), "-H", &format!("Authorization: Bearer {admin}")])
            .args(["--max-examples", examples, "--seed", seed, "--workers", "1", "--checks", "all"])
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", schemathesis.display()));
        let printed = String::from_utf8_lossy(&out.stdout);
        let summary: Vec<&str> = printed.lines().rev().take(25).collect();
        println!("== {schema}, seed {seed}\n{}", summary.into_iter().rev().collect::<Vec<_>>().join("\n"));
        assert!(
            out.status.success(),
            "schemathesis found failures in {schema} (seed {seed}):\n{printed}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(printed.contains("passed"), "{printed}");
    };
    // Each model's own document says exactly what its predict accepts: every
    // phase, every check, against the model itself.
    run("/v1/models/mlp/openapi.json", "20261203", "50");
    run("/v1/models/tc/openapi.json", "20261203", "50");
    // An image model: raw image bodies, forms and base64 JSON, fuzzed.
    run("/v1/models/vit/openapi.json", "20261203", "50");
    // The server-wide document: every check and every phase (examples, coverage,
    // fuzzing, stateful links), several seeds. The tests may delete the models.
    for seed in ["1", "2", "3"] {
        run("/openapi.json", seed, "30");
    }
    assert!(!s.log().contains("panicked"), "no panic in the server");
}

/// A route of the matrix: method, path, body, the scope it needs, and whether it
/// is about model `mlp` (so a key limited to other models is refused).
struct Route {
    method: &'static str,
    path: String,
    body: Option<Vec<u8>>,
    json: bool,
    scope: Option<&'static str>,
    model: bool,
    success: u16,
}

fn route(method: &'static str, path: &str, scope: Option<&'static str>, model: bool, success: u16) -> Route {
    Route { method, path: path.into(), body: None, json: false, scope, model, success }
}

#[tokio::test(flavor = "multi_thread")]
async fn authorization_matrix() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(with_ort());
    let mlp = fixtures::tiny_mlp(dir.path());
    let mlp_bytes = std::fs::read(&mlp.path).unwrap();
    let path = mlp.path.to_str().unwrap();
    ok(&s.cli(&["deploy", path, "--name", "mlp", "--version", "1", "--alias", "production"]));
    let key = |args: &[&str]| -> String {
        let mut a = vec!["keys", "create", "-o", "json"];
        a.extend_from_slice(args);
        let v: Value = serde_json::from_str(&ok(&s.cli(&a))).unwrap();
        v["key"].as_str().unwrap().to_string()
    };
    let id_of = |k: &str| k.split('_').nth(1).unwrap().to_string();
    let mut keys: Vec<(&str, String)> = vec![
        ("read", key(&["--name", "read", "--scope", "read"])),
        ("predict", key(&["--name", "predict", "--scope", "predict"])),
        ("deploy", key(&["--name", "deploy", "--scope", "deploy"])),
        ("admin", key(&["--name", "admin", "--scope", "admin"])),
        (
            "other-model",
            key(&[
                "--name", "other", "--scope", "read", "--scope", "predict", "--scope", "deploy", "--model", "other-*",
            ]),
        ),
    ];
    let revoked = key(&["--name", "revoked", "--scope", "admin"]);
    ok(&s.cli(&["keys", "revoke", &id_of(&revoked)]));
    // A key that expires in a moment (the API refuses expiry dates in the past).
    let http = reqwest::Client::new();
    let expiring: Value = http
        .post(s.at("/v1/keys"))
        .bearer_auth(&s.admin_key)
        .json(&json!({"name": "expiring", "scopes": ["admin"], "expires_at": chrono::Utc::now() + chrono::TimeDelta::seconds(2)}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let expired = expiring["key"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_secs(3)).await;
    keys.push(("revoked", revoked.clone()));
    keys.push(("expired", expired.clone()));
    keys.push(("none", String::new()));

    let predict_body = serde_json::to_vec(&json!({"inputs": {"x": mlp.x}})).unwrap();
    let infer_body =
        serde_json::to_vec(&json!({"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": mlp.x}]}))
            .unwrap();
    let mut failures = Vec::new();
    let mut checked = 0;
    let mut bodies = String::new();
    for (who, k) in &keys {
        // Per key: its own model to delete, version to create and delete, key to revoke.
        ok(&s.cli(&["deploy", path, "--name", &format!("del-{who}")]));
        let throwaway = key(&["--name", &format!("throwaway-{who}"), "--scope", "read"]);
        let mut routes = vec![
            route("GET", "/healthz", None, false, 200),
            route("GET", "/readyz", None, false, 200),
            route("GET", "/metrics", None, false, 200),
            route("GET", "/openapi.json", None, false, 200),
            route("GET", "/v2/health/live", None, false, 200),
            route("GET", "/v2/health/ready", None, false, 200),
            route("GET", "/v1/models", Some("read"), false, 200),
            route("GET", "/v1/models/mlp", Some("read"), true, 200),
            route("GET", "/v1/models/mlp/aliases", Some("read"), true, 200),
            route("GET", "/v1/models/mlp/versions/1", Some("read"), true, 200),
            route("GET", "/v1/models/mlp/versions/1/artifact", Some("read"), true, 200),
            route("GET", "/v1/models/mlp/openapi.json", Some("read"), true, 200),
            route("GET", "/v1/models/mlp/versions/1/openapi.json", Some("read"), true, 200),
            route("GET", "/v2", Some("read"), false, 200),
            route("GET", "/v2/models/mlp", Some("read"), true, 200),
            route("GET", "/v2/models/mlp/versions/1", Some("read"), true, 200),
            route("GET", "/v2/models/mlp/ready", Some("read"), true, 200),
            Route {
                body: Some(predict_body.clone()),
                json: true,
                ..route("POST", "/v1/models/mlp/predict", Some("predict"), true, 200)
            },
            Route {
                body: Some(predict_body.clone()),
                json: true,
                ..route("POST", "/v1/models/mlp/versions/1/predict", Some("predict"), true, 200)
            },
            Route {
                body: Some(predict_body.clone()),
                json: true,
                ..route("POST", "/v1/models/mlp/aliases/production/predict", Some("predict"), true, 200)
            },
            Route {
                body: Some(infer_body.clone()),
                json: true,
                ..route("POST", "/v2/models/mlp/infer", Some("predict"), true, 200)
            },
            Route {
                body: Some(infer_body.clone()),
                json: true,
                ..route("POST", "/v2/models/mlp/versions/1/infer", Some("predict"), true, 200)
            },
            Route {
                body: Some(br#"{"version": "1"}"#.to_vec()),
                json: true,
                ..route("PUT", "/v1/models/mlp/aliases/staging", Some("deploy"), true, 200)
            },
            route("DELETE", "/v1/models/mlp/aliases/staging", Some("deploy"), true, 200),
            Route {
                body: Some(mlp_bytes.clone()),
                ..route("PUT", &format!("/v1/models/mlp/versions/by-{who}"), Some("deploy"), true, 201)
            },
            route("DELETE", &format!("/v1/models/mlp/versions/by-{who}"), Some("deploy"), true, 200),
            Route {
                body: Some(mlp_bytes.clone()),
                ..route("POST", "/v1/models/mlp/versions", Some("deploy"), true, 201)
            },
            route("DELETE", &format!("/v1/models/del-{who}"), Some("deploy"), false, 200),
            route("GET", "/v1/keys", Some("admin"), false, 200),
            Route {
                body: Some(br#"{"name": "made", "scopes": ["read"]}"#.to_vec()),
                json: true,
                ..route("POST", "/v1/keys", Some("admin"), false, 201)
            },
            route("DELETE", &format!("/v1/keys/{}", id_of(&throwaway)), Some("admin"), false, 200),
        ];
        // The model deleted by this key is its own, not mlp: a key limited to other
        // models is refused it like mlp.
        if let Some(r) = routes.iter_mut().find(|r| r.path.starts_with("/v1/models/del-")) {
            r.model = true;
        }
        for r in &routes {
            let mut req = http.request(r.method.parse().unwrap(), s.at(&r.path));
            if !k.is_empty() {
                req = req.bearer_auth(k);
            }
            if let Some(b) = &r.body {
                req = req.body(b.clone());
                if r.json {
                    req = req.header("content-type", "application/json");
                }
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let challenge = resp.headers().get("www-authenticate").cloned();
            let body = resp.text().await.unwrap_or_default();
            bodies.push_str(&body);
            // Every front end (v1, KServe v2) answers a missing or bad key the same way.
            if status == 401 && challenge.as_ref().is_none_or(|v| v != "Bearer realm=\"zoo\"") {
                failures.push(format!("{who:12} {} {}: 401 without WWW-Authenticate: {challenge:?}", r.method, r.path));
            }
            fn scopes_of(who: &str) -> Vec<&'static str> {
                match who {
                    "admin" => vec!["read", "predict", "deploy", "admin"],
                    "other-model" => vec!["read", "predict", "deploy"],
                    "read" => vec!["read"],
                    "predict" => vec!["predict"],
                    "deploy" => vec!["deploy"],
                    _ => vec![],
                }
            }
            let expected = match (r.scope, *who) {
                (None, _) => r.success,
                (Some(_), "none" | "revoked" | "expired") => 401,
                (Some(scope), w) if !scopes_of(w).contains(&scope) && !scopes_of(w).contains(&"admin") => 403,
                (Some(_), "other-model") if r.model => 403,
                _ => r.success,
            };
            checked += 1;
            if status != expected {
                failures.push(format!("{who:12} {} {} -> {status}, expected {expected}: {body}", r.method, r.path));
            }
            let expected_code = match expected {
                401 => Some("unauthorized"),
                403 => Some("forbidden"),
                _ => None,
            };
            if let Some(c) = expected_code
                && status == expected
                && !body.contains(&format!("\"{c}\""))
                && !body.contains(&format!("\"{c}:"))
            {
                failures.push(format!("{who:12} {} {}: no {c} code in {body}", r.method, r.path));
            }
        }
    }
    println!("authorization matrix: {checked} route x key checks");
    assert!(failures.is_empty(), "{} wrong statuses:\n{}", failures.len(), failures.join("\n"));

    // Keys never show up in answers, logs or metrics.
    let metrics = http.get(s.at("/metrics")).send().await.unwrap().text().await.unwrap();
    let log = s.log();
    for (who, k) in keys.iter().filter(|(_, k)| !k.is_empty()) {
        let secret = k.rsplit('_').next().unwrap();
        assert!(!bodies.contains(secret), "the {who} key's secret is in a response");
        assert!(!log.contains(secret), "the {who} key's secret is in the server log");
        assert!(!metrics.contains(secret), "the {who} key's secret is in the metrics");
    }
    assert!(!log.contains(&s.admin_key) && !metrics.contains("zk_"));
}

/// Send raw bytes over TCP, `pace` apart, and read the answer (or none).
fn trickle(addr: &str, head: &str, body: &[u8], pace: Duration, budget: Duration) -> (String, Duration) {
    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let started = Instant::now();
    sock.write_all(head.as_bytes()).unwrap();
    let mut answer = Vec::new();
    for b in body {
        if sock.write_all(&[*b]).is_err() {
            break;
        }
        let deadline = Instant::now() + pace;
        while Instant::now() < deadline {
            let mut buf = [0u8; 4096];
            match sock.read(&mut buf) {
                Ok(0) => return (String::from_utf8_lossy(&answer).into_owned(), started.elapsed()),
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
        if !answer.is_empty() || started.elapsed() > budget {
            break;
        }
    }
    let mut buf = [0u8; 4096];
    if let Ok(n) = sock.read(&mut buf) {
        answer.extend_from_slice(&buf[..n]);
    }
    (String::from_utf8_lossy(&answer).into_owned(), started.elapsed())
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_requests_get_clear_errors_while_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let mlp = fixtures::tiny_mlp(dir.path());
    let opts = Options {
        args: [
            "--upload-idle-timeout-secs",
            "2",
            "--upload-min-bytes-per-sec",
            "100",
            "--max-predict-bytes",
            "4000000",
        ]
        .map(String::from)
        .to_vec(),
        ..with_ort()
    };
    let s = Server::start_with(opts);
    ok(&s.cli(&["deploy", mlp.path.to_str().unwrap(), "--name", "mlp"]));
    let before = zoo_tests::helpers::peak_rss_kib(s.pid());

    // Someone keeps predicting meanwhile.
    let stop = Arc::new(AtomicBool::new(false));
    let (oks, failures) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let client = {
        let (stop, oks, failures) = (stop.clone(), oks.clone(), failures.clone());
        let (url, key, x) = (s.at("/v1/models/mlp/predict"), s.admin_key.clone(), mlp.x.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            while !stop.load(Ordering::Relaxed) {
                match http.post(&url).bearer_auth(&key).json(&json!({"inputs": {"x": x}})).send().await {
                    Ok(r) if r.status() == 200 => oks.fetch_add(1, Ordering::Relaxed),
                    _ => failures.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };

    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let post = |path: &str, body: Vec<u8>, ct: &str| {
        http.post(s.at(path)).bearer_auth(&s.admin_key).header("content-type", ct.to_string()).body(body).send()
    };
    let expect = |(status, body): (u16, Value), want: u16, want_code: &str, what: &str| {
        assert_eq!(status, want, "{what}: {body}");
        let c = body["error"]["code"].as_str().or_else(|| body["error"].as_str()).unwrap_or("");
        assert!(c.starts_with(want_code), "{what}: code {c}, expected {want_code}: {body}");
        println!("ok: {what} -> {status} {want_code}");
    };
    use zoo_tests::helpers::json_of;
    let json = "application/json";
    // Bodies: too large, malformed, nested to the stack's depth, non-finite numbers.
    expect(
        json_of(post("/v1/models/mlp/predict", vec![b' '; 5_000_000], json).await.unwrap()).await,
        413,
        "payload_too_large",
        "an oversized body",
    );
    // Far past the limit, on both protocols: the client, still sending when the
    // server refuses, gets the 413 and not a reset connection.
    for (i, path) in ["/v1/models/mlp/predict", "/v2/models/mlp/infer"].iter().cycle().take(6).enumerate() {
        let r = post(path, vec![b' '; 24_000_000], json).await;
        let r = r.unwrap_or_else(|e| panic!("a 24 MB body to {path} (try {i}): the connection failed: {e:?}"));
        expect(json_of(r).await, 413, "payload_too_large", "a body six times the limit");
    }
    expect(
        json_of(post("/v1/models/mlp/predict", b"{\"inputs\": ".to_vec(), json).await.unwrap()).await,
        400,
        "invalid_request",
        "malformed JSON",
    );
    let deep = format!("{{\"inputs\": {{\"x\": {}{}}}}}", "[".repeat(100_000), "]".repeat(100_000));
    // The tensor parser stops at its depth limit, long before the 100 000th level.
    expect(
        json_of(post("/v1/models/mlp/predict", deep.into_bytes(), json).await.unwrap()).await,
        400,
        "invalid_input",
        "JSON nested 100 000 deep",
    );
    let deep = format!("{{\"inputs\": {{\"x\": {}1.0{}}}}}", "[".repeat(100), "]".repeat(100));
    expect(
        json_of(post("/v1/models/mlp/predict", deep.into_bytes(), json).await.unwrap()).await,
        400,
        "invalid_input",
        "a tensor nested 100 deep",
    );
    expect(
        json_of(
            post("/v1/models/mlp/predict", br#"{"inputs": {"x": [[NaN, 1, 2, 3]]}}"#.to_vec(), json).await.unwrap(),
        )
        .await,
        400,
        "invalid_request",
        "NaN in a tensor",
    );
    expect(
        json_of(
            post("/v1/models/mlp/predict", br#"{"inputs": {"x": [[1e999, 1, 2, 3]]}}"#.to_vec(), json).await.unwrap(),
        )
        .await,
        400,
        "invalid_request",
        "an infinite number",
    );
    expect(
        json_of(
            post("/v1/models/mlp/predict", br#"{"inputs": {"x": [[3.5e38, 1e39, 2, 3]]}}"#.to_vec(), json)
                .await
                .unwrap(),
        )
        .await,
        400,
        "invalid_input",
        "a float32 overflow",
    );
    // Shapes: huge declared shapes, millions of tiny tensors.
    let huge = json!({"inputs": [{"name": "x", "shape": [100000, 100000], "datatype": "FP32", "data": [1]}]});
    expect(
        json_of(post("/v2/models/mlp/infer", serde_json::to_vec(&huge).unwrap(), json).await.unwrap()).await,
        400,
        "invalid_input",
        "a declared shape of 10^10 elements",
    );
    let tiny: Vec<Value> =
        (0..200_000).map(|i| json!({"name": format!("t{i}"), "shape": [1], "datatype": "FP32", "data": [1]})).collect();
    let body = serde_json::to_vec(&json!({"inputs": tiny})).unwrap();
    let status = post("/v2/models/mlp/infer", body, json).await.unwrap().status().as_u16();
    assert!(status == 400 || status == 413, "200 000 tiny tensors: {status}");
    println!("ok: 200 000 tiny tensors -> {status}");
    let rows = json!({"inputs": {"x": vec![[1.0, 2.0, 3.0, 4.0]; 100_000]}});
    expect(
        json_of(post("/v1/models/mlp/predict", serde_json::to_vec(&rows).unwrap(), json).await.unwrap()).await,
        400,
        "invalid_input",
        "100 000 rows in one request",
    );
    // Content types, names: a multipart body, path traversal, header injection.
    expect(
        json_of(post("/v1/models/mlp/predict", b"{}".to_vec(), "multipart/form-data; boundary=x").await.unwrap()).await,
        415,
        "unsupported_media_type",
        "a wrong Content-Type",
    );
    for path in [
        "/v1/models/..%2F..%2Fetc/versions/1",
        "/v1/models/mlp/versions/..%2F..%2Fkeys",
        "/v1/models/mlp%0d%0aSet-Cookie:x=1/predict",
        "/v1/models/%00/predict",
    ] {
        let r = http.get(s.at(path)).bearer_auth(&s.admin_key).send().await.unwrap();
        let status = r.status().as_u16();
        assert!(r.headers().get("set-cookie").is_none(), "{path}: no header injection");
        assert!(status == 400 || status == 404 || status == 405, "{path}: {status}");
        println!("ok: {path} -> {status}");
    }
    let (status, body) = json_of(
        http.put(s.at("/v1/models/a%0d%0ab/versions/1")).bearer_auth(&s.admin_key).body(vec![1]).send().await.unwrap(),
    )
    .await;
    expect((status, body), 400, "invalid_name", "a CR LF in a model name");

    // Slow clients: an upload trickling one byte a second, and a predict body too.
    let addr = s.url.trim_start_matches("http://").to_string();
    let head = format!(
        "PUT /v1/models/slow/versions/1 HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Length: 1000\r\n\r\n",
        s.admin_key
    );
    let (answer, took) = trickle(&addr, &head, &[b'x'; 1000], Duration::from_secs(1), Duration::from_secs(20));
    assert!(answer.starts_with("HTTP/1.1 408") && answer.contains("\"timeout\""), "slow upload: {answer}");
    assert!(took < Duration::from_secs(10), "cut off after {took:?}");
    println!("ok: an upload at 1 byte/s is cut off after {took:?}");
    let head = format!(
        "POST /v1/models/mlp/predict HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n",
        s.admin_key
    );
    let (answer, took) = trickle(&addr, &head, &[b' '; 1000], Duration::from_secs(1), Duration::from_secs(20));
    assert!(answer.starts_with("HTTP/1.1 408"), "slow predict body: {answer}");
    println!("ok: a predict body at 1 byte/s is cut off after {took:?}");
    assert_eq!(
        http.get(s.at("/v1/models/slow")).bearer_auth(&s.admin_key).send().await.unwrap().status(),
        404,
        "nothing of the slow upload is visible"
    );

    stop.store(true, Ordering::Relaxed);
    client.await.unwrap();
    let (oks, failures) = (oks.load(Ordering::Relaxed), failures.load(Ordering::Relaxed));
    let after = zoo_tests::helpers::peak_rss_kib(s.pid());
    println!("meanwhile {oks} predictions, {failures} failed; peak RSS {} MiB -> {} MiB", before / 1024, after / 1024);
    assert_eq!(failures, 0, "the server kept serving the others");
    assert!(after < before + 300 * 1024, "memory stayed bounded: {before} KiB -> {after} KiB");
}
