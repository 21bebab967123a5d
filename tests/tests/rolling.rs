//! Rolling restarts behind a real load balancer: three replicas on one Postgres
//! and one S3-compatible server behind Debian's haproxy (health checks on
//! `/readyz`), open-loop predictions and deploys through haproxy while each
//! replica in turn gets SIGTERM, exits, and starts again. Nothing may fail:
//! each replica drains (`/readyz` 503 for the drain delay while still serving,
//! then finishes what it has) and haproxy takes it out before it stops
//! listening. Then one replica is SIGKILLed: only the requests in flight on it
//! may fail, and they are counted. Every deploy the clients saw succeed is a
//! version afterwards, and no other version exists.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use zoo_tests::production::Backends;
use zoo_tests::{Options, Server, fixtures, max_abs_diff};

const KEY: &str = "rolling-restart-admin-key-0123456789";
/// Seconds a replica keeps serving with `/readyz` at 503 after SIGTERM; haproxy
/// needs `fall` x `inter` = 2 x 250 ms to see it.
const DRAIN_DELAY: &str = "2";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Haproxy {
    child: Child,
    socket: std::path::PathBuf,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Haproxy {
    fn start(dir: &std::path::Path, front: u16, replicas: &[u16]) -> Haproxy {
        let socket = dir.join("haproxy.sock");
        let servers: String =
            replicas.iter().enumerate().map(|(i, p)| format!("  server r{} 127.0.0.1:{p} check\n", i + 1)).collect();
        let config = format!(
            "global\n  stats socket {sock} mode 600 level admin\n  maxconn 1024\n\
             defaults\n  mode http\n  timeout connect 2s\n  timeout client 60s\n  timeout server 60s\n  \
             option redispatch\n  retries 3\n\
             frontend zoo\n  bind 127.0.0.1:{front}\n  default_backend replicas\n\
             backend replicas\n  balance roundrobin\n  option httpchk GET /readyz\n  http-check expect status 200\n  \
             default-server inter 250ms fall 2 rise 2\n{servers}",
            sock = socket.display()
        );
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let bin = which("haproxy").expect("haproxy is required (Debian's haproxy package; scripts/test installs it)");
        let check = Command::new(&bin).args(["-c", "-q", "-f"]).arg(&path).output().unwrap();
        assert!(check.status.success(), "haproxy -c: {}", String::from_utf8_lossy(&check.stderr));
        let child = Command::new(&bin)
            .args(["-db", "-f"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let h = Haproxy { child, socket };
        let deadline = Instant::now() + Duration::from_secs(20);
        while h.states().values().filter(|up| **up).count() < replicas.len() {
            assert!(Instant::now() < deadline, "haproxy never saw the replicas up: {:?}", h.states());
            std::thread::sleep(Duration::from_millis(100));
        }
        h
    }

    /// haproxy's view of each server: up (operational state 2) or not.
    fn states(&self) -> BTreeMap<String, bool> {
        let Ok(mut s) = std::os::unix::net::UnixStream::connect(&self.socket) else { return BTreeMap::new() };
        s.write_all(b"show servers state replicas\n").unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        // Columns: be_id be_name srv_id srv_name srv_addr srv_op_state ...
        out.lines()
            .filter(|l| !l.starts_with('#') && l.split_whitespace().count() > 6)
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f[3].to_string(), f[5] == "2")
            })
            .collect()
    }
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"].iter().map(|d| std::path::Path::new(d).join(name)).find(|p| p.is_file())
}

