//! Faults: the registry database cut during traffic, the object store killed in the
//! middle of an upload and of a download, the server SIGKILLed during alias moves,
//! deletes and uploads, and the cache directory deleted under a running server.
//! After each: no half-written version is visible, none is lost, the sweeper leaves
//! no orphan, and predictions go on without restarting zoo.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use zoo_formats::build;
use zoo_tests::production::{Backends, OwnS3, Proxy, database_addr, via};
use zoo_tests::{Server, fixtures, ok, with_ort};

async fn get(s: &Server, key: &str, path: &str) -> (u16, Value) {
    let r = s.http().get(s.at(path)).bearer_auth(key).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// An MLP whose output bias is `k`: a distinct artifact (and blob) per `k`, and
/// its first output tells which one answered.
fn mlp_variant(dir: &Path, k: usize) -> PathBuf {
    let path = dir.join(format!("mlp-{k}.onnx"));
    let m = build::mlp(&[0.5; 32], &[0.1; 8], &[0.25; 24], &[k as f32, 0.0, 0.0], 4, 8, 3);
    std::fs::write(&path, build::encode(&m)).unwrap();
    path
}

/// First output of the variant MLP for x = [[1, 2, 3, 4]].
fn variant_output(k: usize) -> f64 {
    // hidden = relu(0.5 * 10 + 0.1) = 5.1 each; y0 = 8 * 5.1 * 0.25 + k
    10.2 + k as f64
}

const X: [[f32; 4]; 1] = [[1.0, 2.0, 3.0, 4.0]];

/// Run `f` until it is true or `secs` pass.
async fn eventually<F, Fut>(secs: u64, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < Duration::from_secs(secs), "{what} did not happen within {secs} s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn predictions_go_on_while_the_database_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let fx = fixtures::tiny_mlp(dir.path());
    let b = Backends::fresh().await;
    let proxy = Proxy::start(database_addr(&b.database_url)).await;
    let through = Backends { database_url: via(&b.database_url, proxy.addr), store_url: b.store_url.clone() };
    let s = Server::start_with(through.options(with_ort()));
    let path = fx.path.to_str().unwrap();
    ok(&s.cli(&["deploy", path, "--name", "mlp", "--version", "1", "--alias", "production"]));
    let key = |args: &[&str]| -> String {
        let mut a = vec!["keys", "create", "-o", "json"];
        a.extend_from_slice(args);
        let v: Value = serde_json::from_str(&ok(&s.cli(&a))).unwrap();
        v["key"].as_str().unwrap().to_string()
    };
    let predict_key = key(&["--name", "app", "--scope", "predict"]);
    let unseen_key = key(&["--name", "never-used", "--scope", "predict"]);
    let routes =
        ["/v1/models/mlp/predict", "/v1/models/mlp/aliases/production/predict", "/v1/models/mlp/versions/1/predict"];

    let stop = Arc::new(AtomicBool::new(false));
    let down = Arc::new(AtomicBool::new(false));
    let (oks, oks_down, failures) =
        (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let slowest = Arc::new(std::sync::Mutex::new(Duration::ZERO));
    let clients: Vec<_> = (0..6)
        .map(|i| {
            let (stop, down, oks, oks_down, failures, slowest) =
                (stop.clone(), down.clone(), oks.clone(), oks_down.clone(), failures.clone(), slowest.clone());
            let (url, key, x) = (s.at(routes[i % routes.len()]), predict_key.clone(), fx.x.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let r = http.post(&url).bearer_auth(&key).json(&json!({"inputs": {"x": x}})).send().await;
                    match r {
                        Ok(r) if r.status() == 200 => {
                            let mut s = slowest.lock().unwrap();
                            *s = (*s).max(t.elapsed());
                            oks.fetch_add(1, Ordering::Relaxed);
                            if down.load(Ordering::Relaxed) {
                                oks_down.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        other => {
                            let what = match other {
                                Ok(r) => format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
                                Err(e) => e.to_string(),
                            };
                            eprintln!("{url}: {what}");
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;

    proxy.cut();
    down.store(true, Ordering::Relaxed);
    let cut_at = Instant::now();
    // What needs the registry says so: 503 with a stable code, not a hang or a 500.
    let (status, body) = get(&s, &s.admin_key, "/v1/models").await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("unavailable")), "{body}");
    assert_eq!(s.http().get(s.at("/readyz")).send().await.unwrap().status(), 503);
    let r = s
        .http()
        .post(s.at("/v1/models/mlp/predict"))
        .bearer_auth(&unseen_key)
        .json(&json!({"inputs": {"x": fx.x}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "a key never checked cannot be checked now: unavailable, not unauthorized");
    while cut_at.elapsed() < Duration::from_secs(6) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    down.store(false, Ordering::Relaxed);
    proxy.restore();
    eventually(30, "readiness after the database came back", || async {
        s.http().get(s.at("/readyz")).send().await.unwrap().status() == 200
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let (oks, oks_down, failures) =
        (oks.load(Ordering::Relaxed), oks_down.load(Ordering::Relaxed), failures.load(Ordering::Relaxed));
    let slowest = *slowest.lock().unwrap();
    println!(
        "database cut for 6 s: {oks} predictions ({oks_down} while it was down), {failures} failed, slowest {slowest:?}"
    );
    assert_eq!(failures, 0, "no prediction failed while the database was down");
    assert!(oks_down > 100, "predictions went on while the database was down: {oks_down}");

    // Back to normal: the key never seen works, changes are recorded and followed.
    ok(&s.cli(&["deploy", &mlp_variant(dir.path(), 5).display().to_string(), "--name", "mlp", "--version", "2"]));
    ok(&s.cli(&["alias", "set", "mlp", "production", "2"]));
    let r = s
        .http()
        .post(s.at("/v1/models/mlp/predict"))
        .bearer_auth(&unseen_key)
        .json(&json!({"inputs": {"x": X}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert!((body["outputs"]["y"][0][0].as_f64().unwrap() - variant_output(5)).abs() < 1e-4, "{body}");
}

/// s3s-fs files whose names show a multipart upload in progress.
fn multipart_in_progress(root: &Path) -> bool {
    std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with(".upload"))
}

/// Parts of multipart uploads s3s-fs holds (written, not yet assembled).
fn parts_in_store(root: &Path) -> usize {
    std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".upload_id-"))
        .count()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[tokio::test(flavor = "multi_thread")]
async fn store_killed_during_an_upload_and_a_download() {
    let dir = tempfile::tempdir().unwrap();
    let s3root = dir.path().join("s3");
    let mut s3 = OwnS3::start(&s3root);
    let small = mlp_variant(dir.path(), 1);
    let big = fixtures::large_bundle(dir.path(), 192 << 20);
    let s = Server::start_with(s3.options("faults").await);
    ok(&s.cli(&["deploy", small.to_str().unwrap(), "--name", "small", "--version", "1"]));
    let kept = s3.objects("faults");
    assert_eq!(kept.len(), 1, "{kept:?}");

    // Kill the store once the server has started writing the artifact to it.
    let cli = s
        .cli_command(&s.admin_key)
        .args(["deploy", big.to_str().unwrap(), "--name", "big", "--version", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !multipart_in_progress(&s3root) {
        assert!(start.elapsed() < Duration::from_secs(120), "the upload never reached the store");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    s3.stop();
    let out = cli.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("deploy with the store killed: {:?}\n{stderr}", out.status);
    assert!(!out.status.success(), "the deploy failed");
    assert!(stderr.contains("unavailable"), "the client is told the store is unavailable: {stderr}");
    let (status, body) = get(&s, &s.admin_key, "/v1/models/big").await;
    let visible = body["versions"].as_array().map(|v| v.len()).unwrap_or(0);
    assert!(status == 404 || visible == 0, "no half-written version is visible: {status} {body}");
    // Predictions of a loaded model do not need the store.
    let req = zoo_api::PredictRequest { inputs: json!({"x": X}), ..Default::default() };
    assert!(s.client(&s.admin_key).predict("small", None, &req).await.is_ok());

    s3.restart();
    assert_eq!(s3.objects("faults"), kept, "the interrupted upload left no object behind");
    ok(&s.cli(&["deploy", big.to_str().unwrap(), "--name", "big", "--version", "1"]));
    let info: Value = serde_json::from_str(&ok(&s.cli(&["models", "show", "big", "-o", "json"]))).unwrap();
    let sha = info["versions"][0]["sha256"].as_str().unwrap().to_string();
    let size = info["versions"][0]["size"].as_u64().unwrap();

    // Kill the store in the middle of a download: the client sees a broken
    // transfer (never a short body passed off as whole), then a whole one.
    let url = s.at("/v1/models/big/versions/1/artifact");
    let mut r = s.http().get(&url).bearer_auth(&s.admin_key).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.content_length(), Some(size));
    let mut got = 0u64;
    while got < 4 << 20 {
        got += r.chunk().await.unwrap().expect("more of the artifact").len() as u64;
    }
    s3.stop();
    let rest = async {
        loop {
            match r.chunk().await {
                Ok(Some(c)) => got += c.len() as u64,
                Ok(None) => return Ok(got),
                Err(e) => return Err(e),
            }
        }
    };
    let outcome = tokio::time::timeout(Duration::from_secs(60), rest).await.expect("the download ended");
    println!("download with the store killed after 4 MiB: {outcome:?} of {size} bytes");
    assert!(outcome.is_err(), "the transfer is reported broken, not complete");
    assert!(got < size);
    let r = s.http().get(&url).bearer_auth(&s.admin_key).send().await.unwrap();
    assert_eq!(r.status(), 503, "with the store down, a download is unavailable");

    s3.restart();
    let r = s.http().get(&url).bearer_auth(&s.admin_key).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let whole = r.bytes().await.unwrap();
    assert_eq!(whole.len() as u64, size);
    assert_eq!(sha256_hex(&whole), sha, "the artifact comes back whole once the store is back");
    assert!(!s.log().contains("panicked"));
}

/// Alias moves, deletes and deploys as fast as one client can send them, until
/// the server dies; `done` counts those that succeeded.
async fn churn(url: String, key: String, variants: Vec<PathBuf>, done: Arc<AtomicUsize>) {
    let http = reqwest::Client::new();
    for i in 0.. {
        let versions: Vec<String> = match http.get(format!("{url}/v1/models/m")).bearer_auth(&key).send().await {
            Ok(r) if r.status() == 200 => {
                let v: Value = r.json().await.unwrap_or_default();
                v["versions"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|v| v["version"].as_str().map(String::from)).collect())
                    .unwrap_or_default()
            }
            _ => return,
        };
        let r = match i % 3 {
            0 => {
                let body = std::fs::read(&variants[i % variants.len()]).unwrap();
                http.post(format!("{url}/v1/models/m/versions")).bearer_auth(&key).body(body).send().await
            }
            1 => {
                let Some(v) = versions.get(i % versions.len().max(1)) else { continue };
                http.put(format!("{url}/v1/models/m/aliases/production"))
                    .bearer_auth(&key)
                    .json(&json!({"version": v}))
                    .send()
                    .await
            }
            _ => {
                let Some(v) = versions.last() else { continue };
                http.delete(format!("{url}/v1/models/m/versions/{v}")).bearer_auth(&key).send().await
            }
        };
        match r {
            Ok(r) if r.status().is_success() => {
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

/// Every listed version is whole (its artifact has its sha256 and it predicts),
/// aliases name listed versions and agree with their history, and the store and
/// cache hold exactly what the versions reference once the sweeper has run.
async fn check_consistent(s: &Server, b: &Backends) -> usize {
    let key = &s.admin_key;
    let (status, model) = get(s, key, "/v1/models/m").await;
    assert_eq!(status, 200, "{model}");
    let versions = model["versions"].as_array().unwrap().clone();
    let mut shas = BTreeSet::new();
    for v in &versions {
        let name = v["version"].as_str().unwrap();
        assert_eq!(v["status"], "ready", "{v}");
        let r = s
            .http()
            .get(s.at(&format!("/v1/models/m/versions/{name}/artifact")))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "version {name} can be downloaded");
        let bytes = r.bytes().await.unwrap();
        let sha = v["sha256"].as_str().unwrap();
        assert_eq!(sha256_hex(&bytes), sha, "version {name} is whole");
        shas.insert(sha.to_string());
        let r = s
            .http()
            .post(s.at(&format!("/v1/models/m/versions/{name}/predict")))
            .bearer_auth(key)
            .json(&json!({"inputs": {"x": X}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "version {name} predicts");
    }
    let listed: BTreeSet<&str> = versions.iter().filter_map(|v| v["version"].as_str()).collect();
    let (_, aliases) = get(s, key, "/v1/models/m/aliases").await;
    for (alias, target) in aliases["aliases"].as_object().unwrap() {
        assert!(listed.contains(target.as_str().unwrap()), "alias {alias} -> {target} names a listed version");
        let last = aliases["history"].as_array().unwrap().iter().find(|m| m["alias"] == *alias).unwrap();
        assert_eq!(last["to"], *target, "the history's last move of {alias} is where it points");
    }
    let store = b.store().await;
    use zoo_server::store::ObjectStore;
    let start = Instant::now();
    loop {
        let blobs: BTreeSet<String> = store.list_blobs().await.unwrap().into_iter().collect();
        if blobs == shas {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the store holds exactly the listed versions' blobs once swept: {blobs:?} vs {shas:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cached: BTreeSet<String> = std::fs::read_dir(s.data_dir.join("cache"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(cached.is_subset(&shas), "the cache holds only referenced artifacts: {cached:?} vs {shas:?}");
    versions.len()
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_during_alias_moves_deletes_and_uploads_leaves_nothing_half_done() {
    let dir = tempfile::tempdir().unwrap();
    let variants: Vec<PathBuf> = (0..5).map(|k| mlp_variant(dir.path(), k)).collect();
    let b = Backends::fresh().await;
    let mut opts = b.options(with_ort());
    opts.data_dir = Some(dir.path().join("data"));
    // The sweeper takes unfinished uploads of a dead server after 2 s.
    opts.env.push(("ZOO_STALE_UPLOAD_SECS".into(), "2".into()));
    opts.env.push(("ZOO_SWEEP_INTERVAL_SECS".into(), "1".into()));
    let mut s = Server::start_with(opts.clone());
    for (k, v) in variants.iter().enumerate().take(3) {
        ok(&s.cli(&["deploy", v.to_str().unwrap(), "--name", "m", "--version", &(k + 1).to_string()]));
    }
    ok(&s.cli(&["alias", "set", "m", "production", "1"]));
    let mut total = 0;
    for round in 0..6u64 {
        let done = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..3)
            .map(|_| tokio::spawn(churn(s.url.clone(), s.admin_key.clone(), variants.clone(), done.clone())))
            .collect();
        tokio::time::sleep(Duration::from_millis(150 + round * 110)).await;
        s.kill();
        for w in workers {
            let _ = w.await;
        }
        let _keep = s.keep_data();
        s = Server::start_with(opts.clone());
        let versions = check_consistent(&s, &b).await;
        let done = done.load(Ordering::Relaxed);
        total += done;
        println!("round {round}: killed after {done} changes made; {versions} versions, consistent");
        if versions < 2 {
            for (k, v) in variants.iter().enumerate().take(2) {
                let out = s.cli(&["deploy", v.to_str().unwrap(), "--name", "m", "--version", &format!("r{round}-{k}")]);
                ok(&out);
            }
        }
    }
    println!(
        "6 kills during {total} alias moves, deletes and deploys: registry, store and cache consistent after each"
    );
    assert!(total > 20, "the kills fell in the middle of work: {total} changes");
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_directory_deleted_under_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = with_ort();
    opts.env.push(("ZOO_SWEEP_INTERVAL_SECS".into(), "1".into()));
    let s = Server::start_with(opts);
    let tc = fixtures::text_classifier(dir.path());
    let (eager, lazy, later) = (mlp_variant(dir.path(), 1), mlp_variant(dir.path(), 2), mlp_variant(dir.path(), 3));
    ok(&s.cli(&["deploy", eager.to_str().unwrap(), "--name", "eager"]));
    ok(&s.cli(&["deploy", lazy.to_str().unwrap(), "--name", "lazy", "--load", "lazy"]));
    ok(&s.cli(&["deploy", tc.dir.to_str().unwrap(), "--name", "tc"]));
    let cache = s.data_dir.join("cache");
    assert!(std::fs::read_dir(&cache).unwrap().count() >= 3);
    std::fs::remove_dir_all(&cache).unwrap();

    let predict = |model: &'static str, body: Value| {
        let (http, url, key) = (s.http(), s.at(&format!("/v1/models/{model}/predict")), s.admin_key.clone());
        async move {
            let r = http.post(url).bearer_auth(key).json(&body).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    // Loaded models answer from memory.
    let (status, body) = predict("eager", json!({"inputs": {"x": X}})).await;
    assert_eq!(status, 200, "{body}");
    assert!((body["outputs"]["y"][0][0].as_f64().unwrap() - variant_output(1)).abs() < 1e-4);
    let (text, label, _) = tc.cases[0];
    let (status, body) = predict("tc", json!({"inputs": [text]})).await;
    assert_eq!((status, body[0][0]["label"].as_str()), (200, Some(label)), "{body}");
    // A lazy model is fetched from the store again on its first request.
    let (status, body) = predict("lazy", json!({"inputs": {"x": X}})).await;
    assert_eq!(status, 200, "{body}");
    assert!((body["outputs"]["y"][0][0].as_f64().unwrap() - variant_output(2)).abs() < 1e-4);
    // Deploys go on, and a sweep over the missing directory is no error.
    ok(&s.cli(&["deploy", later.to_str().unwrap(), "--name", "later", "--load", "lazy"]));
    std::fs::remove_dir_all(&cache).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, body) = predict("later", json!({"inputs": {"x": X}})).await;
    assert_eq!(status, 200, "{body}");
    assert!((body["outputs"]["y"][0][0].as_f64().unwrap() - variant_output(3)).abs() < 1e-4);
    let (status, _) = predict("eager", json!({"inputs": {"x": X}})).await;
    assert_eq!(status, 200);
    let log = s.log();
    assert!(!log.contains("sweep failed") && !log.contains("panicked"), "{log}");
}

/// The archive `zoo deploy` sends for a bundle directory.
fn tar_of_dir(dir: &Path) -> Vec<u8> {
    let packed = zoo_client::pack::measure(dir).unwrap();
    zoo_client::pack::write_tar(dir, &packed.files, Vec::new()).unwrap()
}

/// An upload with a declared sha256 whose body the test hands over piece by
/// piece (chunked: no Content-Length); the task answers status and body.
fn trickled_upload(
    s: &Server,
    path: &str,
    sha256: &str,
) -> (tokio::sync::mpsc::Sender<Vec<u8>>, tokio::task::JoinHandle<(u16, Value)>) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(1);
    let body =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (Ok::<_, std::io::Error>(c), rx)) });
    let r = s
        .http()
        .put(s.at(path))
        .bearer_auth(&s.admin_key)
        .header("x-zoo-sha256", sha256)
        .header("content-type", "application/x-tar")
        .body(reqwest::Body::wrap_stream(body));
    let task = tokio::spawn(async move {
        match r.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                (status, r.json().await.unwrap_or(Value::Null))
            }
            Err(e) => (0, json!({"transport": e.to_string()})),
        }
    });
    (tx, task)
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(60), "waited a minute for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An upload goes into S3 while it arrives: the store holds parts of it before
/// the client has sent it all, and a bundle is unpacked on the way. Whatever then
/// refuses it (a sha256 that is not the content's, a client that goes away, any
/// artifact of the hostile corpus) leaves no object and no multipart upload in
/// the store; an accepted one is stored whole.
#[tokio::test(flavor = "multi_thread")]
async fn uploads_go_into_the_store_as_they_arrive_whole_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let s3root = dir.path().join("s3");
    let s3 = OwnS3::start(&s3root);
    let s = Server::start_with(s3.options("streamed").await);
    let bundle = fixtures::large_bundle(dir.path(), 40 << 20);
    let tar = tar_of_dir(&bundle);
    let sha = sha256_hex(&tar);
    let half = 24 << 20;

    // Accepted: the first 24 MiB reach the store before the rest is sent.
    let (tx, answer) = trickled_upload(&s, "/v1/models/big/versions/1", &sha);
    for piece in tar[..half].chunks(1 << 20) {
        tx.send(piece.to_vec()).await.unwrap();
    }
    wait_for("parts in the store while the upload is half sent", || parts_in_store(&s3root) > 0).await;
    assert!(s3.objects("streamed").is_empty(), "nothing is visible before the upload is accepted");
    for piece in tar[half..].chunks(1 << 20) {
        tx.send(piece.to_vec()).await.unwrap();
    }
    drop(tx);
    let (status, body) = answer.await.unwrap();
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["sha256"], sha.as_str());
    assert_eq!(s3.objects("streamed"), [format!("zoo/blobs/sha256/{sha}")]);
    assert!(!multipart_in_progress(&s3root), "the multipart upload is complete");
    let r = s.http().get(s.at("/v1/models/big/versions/1/artifact")).bearer_auth(&s.admin_key).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(sha256_hex(&r.bytes().await.unwrap()), sha, "the stored artifact is the upload");
    let kept = s3.objects("streamed");

    // A declared sha256 that is not the content's: refused, the parts gone.
    let other = sha256_hex(b"another artifact");
    let (tx, answer) = trickled_upload(&s, "/v1/models/big/versions/2", &other);
    for piece in tar.chunks(1 << 20) {
        tx.send(piece.to_vec()).await.unwrap();
    }
    drop(tx);
    let (status, body) = answer.await.unwrap();
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("sha256_mismatch")), "{body}");
    assert_eq!(s3.objects("streamed"), kept);
    assert!(!multipart_in_progress(&s3root), "the refused upload's parts are gone");

    // A client that goes away halfway.
    let mut changed = tar.clone();
    changed[tar.len() - 2048] ^= 1;
    let (tx, answer) = trickled_upload(&s, "/v1/models/big/versions/3", &sha256_hex(&changed));
    for piece in changed[..half].chunks(1 << 20) {
        tx.send(piece.to_vec()).await.unwrap();
    }
    wait_for("parts of the abandoned upload in the store", || parts_in_store(&s3root) > 0).await;
    answer.abort();
    drop(tx);
    wait_for("the abandoned upload's parts to go", || !multipart_in_progress(&s3root)).await;
    assert_eq!(s3.objects("streamed"), kept);

    // Every hostile artifact, sent the same way: the answer the corpus names, and
    // nothing in the store.
    for case in zoo_formats::hostile::corpus() {
        let (tx, answer) = trickled_upload(&s, "/v1/models/hostile/versions/1", &sha256_hex(&case.bytes));
        for piece in case.bytes.chunks(64 << 10) {
            tx.send(piece.to_vec()).await.unwrap();
        }
        drop(tx);
        let (status, body) = answer.await.unwrap();
        assert_eq!(status, 422, "{}: {body}", case.name);
        match case.expect {
            zoo_formats::hostile::Expect::Unknown => {
                assert_eq!(body["error"]["code"], "unknown_format", "{}: {body}", case.name)
            }
            zoo_formats::hostile::Expect::Invalid { format, rule } => assert_eq!(
                (body["error"]["format"].as_str(), body["error"]["rule"].as_str()),
                (Some(format), Some(rule)),
                "{}: {body}",
                case.name
            ),
        }
        assert_eq!(s3.objects("streamed"), kept, "{}", case.name);
        assert!(!multipart_in_progress(&s3root), "{}", case.name);
    }
    let (status, _) = get(&s, &s.admin_key, "/v1/models/hostile").await;
    assert_eq!(status, 404, "no hostile version is visible");
}
