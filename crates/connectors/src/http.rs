//! `http.request`: one HTTP call, judged by its status.
//!
//! The request is `{method, url, headers, json | body, expect_status,
//! credential, follow_redirects}`; a status outside `expect_status` (any
//! 2xx when absent) is a failure whose cause is the status, so a policy can
//! retry on 503 but not on 404. A named `credential` adds its header (and,
//! with TLS material, sends through its own client); the request may not
//! set that header itself, the credential goes only to the hosts it names,
//! and what is kept of the answer has its secrets scrubbed.
//!
//! A redirect is an answer like any other: the approved plan names one URL,
//! so a `302` is judged by `expect_status` and not followed. With
//! `follow_redirects: same_origin` the call follows at most
//! [`MAX_REDIRECTS`] redirects that keep the scheme, host and port, and
//! refuses one that leaves the origin, saying where it pointed: nothing,
//! and no credential, is sent there.

use std::time::Duration;

use domain::{ActionShape, AttemptOutcome, FailureCause, Key, Kind, Literal, Refusal};
use reqwest::{Method, StatusCode, Url};
use serde_json::{Map, Value, json};

use crate::credentials::{Credentials, Ready};
use crate::failed;
use crate::text::truncate;

/// What `http.request` takes in a runbook's `with:`.
pub(crate) const SHAPE: ActionShape = ActionShape {
    name: "http.request",
    keys: &[
        Key::optional("method", Kind::Checked(method)),
        Key::required("url", Kind::Url),
        Key::optional("headers", Kind::StringMap),
        Key::optional("json", Kind::Json),
        Key::optional("body", Kind::Text),
        Key::optional("expect_status", Kind::IntegerList { min: 100, max: 599 }),
        Key::optional("credential", Kind::Credential),
        Key::optional("follow_redirects", Kind::Fixed(&["none", "same_origin"])),
    ],
    exclusive: &[("json", "body")],
    default: Some(("method", Literal::Text("GET"))),
    address: Some("url"),
};

const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"];

/// A method written out: one of [`METHODS`], in capitals.
fn method(method: &str) -> Result<(), Refusal> {
    if METHODS.contains(&method) {
        return Ok(());
    }
    let upper = method.to_ascii_uppercase();
    let hint = if METHODS.contains(&upper.as_str()) {
        format!("write it in capitals: `{upper}`")
    } else {
        format!("expected one of: {}", METHODS.join(", "))
    };
    Err(Refusal::new(
        format!("unknown HTTP method `{method}`"),
        hint,
    ))
}

/// How many redirects `follow_redirects: same_origin` follows in one call.
pub(crate) const MAX_REDIRECTS: usize = 5;

/// Whether a call follows redirects (`with.follow_redirects`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Redirects {
    /// A redirect is the answer (the default).
    Never,
    /// Followed while scheme, host and port stay the same.
    SameOrigin,
}

impl Redirects {
    fn read(request: &Value) -> Result<Redirects, String> {
        match &request["follow_redirects"] {
            Value::Null => Ok(Redirects::Never),
            Value::String(text) if text == "none" => Ok(Redirects::Never),
            Value::String(text) if text == "same_origin" => Ok(Redirects::SameOrigin),
            other => Err(format!(
                "`follow_redirects` is `none` or `same_origin`, not {other}"
            )),
        }
    }
}

