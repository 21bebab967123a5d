//! API keys: `zk_<id>_<secret>`, 256-bit random secrets stored as SHA-256 hashes,
//! compared in constant time; scopes and model-name patterns per key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zoo_api::{KeyInfo, Scope};

use crate::error::{Error, Result};
use crate::registry::breaker::Breaker;
use crate::registry::{KeyRecord, Registry};

pub mod session;

/// The key id of the admin key given in the configuration (`ZOO_ADMIN_KEY`).
pub const ADMIN_ENV: &str = "admin-env";

/// How long a looked-up key is trusted before the registry is asked again. A key
/// revoked on another replica stops working within this delay.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(5);
/// `last_used_at` is written at most this often per key.
const TOUCH_EVERY: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// A newly generated key: the full secret string and its stored record.
pub struct NewKey {
    pub key: String,
    pub record: KeyRecord,
}

fn hash_secret(id: &str, secret: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"zoo-api-key-v1\0");
    h.update(id.as_bytes());
    h.update(b"\0");
    h.update(secret.as_bytes());
    hex::encode(h.finalize())
}

/// Generate a key with the given name, scopes and limits.
pub fn generate(name: &str, scopes: Vec<Scope>, models: Vec<String>, expires_at: Option<DateTime<Utc>>) -> NewKey {
    let mut rng = rand::rng();
    let mut id = [0u8; 6];
    rng.fill_bytes(&mut id);
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    let id = hex::encode(id);
    let secret = hex::encode(secret);
    let record = KeyRecord {
        hash: hash_secret(&id, &secret),
        id: id.clone(),
        name: name.to_string(),
        scopes,
        models,
        created_at: Utc::now(),
        expires_at,
        last_used_at: None,
        revoked_at: None,
    };
    NewKey { key: format!("zk_{id}_{secret}"), record }
}

/// Split `zk_<id>_<secret>`.
fn parse(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix("zk_")?;
    let (id, secret) = rest.split_once('_')?;
    let ok = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (ok(id, 12) && ok(secret, 64)).then_some((id, secret))
}

/// Whether `name` matches a pattern where `*` stands for any run of characters.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// Whether every name `inner` matches is matched by `outer` (both patterns where
/// `*` stands for any run of characters): `outer`'s `*` may stand for `inner`'s
/// `*`, a literal only for the same literal. Sound: never true when some name
/// matches `inner` but not `outer`.
pub fn pattern_covers(outer: &str, inner: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (outer.chars().collect(), inner.chars().collect());
    // m[i][j]: p[..i] matches t[..j].
    let mut m = vec![vec![false; t.len() + 1]; p.len() + 1];
    m[0][0] = true;
    for i in 1..=p.len() {
        for j in 0..=t.len() {
            m[i][j] = if p[i - 1] == '*' {
                m[i - 1][j] || (j > 0 && m[i][j - 1])
            } else {
                j > 0 && t[j - 1] != '*' && t[j - 1] == p[i - 1] && m[i - 1][j - 1]
            };
        }
    }
    m[p.len()][t.len()]
}

/// Who is calling, after the key checked out.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Key id, or `admin-env` for the configured admin key.
    pub key_id: String,
    pub scopes: Vec<Scope>,
    pub models: Vec<String>,
    /// When the key expires.
    pub expires_at: Option<DateTime<Utc>>,
    /// A fingerprint of the key's secret (a hash of its stored hash): a session
    /// carries it, so that a session ends when its key is replaced.
    pub fingerprint: String,
}

/// The fingerprint of a key from its stored hash (or the configured admin key's).
fn fingerprint(hash: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b"zoo-session-key-v1\0");
    h.update(hash);
    hex::encode(&h.finalize()[..16])
}

impl Caller {
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&Scope::Admin) || self.scopes.contains(&scope)
    }

    /// Require a scope (and, for model routes, access to that model).
    pub fn require(&self, scope: Scope, model: Option<&str>) -> Result<()> {
        if !self.has(scope) {
            return Err(Error::Forbidden(format!("this API key lacks the '{}' scope", scope.as_str())));
        }
        if let Some(m) = model
            && !self.may_use(m)
        {
            return Err(Error::Forbidden(format!("this API key may not use model '{m}'")));
        }
        Ok(())
    }

    pub fn may_use(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|p| pattern_matches(p, model))
    }

    /// Whether every model a key limited to `patterns` (none: every model) may use
    /// is one this caller may use.
    pub fn covers(&self, patterns: &[String]) -> bool {
        self.models.is_empty()
            || (!patterns.is_empty()
                && patterns.iter().all(|inner| self.models.iter().any(|outer| pattern_covers(outer, inner))))
    }
}

/// Checks keys against the registry with a short-lived cache.
pub struct KeyChecker {
    registry: Arc<dyn Registry>,
    admin_hash: Option<[u8; 32]>,
    cache: Mutex<HashMap<String, (KeyRecord, Instant)>>,
    breaker: Arc<Breaker>,
}

