//! API key management (admin): the same operations behind the JSON API and the
//! catalogue's key pages.

use zoo_api::{CreateKeyRequest, CreatedKey, KeyInfo, Scope};

use super::Services;
use crate::auth::{self, Caller, KeyChecker};
use crate::error::{Error, Result};
use crate::registry::Revoked;

impl Services {
    /// Create a key; its secret is in the answer only.
    pub async fn create_key(&self, caller: &Caller, req: &CreateKeyRequest) -> Result<CreatedKey> {
        caller.require(Scope::Admin, None)?;
        if !zoo_api::typed::valid_key_name(&req.name) {
            return Err(Error::InvalidRequest(
                "field 'name' must be 1-200 characters, not only spaces, without control characters".into(),
            ));
        }
        let name = req.name.trim();
        if req.scopes.is_empty() {
            return Err(Error::InvalidRequest(
                "field 'scopes' must name at least one of read, predict, deploy, admin".into(),
            ));
        }
        // Each pattern was checked as it was read (`ModelPattern`).
        if req.models.len() > 100 {
            return Err(Error::InvalidRequest("field 'models' holds at most 100 patterns".into()));
        }
        let models: Vec<String> = req.models.iter().map(|m| m.to_string()).collect();
        if req.expires_at.is_some_and(|e| e <= chrono::Utc::now()) {
            return Err(Error::InvalidRequest("field 'expires_at' is in the past".into()));
        }
        // A key creates keys within what it may do itself: its scopes, its model
        // patterns, its lifetime.
        if let Some(s) = req.scopes.iter().find(|s| !caller.has(**s)) {
            return Err(Error::Forbidden(format!("this API key cannot give the '{}' scope it lacks", s.as_str())));
        }
        if !caller.covers(&models) {
            return Err(Error::Forbidden(format!(
                "this API key may only use models matching {}: a key it creates must be limited to patterns within those",
                caller.models.join(", ")
            )));
        }
        let expires_at = match (req.expires_at, caller.expires_at) {
            (Some(e), Some(limit)) if e > limit => {
                return Err(Error::Forbidden(format!(
                    "a key it creates cannot outlive this API key (expires {limit})"
                )));
            }
            (None, Some(limit)) => Some(limit),
            (e, _) => e,
        };
        let mut scopes = req.scopes.clone();
        scopes.sort();
        scopes.dedup();
        let new = auth::generate(name, scopes, models, expires_at);
        self.registry.create_key(&new.record).await?;
        tracing::info!(key = %new.record.id, by = %caller.key_id, "API key created");
        Ok(CreatedKey { key: new.key, info: auth::key_info(&new.record) })
    }

    /// Every key (never their secrets), newest first; for an admin key limited to
    /// some models, the keys within its patterns.
    pub async fn list_keys(&self, caller: &Caller) -> Result<Vec<KeyInfo>> {
        caller.require(Scope::Admin, None)?;
        Ok(self.registry.list_keys().await?.iter().filter(|k| caller.covers(&k.models)).map(auth::key_info).collect())
    }

    /// Revoke a key: it stops at once here (`keys` forgets it) and within the key
    /// cache delay on other replicas. The last active admin key for every model is
    /// kept (unless `ZOO_ADMIN_KEY` gives another way in), and revoking the key of
    /// the request itself needs `confirm`.
    pub async fn revoke_key(&self, caller: &Caller, keys: &KeyChecker, id: &str, confirm: bool) -> Result<KeyInfo> {
        caller.require(Scope::Admin, None)?;
        // An admin key limited to some models revokes only keys within its patterns.
        if !caller.models.is_empty()
            && let Some(target) = self.registry.get_key(id).await?
            && !caller.covers(&target.models)
        {
            return Err(Error::Forbidden(format!(
                "this API key may only manage keys limited to models matching {}",
                caller.models.join(", ")
            )));
        }
        if id == caller.key_id && !confirm {
            return Err(Error::ConfirmationRequired(id.to_string()));
        }
        let keep_an_admin = self.config.admin_key.is_none();
        match self.registry.revoke_key(id, chrono::Utc::now(), keep_an_admin).await? {
            Revoked::Done => {}
            Revoked::NotFound => return Err(Error::KeyNotFound(id.to_string())),
            Revoked::LastAdmin => return Err(Error::LastAdminKey(id.to_string())),
        }
        keys.forget(id);
        tracing::info!(key = %id, by = %caller.key_id, "API key revoked");
        let record = self.registry.get_key(id).await?.ok_or_else(|| Error::KeyNotFound(id.to_string()))?;
        Ok(auth::key_info(&record))
    }
}
