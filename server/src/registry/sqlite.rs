//! The embedded registry: one SQLite file, WAL mode, migrations at open.

use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use zoo_api::{Format, Scope, Task, VersionStatus};

use super::{KeyRecord, ModelFilter, ModelRecord, ReadyVersion, Registry, VersionRecord};
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
            std::fs::create_dir_all(parent)?;
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

const VERSION_COLUMNS: &str = "model, version, seq, status, format, sha256, size, task, runtime, servable, reason, \
                               signature, labels, warmup_ms, created_at, created_by";

fn status_str(s: VersionStatus) -> &'static str {
    match s {
        VersionStatus::Uploading => "uploading",
        VersionStatus::Ready => "ready",
        VersionStatus::Failed => "failed",
    }
}

fn version_from_row(row: &SqliteRow) -> Result<VersionRecord> {
    let corrupt = |what: &str| Error::Internal(format!("registry row has an invalid {what}"));
    let status = match row.try_get::<String, _>("status")?.as_str() {
        "uploading" => VersionStatus::Uploading,
        "ready" => VersionStatus::Ready,
        "failed" => VersionStatus::Failed,
        _ => return Err(corrupt("status")),
    };
    let format: Option<String> = row.try_get("format")?;
    let task: Option<String> = row.try_get("task")?;
    let signature: Option<String> = row.try_get("signature")?;
    let labels: String = row.try_get("labels")?;
    Ok(VersionRecord {
        model: row.try_get("model")?,
        version: row.try_get("version")?,
        seq: row.try_get("seq")?,
        status,
        format: format.as_deref().and_then(Format::parse).ok_or_else(|| corrupt("format"))?,
        sha256: row.try_get::<Option<String>, _>("sha256")?.unwrap_or_default(),
        size: row.try_get("size")?,
        task: task.as_deref().and_then(Task::parse).ok_or_else(|| corrupt("task"))?,
        runtime: row.try_get("runtime")?,
        servable: row.try_get("servable")?,
        reason: row.try_get("reason")?,
        signature: serde_json::from_str(signature.as_deref().unwrap_or("null")).map_err(|_| corrupt("signature"))?,
        labels: serde_json::from_str(&labels).map_err(|_| corrupt("labels"))?,
        warmup_ms: row.try_get("warmup_ms")?,
        created_at: row.try_get("created_at")?,
        created_by: row.try_get("created_by")?,
    })
}