/// haproxy's view over time: each server's transitions, recorded every 50 ms.
fn watch(h: Arc<Haproxy>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<BTreeMap<String, Vec<bool>>> {
    std::thread::spawn(move || {
        let mut seen: BTreeMap<String, Vec<bool>> = BTreeMap::new();
        while !stop.load(Ordering::Relaxed) {
            for (name, up) in h.states() {
                let v = seen.entry(name).or_default();
                if v.last() != Some(&up) {
                    v.push(up);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        seen
    })
}

#[derive(Default)]
struct Load {
    predictions_ok: AtomicU64,
    predictions_failed: AtomicU64,
    in_flight: AtomicU64,
    deploys_ok: Mutex<BTreeSet<String>>,
    deploys_failed: AtomicU64,
    /// What failed, with when the request was sent.
    errors: Mutex<Vec<(Instant, String)>>,
}

impl Load {
    fn snapshot(&self) -> (u64, u64, usize, u64) {
        (
            self.predictions_ok.load(Ordering::Relaxed),
            self.predictions_failed.load(Ordering::Relaxed),
            self.deploys_ok.lock().unwrap().len(),
            self.deploys_failed.load(Ordering::Relaxed),
        )
    }
}

/// Open-loop load through haproxy: a prediction every 10 ms (each on its own,
/// whether or not the previous one answered) and a deploy every 400 ms.
fn start_load(
    front: String,
    fx: &fixtures::TensorFixture,
    load: Arc<Load>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let body = json!({"inputs": {"x": fx.x}});
    let expected = fx.y.clone();
    let (l, s, h, f) = (load.clone(), stop.clone(), http.clone(), front.clone());
    let predictions = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let mut tasks = Vec::new();
        while !s.load(Ordering::Relaxed) {
            tick.tick().await;
            let (l, h, f, body, expected) = (l.clone(), h.clone(), f.clone(), body.clone(), expected.clone());
            tasks.push(tokio::spawn(async move {
                let sent = Instant::now();
                l.in_flight.fetch_add(1, Ordering::Relaxed);
                let r = h.post(format!("{f}/v1/models/mlp/predict")).bearer_auth(KEY).json(&body).send().await;
                let outcome = match r {
                    Ok(r) if r.status() == 200 => match r.json::<Value>().await {
                        Ok(v) if max_abs_diff(&v["outputs"]["y"], &expected) < 1e-4 => Ok(()),
                        other => Err(format!("a wrong answer: {other:?}")),
                    },
                    Ok(r) => Err(format!("{} {}", r.status(), r.text().await.unwrap_or_default())),
                    Err(e) => Err(format!("{e:?}")),
                };
                l.in_flight.fetch_sub(1, Ordering::Relaxed);
                match outcome {
                    Ok(()) => l.predictions_ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        l.errors.lock().unwrap().push((sent, format!("predict: {e}")));
                        l.predictions_failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    let artifact = std::fs::read(&fx.path).unwrap();
    let deploys = tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let sent = Instant::now();
            let r = http
                .post(format!("{front}/v1/models/mlp/versions"))
                .bearer_auth(KEY)
                .body(artifact.clone())
                .send()
                .await;
            match r {
                Ok(r) if r.status() == 201 => {
                    let v: Value = r.json().await.unwrap();
                    load.deploys_ok.lock().unwrap().insert(v["version"].as_str().unwrap().to_string());
                }
                Ok(r) => {
                    let message = format!("deploy: {} {}", r.status(), r.text().await.unwrap_or_default());
                    load.errors.lock().unwrap().push((sent, message));
                    load.deploys_failed.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    load.errors.lock().unwrap().push((sent, format!("deploy: {e:?}")));
                    load.deploys_failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
    });
    vec![predictions, deploys]
}

async fn wait_for(h: &Haproxy, server: &str, up: bool) -> Duration {
    let started = Instant::now();
    while h.states().get(server) != Some(&up) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "haproxy never saw {server} {}",
            if up { "up" } else { "down" }
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

/// The versions of `mlp` the registry holds.
async fn versions(front: &str) -> BTreeSet<String> {
    let v: Value = reqwest::Client::new()
        .get(format!("{front}/v1/models/mlp"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["versions"].as_array().unwrap().iter().map(|v| v["version"].as_str().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn rolling_restart_behind_haproxy_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fx = fixtures::tiny_mlp(dir.path());
    let b = Backends::fresh().await;
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let options: Vec<Options> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let mut o =
                b.options(Options { data_dir: Some(dir.path().join(format!("r{}", i + 1))), ..Default::default() });
            o.env.extend([
                ("ZOO_ADMIN_KEY".to_string(), KEY.to_string()),
                ("ZOO_LISTEN".to_string(), format!("127.0.0.1:{port}")),
                ("ZOO_SHUTDOWN_DELAY_SECS".to_string(), DRAIN_DELAY.to_string()),
                ("ZOO_SHUTDOWN_TIMEOUT_SECS".to_string(), "20".to_string()),
            ]);
            o
        })
        .collect();
    let mut replicas: Vec<Option<Server>> = options.iter().map(|o| Some(Server::start_with(o.clone()))).collect();
    let front_port = free_port();
    let front = format!("http://127.0.0.1:{front_port}");
    let h = Arc::new(Haproxy::start(dir.path(), front_port, &ports));
    let r = reqwest::Client::new()
        .post(format!("{front}/v1/models/mlp/versions"))
        .bearer_auth(KEY)
        .body(std::fs::read(&fx.path).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    let load = Arc::new(Load::default());
    let (stop_load, stop_watch) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let watcher = watch(h.clone(), stop_watch.clone());
    let tasks = start_load(front.clone(), &fx, load.clone(), stop_load.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Each replica in turn: SIGTERM, wait for it to exit, start it again, wait
    // until haproxy sends it traffic again.
    for (i, replica) in replicas.iter_mut().enumerate() {
        let name = format!("r{}", i + 1);
        let before = load.snapshot();
        let t = Instant::now();
        let mut r = replica.take().unwrap();
        r.terminate();
        let out = wait_for(&h, &name, false).await;
        let status = tokio::task::spawn_blocking(move || r.wait(Duration::from_secs(40))).await.unwrap();
        assert!(status.success(), "{name} exited {status:?}");
        let exited = t.elapsed();
        *replica = Some(tokio::task::block_in_place(|| Server::start_with(options[i].clone())));
        let back = wait_for(&h, &name, true).await;
        println!(
            "{name}: out of haproxy {out:?} after SIGTERM, exited after {exited:?}, back in haproxy {back:?} after its start; \
             meanwhile predictions ok/failed, deploys ok/failed: {:?} -> {:?}",
            before,
            load.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (ok, failed, deploys, deploys_failed) = load.snapshot();
    println!(
        "rolling restart of 3 replicas: {ok} predictions ok, {failed} failed; {deploys} deploys ok, {deploys_failed} failed"
    );
    {
        let errors = load.errors.lock().unwrap();
        assert_eq!(
            (failed, deploys_failed),
            (0, 0),
            "nothing fails in a rolling restart: {:?}",
            &errors[..errors.len().min(10)]
        );
    }
    assert!(ok > 500 && deploys > 5, "the load ran through the restarts: {ok} predictions, {deploys} deploys");

    // SIGKILL of one replica: only what was in flight on it may fail: every
    // failure is of a request sent before the kill, none of one sent after.
    let in_flight = load.in_flight.load(Ordering::Relaxed);
    let before = load.snapshot();
    let killed_at = Instant::now();
    tokio::task::block_in_place(|| replicas[1].as_mut().unwrap().kill());
    wait_for(&h, "r2", false).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = load.snapshot();
    let lost = (after.1 - before.1) + (after.3 - before.3);
    let errors = load.errors.lock().unwrap().clone();
    println!("SIGKILL of r2 ({in_flight} requests in flight through haproxy just before): {lost} failed: {errors:?}");
    let late: Vec<_> = errors.iter().filter(|(sent, _)| *sent > killed_at).collect();
    assert!(late.is_empty(), "requests sent after the kill failed (haproxy should have sent them elsewhere): {late:?}");
    replicas[1] = Some(tokio::task::block_in_place(|| Server::start_with(options[1].clone())));
    wait_for(&h, "r2", true).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    stop_load.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    stop_watch.store(true, Ordering::Relaxed);
    let seen = watcher.join().unwrap();
    println!("haproxy's view (up = true, in order): {seen:?}");
    for name in ["r1", "r2", "r3"] {
        let v = &seen[name];
        assert!(
            v.windows(2).any(|w| w == [false, true]) && v.contains(&false),
            "{name} went down and up in haproxy: {v:?}"
        );
    }

    // Every acknowledged deploy is a version; nothing else is (version 1 came first).
    let mut acknowledged = load.deploys_ok.lock().unwrap().clone();
    acknowledged.insert("1".into());
    let stored = versions(&front).await;
    let lost: Vec<_> = acknowledged.difference(&stored).collect();
    let ghosts: Vec<_> = stored.difference(&acknowledged).collect();
    // A deploy cut off by the SIGKILL may have been stored without its answer
    // reaching the client: at most the deploys that failed then.
    println!(
        "versions: {} stored, {} acknowledged; lost {lost:?}, not acknowledged {ghosts:?}",
        stored.len(),
        acknowledged.len()
    );
    assert!(lost.is_empty(), "acknowledged deploys were lost: {lost:?}");
    assert!(ghosts.len() as u64 <= after.3 - before.3, "versions no client was told of: {ghosts:?}");
}
