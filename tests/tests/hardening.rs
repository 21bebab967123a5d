//! What a client can make the server spend, and what a key can reach beyond its
//! own rights: bodies without a key, JSON built to amplify, metric labels from
//! made-up names, texts too long to tokenize, sign-in CSRF and redirects, reads
//! that would load models, keys that would create bigger keys, and sessions of a
//! replaced admin key.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use zoo_tests::helpers::{json_of, peak_rss_kib};
use zoo_tests::{Options, Server, fixtures, ok, with_ort};

/// A body of `total` bytes made as it is sent (the client holds 1 MiB).
fn endless(total: usize, byte: u8) -> reqwest::Body {
    let n = total.div_ceil(1 << 20);
    reqwest::Body::wrap_stream(futures::stream::iter((0..n).map(move |_| Ok::<_, std::io::Error>(vec![byte; 1 << 20]))))
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_without_a_key_cannot_grow_the_servers_memory() {
    let s = Server::start_with(with_ort());
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    // 2 GiB to each route anyone may call, as forms and as JSON, four at a time.
    let routes = [
        ("/login", "application/x-www-form-urlencoded"),
        ("/logout", "application/x-www-form-urlencoded"),
        ("/v1/auth/session", "application/json"),
        ("/models/mlp/try", "application/x-www-form-urlencoded"),
        ("/keys", "application/x-www-form-urlencoded"),
    ];
    // Each route once with a small body first: what the first request to a route
    // initializes is not what a large body costs.
    for (path, ct) in routes {
        let _ = http.post(s.at(path)).header("content-type", ct).body("a=1").send().await.unwrap();
    }
    let before = peak_rss_kib(s.pid());
    let sends = routes.iter().flat_map(|r| std::iter::repeat_n(*r, 4)).map(|(path, ct)| {
        let req = http.post(s.at(path)).header("content-type", ct).body(endless(2 << 30, b'a'));
        async move {
            match req.send().await {
                Ok(r) => format!("{path}: {}", r.status().as_u16()),
                Err(e) => format!("{path}: connection ended ({})", e.is_request()),
            }
        }
    });
    let outcomes: Vec<String> = futures::stream::iter(sends).buffer_unordered(8).collect().await;
    for o in &outcomes {
        println!("{o}");
        // 413 (read up to the limit), 303 to the sign-in page (a signed-in form
        // without a session: not read at all), or the connection closed on a body
        // still being sent.
        assert!(o.ends_with(": 413") || o.ends_with(": 303") || o.contains("connection ended"), "{o}");
    }
    let after = peak_rss_kib(s.pid());
    println!("server peak memory {before} -> {after} KiB after {} anonymous 2 GiB bodies", outcomes.len());
    assert!(after < before + 8 * 1024, "anonymous bodies moved the server's peak memory by {} KiB", after - before);
    // It still answers.
    assert_eq!(reqwest::get(s.at("/healthz")).await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn json_built_to_amplify_costs_a_few_times_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let mlp = fixtures::tiny_mlp(dir.path());
    let s = Server::start_with(with_ort());
    ok(&s.cli(&["deploy", mlp.path.to_str().unwrap(), "--name", "mlp"]));
    let before = peak_rss_kib(s.pid());
    // 30 MB of one-element rows: as a JSON tree this was gigabytes.
    let rows = "[0],".repeat(7_500_000);
    let v1 = format!("{{\"inputs\": {{\"x\": [{}[0]]}}}}", rows);
    let v2 = format!(
        "{{\"inputs\": [{{\"name\": \"x\", \"shape\": [7500001, 1], \"datatype\": \"FP32\", \"data\": [{}[0]]}}], \
          \"parameters\": {{\"junk\": [{}[0]]}}}}",
        rows,
        "[0],".repeat(100_000)
    );
    let http = reqwest::Client::new();
    for (path, body) in [("/v1/models/mlp/predict", v1), ("/v2/models/mlp/infer", v2)] {
        let size = body.len();
        let (status, answer) =
            json_of(http.post(s.at(path)).bearer_auth(&s.admin_key).body(body).send().await.unwrap()).await;
        println!("{path}: {size} bytes -> {status} {answer}");
        assert_eq!(status, 400, "{answer}");
        assert!(answer.to_string().contains("dimension") || answer.to_string().contains("must"), "{answer}");
    }
    let after = peak_rss_kib(s.pid());
    println!("server peak memory {before} -> {after} KiB");
    assert!(after < before + 256 * 1024, "two 30 MB requests moved the peak by {} KiB", after - before);
}

#[tokio::test(flavor = "multi_thread")]
async fn made_up_names_add_no_metric_series() {
    let dir = tempfile::tempdir().unwrap();
    let mlp = fixtures::tiny_mlp(dir.path());
    let s = Server::start_with(with_ort());
    ok(&s.cli(&["deploy", mlp.path.to_str().unwrap(), "--name", "mlp"]));
    let http = reqwest::Client::new();
    let series = || async {
        let text = reqwest::get(s.at("/metrics")).await.unwrap().text().await.unwrap();
        text.lines().filter(|l| l.starts_with("zoo_requests_total")).count()
    };
    let long = "v".repeat(20_000);
    for i in 0..100 {
        // Without a key: an invalid version, a valid but unknown model.
        let _ = http.get(s.at(&format!("/v2/models/m{i}/versions/{long}{i}/ready"))).send().await.unwrap();
        let _ = http.get(s.at(&format!("/v2/models/m{i}/ready"))).send().await.unwrap();
        let _ = http.post(s.at(&format!("/v2/models/m{i}/versions/{i}/infer"))).body("{}").send().await.unwrap();
        // With a key: unknown models and versions.
        let _ = http.get(s.at(&format!("/v2/models/m{i}"))).bearer_auth(&s.admin_key).send().await.unwrap();
        let _ =
            http.get(s.at(&format!("/v2/models/mlp/versions/x{i}"))).bearer_auth(&s.admin_key).send().await.unwrap();
    }
    let after = series().await;
    let text = reqwest::get(s.at("/metrics")).await.unwrap().text().await.unwrap();
    assert!(!text.contains("vvvvvvvv") && !text.contains("model=\"m1"), "made-up names in the labels");
    assert!(after < 30, "{after} request series after 500 requests with made-up names");
    // A real model still gets its own series.
    let r = http
        .post(s.at("/v1/models/mlp/predict"))
        .bearer_auth(&s.admin_key)
        .json(&json!({"inputs": {"x": mlp.x}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = reqwest::get(s.at("/metrics")).await.unwrap().text().await.unwrap();
    assert!(text.lines().any(|l| l.starts_with("zoo_requests_total") && l.contains("model=\"mlp\"")), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_text_too_long_to_tokenize_is_refused_before_tokenizing() {
    let dir = tempfile::tempdir().unwrap();
    let fx = fixtures::text_classifier(dir.path());
    let s = Server::start_with(with_ort());
    ok(&s.cli(&["deploy", fx.dir.to_str().unwrap(), "--name", "text", "--max-tokens", "512"]));
    let http = reqwest::Client::new();
    let long = "word ".repeat(400_000);
    let (status, body) = json_of(
        http.post(s.at("/v1/models/text/predict"))
            .bearer_auth(&s.admin_key)
            .json(&json!({"inputs": [long.clone(), "good job"]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_input")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("bytes, more than the limit of 8192"), "{body}");
    // A text under the byte limit but over the token limit is refused too, once tokenized.
    let (status, body) = json_of(
        http.post(s.at("/v1/models/text/predict"))
            .bearer_auth(&s.admin_key)
            .json(&json!({"inputs": "a ".repeat(600)}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("tokens"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sign_in_needs_the_forms_token_and_this_sites_origin() {
    let s = Server::start_with(with_ort());
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let form = |csrf: &str| format!("key={}&next=%2F&csrf={csrf}", s.admin_key);
    // No token: another site's form cannot sign a browser in with its own key.
    let r = http
        .post(s.at("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.headers().get("set-cookie").is_none_or(|c| !c.to_str().unwrap().starts_with("zoo_session=")));
    // The sign-in page gives a token in a cookie and in the form.
    let page = http.get(s.at("/login?next=/%09/evil.example")).send().await.unwrap();
    let cookie = page.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    let token = cookie.strip_prefix("zoo_login=").unwrap().to_string();
    let html = page.text().await.unwrap();
    assert!(html.contains(&format!("value=\"{token}\"")));
    assert!(html.contains("name=\"next\" value=\"/\""), "an off-site next becomes /");
    // With both, from this site: signed in, sent to a local path.
    let host = s.url.strip_prefix("http://").unwrap().to_string();
    let r = http
        .post(s.at("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", &cookie)
        .header("origin", format!("http://{host}"))
        .body(form(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "{:?}", r.headers());
    assert!(r.headers()["set-cookie"].to_str().unwrap().starts_with("zoo_session="));
    // The same form posted from another site's page is refused.
    let r = http
        .post(s.at("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", &cookie)
        .header("origin", "http://evil.example")
        .body(form(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn reading_kserve_metadata_loads_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mlp = fixtures::tiny_mlp(dir.path());
    let s = Server::start_with(with_ort());
    ok(&s.cli(&["deploy", mlp.path.to_str().unwrap(), "--name", "mlp", "--load", "lazy"]));
    let out = ok(&s.cli(&["keys", "create", "--name", "reader", "--scope", "read", "-o", "json"]));
    let reader: Value = serde_json::from_str(&out).unwrap();
    let key = reader["key"].as_str().unwrap();
    let http = reqwest::Client::new();
    for path in
        ["/v2/models/mlp", "/v2/models/mlp/ready", "/v2/models/mlp/versions/1", "/v2/models/mlp/versions/1/ready"]
    {
        let (status, body) = json_of(http.get(s.at(path)).bearer_auth(key).send().await.unwrap()).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (_, meta) = json_of(http.get(s.at("/v2/models/mlp")).bearer_auth(key).send().await.unwrap()).await;
    assert_eq!(meta["inputs"][0]["name"], "x", "{meta}");
    let (_, info) =
        json_of(http.get(s.at("/v1/models/mlp/versions/1")).bearer_auth(&s.admin_key).send().await.unwrap()).await;
    assert_eq!(info["loaded"], false, "metadata and readiness loaded the version: {info}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_creates_only_keys_within_its_own_rights() {
    let s = Server::start_with(with_ort());
    let http = reqwest::Client::new();
    let create = |by: String, body: Value| {
        let req = http.post(s.at("/v1/keys")).bearer_auth(by).json(&body);
        async move { json_of(req.send().await.unwrap()).await }
    };
    let soon = (chrono::Utc::now() + chrono::TimeDelta::days(2)).to_rfc3339();
    let (status, text_admin) = create(
        s.admin_key.clone(),
        json!({"name": "text admin", "scopes": ["admin"], "models": ["text-*"], "expires_at": soon}),
    )
    .await;
    assert_eq!(status, 201, "{text_admin}");
    let limited = text_admin["key"].as_str().unwrap().to_string();
    for (what, body) in [
        ("an unrestricted admin key", json!({"name": "x", "scopes": ["admin"]})),
        ("a key for other models", json!({"name": "x", "scopes": ["predict"], "models": ["mlp"]})),
        ("a key for every model", json!({"name": "x", "scopes": ["predict"], "models": ["*"]})),
        ("a broader pattern", json!({"name": "x", "scopes": ["predict"], "models": ["te*"]})),
        (
            "a key that outlives it",
            json!({"name": "x", "scopes": ["predict"], "models": ["text-a"], "expires_at": "2099-01-01T00:00:00Z"}),
        ),
    ] {
        let (status, body) = create(limited.clone(), body).await;
        assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "{what}: {body}");
    }
    let (status, inner) =
        create(limited.clone(), json!({"name": "ok", "scopes": ["predict"], "models": ["text-a*"]})).await;
    assert_eq!(status, 201, "{inner}");
    assert!(inner["info"]["expires_at"].is_string(), "it expires with its creator: {inner}");
    // It sees and revokes only keys within its patterns.
    let (_, list) = json_of(http.get(s.at("/v1/keys")).bearer_auth(&limited).send().await.unwrap()).await;
    let ids: Vec<&str> = list["keys"].as_array().unwrap().iter().map(|k| k["id"].as_str().unwrap()).collect();
    assert!(!ids.is_empty() && ids.len() <= 2, "{list}");
    let (_, all) = json_of(http.get(s.at("/v1/keys")).bearer_auth(&s.admin_key).send().await.unwrap()).await;
    let bootstrap = all["keys"].as_array().unwrap().iter().find(|k| k["models"] == json!([])).unwrap()["id"].clone();
    let r = http
        .delete(s.at(&format!("/v1/keys/{}", bootstrap.as_str().unwrap())))
        .bearer_auth(&limited)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_of_a_replaced_admin_key_end() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let secret = "s".repeat(40);
    let start = |key: &str| {
        let mut o: Options = with_ort();
        o.data_dir = Some(data.clone());
        o.env.push(("ZOO_ADMIN_KEY".into(), key.into()));
        o.env.push(("ZOO_SESSION_SECRET".into(), secret.clone()));
        Server::start_with(o)
    };
    let mut s = start("first-admin-key-0123456789");
    let http = reqwest::Client::new();
    let r =
        http.post(s.at("/v1/auth/session")).json(&json!({"key": "first-admin-key-0123456789"})).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    let r = http.get(s.at("/v1/auth/session")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(r.status(), 200);
    s.stop();
    let s = start("second-admin-key-0123456789");
    let (status, body) =
        json_of(http.get(s.at("/v1/auth/session")).header("cookie", &cookie).send().await.unwrap()).await;
    assert_eq!(status, 401, "a session of the old admin key still works: {body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("replaced"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_last_admin_key_stays_and_revoking_ones_own_key_needs_confirmation() {
    let s = Server::start_with(with_ort());
    let http = reqwest::Client::new();
    let id_of = |k: &str| k.split('_').nth(1).unwrap().to_string();
    let revoke = |key: String, id: String, confirm: bool| {
        let q = if confirm { "?confirm=true" } else { "" };
        let req = http.delete(s.at(&format!("/v1/keys/{id}{q}"))).bearer_auth(key);
        async move { json_of(req.send().await.unwrap()).await }
    };
    let me = id_of(&s.admin_key);
    let (status, body) = revoke(s.admin_key.clone(), me.clone(), false).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("confirmation_required")), "{body}");
    let (status, body) = revoke(s.admin_key.clone(), me.clone(), true).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("last_admin_key")), "{body}");
    // A key limited to some models or expiring does not count as the server's admin.
    let out = ok(&s.cli(&["keys", "create", "--name", "limited", "--scope", "admin", "--model", "x-*", "-o", "json"]));
    let limited: Value = serde_json::from_str(&out).unwrap();
    let (status, _) = revoke(s.admin_key.clone(), me.clone(), true).await;
    assert_eq!(status, 409);
    // With a second admin key, the first can go.
    let out = ok(&s.cli(&["keys", "create", "--name", "second", "--scope", "admin", "-o", "json"]));
    let second: Value = serde_json::from_str(&out).unwrap();
    let (status, body) = revoke(s.admin_key.clone(), me.clone(), true).await;
    assert_eq!(status, 200, "{body}");
    // And the second, now the last, stays.
    let second_key = second["key"].as_str().unwrap().to_string();
    let (status, body) = revoke(second_key.clone(), id_of(&second_key), true).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("last_admin_key")), "{body}");
    assert!(limited["key"].is_string());
}