impl KeyChecker {
    pub fn new(registry: Arc<dyn Registry>, admin_key: Option<&str>, breaker: Arc<Breaker>) -> KeyChecker {
        let admin_hash = admin_key.map(|k| Sha256::digest(k.as_bytes()).into());
        KeyChecker { registry, admin_hash, cache: Mutex::new(HashMap::new()), breaker }
    }

    /// Forget a key now (after a revoke on this replica).
    pub fn forget(&self, id: &str) {
        self.cache.lock().expect("key cache").remove(id);
    }

    /// Forget every cached key (after missed change notifications).
    pub fn forget_all(&self) {
        self.cache.lock().expect("key cache").clear();
    }

    /// The caller a key stands for (the key's secret checked).
    pub async fn check(&self, key: &str) -> Result<Caller> {
        if let Some(admin) = &self.admin_hash {
            let given: [u8; 32] = Sha256::digest(key.as_bytes()).into();
            if bool::from(given.ct_eq(admin)) {
                return Ok(self.env_admin(admin));
            }
        }
        let unknown = || Error::Unauthorized("the API key is not valid".into());
        let (id, secret) = parse(key).ok_or_else(unknown)?;
        self.valid(id, Some(secret)).await
    }

    fn env_admin(&self, hash: &[u8; 32]) -> Caller {
        Caller {
            key_id: ADMIN_ENV.into(),
            scopes: vec![Scope::Admin],
            models: vec![],
            expires_at: None,
            fingerprint: fingerprint(hash),
        }
    }

    /// The caller of a session opened with key `id` whose fingerprint was `fp`: the
    /// key must still be valid (not revoked, not expired) and the same key (a
    /// rotated `ZOO_ADMIN_KEY` ends the sessions of the old one).
    pub async fn check_id(&self, id: &str, fp: &str) -> Result<Caller> {
        let caller = if id == ADMIN_ENV {
            match &self.admin_hash {
                Some(h) => self.env_admin(h),
                None => return Err(Error::Unauthorized("the session's key is not valid: sign in again".into())),
            }
        } else {
            self.valid(id, None).await?
        };
        if !bool::from(caller.fingerprint.as_bytes().ct_eq(fp.as_bytes())) {
            return Err(Error::Unauthorized("the session's key has been replaced: sign in again".into()));
        }
        Ok(caller)
    }

    async fn valid(&self, id: &str, secret: Option<&str>) -> Result<Caller> {
        let unknown = || Error::Unauthorized("the API key is not valid".into());
        let cached = self.cache.lock().expect("key cache").get(id).cloned();
        let record = match cached {
            Some((r, at)) if at.elapsed() < KEY_CACHE_TTL => r,
            Some((r, _)) if self.breaker.use_stale() => r,
            stale => {
                let looked_up = self.registry.get_key(id).await;
                self.breaker.record(&looked_up);
                match (looked_up, stale) {
                    (Ok(r), _) => {
                        let r = r.ok_or_else(unknown)?;
                        self.cache.lock().expect("key cache").insert(id.to_string(), (r.clone(), Instant::now()));
                        r
                    }
                    // The registry is away: a key this server checked before stays as
                    // it was (no revocation can be recorded while the registry is down).
                    (Err(Error::Unavailable(why)), Some((r, _))) => {
                        tracing::warn!(key = id, %why, "the registry is unreachable; using the key as last checked");
                        r
                    }
                    (Err(e), _) => return Err(e),
                }
            }
        };
        if let Some(secret) = secret {
            let expected = hash_secret(id, secret);
            if !bool::from(expected.as_bytes().ct_eq(record.hash.as_bytes())) {
                return Err(unknown());
            }
        }
        if record.revoked_at.is_some() {
            return Err(Error::Unauthorized("the API key was revoked".into()));
        }
        let now = Utc::now();
        if record.expires_at.is_some_and(|e| e <= now) {
            return Err(Error::Unauthorized("the API key has expired".into()));
        }
        if record.last_used_at.is_none_or(|t| now - t > TOUCH_EVERY) {
            if let Some((r, _)) = self.cache.lock().expect("key cache").get_mut(id) {
                r.last_used_at = Some(now);
            }
            let registry = self.registry.clone();
            let id = id.to_string();
            tokio::spawn(async move {
                if let Err(e) = registry.touch_key(&id, now).await {
                    tracing::debug!(error = %e, "could not record key use");
                }
            });
        }
        let fingerprint = fingerprint(record.hash.as_bytes());
        Ok(Caller {
            key_id: record.id,
            scopes: record.scopes,
            models: record.models,
            expires_at: record.expires_at,
            fingerprint,
        })
    }
}

pub fn key_info(r: &KeyRecord) -> KeyInfo {
    KeyInfo {
        id: r.id.clone(),
        name: r.name.clone(),
        scopes: r.scopes.clone(),
        models: r.models.clone(),
        created_at: r.created_at,
        expires_at: r.expires_at,
        last_used_at: r.last_used_at,
        revoked: r.revoked_at.is_some(),
    }
}

/// The key from `Authorization: Bearer <key>` or `x-api-key`.
pub fn presented_key(headers: &axum::http::HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if let Some(k) = v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")) {
            return Some(k.trim());
        }
        return None;
    }
    headers.get(zoo_api::headers::API_KEY).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// On first start with no keys and no configured admin key: create an admin key,