pub(crate) async fn request(
    client: &reqwest::Client,
    credentials: &Credentials,
    request: &Value,
    body_limit: usize,
) -> AttemptOutcome {
    let credential = match credentials.named(request) {
        Ok(credential) => credential,
        Err(error) => return failed(FailureCause::Other, error),
    };
    let method = request["method"].as_str().unwrap_or("GET");
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return failed(
            FailureCause::Other,
            format!("invalid HTTP method `{method}`"),
        );
    };
    let Some(url) = request["url"].as_str() else {
        return failed(FailureCause::Other, "the request has no `url`".to_owned());
    };
    let redirects = match Redirects::read(request) {
        Ok(redirects) => redirects,
        Err(error) => return failed(FailureCause::Other, error),
    };
    let mut target = match Url::parse(url) {
        Ok(target) => target,
        Err(error) => {
            return failed(
                FailureCause::Other,
                format!("`{url}` is not a URL: {error}"),
            );
        }
    };
    if let Some(credential) = credential
        && let Err(error) = credential.allows(&target)
    {
        return failed(FailureCause::Other, error);
    }
    let mut headers = Vec::new();
    if let Some(given) = request["headers"].as_object() {
        for (name, value) in given {
            if let Some(credential) = credential
                && credential
                    .header_name()
                    .is_some_and(|set| set.as_str().eq_ignore_ascii_case(name))
            {
                return failed(
                    FailureCause::Other,
                    format!(
                        "the request sets `{name}` itself and names credential `{}`, which sets it too: give one or the other",
                        credential.name()
                    ),
                );
            }
            let value = value
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| value.to_string());
            headers.push((name.clone(), value));
        }
    }
    let client = credential.map_or(client, |credential| credential.client(client));
    let outgoing = Outgoing {
        client,
        credential,
        headers,
    };
    let mut method = method;
    let mut with_body = true;
    let mut hops = 0;
    let response = loop {
        let response = match outgoing
            .send(method.clone(), &target, with_body.then_some(request))
            .await
        {
            Ok(response) => response,
            Err(error) => {
                return failed(
                    transport_cause(&error),
                    format!("request to {target} failed: {}", error_chain(&error)),
                );
            }
        };
        let status = response.status();
        if redirects == Redirects::Never || !status.is_redirection() {
            break response;
        }
        let Some(location) = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|value| value.to_str().ok())
        else {
            break response;
        };
        let next = match target.join(location) {
            Ok(next) => next,
            Err(error) => {
                return failed(
                    FailureCause::Status(status.as_u16()),
                    format!(
                        "{target} answered {} with a `Location` that is not a URL (`{}`): {error}",
                        status.as_u16(),
                        scrubbed(credential, location)
                    ),
                );
            }
        };
        if next.origin() != target.origin() {
            return failed(
                FailureCause::Status(status.as_u16()),
                format!(
                    "{target} answered {} redirecting to {}, another origin: not followed (`follow_redirects: same_origin`)",
                    status.as_u16(),
                    scrubbed(credential, next.as_str())
                ),
            );
        }
        if hops == MAX_REDIRECTS {
            return failed(
                FailureCause::Status(status.as_u16()),
                format!(
                    "{target} answered {} after {MAX_REDIRECTS} redirects: not followed further",
                    status.as_u16()
                ),
            );
        }
        // As browsers do: 303 (and 301/302 after a POST) asks for a GET
        // without the body; 307 and 308 repeat the request as it was.
        let becomes_get = status == StatusCode::SEE_OTHER && method != Method::HEAD
            || matches!(status, StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND)
                && method == Method::POST;
        if becomes_get {
            method = Method::GET;
            with_body = false;
        }
        tracing::debug!(from = %target, to = %next, status = status.as_u16(), "following a same-origin redirect");
        hops += 1;
        target = next;
    };
    let url = target.as_str();
    let status = response.status().as_u16();
    let retry_after_ms = retry_after_ms(&response);
    let mut headers = Map::new();
    for name in ["content-type", "retry-after", "location"] {
        if let Some(value) = response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
        {
            headers.insert(name.to_owned(), json!(scrubbed(credential, value)));
        }
    }
    let text = match response.text().await {
        Ok(text) => scrubbed(credential, &text),
        Err(error) => {
            return failed(
                FailureCause::NoAnswer,
                format!(
                    "reading the response from {url} failed: {}",
                    error_chain(&error)
                ),
            );
        }
    };
    let mut summary =
        json!({"status": status, "headers": headers, "body": truncate(&text, body_limit)});
    if let Ok(parsed) = serde_json::from_str::<Value>(&text) {
        summary["json"] = parsed;
    }
    if status_expected(request, status) {
        AttemptOutcome::Succeeded { response: summary }
    } else {
        AttemptOutcome::Failed {
            cause: FailureCause::Status(status),
            error: format!("{url} answered {status}"),
            response: Some(summary),
            retry_after_ms,
        }
    }
}

/// What every request of one call carries.
struct Outgoing<'a> {
    client: &'a reqwest::Client,
    credential: Option<&'a Ready>,
    headers: Vec<(String, String)>,
}

