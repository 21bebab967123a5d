//! Production backends for end-to-end tests: a scratch Postgres database and a
//! fresh prefix in the test S3 bucket, plus a TCP proxy that can cut a connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::Options;

/// The Postgres server the tests use (`scripts/test` sets it).
pub fn database_url() -> String {
    std::env::var("ZOO_TEST_DATABASE_URL")
        .expect("ZOO_TEST_DATABASE_URL is not set: these tests need Postgres (scripts/test starts one)")
}

/// The S3 bucket URL the tests use (`scripts/test` starts s3s-fs and sets it).
pub fn s3_url() -> String {
    std::env::var("ZOO_TEST_S3_URL")
        .expect("ZOO_TEST_S3_URL is not set: these tests need an S3-compatible server (scripts/test starts one)")
}

/// A fresh database and store prefix: the options of a zoo on Postgres + S3.
pub struct Backends {
    pub database_url: String,
    pub store_url: String,
}

impl Backends {
    pub async fn fresh() -> Backends {
        let database_url =
            zoo_server::registry::postgres::scratch_database(&database_url()).await.expect("scratch database");
        let store_url = format!("{}/e2e-{}", s3_url().trim_end_matches('/'), uuid_like());
        Backends { database_url, store_url }
    }

    /// Server options for these backends, on top of `base`.
    pub fn options(&self, base: Options) -> Options {
        let mut o = base;
        o.env.push(("ZOO_DATABASE_URL".into(), self.database_url.clone()));
        o.env.push(("ZOO_STORE".into(), self.store_url.clone()));
        o.args.push("--create-bucket".into());
        o
    }

    /// The S3 store these servers use, opened directly.
    pub async fn store(&self) -> zoo_server::store::s3::S3Store {
        zoo_server::store::s3::S3Store::open(&self.store_url, true).await.expect("open the S3 store")
    }
}

fn uuid_like() -> String {
    let n: u128 = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{:x}{:x}", n, std::process::id())
}

/// A TCP proxy to `target`; `cut()` drops every connection and refuses new ones
/// until `restore()`.
pub struct Proxy {
    pub addr: SocketAddr,
    down: Arc<AtomicBool>,
    conns: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let down = Arc::new(AtomicBool::new(false));
        let conns: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>> = Default::default();
        let (d, c) = (down.clone(), conns.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                if d.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                c.lock().unwrap().push(task.abort_handle());
            }
        });
        Proxy { addr, down, conns }
    }

    pub fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    pub fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

/// host:port of a postgres:// URL.
pub fn database_addr(url: &str) -> SocketAddr {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let rest = rest.split_once('@').map(|(_, r)| r).unwrap_or(rest);
    let hostport = rest.split(['/', '?']).next().unwrap();
    let hostport = if hostport.contains(':') { hostport.to_string() } else { format!("{hostport}:5432") };
    hostport.replace("localhost", "127.0.0.1").parse().expect("database host:port")
}

/// `url` with its host:port replaced by `addr`.
pub fn via(url: &str, addr: SocketAddr) -> String {
    let old = database_addr(url);
    let needle = old.to_string();
    if url.contains(&needle) {
        url.replace(&needle, &addr.to_string())
    } else {
        url.replace("localhost:5432", &addr.to_string())
    }
}

/// An S3-compatible server of a test's own (s3s-fs), to stop and start again.
pub struct OwnS3 {
    bin: String,
    pub port: u16,
    dir: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl OwnS3 {
    pub fn start(dir: &std::path::Path) -> OwnS3 {
        let bin = std::env::var("ZOO_TEST_S3S_BIN").expect("ZOO_TEST_S3S_BIN (scripts/test sets it)");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        std::fs::create_dir_all(dir).unwrap();
        let mut s = OwnS3 { bin, port, dir: dir.to_path_buf(), child: None };
        s.restart();
        s
    }

    /// Start it (again), on the same port and directory.
    pub fn restart(&mut self) {
        let child = std::process::Command::new(&self.bin)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string(), "--access-key", "k", "--secret-key", "s"])
            .arg(&self.dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        self.child = Some(child);
    }

    /// Kill it (SIGKILL), as a crash would.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Server options for a zoo on Postgres (a scratch database) and this store.
    pub async fn options(&self, bucket: &str) -> Options {
        let db = zoo_server::registry::postgres::scratch_database(&database_url()).await.unwrap();
        Options {
            args: vec!["--create-bucket".into()],
            env: vec![
                ("ZOO_DATABASE_URL".into(), db),
                ("ZOO_STORE".into(), format!("s3://{bucket}/zoo")),
                ("AWS_ENDPOINT_URL".into(), format!("http://127.0.0.1:{}", self.port)),
                ("AWS_ACCESS_KEY_ID".into(), "k".into()),
                ("AWS_SECRET_ACCESS_KEY".into(), "s".into()),
            ],
            ..Default::default()
        }
    }

    /// Files the store holds under `bucket` (s3s-fs keeps objects as files).
    pub fn objects(&self, bucket: &str) -> Vec<String> {
        fn walk(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(root, &p, out);
                } else if let Ok(rel) = p.strip_prefix(root) {
                    out.push(rel.display().to_string());
                }
            }
        }
        let mut v = Vec::new();
        walk(&self.dir.join(bucket), &self.dir.join(bucket), &mut v);
        v.retain(|p| p.contains("blobs/sha256/") && !p.contains(".s3s"));
        v.sort();
        v
    }
}

impl Drop for OwnS3 {
    fn drop(&mut self) {
        self.stop();
    }
}