/// print it once and write it to `<data-dir>/admin.key` (mode 0600).
pub async fn bootstrap(registry: &dyn Registry, data_dir: &std::path::Path, configured: bool) -> anyhow::Result<()> {
    if configured || registry.count_keys().await? > 0 {
        return Ok(());
    }
    let new = generate("bootstrap admin", vec![Scope::Admin], vec![], None);
    registry.create_key(&new.record).await?;
    let path = data_dir.join("admin.key");
    write_secret(&path, &new.key)?;
    println!("zoo: created the first admin API key (shown once; also saved to {}):", path.display());
    println!("zoo:   {}", new.key);
    Ok(())
}

/// Write a secret readable by its owner only (mode 0600). At startup, before serving.
#[allow(clippy::disallowed_methods, reason = "runs once at startup, before the server accepts requests")]
pub(crate) fn write_secret(path: &std::path::Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(secret.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(pattern_matches("text-*", "text-classifier"));
        assert!(pattern_matches("*", "anything"));
        assert!(pattern_matches("a*c*e", "abcde"));
        assert!(pattern_matches("exact", "exact"));
        assert!(!pattern_matches("exact", "exactly"));
        assert!(!pattern_matches("text-*", "mlp"));
        assert!(!pattern_matches("a*a", "a"));
    }

    #[test]
    fn pattern_coverage_is_sound() {
        assert!(pattern_covers("text-*", "text-a*"));
        assert!(pattern_covers("text-*", "text-classifier"));
        assert!(pattern_covers("*", "anything*"));
        assert!(pattern_covers("*a*", "*a*a*"));
        assert!(!pattern_covers("text-*", "*"));
        assert!(!pattern_covers("text-*", "te*"));
        assert!(!pattern_covers("a*", "*a"));
        assert!(!pattern_covers("exact", "exact*"));
        assert!(pattern_covers("exact", "exact"));
        // Spot-check soundness on names: whenever inner is covered, every name the
        // inner pattern matches, the outer matches too.
        let names = ["text-a", "text-ab", "texta", "a", "ba", "text-", "t", "x-text-a"];
        for (outer, inner) in [("text-*", "text-a*"), ("*a*", "*a*a*"), ("t*", "text-*"), ("*-a", "text-*")] {
            if pattern_covers(outer, inner) {
                for n in names.iter().filter(|n| pattern_matches(inner, n)) {
                    assert!(pattern_matches(outer, n), "{outer} covers {inner} but not {n}");
                }
            }
        }
        let restricted = Caller {
            key_id: "k".into(),
            scopes: vec![Scope::Admin],
            models: vec!["text-*".into()],
            expires_at: None,
            fingerprint: String::new(),
        };
        assert!(restricted.covers(&["text-a*".into(), "text-b".into()]));
        assert!(!restricted.covers(&[]), "an unrestricted key is not within text-*");
        assert!(!restricted.covers(&["text-*".into(), "mlp".into()]));
    }

    #[test]
    fn keys_parse_and_hash() {
        let k = generate("t", vec![Scope::Read], vec![], None);
        let (id, secret) = parse(&k.key).unwrap();
        assert_eq!(id, k.record.id);
        assert_eq!(hash_secret(id, secret), k.record.hash);
        assert!(!k.record.hash.contains(secret));
        assert!(parse("zk_short_x").is_none());
        assert!(parse("not-a-key").is_none());
    }

    #[tokio::test]
    async fn checker_enforces_revocation_expiry_and_scopes() {
        let reg: Arc<dyn Registry> = Arc::new(crate::registry::sqlite::SqliteRegistry::memory().await);
        let checker = KeyChecker::new(reg.clone(), Some("env-admin-secret"), Arc::default());
        let read = generate("r", vec![Scope::Read], vec!["text-*".into()], None);
        reg.create_key(&read.record).await.unwrap();
        let caller = checker.check(&read.key).await.unwrap();
        assert!(caller.require(Scope::Read, Some("text-classifier")).is_ok());
        assert!(matches!(caller.require(Scope::Read, Some("mlp")), Err(Error::Forbidden(_))));
        assert!(matches!(caller.require(Scope::Deploy, None), Err(Error::Forbidden(_))));

        // A wrong secret with a real id is refused.
        let forged = format!("zk_{}_{}", read.record.id, "0".repeat(64));
        assert!(matches!(checker.check(&forged).await, Err(Error::Unauthorized(_))));

        reg.revoke_key(&read.record.id, Utc::now(), true).await.unwrap();
        checker.forget(&read.record.id);
        let err = checker.check(&read.key).await.unwrap_err();
        assert!(err.to_string().contains("revoked"), "{err}");

        let old = generate("e", vec![Scope::Admin], vec![], Some(Utc::now() - chrono::TimeDelta::seconds(1)));
        reg.create_key(&old.record).await.unwrap();
        assert!(checker.check(&old.key).await.unwrap_err().to_string().contains("expired"));

        let env = checker.check("env-admin-secret").await.unwrap();
        assert!(env.has(Scope::Deploy));
        assert!(checker.check("env-admin-secreT").await.is_err());
    }
}
