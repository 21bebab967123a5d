//! The production registry: Postgres, shared by several zoo replicas. Changes are
//! announced with NOTIFY on `zoo_events`; every replica LISTENs and follows.

use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgRow};
use sqlx::{PgPool, Row};
use tokio::sync::broadcast;
use zoo_api::VersionStatus;

use super::rows::{VERSION_COLUMNS, is_unique_violation, key_from_row, scopes_json, status_str, version_from_row};
use super::sql::{MODEL_SELECT, numbered, sql_registry, version_exists};
use super::{
    AliasChange, BlobLock, KeyRecord, ModelFilter, ModelRecord, ReadyVersion, Registry, RegistryEvent, VersionRecord,
};
use crate::error::{Error, Result};

/// The NOTIFY channel.
const CHANNEL: &str = "zoo_events";

pub struct PgRegistry {
    pool: PgPool,
    options: PgConnectOptions,
    events: broadcast::Sender<RegistryEvent>,
}

impl PgRegistry {
    /// Connect, run migrations, and start following other replicas' changes.
    pub async fn open(url: &str) -> anyhow::Result<PgRegistry> {
        let options = PgConnectOptions::from_str(url)?.application_name("zoo");
        let pool = PgPoolOptions::new()
            .max_connections(16)
            // Fail fast (503) when the database is down, rather than queueing requests.
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("../migrations/postgres").run(&pool).await?;
        let (events, _) = broadcast::channel(1024);
        tokio::spawn(listen(pool.clone(), events.clone()));
        Ok(PgRegistry { pool, options, events })
    }

    const SINGLE_PROCESS: bool = false;

    fn q(sql: &str) -> std::borrow::Cow<'_, str> {
        std::borrow::Cow::Owned(numbered(sql))
    }

    async fn begin(&self) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        self.pool.begin().await
    }

    /// Serialize changes to the keys with this transaction (readers go on).
    async fn lock_keys(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> Result<()> {
        sqlx::query("LOCK TABLE api_keys IN SHARE ROW EXCLUSIVE MODE").execute(&mut **tx).await?;
        Ok(())
    }

    /// Announce a change; delivered to listeners when the transaction commits.
    async fn notify(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>, event: &RegistryEvent) -> Result<()> {
        let payload = serde_json::to_string(event).map_err(Error::internal)?;
        sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(payload).execute(&mut **tx).await?;
        Ok(())
    }
}

/// Forward NOTIFY payloads to the broadcast channel, reconnecting when the
/// connection drops (followed by `Resync`: NOTIFY does not replay what was sent
/// meanwhile). Runs until the process ends.
async fn listen(pool: PgPool, events: broadcast::Sender<RegistryEvent>) {
    let mut reconnecting = false;
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot LISTEN for registry changes; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(CHANNEL).await {
            tracing::warn!(error = %e, "cannot LISTEN for registry changes; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        if reconnecting {
            tracing::info!("following registry changes again");
            let _ = events.send(RegistryEvent::Resync);
        }
        reconnecting = true;
        loop {
            match listener.recv().await {
                Ok(n) => match serde_json::from_str::<RegistryEvent>(n.payload()) {
                    Ok(ev) => {
                        let _ = events.send(ev);
                    }
                    Err(e) => tracing::warn!(payload = n.payload(), error = %e, "unknown registry event"),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "lost the registry change feed; reconnecting");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    break;
                }
            }
        }
    }
}

sql_registry!(PgRegistry, PgRow, sqlx::Postgres, {
    fn events(&self) -> Option<broadcast::Receiver<RegistryEvent>> {
        Some(self.events.subscribe())
    }

    /// A session-level advisory lock on a connection of its own: held until the
    /// connection closes (on drop, or when this process dies).
    async fn lock_blob(&self, sha256: &str) -> Result<BlobLock> {
        use sqlx::Connection;
        let key = u64::from_str_radix(sha256.get(..16).unwrap_or("0"), 16).unwrap_or(0) as i64;
        let mut conn = sqlx::PgConnection::connect_with(&self.options).await?;
        sqlx::query("SELECT pg_advisory_lock($1)").bind(key).execute(&mut conn).await?;
        Ok(BlobLock::holding(conn))
    }
});

/// A fresh, empty database next to the one `base_url` names, for tests.
pub async fn scratch_database(base_url: &str) -> anyhow::Result<String> {
    use sqlx::Connection;
    let name = format!("zoo_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(base_url).await?;
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await?;
    let (head, query) = match base_url.split_once('?') {
        Some((h, q)) => (h, format!("?{q}")),
        None => (base_url, String::new()),
    };
    let host_start = head.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match head[host_start..].find('/') {
        Some(i) => &head[..host_start + i],
        None => head,
    };
    Ok(format!("{base}/{name}{query}"))
}
