//! The web catalogue: sessions and CSRF over plain HTTP, and the whole user
//! journey in Debian's headless Chromium (driven by playwright-core from Node).

use std::path::Path;

use serde_json::{Value, json};
use zoo_tests::{Server, fixtures, ok, with_ort};

fn key_of(out: &str) -> String {
    let v: Value = serde_json::from_str(out).unwrap();
    v["key"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_carry_the_keys_scopes_and_need_csrf_to_change_state() {
    let s = Server::start_with(with_ort());
    let reader = key_of(&ok(&s.cli(&["keys", "create", "--name", "reader", "--scope", "read", "-o", "json"])));
    let http = reqwest::Client::new();
    let open = |key: String| {
        let (http, url) = (http.clone(), s.at("/v1/auth/session"));
        async move { http.post(url).json(&json!({"key": key})).send().await.unwrap() }
    };
    // A wrong key opens nothing.
    let r = open("zk_000000000000_".to_string() + &"0".repeat(64)).await;
    assert_eq!(r.status(), 401);
    // The admin's session.
    let r = open(s.admin_key.clone()).await;
    assert_eq!(r.status(), 201);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && cookie.contains("Path=/"), "{cookie}");
    let token = cookie.split(';').next().unwrap().to_string();
    let info: Value = r.json().await.unwrap();
    let csrf = info["csrf_token"].as_str().unwrap().to_string();
    assert_eq!(info["scopes"], json!(["admin"]));
    let with = |method: reqwest::Method, path: &str, cookie: &str| {
        http.request(method, s.at(path)).header("cookie", cookie.to_string())
    };
    // Reading with the cookie alone works; changing state needs the CSRF token.
    assert_eq!(with(reqwest::Method::GET, "/v1/keys", &token).send().await.unwrap().status(), 200);
    let body = json!({"name": "made-in-a-session", "scopes": ["predict"]});
    let r = with(reqwest::Method::POST, "/v1/keys", &token).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 403, "no CSRF token");
    let r = with(reqwest::Method::POST, "/v1/keys", &token)
        .header("x-csrf-token", "wrong")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a wrong CSRF token");
    let r =
        with(reqwest::Method::POST, "/v1/keys", &token).header("x-csrf-token", &csrf).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 201);
    // A tampered or foreign token is refused.
    let tampered = format!("{}x", token);
    assert_eq!(with(reqwest::Method::GET, "/v1/keys", &tampered).send().await.unwrap().status(), 401);
    assert_eq!(with(reqwest::Method::GET, "/v1/auth/session", &token).send().await.unwrap().status(), 200);
    // A reader's session has the reader's scopes: no key management.
    let r = open(reader.clone()).await;
    let reader_cookie = r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    let reader_csrf = r.json::<Value>().await.unwrap()["csrf_token"].as_str().unwrap().to_string();
    assert_eq!(with(reqwest::Method::GET, "/v1/models", &reader_cookie).send().await.unwrap().status(), 200);
    assert_eq!(with(reqwest::Method::GET, "/v1/keys", &reader_cookie).send().await.unwrap().status(), 403);
    let r = with(reqwest::Method::POST, "/v1/keys", &reader_cookie)
        .header("x-csrf-token", &reader_csrf)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "the scope, not only the CSRF token");
    // Revoking the reader's key ends its session.
    let reader_id = reader.split('_').nth(1).unwrap();
    ok(&s.cli(&["keys", "revoke", reader_id]));
    assert_eq!(with(reqwest::Method::GET, "/v1/models", &reader_cookie).send().await.unwrap().status(), 401);
    // Signing out clears the cookie.
    let r = http.delete(s.at("/v1/auth/session")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert!(r.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
}

#[tokio::test(flavor = "multi_thread")]
async fn catalogue_in_a_real_browser() {
    let browser = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        browser.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run `npm ci` in tests/browser (scripts/test does)"
    );
    assert!(
        Path::new("/usr/bin/chromium").is_file(),
        "Chromium is missing: apt-get install chromium chromium-driver (scripts/test does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(with_ort());
    let tc = fixtures::text_classifier(dir.path());
    let mlp = fixtures::tiny_mlp(dir.path());
    ok(&s.cli(&[
        "deploy",
        tc.dir.to_str().unwrap(),
        "--name",
        "text-classifier",
        "--description",
        "Sentiment of English sentences",
    ]));
    ok(&s.cli(&["deploy", mlp.path.to_str().unwrap(), "--name", "mlp"]));
    let vit = fixtures::tiny_vit(dir.path());
    ok(&s.cli(&["deploy", vit.to_str().unwrap(), "--name", "vit"]));
    let chat = dir.path().join("tiny-chat.gguf");
    std::fs::write(&chat, zoo_formats::gguf::write::tiny_llama()).unwrap();
    ok(&s.cli(&["deploy", chat.to_str().unwrap(), "--name", "tiny-chat"]));
    let reader = key_of(&ok(
        &s.cli(&["keys", "create", "--name", "reader", "--scope", "read", "--scope", "predict", "-o", "json"])
    ));
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/browser-artifacts");
    let out = std::process::Command::new("node")
        .arg(browser.join("catalogue.mjs"))
        .args([s.url.as_str(), s.admin_key.as_str(), reader.as_str(), shots.to_str().unwrap()])
        .output()
        .expect("node (Node.js) must be installed");
    let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{printed}");
    assert!(out.status.success() && printed.contains("all checks passed"), "{printed}");
    for shot in ["login", "models", "model", "try", "try-image", "chat", "docs", "keys", "model-phone"] {
        assert!(shots.join(format!("{shot}.png")).is_file(), "screenshot {shot}.png");
    }
    println!("screenshots in {}", shots.display());
}