fn key_from_row(row: &SqliteRow) -> Result<KeyRecord> {
    let scopes: String = row.try_get("scopes")?;
    let models: String = row.try_get("models")?;
    let scopes: Vec<String> = serde_json::from_str(&scopes).map_err(Error::internal)?;
    Ok(KeyRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        hash: row.try_get("hash")?,
        scopes: scopes.iter().filter_map(|s| Scope::parse(s)).collect(),
        models: serde_json::from_str(&models).map_err(Error::internal)?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        last_used_at: row.try_get("last_used_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

impl SqliteRegistry {
    async fn model_record(&self, row: &SqliteRow) -> Result<ModelRecord> {
        let name: String = row.try_get("name")?;
        let latest = sqlx::query(&format!(
            "SELECT {VERSION_COLUMNS} FROM versions WHERE model = ? AND status = 'ready' ORDER BY seq DESC LIMIT 1"
        ))
        .bind(&name)
        .fetch_optional(&self.pool)
        .await?
        .map(|r| version_from_row(&r))
        .transpose()?;
        Ok(ModelRecord {
            name,
            description: row.try_get("description")?,
            created_at: row.try_get("created_at")?,
            created_by: row.try_get("created_by")?,
            updated_at: row.try_get("updated_at")?,
            latest,
            version_count: row.try_get("version_count")?,
            total_size: row.try_get("total_size")?,
        })
    }
}

const MODEL_SELECT: &str = "SELECT m.name, m.description, m.created_at, m.created_by, m.updated_at, \
     (SELECT COUNT(*) FROM versions v WHERE v.model = m.name AND v.status = 'ready') AS version_count, \
     (SELECT COALESCE(SUM(v.size), 0) FROM versions v WHERE v.model = m.name AND v.status = 'ready') AS total_size \
     FROM models m";

#[async_trait]
impl Registry for SqliteRegistry {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    fn single_process(&self) -> bool {
        true
    }

    async fn begin_version(
        &self,
        model: &str,
        version: Option<&str>,
        description: Option<&str>,
        by: &str,
    ) -> Result<String> {
        let now = Utc::now();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO models (name, description, created_at, created_by, updated_at) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT(name) DO UPDATE SET updated_at = excluded.updated_at",
        )
        .bind(model)
        .bind(description.unwrap_or(""))
        .bind(now)
        .bind(by)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if let Some(d) = description {
            sqlx::query("UPDATE models SET description = ? WHERE name = ?")
                .bind(d)
                .bind(model)
                .execute(&mut *tx)
                .await?;
        }
        let version = match version {
            Some(v) => v.to_string(),
            None => {
                let max: Option<i64> = sqlx::query_scalar(
                    "SELECT MAX(CAST(version AS INTEGER)) FROM versions WHERE model = ? \
                     AND version NOT GLOB '*[^0-9]*' AND length(version) <= 18",
                )
                .bind(model)
                .fetch_one(&mut *tx)
                .await?;
                (max.unwrap_or(0) + 1).to_string()
            }
        };
        let existing: Option<String> =
            sqlx::query_scalar("SELECT status FROM versions WHERE model = ? AND version = ?")
                .bind(model)
                .bind(&version)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(status) = existing {
            let detail = if status == "uploading" { "is being uploaded right now" } else { "already exists" };
            return Err(Error::VersionExists(format!(
                "version '{version}' of model '{model}' {detail}; deploy another version (or omit --version to take the next number)"
            )));
        }
        let seq: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) + 1 FROM versions WHERE model = ?")
            .bind(model)
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO versions (model, version, seq, status, created_at, created_by) VALUES (?, ?, ?, 'uploading', ?, ?)",
        )
        .bind(model)
        .bind(&version)
        .bind(seq)
        .bind(now)
        .bind(by)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(version)
    }

    async fn attach_blob(&self, model: &str, version: &str, sha256: &str) -> Result<()> {
        sqlx::query("UPDATE versions SET sha256 = ? WHERE model = ? AND version = ? AND status = 'uploading'")
            .bind(sha256)
            .bind(model)
            .bind(version)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn finish_version(&self, model: &str, version: &str, r: &ReadyVersion) -> Result<VersionRecord> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE versions SET status = ?, format = ?, sha256 = ?, size = ?, task = ?, runtime = ?, servable = ?, \
             reason = ?, signature = ?, labels = ?, warmup_ms = ? WHERE model = ? AND version = ? AND status = 'uploading'",
        )
        .bind(status_str(VersionStatus::Ready))
        .bind(r.format.as_str())
        .bind(&r.sha256)
        .bind(r.size)
        .bind(r.task.as_str())
        .bind(&r.runtime)
        .bind(r.servable)
        .bind(&r.reason)
        .bind(serde_json::to_string(&r.signature).map_err(Error::internal)?)
        .bind(serde_json::to_string(&r.labels).map_err(Error::internal)?)
        .bind(r.warmup_ms)
        .bind(model)
        .bind(version)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Err(Error::Internal(format!("upload of {model}/{version} was swept before it finished")));
        }
        sqlx::query("UPDATE models SET updated_at = ? WHERE name = ?")
            .bind(Utc::now())
            .bind(model)
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query(&format!("SELECT {VERSION_COLUMNS} FROM versions WHERE model = ? AND version = ?"))
            .bind(model)
            .bind(version)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        version_from_row(&row)
    }

    async fn abort_version(&self, model: &str, version: &str) -> Result<Option<String>> {
        let mut tx = self.pool.begin().await?;
        let sha: Option<Option<String>> = sqlx::query_scalar(
            "DELETE FROM versions WHERE model = ? AND version = ? AND status != 'ready' RETURNING sha256",
        )
        .bind(model)
        .bind(version)
        .fetch_optional(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM models WHERE name = ? AND NOT EXISTS (SELECT 1 FROM versions WHERE model = ?)")
            .bind(model)
            .bind(model)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(sha.flatten())
    }

    async fn list_models(&self, f: &ModelFilter) -> Result<Vec<ModelRecord>> {
        // Format and task filters apply to the latest version, so they are checked
        // after the fact; page until `limit` matches are found.
        let mut out = Vec::new();
        let mut after = f.after.clone().unwrap_or_default();
        let pattern =
            f.q.as_ref().map(|q| format!("%{}%", q.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")));
        loop {
            let rows = sqlx::query(&format!(
                "{MODEL_SELECT} WHERE m.name > ? AND (? IS NULL OR m.name LIKE ? ESCAPE '\\' OR m.description LIKE ? ESCAPE '\\') \
                 ORDER BY m.name LIMIT ?"
            ))
            .bind(&after)
            .bind(&pattern)
            .bind(&pattern)
            .bind(&pattern)
            .bind(i64::from(f.limit))
            .fetch_all(&self.pool)
            .await?;
            let exhausted = rows.len() < f.limit as usize;
            for row in &rows {
                let m = self.model_record(row).await?;
                after = m.name.clone();
                let latest = m.latest.as_ref();
                if f.format.is_some_and(|fmt| latest.is_none_or(|v| v.format != fmt)) {
                    continue;
                }
                if f.task.is_some_and(|t| latest.is_none_or(|v| v.task != t)) {
                    continue;
                }
                out.push(m);
                if out.len() == f.limit as usize {
                    return Ok(out);
                }
            }
            if exhausted {
                return Ok(out);
            }
        }
    }

    async fn get_model(&self, name: &str) -> Result<Option<ModelRecord>> {
        let row =
            sqlx::query(&format!("{MODEL_SELECT} WHERE m.name = ?")).bind(name).fetch_optional(&self.pool).await?;
        match row {
            Some(r) => Ok(Some(self.model_record(&r).await?)),
            None => Ok(None),
        }
    }

    async fn list_versions(&self, model: &str) -> Result<Vec<VersionRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {VERSION_COLUMNS} FROM versions WHERE model = ? AND status = 'ready' ORDER BY seq DESC"
        ))
        .bind(model)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(version_from_row).collect()
    }

    async fn default_version(&self, model: &str) -> Result<Option<VersionRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {VERSION_COLUMNS} FROM versions WHERE model = ? AND status = 'ready' AND version = \
             COALESCE((SELECT version FROM aliases WHERE model = ? AND alias = 'production'), version) \
             ORDER BY seq DESC LIMIT 1"
        ))
        .bind(model)
        .bind(model)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(version_from_row).transpose()
    }

    async fn get_version(&self, model: &str, version: &str) -> Result<Option<VersionRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {VERSION_COLUMNS} FROM versions WHERE model = ? AND version = ? AND status = 'ready'"
        ))
        .bind(model)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(version_from_row).transpose()
    }

    async fn delete_version(&self, model: &str, version: &str) -> Result<Option<VersionRecord>> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(&format!(
            "DELETE FROM versions WHERE model = ? AND version = ? AND status = 'ready' RETURNING {VERSION_COLUMNS}"
        ))
        .bind(model)
        .bind(version)
        .fetch_optional(&mut *tx)
        .await?;
        if row.is_some() {
            sqlx::query("UPDATE models SET updated_at = ? WHERE name = ?")
                .bind(Utc::now())
                .bind(model)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        row.as_ref().map(version_from_row).transpose()
    }

    async fn delete_model(&self, name: &str) -> Result<Option<Vec<VersionRecord>>> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(&format!(
            "DELETE FROM versions WHERE model = ? AND status = 'ready' RETURNING {VERSION_COLUMNS}"
        ))
        .bind(name)
        .fetch_all(&mut *tx)
        .await?;
        let deleted = sqlx::query("DELETE FROM models WHERE name = ?").bind(name).execute(&mut *tx).await?;
        tx.commit().await?;
        if deleted.rows_affected() == 0 && rows.is_empty() {
            return Ok(None);
        }
        rows.iter().map(version_from_row).collect::<Result<Vec<_>>>().map(Some)
    }

    async fn aliases(&self, model: &str) -> Result<BTreeMap<String, String>> {
        let rows: Vec<(String, String)> = sqlx::query_as("SELECT alias, version FROM aliases WHERE model = ?")
            .bind(model)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().collect())
    }

    async fn blob_referenced(&self, sha256: &str) -> Result<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM versions WHERE sha256 = ?")
            .bind(sha256)
            .fetch_one(&self.pool)
            .await?;
        Ok(n > 0)
    }

    async fn referenced_blobs(&self) -> Result<HashSet<String>> {
        let rows: Vec<String> = sqlx::query_scalar("SELECT DISTINCT sha256 FROM versions WHERE sha256 IS NOT NULL")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().collect())
    }

    async fn sweep_uploading(&self, before: DateTime<Utc>) -> Result<Vec<String>> {
        let mut tx = self.pool.begin().await?;
        let shas: Vec<Option<String>> = sqlx::query_scalar(
            "DELETE FROM versions WHERE status IN ('uploading', 'failed') AND created_at < ? RETURNING sha256",
        )
        .bind(before)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM models WHERE NOT EXISTS (SELECT 1 FROM versions WHERE versions.model = models.name)")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(shas.into_iter().flatten().collect())
    }

    async fn create_key(&self, k: &KeyRecord) -> Result<()> {
        let scopes: Vec<&str> = k.scopes.iter().map(|s| s.as_str()).collect();
        sqlx::query(
            "INSERT INTO api_keys (id, name, hash, scopes, models, created_at, expires_at, last_used_at, revoked_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&k.id)
        .bind(&k.name)
        .bind(&k.hash)
        .bind(serde_json::to_string(&scopes).map_err(Error::internal)?)
        .bind(serde_json::to_string(&k.models).map_err(Error::internal)?)
        .bind(k.created_at)
        .bind(k.expires_at)
        .bind(k.last_used_at)
        .bind(k.revoked_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_key(&self, id: &str) -> Result<Option<KeyRecord>> {
        let row = sqlx::query("SELECT * FROM api_keys WHERE id = ?").bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn list_keys(&self) -> Result<Vec<KeyRecord>> {
        let rows = sqlx::query("SELECT * FROM api_keys ORDER BY created_at, id").fetch_all(&self.pool).await?;
        rows.iter().map(key_from_row).collect()
    }

    async fn revoke_key(&self, id: &str, at: DateTime<Utc>) -> Result<bool> {
        let r = sqlx::query("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?")
            .bind(at)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn touch_key(&self, id: &str, at: DateTime<Utc>) -> Result<()> {
        sqlx::query("UPDATE api_keys SET last_used_at = ? WHERE id = ?").bind(at).bind(id).execute(&self.pool).await?;
        Ok(())
    }

    async fn count_keys(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM api_keys").fetch_one(&self.pool).await?)
    }
}
