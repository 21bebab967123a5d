//! Row decoding shared by the SQL registries (same columns, per-database types).

use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Decode, Row, Type};
use zoo_api::{Format, Scope, Task, VersionStatus};

use super::{KeyRecord, VersionRecord};
use crate::error::{Error, Result};

/// The version columns, in the order every query selects them.
pub const VERSION_COLUMNS: &str = "model, version, seq, status, format, sha256, size, task, runtime, servable, reason, \
                                   signature, labels, warmup_ms, created_at, created_by, serving";

pub fn status_str(s: VersionStatus) -> &'static str {
    match s {
        VersionStatus::Uploading => "uploading",
        VersionStatus::Ready => "ready",
        VersionStatus::Failed => "failed",
    }
}

fn corrupt(what: &str) -> Error {
    Error::Internal(format!("registry row has an invalid {what}"))
}

pub fn version_from_row<'r, R>(row: &'r R) -> Result<VersionRecord>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    bool: Decode<'r, R::Database> + Type<R::Database>,
    f64: Decode<'r, R::Database> + Type<R::Database>,
    DateTime<Utc>: Decode<'r, R::Database> + Type<R::Database>,
{
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
    let serving: String = row.try_get("serving")?;
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
        serving: serde_json::from_str(&serving).map_err(|_| corrupt("serving"))?,
    })
}

pub fn key_from_row<'r, R>(row: &'r R) -> Result<KeyRecord>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    DateTime<Utc>: Decode<'r, R::Database> + Type<R::Database>,
{
    let scopes: String = row.try_get("scopes")?;
    let models: String = row.try_get("models")?;
    let scopes: Vec<String> = serde_json::from_str(&scopes).map_err(|_| corrupt("scope list"))?;
    Ok(KeyRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        hash: row.try_get("hash")?,
        scopes: scopes.iter().filter_map(|s| Scope::parse(s)).collect(),
        models: serde_json::from_str(&models).map_err(|_| corrupt("model patterns"))?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        last_used_at: row.try_get("last_used_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

/// JSON text of a key's scopes, as stored.
pub fn scopes_json(scopes: &[Scope]) -> Result<String> {
    let s: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
    serde_json::to_string(&s).map_err(Error::internal)
}

/// Whether a database error is a uniqueness violation (a concurrent insert won).
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}
