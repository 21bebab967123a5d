//! The server's error type, and the only place that knows HTTP status codes.

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use zoo_api::{ErrorBody, ErrorCode, ErrorDetail};

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("model '{0}' does not exist")]
    ModelNotFound(String),
    #[error("model '{model}' has no version '{version}'")]
    VersionNotFound { model: String, version: String },
    #[error("model '{model}' has no alias '{alias}'")]
    AliasNotFound { model: String, alias: String },
    #[error("API key '{0}' does not exist")]
    KeyNotFound(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    VersionExists(String),
    #[error(
        "version '{version}' of model '{model}' is what alias(es) {aliases} point at: move or remove them first (zoo alias set|rm)"
    )]
    VersionInUse { model: String, version: String, aliases: String },
    #[error(
        "key '{0}' is the last active admin key (admin scope, every model, not expired): revoking it would leave \
         the server without an admin; create another admin key first"
    )]
    LastAdminKey(String),
    #[error("this request is made with key '{0}', which it would revoke: repeat it with confirm=true to do so")]
    ConfirmationRequired(String),
    #[error("{0}")]
    InvalidName(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    InvalidInput(String),
    #[error("the upload's sha256 is {actual}, but x-zoo-sha256 says {expected}")]
    Sha256Mismatch { expected: String, actual: String },
    #[error(transparent)]
    Artifact(#[from] zoo_formats::Error),
    #[error("{0}")]
    NotServable(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    RangeNotSatisfiable(String),
    #[error("model '{model}' is busy: its queue is full")]
    Overloaded { model: String, retry_after_secs: u64 },
    /// The server as a whole is at a limit (request bodies held in memory).
    #[error("{0}")]
    Busy(String),
    #[error("inference failed: {0}")]
    Inference(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn internal(e: impl std::fmt::Display) -> Error {
        Error::Internal(e.to_string())
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Unauthorized(_) => ErrorCode::Unauthorized,
            Error::Forbidden(_) => ErrorCode::Forbidden,
            Error::ModelNotFound(_) => ErrorCode::ModelNotFound,
            Error::VersionNotFound { .. } | Error::AliasNotFound { .. } => ErrorCode::VersionNotFound,
            Error::KeyNotFound(_) => ErrorCode::KeyNotFound,
            Error::NotFound(_) => ErrorCode::NotFound,
            Error::MethodNotAllowed(_) => ErrorCode::MethodNotAllowed,
            Error::VersionExists(_) => ErrorCode::VersionExists,
            Error::VersionInUse { .. } => ErrorCode::VersionInUse,
            Error::LastAdminKey(_) => ErrorCode::LastAdminKey,
            Error::ConfirmationRequired(_) => ErrorCode::ConfirmationRequired,
            Error::InvalidName(_) => ErrorCode::InvalidName,
            Error::InvalidRequest(_) => ErrorCode::InvalidRequest,
            Error::InvalidInput(_) => ErrorCode::InvalidInput,
            Error::Sha256Mismatch { .. } => ErrorCode::Sha256Mismatch,
            Error::Artifact(e) => match e {
                zoo_formats::Error::UnknownFormat(_) => ErrorCode::UnknownFormat,
                zoo_formats::Error::Invalid { .. } | zoo_formats::Error::InvalidBundle { .. } => {
                    ErrorCode::InvalidArtifact
                }
                zoo_formats::Error::TooLarge { .. } => ErrorCode::PayloadTooLarge,
                zoo_formats::Error::Io(_) => ErrorCode::Internal,
            },
            Error::NotServable(_) => ErrorCode::NotServable,
            Error::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            Error::UnsupportedMediaType(_) => ErrorCode::UnsupportedMediaType,
            Error::RangeNotSatisfiable(_) => ErrorCode::RangeNotSatisfiable,
            Error::Overloaded { .. } | Error::Busy(_) => ErrorCode::Overloaded,
            Error::Inference(_) => ErrorCode::InferenceFailed,
            Error::Timeout(_) => ErrorCode::Timeout,
            Error::Unavailable(_) => ErrorCode::Unavailable,
            Error::Internal(_) => ErrorCode::Internal,
        }
    }
}

/// The HTTP status of each error code.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::ModelNotFound | ErrorCode::VersionNotFound | ErrorCode::KeyNotFound | ErrorCode::NotFound => {
            StatusCode::NOT_FOUND
        }
        ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::VersionExists
        | ErrorCode::VersionInUse
        | ErrorCode::NotServable
        | ErrorCode::LastAdminKey
        | ErrorCode::ConfirmationRequired => StatusCode::CONFLICT,
        ErrorCode::InvalidName | ErrorCode::InvalidRequest | ErrorCode::InvalidInput | ErrorCode::Sha256Mismatch => {
            StatusCode::BAD_REQUEST
        }
        ErrorCode::InvalidArtifact | ErrorCode::UnknownFormat => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorCode::RangeNotSatisfiable => StatusCode::RANGE_NOT_SATISFIABLE,
        ErrorCode::Overloaded => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Timeout => StatusCode::REQUEST_TIMEOUT,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::InferenceFailed | ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// What a client is told about an error, whichever front end answers: the v1 API
/// (`ErrorBody`), KServe v2 (`{"error": "<code>: <message>"}`) and the catalogue's
/// pages and try-it panel all render this, and nothing else of the error.
#[derive(Debug)]
pub struct Public {
    pub status: StatusCode,
    pub code: ErrorCode,
    /// Safe to show: an internal error's cause is never here.
    pub message: String,
    /// The rule an artifact broke, and its format, for clients to match on.
    pub rule: Option<String>,
    pub format: Option<String>,
    /// `Retry-After` for overload, `WWW-Authenticate` for a missing or bad key.
    pub headers: HeaderMap,
}

/// The one message an internal error shows.
pub const INTERNAL_MESSAGE: &str = "internal error; the server log has the details";

impl Error {
    /// The public side of this error. The cause is logged here, once, for every front
    /// end: internal errors at error level (and never shown), failed inference and an
    /// unavailable dependency as warnings.
    pub fn public(&self) -> Public {
        let code = self.code();
        let message = match code {
            ErrorCode::Internal => {
                tracing::error!(error = %self, "internal error");
                INTERNAL_MESSAGE.to_string()
            }
            ErrorCode::InferenceFailed | ErrorCode::Unavailable => {
                tracing::warn!(error = %self, "request failed");
                self.to_string()
            }
            _ => self.to_string(),
        };
        let (rule, format) = match self {
            Error::Artifact(zoo_formats::Error::Invalid { format, rule, .. }) => {
                (Some(rule.to_string()), Some(format.as_str().to_string()))
            }
            Error::Artifact(zoo_formats::Error::InvalidBundle { rule, .. }) => {
                (Some(rule.to_string()), Some("bundle".to_string()))
            }
            _ => (None, None),
        };
        let mut headers = HeaderMap::new();
        match self {
            Error::Overloaded { retry_after_secs, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            Error::Busy(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(1));
            }
            _ => {}
        }
        if code == ErrorCode::Unauthorized {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"zoo\""));
        }
        Public { status: status_of(code), code, message, rule, format, headers }
    }
}