impl Outgoing<'_> {
    /// Sends one request to `url`, with the body of `request` when given.
    async fn send(
        &self,
        method: Method,
        url: &Url,
        request: Option<&Value>,
    ) -> reqwest::Result<reqwest::Response> {
        let mut builder = self.client.request(method, url.clone());
        for (name, value) in &self.headers {
            builder = builder.header(name, value);
        }
        if let Some(credential) = self.credential {
            builder = credential.sign(builder);
        }
        if let Some(request) = request {
            if !request["json"].is_null() {
                builder = builder.json(&request["json"]);
            } else if let Some(body) = request["body"].as_str() {
                builder = builder.body(body.to_owned());
            }
        }
        builder.send().await
    }
}

fn scrubbed(credential: Option<&Ready>, text: &str) -> String {
    credential.map_or_else(|| text.to_owned(), |credential| credential.scrub(text))
}

fn status_expected(request: &Value, status: u16) -> bool {
    match request["expect_status"].as_array() {
        Some(expected) => expected
            .iter()
            .any(|wanted| wanted.as_u64() == Some(status as u64)),
        None => (200..300).contains(&status),
    }
}

/// `Retry-After` is either delay-seconds or an HTTP-date (RFC 9110 §10.2.3).
pub(crate) fn parse_retry_after(value: &str) -> Option<u64> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(seconds.saturating_mul(1000));
    }
    let at = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    let delay = at.duration_since(jiff::Timestamp::now());
    Some(
        Duration::try_from(delay)
            .map(|delay| delay.as_millis() as u64)
            .unwrap_or(0),
    )
}

pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Why a request got no answer: the peer could not be reached (nothing
/// was sent), was too slow or hung up or answered garbage (the request was
/// sent: it may have acted), or the request could not be built.
fn transport_cause(error: &reqwest::Error) -> FailureCause {
    if error.is_connect() {
        FailureCause::Connect
    } else if error.is_timeout() {
        FailureCause::Timeout
    } else if error.is_builder() {
        FailureCause::Other
    } else {
        FailureCause::NoAnswer
    }
}

/// A request that got no answer, as a failed attempt: `what` names the
/// call (`AWX GET /api/v2/jobs/7/`), the cause says whether the peer could
/// not be reached or was too slow.
pub(crate) fn transport_failure(what: &str, error: reqwest::Error) -> AttemptOutcome {
    let cause = transport_cause(&error);
    // The path is already in `what`.
    let error = error.without_url();
    failed(cause, format!("{what} failed: {}", error_chain(&error)))
}

/// The answer's `Retry-After`, in milliseconds.
pub(crate) fn retry_after_ms(response: &reqwest::Response) -> Option<u64> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(parse_retry_after)
}

/// The answer's `Retry-After`, as a duration.
pub(crate) fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    retry_after_ms(response).map(Duration::from_millis)
}

/// `text` on one line, its runs of whitespace one space each: a peer's
/// message quoted inside ours.
pub(crate) fn one_line(text: Option<&str>) -> String {
    text.unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// A peer's base URL from configuration, or why it is refused: it must be
/// http(s) with a host, and carry no credentials (which an error would
/// repeat), query or fragment.
pub(crate) fn base_url(text: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(text.trim()).map_err(|error| format!("`{text}`: {error}"))?;
    // Checked before the URL is ever repeated: it would carry a password.
    if !url.username().is_empty() || url.password().is_some() {
        return Err("it carries credentials; give them in the auth settings instead".to_owned());
    }
    if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
        return Err(format!("`{url}` is not an http(s) address"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("`{url}` has a query or a fragment"));
    }
    Ok(url)
}

/// `base` with `segments` added to its path, each one percent-encoded, so
/// that an id cannot point the call at another path.
pub(crate) fn with_path(base: &reqwest::Url, segments: &[&str]) -> reqwest::Url {
    let mut url = base.clone();
    url.path_segments_mut()
        .expect("an http(s) URL always has a path")
        .pop_if_empty()
        .extend(segments);
    url
}

#[cfg(test)]
mod tests {
    use super::parse_retry_after;

    #[test]
    fn retry_after_in_seconds_and_as_a_past_date() {
        assert_eq!(parse_retry_after("3"), Some(3000));
        assert_eq!(parse_retry_after(" 0 "), Some(0));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"), Some(0));
        assert_eq!(parse_retry_after("soon"), None);
    }
}
