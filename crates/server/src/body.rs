//! Request bodies and query strings, read the one way every handler reads
//! them: bytes first (so a webhook's signature is checked on exactly what
//! was sent, and a body of several alerts is validated whole), then parsed
//! with an error that says what and where, in the API's error format.

use axum::body::Bytes;
use axum::extract::{FromRequest, Query};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::ApiError;

/// A query string parsed into `T`; a malformed one is refused in the API's
/// error format, saying which parameter and why.
pub(crate) struct QueryParams<T>(pub(crate) T);

impl<T: DeserializeOwned + Send, S: Send + Sync> axum::extract::FromRequestParts<S>
    for QueryParams<T>
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| QueryParams(value))
            .map_err(|rejection| ApiError::bad_request("invalid_query", rejection.body_text()))
    }
}

/// A request body as bytes, with the body-size limit's refusal (and any
/// other failure to read) answered in the API's JSON error format.
pub(crate) struct RawBody(pub(crate) Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(
        request: axum::extract::Request,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match Bytes::from_request(request, state).await {
            Ok(bytes) => Ok(RawBody(bytes)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::PayloadTooLarge)
            }
            Err(rejection) => Err(ApiError::bad_request(
                "unreadable_body",
                rejection.body_text(),
            )),
        }
    }
}

/// The media types request bodies are declared as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MediaType {
    /// `application/json`, or a JSON-based type (`application/<x>+json`,
    /// RFC 6839), parameters such as `charset` allowed.
    Json,
    /// `application/x-www-form-urlencoded` (Slack's interactions).
    Form,
}

impl MediaType {
    fn name(self) -> &'static str {
        match self {
            MediaType::Json => "application/json",
            MediaType::Form => "application/x-www-form-urlencoded",
        }
    }

    /// Whether a `Content-Type` header's value declares this type.
    fn declared_by(self, content_type: &str) -> bool {
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match self {
            MediaType::Json => {
                essence == "application/json"
                    || essence
                        .strip_prefix("application/")
                        .is_some_and(|subtype| subtype.len() > 5 && subtype.ends_with("+json"))
            }
            MediaType::Form => essence == "application/x-www-form-urlencoded",
        }
    }
}

/// Reads a request's body, refused with 415 unless a body that is there
/// (anything but whitespace) is declared `expected`. A missing
/// `Content-Type` is no declaration: `curl -d` without `-H` sends
/// `application/x-www-form-urlencoded`, and a body of unknown type is not
/// guessed at.
async fn body_of_type<S: Send + Sync>(
    request: axum::extract::Request,
    state: &S,
    expected: MediaType,
) -> Result<Bytes, ApiError> {
    let content_type = request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .map(|value| value.to_str().unwrap_or("(not text)").to_owned());
    let RawBody(body) = RawBody::from_request(request, state).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(body);
    }
    match content_type {
        Some(declared) if expected.declared_by(&declared) => Ok(body),
        Some(declared) => Err(ApiError::UnsupportedMediaType {
            message: format!(
                "the body is declared `{declared}`: send it as `Content-Type: {}`",
                expected.name()
            ),
        }),
        None => Err(ApiError::UnsupportedMediaType {
            message: format!(
                "the body has no `Content-Type`: send it as `Content-Type: {}`",
                expected.name()
            ),
        }),
    }
}

/// A JSON request body as bytes (see [`body_of_type`]).
pub(crate) struct JsonBody(pub(crate) Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(
        request: axum::extract::Request,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        body_of_type(request, state, MediaType::Json)
            .await
            .map(JsonBody)
    }
}

/// A form-encoded request body as bytes (see [`body_of_type`]).
pub(crate) struct FormBody(pub(crate) Bytes);

impl<S: Send + Sync> FromRequest<S> for FormBody {
    type Rejection = ApiError;

    async fn from_request(
        request: axum::extract::Request,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        body_of_type(request, state, MediaType::Form)
            .await
            .map(FormBody)
    }
}

/// Parses a JSON body into `T`, with an error that says what and where.
pub(crate) fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    runtime::parse_json(body).map_err(ApiError::from)
}

#[cfg(test)]
mod tests {
    use super::MediaType;

    #[test]
    fn which_content_types_declare_json_and_forms() {
        let cases: &[(&str, MediaType, bool)] = &[
            ("application/json", MediaType::Json, true),
            ("application/json; charset=utf-8", MediaType::Json, true),
            ("Application/JSON;charset=UTF-8", MediaType::Json, true),
            (" application/json ", MediaType::Json, true),
            ("application/vnd.opsgate+json", MediaType::Json, true),
            ("application/+json", MediaType::Json, false),
            ("application/jsonx", MediaType::Json, false),
            ("text/json", MediaType::Json, false),
            ("text/plain", MediaType::Json, false),
            ("application/x-www-form-urlencoded", MediaType::Json, false),
            ("multipart/form-data; boundary=x", MediaType::Json, false),
            ("", MediaType::Json, false),
            ("application/x-www-form-urlencoded", MediaType::Form, true),
            (
                "application/x-www-form-urlencoded; charset=utf-8",
                MediaType::Form,
                true,
            ),
            ("application/json", MediaType::Form, false),
        ];
        for (content_type, media_type, declared) in cases {
            assert_eq!(
                media_type.declared_by(content_type),
                *declared,
                "{content_type:?} as {media_type:?}"
            );
        }
    }
}