impl Public {
    /// The v1 API's body for it.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message.clone(),
                rule: self.rule.clone(),
                format: self.format.clone(),
            },
        }
    }

    /// `body` with this error's status and headers.
    pub fn respond(self, body: impl IntoResponse) -> Response {
        (self.status, self.headers, body).into_response()
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let public = self.public();
        let body = Json(public.body());
        public.respond(body)
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        // Transient: the connection broke or the server is going away, starting up,
        // out of connections, or asked to retry a transaction. 503, and the pool
        // reconnects by itself when the database is back.
        let transient = match &e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(db) => db.code().is_some_and(|c| {
                c.starts_with("08") || c.starts_with("53") || c.starts_with("57P") || c == "40001" || c == "40P01"
            }),
            _ => false,
        };
        if transient {
            Error::Unavailable(format!("the registry database is unreachable: {e}"))
        } else {
            Error::Internal(format!("database: {e}"))
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Internal(format!("I/O: {e}"))
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Error::Internal(format!("background task: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_internal_cause_is_never_public() {
        let p = Error::internal("database: password authentication failed for /srv/zoo/secret").public();
        assert_eq!(p.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(p.message, INTERNAL_MESSAGE);
        let io: Error = std::io::Error::other("/srv/zoo/secret").into();
        assert!(!io.public().message.contains("secret"));
    }

    #[test]
    fn headers_come_with_the_error_on_every_front_end() {
        let p = Error::Unauthorized("no key".into()).public();
        assert_eq!(p.headers[header::WWW_AUTHENTICATE], "Bearer realm=\"zoo\"");
        let p = Error::Overloaded { model: "m".into(), retry_after_secs: 3 }.public();
        assert_eq!((p.status, &p.headers[header::RETRY_AFTER]), (StatusCode::TOO_MANY_REQUESTS, &HeaderValue::from(3)));
        assert_eq!(Error::Busy("full".into()).public().headers[header::RETRY_AFTER], "1");
        assert!(Error::InvalidInput("x".into()).public().headers.is_empty());
    }

    #[test]
    fn an_artifact_rule_is_public() {
        let e = Error::Artifact(zoo_formats::Error::InvalidBundle { rule: "path", message: "../x".into() });
        let p = e.public();
        assert_eq!((p.rule.as_deref(), p.format.as_deref()), (Some("path"), Some("bundle")));
    }
}
