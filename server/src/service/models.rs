//! Reading and deleting models and versions.

use zoo_api::{AliasInfo, ListModelsQuery, ModelDetail, ModelList, ModelSummary, VersionInfo};

use super::Services;
use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::registry::{ModelFilter, ModelRecord};
use crate::store::{Object, Range, StorageKey};

fn summary(m: &ModelRecord) -> ModelSummary {
    ModelSummary {
        name: m.name.clone(),
        description: m.description.clone(),
        format: m.latest.as_ref().map(|v| v.format),
        task: m.latest.as_ref().map(|v| v.task),
        latest_version: m.latest.as_ref().map(|v| v.version.clone()),
        version_count: m.version_count,
        total_size: m.total_size,
        created_at: m.created_at,
        updated_at: m.updated_at,
    }
}

impl Services {
    /// Models the caller may see, one page at a time.
    pub async fn list_models(&self, caller: &Caller, q: &ListModelsQuery) -> Result<ModelList> {
        let limit = q.limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(Error::InvalidRequest("limit must be between 1 and 1000".into()));
        }
        let mut after = q.cursor.clone();
        let mut models = Vec::new();
        // Keys limited to some models see only those; keep paging until the page is full.
        loop {
            let filter = ModelFilter { q: q.q.clone(), format: q.format, task: q.task, after: after.clone(), limit };
            let page = self.registry.list_models(&filter).await?;
            let exhausted = page.len() < limit as usize;
            for m in page {
                after = Some(m.name.clone());
                if caller.may_use(&m.name) {
                    models.push(summary(&m));
                    if models.len() == limit as usize {
                        return Ok(ModelList { next_cursor: after, models });
                    }
                }
            }
            if exhausted {
                return Ok(ModelList { models, next_cursor: None });
            }
        }
    }

    pub async fn show_model(&self, name: &str) -> Result<ModelDetail> {
        let m = self.registry.get_model(name).await?.ok_or_else(|| Error::ModelNotFound(name.to_string()))?;
        let versions = self.registry.list_versions(name).await?;
        Ok(ModelDetail {
            name: m.name,
            description: m.description,
            created_at: m.created_at,
            created_by: m.created_by,
            versions: versions.iter().map(|v| self.version_info(v)).collect(),
            aliases: self.registry.aliases(name).await?,
        })
    }

    pub async fn show_version(&self, model: &str, version: &str) -> Result<VersionInfo> {
        let v = self.require_version(model, version).await?;
        Ok(self.version_info(&v))
    }

    pub async fn delete_version(&self, model: &str, version: &str) -> Result<VersionInfo> {
        let Some(v) = self.registry.delete_version(model, version).await? else {
            return Err(self.not_found(model, version).await?);
        };
        self.unload(model, version);
        self.metrics.forget(model, Some(version));
        self.release_blob(&v.sha256).await?;
        tracing::info!(model, version, "version deleted");
        Ok(self.version_info(&v))
    }

    pub async fn delete_model(&self, model: &str) -> Result<Vec<VersionInfo>> {
        let versions =
            self.registry.delete_model(model).await?.ok_or_else(|| Error::ModelNotFound(model.to_string()))?;
        self.metrics.forget(model, None);
        for v in &versions {
            self.unload(model, &v.version);
            self.release_blob(&v.sha256).await?;
        }
        tracing::info!(model, versions = versions.len(), "model deleted");
        Ok(versions.iter().map(|v| self.version_info(v)).collect())
    }

    /// Point an alias at a version. The version is loaded and warmed first, so the
    /// requests that follow the alias find it ready; the previous version drains.
    pub async fn set_alias(&self, caller: &Caller, model: &str, alias: &str, version: &str) -> Result<AliasInfo> {
        let record = self.require_version(model, version).await?;
        // Never send traffic to a version that cannot answer it.
        self.served(&record).await?;
        let previous = self.registry.set_alias(model, alias, version, &caller.key_id).await?;
        self.forget_routes(model);
        tracing::info!(model, alias, version, previous = ?previous, by = %caller.key_id, "alias moved");
        Ok(AliasInfo { model: model.into(), alias: alias.into(), version: Some(version.into()), previous })
    }

    pub async fn delete_alias(&self, caller: &Caller, model: &str, alias: &str) -> Result<AliasInfo> {
        let Some(previous) = self.registry.delete_alias(model, alias, &caller.key_id).await? else {
            return Err(self.alias_not_found(model, alias).await?);
        };
        self.forget_routes(model);
        tracing::info!(model, alias, previous = %previous, by = %caller.key_id, "alias removed");
        Ok(AliasInfo { model: model.into(), alias: alias.into(), version: None, previous: Some(previous) })
    }

    /// A model's aliases and their recorded moves, newest first.
    pub async fn list_aliases(&self, model: &str) -> Result<zoo_api::AliasList> {
        if self.registry.get_model(model).await?.is_none() {
            return Err(Error::ModelNotFound(model.to_string()));
        }
        let aliases = self.registry.aliases(model).await?;
        let history = self
            .registry
            .alias_history(model)
            .await?
            .into_iter()
            .map(|c| zoo_api::AliasMove { alias: c.alias, from: c.from, to: c.to, at: c.at, by: c.by })
            .collect();
        Ok(zoo_api::AliasList { model: model.to_string(), aliases, history })
    }

    /// Load a version in the background of another replica's alias move, so that
    /// its first request here does not wait for the load.
    pub async fn preload(&self, model: &str, version: &str) {
        match self.registry.get_version(model, version).await {
            Ok(Some(v)) if v.servable => {
                if let Err(e) = self.served(&v).await {
                    tracing::warn!(model, version, error = %e, "could not preload the version an alias moved to");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(model, version, error = %e, "could not preload the version an alias moved to"),
        }
    }

    /// Open a version's artifact for download (all of it, or a range).
    pub async fn open_artifact(
        &self,
        model: &str,
        version: &str,
        range: Option<Range>,
    ) -> Result<(VersionInfo, Object)> {
        let v = self.require_version(model, version).await?;
        let obj = self.store.get(&StorageKey::blob(&v.sha256), range).await?.ok_or_else(|| {
            Error::Unavailable(format!("the artifact of {model}/{version} is missing from the object store"))
        })?;
        Ok((self.version_info(&v), obj))
    }
}
