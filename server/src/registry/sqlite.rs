//! The embedded registry: one SQLite file, WAL mode, migrations at open.

use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use zoo_api::VersionStatus;

use super::rows::{VERSION_COLUMNS, is_unique_violation, key_from_row, scopes_json, status_str, version_from_row};
use super::sql::{MODEL_SELECT, sql_registry, version_exists};
use super::{AliasChange, KeyRecord, ModelFilter, ModelRecord, ReadyVersion, Registry, RegistryEvent, VersionRecord};
use crate::error::{Error, Result};

pub struct SqliteRegistry {
    pool: SqlitePool,
}

impl SqliteRegistry {
    pub async fn open(url: &str) -> anyhow::Result<SqliteRegistry> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        if let Some(parent) = std::path::Path::new(options.get_filename()).parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        sqlx::migrate!("../migrations/sqlite").run(&pool).await?;
        Ok(SqliteRegistry { pool })
    }

    /// An in-memory database, for unit tests.
    #[cfg(test)]
    pub async fn memory() -> SqliteRegistry {
        let options = SqliteConnectOptions::from_str("sqlite::memory:").expect("static url").foreign_keys(true);
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await.expect("memory db");
        sqlx::migrate!("../migrations/sqlite").run(&pool).await.expect("migrations");
        SqliteRegistry { pool }
    }
}

impl SqliteRegistry {
    const SINGLE_PROCESS: bool = true;

    fn q(sql: &str) -> std::borrow::Cow<'_, str> {
        std::borrow::Cow::Borrowed(sql)
    }

    /// Every registry transaction writes, so it takes the write lock at BEGIN: a
    /// deferred transaction that reads first fails at its first write with "database
    /// is locked" (SQLITE_BUSY, without waiting for the busy timeout) when another
    /// connection committed in between.
    async fn begin(&self) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        self.pool.begin_with("BEGIN IMMEDIATE").await
    }

    /// Transactions begin IMMEDIATE: they are already one at a time.
    async fn lock_keys(_tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>) -> Result<()> {
        Ok(())
    }

    /// SQLite has one server process: nobody else to tell.
    async fn notify(_tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>, _event: &RegistryEvent) -> Result<()> {
        Ok(())
    }
}

sql_registry!(SqliteRegistry, SqliteRow, sqlx::Sqlite);
