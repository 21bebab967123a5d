//! Browser sessions: an API key exchanged for a short-lived signed token (JWT,
//! HS256) in an HttpOnly, SameSite=Strict cookie. The token names the key, never
//! carries its secret, and every request checks the key again (a revoked key ends
//! its sessions). Requests that change state with a session must also send the
//! session's CSRF token (`x-csrf-token`, or the `csrf` field of a form).

use std::path::Path;
use std::time::Duration;

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};

/// The session cookie's name.
pub const COOKIE: &str = "zoo_session";
/// The header that carries the CSRF token of a session.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// What a session token says.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The key id the session was opened with.
    pub sub: String,
    /// The fingerprint of that key (`Caller::fingerprint`): the session ends when
    /// the key is replaced (a rotated `ZOO_ADMIN_KEY`).
    #[serde(default)]
    pub kfp: String,
    /// Issued at and expiry, seconds since the Unix epoch.
    pub iat: i64,
    pub exp: i64,
    /// The CSRF token state-changing requests must repeat.
    pub csrf: String,
}

/// Issues and checks session tokens with the server's secret.
pub struct Sessions {
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl: Duration,
    /// Mark the cookie `Secure` (HTTPS only).
    pub secure: bool,
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

impl Sessions {
    pub fn new(secret: &[u8], ttl: Duration, secure: bool) -> Sessions {
        Sessions { encoding: EncodingKey::from_secret(secret), decoding: DecodingKey::from_secret(secret), ttl, secure }
    }

    /// The configured secret, else the one in `<data-dir>/session.secret`, made
    /// (256 random bits, mode 0600) at first start. Replicas behind one load
    /// balancer need the same `ZOO_SESSION_SECRET`.
    #[allow(clippy::disallowed_methods, reason = "runs once at startup, before the server accepts requests")]
    pub fn open(configured: Option<&str>, data_dir: &Path, ttl: Duration, secure: bool) -> anyhow::Result<Sessions> {
        let secret = match configured {
            Some(s) if s.len() >= 32 => s.to_string(),
            Some(_) => anyhow::bail!("ZOO_SESSION_SECRET must be at least 32 characters"),
            None => {
                let path = data_dir.join("session.secret");
                match std::fs::read_to_string(&path) {
                    Ok(s) if s.trim().len() >= 32 => s.trim().to_string(),
                    _ => {
                        let s = random_hex(32);
                        super::write_secret(&path, &s)?;
                        s
                    }
                }
            }
        };
        Ok(Sessions::new(secret.as_bytes(), ttl, secure))
    }

    /// A token for `key_id` (fingerprint `kfp`), expiring after the session
    /// lifetime or with the key.
    pub fn issue(&self, key_id: &str, kfp: &str, key_expires: Option<DateTime<Utc>>) -> Result<(String, Claims)> {
        let now = Utc::now();
        let mut exp = now + chrono::TimeDelta::from_std(self.ttl).map_err(Error::internal)?;
        if let Some(k) = key_expires
            && k < exp
        {
            exp = k;
        }
        let claims = Claims {
            sub: key_id.to_string(),
            kfp: kfp.to_string(),
            iat: now.timestamp(),
            exp: exp.timestamp(),
            csrf: random_hex(16),
        };
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).map_err(Error::internal)?;
        Ok((token, claims))
    }

    /// The claims of a valid token: signed by this server, HS256, not expired.
    pub fn verify(&self, token: &str) -> Result<Claims> {
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = 0;
        v.validate_exp = true;
        v.set_required_spec_claims(&["exp", "sub", "iat"]);
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &v).map(|d| d.claims).map_err(|e| {
            Error::Unauthorized(match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    "the session has expired: sign in again".to_string()
                }
                _ => "the session is not valid: sign in again".to_string(),
            })
        })
    }

    /// `Set-Cookie` for a new session.
    pub fn cookie(&self, token: &str, claims: &Claims) -> String {
        let max_age = (claims.exp - claims.iat).max(0);
        let secure = if self.secure { "; Secure" } else { "" };
        format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}")
    }

    /// `Set-Cookie` that ends the session in the browser.
    pub fn clear_cookie(&self) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{secure}")
    }
}

/// The session token in a request's cookies.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE).and_then(|rest| rest.strip_prefix('=')))
        .filter(|t| !t.is_empty())
}

/// Whether `given` is the session's CSRF token.
pub fn csrf_matches(claims: &Claims, given: Option<&str>) -> bool {
    given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(claims.csrf.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions() -> Sessions {
        Sessions::new(b"0123456789abcdef0123456789abcdef", Duration::from_secs(3600), false)
    }

    #[test]
    fn a_token_round_trips_and_carries_a_csrf_token() {
        let s = sessions();
        let (token, claims) = s.issue("abc123", "fp", None).unwrap();
        assert_eq!(s.verify(&token).unwrap(), claims);
        assert_eq!(claims.csrf.len(), 32);
        assert!(csrf_matches(&claims, Some(&claims.csrf)));
        assert!(!csrf_matches(&claims, Some("nope")) && !csrf_matches(&claims, None));
        let cookie = s.cookie(&token, &claims);
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && cookie.contains("Max-Age=3600"));
        let mut h = HeaderMap::new();
        h.insert(axum::http::header::COOKIE, format!("other=1; {COOKIE}={token}").parse().unwrap());
        assert_eq!(session_cookie(&h), Some(token.as_str()));
    }

    #[test]
    fn expired_tampered_and_foreign_tokens_are_refused() {
        let s = sessions();
        // Expired: signed correctly, but past its expiry.
        let old = Claims { sub: "k".into(), kfp: "fp".into(), iat: 1, exp: 2, csrf: "c".into() };
        let expired = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &old, &s.encoding).unwrap();
        assert!(s.verify(&expired).unwrap_err().to_string().contains("expired"));
        // Tampered: another subject in the payload, the old signature.
        let (token, _) = s.issue("reader", "fp", None).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut payload: serde_json::Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
        payload["sub"] = "admin-env".into();
        let forged = format!("{}.{}.{}", parts[0], b64.encode(payload.to_string()), parts[2]);
        assert!(s.verify(&forged).unwrap_err().to_string().contains("not valid"));
        // Signed by another server's secret, or with no signature at all.
        let other = Sessions::new(b"another-secret-another-secret-xx", Duration::from_secs(60), false);
        let (theirs, _) = other.issue("k", "fp", None).unwrap();
        assert!(s.verify(&theirs).is_err());
        let none = format!("{}.{}.", b64.encode(r#"{"alg":"none","typ":"JWT"}"#), parts[1]);
        assert!(s.verify(&none).is_err());
        // A session never outlives its key.
        let soon = Utc::now() + chrono::TimeDelta::seconds(30);
        let (_, c) = s.issue("k", "fp", Some(soon)).unwrap();
        assert_eq!(c.exp, soon.timestamp());
    }
}
