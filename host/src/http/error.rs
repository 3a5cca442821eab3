//! Every failure a request can meet, mapped to a status and a JSON body in
//! one place, for every router (ingest and admin alike).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::store::StoreError;

/// A query string parsed into `T`; a bad one is a JSON 400 naming the
/// parameter, like every other bad input, instead of axum's plain text.
pub struct ApiQuery<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de).map(ApiQuery).map_err(|e| {
            let field = e.path().to_string();
            ApiError::bad_request(if field == "." { String::new() } else { field }, e.inner().to_string())
        })
    }
}

/// An error answer: `{"error": "...", "field": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: String,
    pub field: Option<String>,
    /// Seconds for a `Retry-After` header (503 under load).
    pub retry_after_secs: Option<u64>,
}

/// The body of every error answer, as the OpenAPI document describes it.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes `Body` for the document; never built.
pub struct ErrorBody {
    /// What went wrong, naming the field when one is to blame.
    error: String,
    /// The field to blame (`status`, `[2].time`, `body`), when there is one.
    field: Option<String>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl ApiError {
    fn new(status: StatusCode, error: impl Into<String>) -> ApiError {
        ApiError { status, error: error.into(), field: None, retry_after_secs: None }
    }

    /// 400 for a JSON document that does not parse into what was expected, naming the field.
    pub fn bad_json(err: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
        ApiError::bad_request(json_field(&err), err.into_inner().to_string())
    }

    /// 403: the request is well formed but refused (a signature that does not match, a replay).
    pub fn forbidden(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::FORBIDDEN, ..ApiError::bad_request(field, message) }
    }

    /// 400, naming the field (`[2].time`, `viewer_list[0]`; empty for the body as a whole).
    pub fn bad_request(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        let field = field.into();
        let message = message.into();
        let error = if field.is_empty() { message } else { format!("{field}: {message}") };
        ApiError { status: StatusCode::BAD_REQUEST, error, field: Some(field), retry_after_secs: None }
    }

    /// 401.
    pub fn unauthorized(e: impl std::fmt::Display) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, e.to_string())
    }

    /// 413.
    pub fn too_large(limit: u64) -> ApiError {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("body is larger than {limit} bytes (vhs.max_body_bytes)"))
    }

    /// 411: a signed VHS body must say its length up front.
    pub fn length_required() -> ApiError {
        ApiError::new(StatusCode::LENGTH_REQUIRED, "a signed body needs a Content-Length")
    }

    /// 415.
    pub fn unsupported_encoding(encoding: &str) -> ApiError {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Encoding `{encoding}` is not supported (use gzip or none)"),
        )
    }

    /// 503: storage is away; Twitch retries.
    pub fn unavailable(e: impl std::fmt::Display) -> ApiError {
        // The cause may name hosts, users and queries: the log has it, the answer does not.
        tracing::error!("storage unavailable: {e}");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "storage unavailable; try again later")
    }

    /// 503 without a storage error: the host cannot judge events right now.
    pub fn not_serving(reason: &str) -> ApiError {
        tracing::warn!("refusing an event: {reason}");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "this host cannot take events now; try again later")
    }

    /// 503 with `Retry-After`: too busy now, fine later.
    pub fn busy(what: impl Into<String>, retry_after_secs: u64) -> ApiError {
        ApiError { retry_after_secs: Some(retry_after_secs), ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, what) }
    }

    /// 422: well-formed, but refused (a plugin that does not validate).
    pub fn unprocessable(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            error: message.into(),
            field: Some(field.into()),
            retry_after_secs: None,
        }
    }

    /// 408: the client took too long to send its request.
    pub fn request_timeout(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::REQUEST_TIMEOUT, message)
    }

    /// 404.
    pub fn not_found(what: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, what)
    }

    /// 409: the resource is not in a state that allows this.
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, message)
    }

    /// 500.
    pub fn internal(e: impl std::fmt::Display) -> ApiError {
        tracing::error!("internal error: {e}");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error; the host's log has the cause")
    }

    /// The metric label for this error.
    pub fn outcome(&self) -> &'static str {
        match self.status {
            StatusCode::BAD_REQUEST => "bad_request",
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::PAYLOAD_TOO_LARGE => "too_large",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            _ => "error",
        }
    }
}

impl From<StoreError> for ApiError {
    /// Storage trouble is 503: Twitch and game servers retry. A value that
    /// cannot be encoded for storage is refused instead of stored half.
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Encode(message) => ApiError::bad_request("", message),
            e => ApiError::unavailable(e),
        }
    }
}

/// Names the field a JSON error is about: the path, plus the missing field's
/// name (`[1].time`, `viewer_list[0]`; empty for the document as a whole).
pub fn json_field(err: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let mut field = err.path().to_string();
    if field == "." {
        field.clear();
    }
    let message = err.inner().to_string();
    if let Some(name) = message.strip_prefix("missing field `").and_then(|m| m.split('`').next()) {
        field = if field.is_empty() { name.to_string() } else { format!("{field}.{name}") };
    }
    field
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body { error: &self.error, field: self.field.as_deref() };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_request_names_the_field() {
        let e = ApiError::bad_request("[1].time", "not RFC 3339");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.error, "[1].time: not RFC 3339");
        assert_eq!(e.field.as_deref(), Some("[1].time"));
    }
}
