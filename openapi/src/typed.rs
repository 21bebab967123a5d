//! Names that are checked once, where they enter: a `ModelName`, `VersionName`,
//! `AliasName`, `KeyId` or `Sha256Hex` exists only if its text follows the rule,
//! so code that holds one never checks it again. Deserializing one (a path
//! parameter, a body field) refuses a bad name with a message that names the rule;
//! the OpenAPI schema carries the same pattern and lengths.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use utoipa::openapi::{ObjectBuilder, RefOr, Schema, Type};

/// The prefix of a deserialization error for a bad name (the server maps it to
/// `400 invalid_name`).
pub const INVALID_NAME: &str = "invalid_name: ";

/// A name that broke its rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameError(pub String);

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NameError {}

/// At most this much of a refused name is quoted back.
fn quoted(s: &str) -> String {
    if s.len() <= 64 { s.to_string() } else { format!("{}...", &s[..s.floor_char_boundary(64)]) }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $what:literal, $pattern:literal, $max:literal, $rule:literal, $valid:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// The regular expression of the rule (for the OpenAPI schema).
            pub const PATTERN: &'static str = $pattern;
            /// The longest such name.
            pub const MAX_LEN: usize = $max;

            /// Check `s` against the rule.
            pub fn parse(s: &str) -> Result<$name, NameError> {
                if $valid(s) {
                    Ok($name(s.to_string()))
                } else {
                    Err(NameError(format!(concat!("'{}' is not a valid ", $what, ": use ", $rule), quoted(s))))
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = NameError;

            fn from_str(s: &str) -> Result<$name, NameError> {
                $name::parse(s)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
                $name::parse(&s).map_err(|e| serde::de::Error::custom(format!("{INVALID_NAME}{e}")))
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some($pattern))
                    .min_length(Some(1))
                    .max_length(Some($max))
                    .description(Some(concat!("A ", $what, ": ", $rule)))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

name_type!(
    /// A model name: `[a-z0-9][a-z0-9._-]{0,127}`.
    ModelName,
    "model name",
    "^[a-z0-9][a-z0-9._-]{0,127}$",
    128,
    "1-128 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit",
    crate::names::valid_model_name
);

name_type!(
    /// A version: `[A-Za-z0-9][A-Za-z0-9._-]{0,63}` (`1`, `2`, `1.2.0`).
    VersionName,
    "version",
    "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
    64,
    "1-64 characters of A-Z, a-z, 0-9, '.', '_' or '-', starting with a letter or digit",
    crate::names::valid_version
);

name_type!(
    /// An alias: `[a-z][a-z0-9._-]{0,63}` (starts with a letter, so it never looks
    /// like an integer version).
    AliasName,
    "alias",
    "^[a-z][a-z0-9._-]{0,63}$",
    64,
    "1-64 characters of a-z, 0-9, '.', '_' or '-', starting with a letter",
    crate::names::valid_alias
);

name_type!(
    /// The public id of an API key: 12 lowercase hex digits (`zk_<id>_<secret>`).
    KeyId,
    "key id",
    "^[0-9a-f]{12}$",
    12,
    "the 12 hex digits after zk_ in the key",
    valid_key_id
);

name_type!(
    /// A sha256 digest as 64 hex digits.
    Sha256Hex,
    "sha256",
    "^[0-9a-fA-F]{64}$",
    64,
    "64 hex digits",
    valid_sha256
);

name_type!(
    /// A model-name pattern of an API key: a model name where `*` matches any run
    /// of characters (`text-*`).
    ModelPattern,
    "model pattern",
    "^[a-z0-9._*-]{1,128}$",
    128,
    "1-128 characters of a-z, 0-9, '.', '_', '-' and '*'",
    valid_model_pattern
);

fn valid_key_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn valid_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn valid_model_pattern(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._*-".contains(&b))
}

/// Whether `s` is a valid key name: 1-200 characters, not only spaces, no
/// control characters (the pattern of `CreateKeyRequest::name`).
pub fn valid_key_name(s: &str) -> bool {
    !s.trim().is_empty() && s.chars().count() <= 200 && !s.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_where_they_enter() {
        assert!(ModelName::parse("text-classifier").is_ok());
        let e = ModelName::parse("Bad Name").unwrap_err().to_string();
        assert!(e.contains("'Bad Name' is not a valid model name") && e.contains("1-128 characters"), "{e}");
        assert!(VersionName::parse("1.2.0").is_ok() && VersionName::parse(".hidden").is_err());
        assert!(AliasName::parse("production").is_ok() && AliasName::parse("1").is_err());
        assert!(KeyId::parse("0123456789ab").is_ok() && KeyId::parse("xyz").is_err());
        let long = "v".repeat(20_000);
        assert!(VersionName::parse(&long).unwrap_err().to_string().len() < 300, "a long name is not echoed whole");
        let v: Result<ModelName, _> = serde_json::from_str("\"UPPER\"");
        assert!(v.unwrap_err().to_string().starts_with(INVALID_NAME));
        let m: ModelName = serde_json::from_str("\"mlp\"").unwrap();
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"mlp\"");
    }
}
