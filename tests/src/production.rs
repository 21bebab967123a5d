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
