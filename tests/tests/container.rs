//! The container image, for real: `scripts/image` packages the binaries this
//! run built (`ZOO_IMAGE_BINARIES`) on a Debian base made with debootstrap, and
//! podman runs it as an operator would (`scripts/podman-host` flags): its
//! default command serves on 8080 as an unprivileged user with its data on a
//! volume; the host's `zoo` CLI deploys into it and predicts; its HEALTHCHECK
//! passes; `podman stop` drains it (exit 0 before the stop timeout); a new
//! container on the same volume still has the model.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use zoo_tests::{fixtures, max_abs_diff, ok, zoo_bin};

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn podman(args: &[&str]) -> Output {
    run(Command::new("podman").args(args))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Removes what the test made, also when it fails.
struct Cleanup(Vec<Vec<String>>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for args in self.0.iter().rev() {
            let _ = Command::new("podman").args(args).output();
        }
    }
}

async fn wait_ready(url: &str, container: &str) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(r) = http.get(format!("{url}/readyz")).send().await
            && r.status() == 200
        {
            return;
        }
        if Instant::now() > deadline {
            let logs = Command::new("podman").args(["logs", container]).output().unwrap();
            panic!(
                "the container never became ready:\n{}{}",
                String::from_utf8_lossy(&logs.stdout),
                String::from_utf8_lossy(&logs.stderr)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn image_runs_deploys_predicts_drains_and_keeps_its_volume() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let id = std::process::id();
    let (tag, volume, admin_key) = (
        format!("localhost/zoo-test:{id}"),
        format!("zoo-test-{id}"),
        format!("container-test-admin-key-{id}-0123456789"),
    );
    let mut cleanup = Cleanup(vec![vec!["rmi".into(), "-f".into(), tag.clone()]]);

    let started = Instant::now();
    let bins = zoo_bin().parent().unwrap().to_path_buf();
    let out = run(Command::new(root.join("scripts/image")).args(["--tag", &tag]).env("ZOO_IMAGE_BINARIES", &bins));
    assert_eq!(text(&out), tag);
    let built = started.elapsed();

    // What the image declares.
    let inspect: Value = serde_json::from_slice(&podman(&["image", "inspect", &tag]).stdout).unwrap();
    let config = &inspect[0]["Config"];
    let size_mb = inspect[0]["Size"].as_f64().unwrap() / 1e6;
    println!("image {tag}: {size_mb:.0} MB, built in {built:?} (binaries from {})", bins.display());
    assert_eq!(config["User"], "10001:10001", "{config}");
    assert_eq!(config["Cmd"], json!(["serve", "--listen", "0.0.0.0:8080"]));
    assert_eq!(config["Entrypoint"], json!(["/usr/local/bin/zoo"]));
    assert!(config["Volumes"].get("/var/lib/zoo").is_some(), "{config}");
    assert!(config["ExposedPorts"].get("8080/tcp").is_some(), "{config}");
    assert_eq!(config["Labels"]["org.opencontainers.image.version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(config["Labels"]["org.opencontainers.image.title"], "zoo");
    assert_eq!(config["Labels"]["org.opencontainers.image.base.name"], "localhost/zoo-base:bookworm");

    let flags = text(&run(&mut Command::new(root.join("scripts/podman-host"))));
    let flags: Vec<&str> = flags.split_whitespace().collect();
    podman(&["volume", "create", &volume]);
    cleanup.0.insert(0, vec!["volume".into(), "rm".into(), "-f".into(), volume.clone()]);

    let start = |name: &str, port: u16| {
        cleanup_args(name);
        let publish = format!("127.0.0.1:{port}:8080");
        let mount = format!("{volume}:/var/lib/zoo");
        let key = format!("ZOO_ADMIN_KEY={admin_key}");
        let mut args = vec!["run", "-d", "--name", name, "-p", &publish, "-v", &mount, "-e", &key];
        args.extend(["-e", "ZOO_SHUTDOWN_DELAY_SECS=1"]);
        args.extend(flags.iter().copied());
        args.push(&tag);
        podman(&args);
    };
    fn cleanup_args(name: &str) {
        let _ = Command::new("podman").args(["rm", "-f", name]).output();
    }
    let (first, second) = (format!("zoo-test-{id}-a"), format!("zoo-test-{id}-b"));
    cleanup.0.push(vec!["rm".into(), "-f".into(), first.clone()]);
    cleanup.0.push(vec!["rm".into(), "-f".into(), second.clone()]);

    let port = free_port();
    start(&first, port);
    let url = format!("http://127.0.0.1:{port}");
    wait_ready(&url, &first).await;
    let ready: Value = reqwest::get(format!("{url}/readyz")).await.unwrap().json().await.unwrap();
    println!("readyz in the container: {ready}");
    assert!(
        ready["runtimes"].as_array().unwrap().iter().any(|r| r == "ort"),
        "ONNX Runtime is found in the image: {ready}"
    );
    assert_eq!(text(&podman(&["exec", &first, "id", "-u"])), "10001", "the server runs unprivileged");
    assert_eq!(
        ready["torchscript_sandbox"]["enforced"], true,
        "TorchScript's sandbox works inside podman's defaults: {ready}"
    );

    // The host's CLI deploys into the container; a prediction comes back right.
    let dir = tempfile::tempdir().unwrap();
    let fx = fixtures::tiny_mlp(dir.path());
    let cli = |args: &[&str]| {
        let mut c = Command::new(zoo_bin());
        c.args(args).env("ZOO_URL", &url).env("ZOO_API_KEY", &admin_key).env("ZOO_CONFIG", dir.path().join("cli.toml"));
        c.output().unwrap()
    };
    ok(&cli(&["deploy", fx.path.to_str().unwrap(), "--name", "mlp"]));
    let client = zoo_client::Client::new(&url, Some(admin_key.clone())).unwrap();
    let req = zoo_api::PredictRequest { inputs: json!({"x": fx.x}), ..Default::default() };
    let p = client.predict("mlp", None, &req).await.unwrap();
    assert!(max_abs_diff(&p.body["outputs"]["y"], &fx.y) < 1e-4, "{:?}", p.body);
    let health = Command::new("podman").args(["healthcheck", "run", &first]).output().unwrap();
    assert!(health.status.success(), "the image's HEALTHCHECK passes: {health:?}");

    // podman stop sends SIGTERM: the server drains and exits 0 well before
    // podman would resort to SIGKILL.
    let stopping = Instant::now();
    podman(&["stop", "-t", "30", &first]);
    let took = stopping.elapsed();
    let state: Value = serde_json::from_slice(&podman(&["inspect", &first]).stdout).unwrap();
    assert_eq!(state[0]["State"]["ExitCode"], 0, "{}", state[0]["State"]);
    assert!(took < Duration::from_secs(25), "podman stop took {took:?}: the server did not stop on SIGTERM");
    println!("podman stop: {took:?} (drain delay 1 s)");

    // A new container on the same volume has the model.
    let port = free_port();
    start(&second, port);
    let url = format!("http://127.0.0.1:{port}");
    wait_ready(&url, &second).await;
    let client = zoo_client::Client::new(&url, Some(admin_key.clone())).unwrap();
    let p = client.predict("mlp", None, &req).await.unwrap();
    assert!(max_abs_diff(&p.body["outputs"]["y"], &fx.y) < 1e-4);
    assert_eq!(p.version.as_deref(), Some("1"));
}
