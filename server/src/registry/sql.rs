//! The SQL registry, written once for SQLite and Postgres. Queries use `?`
//! placeholders; `q()` numbers them for Postgres. Each backend supplies its pool,
//! its row type and `notify` (Postgres tells other replicas about changes).

use crate::error::Error;

/// `?` placeholders as `$1, $2, ...`.
pub fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    let mut quoted = false;
    for c in sql.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted => {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            }
            _ => out.push(c),
        }
    }
    out
}

pub(super) fn version_exists(model: &str, version: &str, detail: &str) -> Error {
    Error::VersionExists(format!(
        "version '{version}' of model '{model}' {detail}; deploy another version (or omit --version to take the next number)"
    ))
}

pub(super) const MODEL_SELECT: &str = "SELECT m.name, m.description, m.created_at, m.created_by, m.updated_at, \
     (SELECT COUNT(*) FROM versions v WHERE v.model = m.name AND v.status = 'ready') AS version_count, \
     (SELECT CAST(COALESCE(SUM(v.size), 0) AS BIGINT) FROM versions v WHERE v.model = m.name AND v.status = 'ready') AS total_size \
     FROM models m";

/// Implements `Registry` for a type with `pool`, `q()`, `begin()`, `SINGLE_PROCESS` and `notify()`;
/// a backend's own methods of the trait go in the optional block.
macro_rules! sql_registry {
    ($ty:ty, $row:ty, $db:ty $(, { $($own:tt)* })?) => {
        impl $ty {
            /// Point `alias` at `version` inside `tx`, recording the move and
            /// announcing it. Returns the previous version.
            async fn move_alias(
                tx: &mut sqlx::Transaction<'_, $db>,
                model: &str,
                alias: &str,
                version: &str,
                by: &str,
            ) -> Result<Option<String>> {
                let now = Utc::now();
                // Lock the alias row first, so that concurrent moves record their
                // history in order.
                sqlx::query(&Self::q("UPDATE aliases SET version = version WHERE model = ? AND alias = ?"))
                    .bind(model)
                    .bind(alias)
                    .execute(&mut **tx)
                    .await?;
                let previous: Option<String> =
                    sqlx::query_scalar(&Self::q("SELECT version FROM aliases WHERE model = ? AND alias = ?"))
                        .bind(model)
                        .bind(alias)
                        .fetch_optional(&mut **tx)
                        .await?;
                if previous.as_deref() == Some(version) {
                    return Ok(previous);
                }
                sqlx::query(&Self::q(
                    "INSERT INTO aliases (model, alias, version, updated_at, updated_by) VALUES (?, ?, ?, ?, ?) \
                     ON CONFLICT(model, alias) DO UPDATE SET version = excluded.version, \
                     updated_at = excluded.updated_at, updated_by = excluded.updated_by",
                ))
                .bind(model)
                .bind(alias)
                .bind(version)
                .bind(now)
                .bind(by)
                .execute(&mut **tx)
                .await?;
                sqlx::query(&Self::q(
                    "INSERT INTO alias_history (model, alias, from_version, to_version, changed_at, changed_by) VALUES (?, ?, ?, ?, ?, ?)",
                ))
                .bind(model)
                .bind(alias)
                .bind(&previous)
                .bind(version)
                .bind(now)
                .bind(by)
                .execute(&mut **tx)
                .await?;
                let event = RegistryEvent::AliasMoved {
                    model: model.to_string(),
                    alias: alias.to_string(),
                    version: Some(version.to_string()),
                };
                Self::notify(tx, &event).await?;
                Ok(previous)
            }

            /// Remove the model row when it has no version left. The row is locked
            /// first: a concurrent `begin_version` holds it until its new version
            /// is committed, which the delete then sees.
            async fn drop_empty_model(tx: &mut sqlx::Transaction<'_, $db>, model: &str) -> Result<()> {
                sqlx::query(&Self::q("UPDATE models SET updated_at = updated_at WHERE name = ?"))
                    .bind(model)
                    .execute(&mut **tx)
                    .await?;
                sqlx::query(&Self::q("DELETE FROM models WHERE name = ? AND NOT EXISTS (SELECT 1 FROM versions WHERE model = ?)"))
                    .bind(model)
                    .bind(model)
                    .execute(&mut **tx)
                    .await?;
                Ok(())
            }

            async fn model_record(&self, row: &$row) -> Result<ModelRecord> {
                let name: String = row.try_get("name")?;
                let latest = sqlx::query(&Self::q(&format!(
                    "SELECT {VERSION_COLUMNS} FROM versions WHERE model = ? AND status = 'ready' ORDER BY seq DESC LIMIT 1"
                )))
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

        #[async_trait]
        impl Registry for $ty {
            async fn ping(&self) -> Result<()> {
                sqlx::query(&Self::q("SELECT 1")).execute(&self.pool).await?;
                Ok(())
            }

            fn single_process(&self) -> bool {
                Self::SINGLE_PROCESS
            }

            async fn begin_version(
                &self,
                model: &str,
                version: Option<&str>,
                description: Option<&str>,
                by: &str,
            ) -> Result<String> {
                let now = Utc::now();
                let mut tx = self.begin().await?;
                sqlx::query(
                    &Self::q("INSERT INTO models (name, description, created_at, created_by, updated_at) VALUES (?, ?, ?, ?, ?) \
                     ON CONFLICT(name) DO UPDATE SET updated_at = excluded.updated_at",)
                )
                .bind(model)
                .bind(description.unwrap_or(""))
                .bind(now)
                .bind(by)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                if let Some(d) = description {
                    sqlx::query(&Self::q("UPDATE models SET description = ? WHERE name = ?"))
                        .bind(d)
                        .bind(model)
                        .execute(&mut *tx)
                        .await?;
                }
                let version = match version {
                    Some(v) => v.to_string(),
                    None => {
                        let names: Vec<String> =
                            sqlx::query_scalar(&Self::q("SELECT version FROM versions WHERE model = ?"))
                                .bind(model)
                                .fetch_all(&mut *tx)
                                .await?;
                        let max = names
                            .iter()
                            .filter(|v| v.len() <= 18 && v.bytes().all(|b| b.is_ascii_digit()))
                            .filter_map(|v| v.parse::<i64>().ok())
                            .max();
                        (max.unwrap_or(0) + 1).to_string()
                    }
                };
                let existing: Option<String> =
                    sqlx::query_scalar(&Self::q("SELECT status FROM versions WHERE model = ? AND version = ?"))
                        .bind(model)
                        .bind(&version)
                        .fetch_optional(&mut *tx)
                        .await?;
                if let Some(status) = existing {
                    let detail = if status == "uploading" { "is being uploaded right now" } else { "already exists" };
                    return Err(version_exists(model, &version, detail));
                }
                let seq: i64 = sqlx::query_scalar(&Self::q("SELECT COALESCE(MAX(seq), 0) + 1 FROM versions WHERE model = ?"))
                    .bind(model)
                    .fetch_one(&mut *tx)
                    .await?;
                sqlx::query(
                    &Self::q("INSERT INTO versions (model, version, seq, status, created_at, created_by) VALUES (?, ?, ?, 'uploading', ?, ?)",)
                )
                .bind(model)
                .bind(&version)
                .bind(seq)
                .bind(now)
                .bind(by)
                .execute(&mut *tx)
                .await
                .map_err(|e| if is_unique_violation(&e) { version_exists(model, &version, "already exists") } else { e.into() })?;
                tx.commit().await?;
                Ok(version)
            }

            async fn attach_blob(&self, model: &str, version: &str, sha256: &str) -> Result<()> {
                sqlx::query(&Self::q("UPDATE versions SET sha256 = ? WHERE model = ? AND version = ? AND status = 'uploading'"))
                    .bind(sha256)
                    .bind(model)
                    .bind(version)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn finish_version(&self, model: &str, version: &str, r: &ReadyVersion) -> Result<VersionRecord> {
                let mut tx = self.begin().await?;
                let done = sqlx::query(
                    &Self::q("UPDATE versions SET status = ?, format = ?, sha256 = ?, size = ?, task = ?, runtime = ?, servable = ?, \
                     reason = ?, signature = ?, labels = ?, warmup_ms = ?, serving = ? WHERE model = ? AND version = ? AND status = 'uploading'",)
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
                .bind(serde_json::to_string(&r.serving).map_err(Error::internal)?)
                .bind(model)
                .bind(version)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() != 1 {
                    return Err(Error::Internal(format!("upload of {model}/{version} was swept before it finished")));
                }
                sqlx::query(&Self::q("UPDATE models SET updated_at = ? WHERE name = ?"))
                    .bind(Utc::now())
                    .bind(model)
                    .execute(&mut *tx)
                    .await?;
                let row = sqlx::query(&Self::q(&format!("SELECT {VERSION_COLUMNS} FROM versions WHERE model = ? AND version = ?")))
                    .bind(model)
                    .bind(version)
                    .fetch_one(&mut *tx)
                    .await?;
                Self::notify(&mut tx, &RegistryEvent::VersionReady { model: model.to_string(), version: version.to_string() }).await?;
                let record = version_from_row(&row)?;
                if let Some(alias) = &r.alias {
                    Self::move_alias(&mut tx, model, alias, version, &record.created_by).await?;
                }
                tx.commit().await?;
                Ok(record)
            }

            async fn abort_version(&self, model: &str, version: &str) -> Result<Option<String>> {
                let mut tx = self.begin().await?;
                let sha: Option<Option<String>> = sqlx::query_scalar(
                    &Self::q("DELETE FROM versions WHERE model = ? AND version = ? AND status != 'ready' RETURNING sha256",)
                )
                .bind(model)
                .bind(version)
                .fetch_optional(&mut *tx)
                .await?;
                Self::drop_empty_model(&mut tx, model).await?;
                tx.commit().await?;
                Ok(sha.flatten())
            }

            async fn list_models(&self, f: &ModelFilter) -> Result<Vec<ModelRecord>> {
                // Format and task filters apply to the latest version, so they are checked
                // after the fact; page until `limit` matches are found.
                let mut out = Vec::new();
                let mut after = f.after.clone().unwrap_or_default();
                let pattern =
                    f.q.as_ref().map(|q| format!("%{}%", q.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")));
                loop {
                    let rows = sqlx::query(&Self::q(&format!(
                        "{MODEL_SELECT} WHERE m.name > ? AND (? IS NULL OR LOWER(m.name) LIKE ? ESCAPE '\\' OR LOWER(m.description) LIKE ? ESCAPE '\\') \
                         ORDER BY m.name LIMIT ?"
                    )))
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
                    sqlx::query(&Self::q(&format!("{MODEL_SELECT} WHERE m.name = ?"))).bind(name).fetch_optional(&self.pool).await?;
                match row {
                    Some(r) => Ok(Some(self.model_record(&r).await?)),
                    None => Ok(None),
                }
            }

            async fn list_versions(&self, model: &str) -> Result<Vec<VersionRecord>> {
                let rows = sqlx::query(&Self::q(&format!(
                    "SELECT {VERSION_COLUMNS} FROM versions WHERE model = ? AND status = 'ready' ORDER BY seq DESC"
                )))
                .bind(model)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(version_from_row).collect()
            }

            async fn default_version(&self, model: &str) -> Result<Option<VersionRecord>> {
                let row = sqlx::query(&Self::q(&format!(
                    "SELECT {VERSION_COLUMNS} FROM versions WHERE model = ? AND status = 'ready' AND version = \
                     COALESCE((SELECT version FROM aliases WHERE model = ? AND alias = 'production'), version) \
                     ORDER BY seq DESC LIMIT 1"
                )))
                .bind(model)
                .bind(model)
                .fetch_optional(&self.pool)
                .await?;
                row.as_ref().map(version_from_row).transpose()
            }

            async fn get_version(&self, model: &str, version: &str) -> Result<Option<VersionRecord>> {
                let row = sqlx::query(&Self::q(&format!(
                    "SELECT {VERSION_COLUMNS} FROM versions WHERE model = ? AND version = ? AND status = 'ready'"
                )))
                .bind(model)
                .bind(version)
                .fetch_optional(&self.pool)
                .await?;
                row.as_ref().map(version_from_row).transpose()
            }

            async fn delete_version(&self, model: &str, version: &str) -> Result<Option<VersionRecord>> {
                let mut tx = self.begin().await?;
                let aliases: Vec<String> =
                    sqlx::query_scalar(&Self::q("SELECT alias FROM aliases WHERE model = ? AND version = ? ORDER BY alias"))
                        .bind(model)
                        .bind(version)
                        .fetch_all(&mut *tx)
                        .await?;
                if !aliases.is_empty() {
                    return Err(Error::VersionInUse {
                        model: model.to_string(),
                        version: version.to_string(),
                        aliases: aliases.join(", "),
                    });
                }
                let row = sqlx::query(&Self::q(&format!(
                    "DELETE FROM versions WHERE model = ? AND version = ? AND status = 'ready' RETURNING {VERSION_COLUMNS}"
                )))
                .bind(model)
                .bind(version)
                .fetch_optional(&mut *tx)
                .await?;
                if row.is_some() {
                    sqlx::query(&Self::q("UPDATE models SET updated_at = ? WHERE name = ?"))
                        .bind(Utc::now())
                        .bind(model)
                        .execute(&mut *tx)
                        .await?;
                    let event = RegistryEvent::VersionRemoved { model: model.to_string(), version: version.to_string() };
                    Self::notify(&mut tx, &event).await?;
                }
                tx.commit().await?;
                row.as_ref().map(version_from_row).transpose()
            }

            async fn delete_model(&self, name: &str) -> Result<Option<Vec<VersionRecord>>> {
                let mut tx = self.begin().await?;
                let rows = sqlx::query(&Self::q(&format!(
                    "DELETE FROM versions WHERE model = ? AND status = 'ready' RETURNING {VERSION_COLUMNS}"
                )))
                .bind(name)
                .fetch_all(&mut *tx)
                .await?;
                let deleted = sqlx::query(&Self::q("DELETE FROM models WHERE name = ?")).bind(name).execute(&mut *tx).await?;
                Self::notify(&mut tx, &RegistryEvent::ModelRemoved { model: name.to_string() }).await?;
                tx.commit().await?;
                if deleted.rows_affected() == 0 && rows.is_empty() {
                    return Ok(None);
                }
                rows.iter().map(version_from_row).collect::<Result<Vec<_>>>().map(Some)
            }

            async fn aliases(&self, model: &str) -> Result<BTreeMap<String, String>> {
                let rows: Vec<(String, String)> = sqlx::query_as(&Self::q("SELECT alias, version FROM aliases WHERE model = ?"))
                    .bind(model)
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows.into_iter().collect())
            }

            async fn get_alias(&self, model: &str, alias: &str) -> Result<Option<String>> {
                Ok(sqlx::query_scalar(&Self::q("SELECT version FROM aliases WHERE model = ? AND alias = ?"))
                    .bind(model)
                    .bind(alias)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn set_alias(&self, model: &str, alias: &str, version: &str, by: &str) -> Result<Option<String>> {
                let mut tx = self.begin().await?;
                let ready: Option<String> =
                    sqlx::query_scalar(&Self::q("SELECT version FROM versions WHERE model = ? AND version = ? AND status = 'ready'"))
                        .bind(model)
                        .bind(version)
                        .fetch_optional(&mut *tx)
                        .await?;
                if ready.is_none() {
                    return Err(Error::VersionNotFound { model: model.to_string(), version: version.to_string() });
                }
                let previous = Self::move_alias(&mut tx, model, alias, version, by).await?;
                tx.commit().await?;
                Ok(previous)
            }

            async fn delete_alias(&self, model: &str, alias: &str, by: &str) -> Result<Option<String>> {
                let mut tx = self.begin().await?;
                let previous: Option<String> =
                    sqlx::query_scalar(&Self::q("DELETE FROM aliases WHERE model = ? AND alias = ? RETURNING version"))
                        .bind(model)
                        .bind(alias)
                        .fetch_optional(&mut *tx)
                        .await?;
                if previous.is_some() {
                    sqlx::query(&Self::q(
                        "INSERT INTO alias_history (model, alias, from_version, to_version, changed_at, changed_by) VALUES (?, ?, ?, NULL, ?, ?)",
                    ))
                    .bind(model)
                    .bind(alias)
                    .bind(&previous)
                    .bind(Utc::now())
                    .bind(by)
                    .execute(&mut *tx)
                    .await?;
                    let event = RegistryEvent::AliasMoved { model: model.to_string(), alias: alias.to_string(), version: None };
                    Self::notify(&mut tx, &event).await?;
                }
                tx.commit().await?;
                Ok(previous)
            }

            async fn alias_history(&self, model: &str) -> Result<Vec<AliasChange>> {
                let rows = sqlx::query(&Self::q(
                    "SELECT model, alias, from_version, to_version, changed_at, changed_by FROM alias_history \
                     WHERE model = ? ORDER BY id DESC",
                ))
                .bind(model)
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok(AliasChange {
                            model: r.try_get("model")?,
                            alias: r.try_get("alias")?,
                            from: r.try_get("from_version")?,
                            to: r.try_get("to_version")?,
                            at: r.try_get("changed_at")?,
                            by: r.try_get("changed_by")?,
                        })
                    })
                    .collect()
            }

            async fn blob_referenced(&self, sha256: &str) -> Result<bool> {
                let n: i64 = sqlx::query_scalar(&Self::q("SELECT COUNT(*) FROM versions WHERE sha256 = ?"))
                    .bind(sha256)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(n > 0)
            }

            async fn referenced_blobs(&self) -> Result<HashSet<String>> {
                let rows: Vec<String> = sqlx::query_scalar(&Self::q("SELECT DISTINCT sha256 FROM versions WHERE sha256 IS NOT NULL"))
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows.into_iter().collect())
            }

            async fn sweep_uploading(&self, before: DateTime<Utc>) -> Result<Vec<String>> {
                let mut tx = self.begin().await?;
                let swept: Vec<(String, Option<String>)> = sqlx::query_as(
                    &Self::q("DELETE FROM versions WHERE status IN ('uploading', 'failed') AND created_at < ? RETURNING model, sha256",)
                )
                .bind(before)
                .fetch_all(&mut *tx)
                .await?;
                let models: std::collections::BTreeSet<&str> = swept.iter().map(|(m, _)| m.as_str()).collect();
                for model in models {
                    Self::drop_empty_model(&mut tx, model).await?;
                }
                tx.commit().await?;
                Ok(swept.into_iter().filter_map(|(_, sha)| sha).collect())
            }

            async fn create_key(&self, k: &KeyRecord) -> Result<()> {
                sqlx::query(
                    &Self::q("INSERT INTO api_keys (id, name, hash, scopes, models, created_at, expires_at, last_used_at, revoked_at) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",)
                )
                .bind(&k.id)
                .bind(&k.name)
                .bind(&k.hash)
                .bind(scopes_json(&k.scopes)?)
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
                let row = sqlx::query(&Self::q("SELECT * FROM api_keys WHERE id = ?")).bind(id).fetch_optional(&self.pool).await?;
                row.as_ref().map(key_from_row).transpose()
            }

            async fn list_keys(&self) -> Result<Vec<KeyRecord>> {
                let rows = sqlx::query(&Self::q("SELECT * FROM api_keys ORDER BY created_at, id")).fetch_all(&self.pool).await?;
                rows.iter().map(key_from_row).collect()
            }

            async fn revoke_key(&self, id: &str, at: DateTime<Utc>, keep_an_admin: bool) -> Result<super::Revoked> {
                let mut tx = self.begin().await?;
                if keep_an_admin {
                    Self::lock_keys(&mut tx).await?;
                    let rows = sqlx::query(&Self::q("SELECT * FROM api_keys")).fetch_all(&mut *tx).await?;
                    let keys = rows.iter().map(key_from_row).collect::<Result<Vec<_>>>()?;
                    let Some(target) = keys.iter().find(|k| k.id == id) else { return Ok(super::Revoked::NotFound) };
                    if target.full_admin_at(at) && !keys.iter().any(|k| k.id != id && k.full_admin_at(at)) {
                        return Ok(super::Revoked::LastAdmin);
                    }
                }
                let r = sqlx::query(&Self::q("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?"))
                    .bind(at)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                Self::notify(&mut tx, &RegistryEvent::KeyRevoked { id: id.to_string() }).await?;
                tx.commit().await?;
                Ok(if r.rows_affected() == 1 { super::Revoked::Done } else { super::Revoked::NotFound })
            }

            async fn touch_key(&self, id: &str, at: DateTime<Utc>) -> Result<()> {
                sqlx::query(&Self::q("UPDATE api_keys SET last_used_at = ? WHERE id = ?")).bind(at).bind(id).execute(&self.pool).await?;
                Ok(())
            }

            async fn count_keys(&self) -> Result<i64> {
                Ok(sqlx::query_scalar(&Self::q("SELECT COUNT(*) FROM api_keys")).fetch_one(&self.pool).await?)
            }

            $($($own)*)?
        }
    };
}

pub(super) use sql_registry;
