//! Freshservice: an event source (`source.rs`: the Workflow Automator
//! names the ticket that was created or updated, and opsgate reads it
//! back), a ticket system (`desk.rs`: private notes, the ticket resolved
//! or handed to a group), and its config section (`config.rs`). This file
//! is the API v2 client both use.
//!
//! Freshservice answers with its resource wrapped (`{"ticket": …}`), takes
//! HTTP Basic with the API key as the user name, limits requests per
//! minute (429 with `Retry-After`, in seconds), and explains a refusal in
//! an envelope: `{"description": "Validation failed", "errors": [{"field",
//! "message", "code"}]}`, or `{"code", "message"}`. Like the other
//! write-back clients, every call answers or fails with a [`WriteError`]
//! saying whether trying later can help, and the client never waits and
//! retries itself: the write-back queue owns the schedule.
//!
//! Lists (a ticket's conversations, the groups) are read page by page,
//! following the `Link: <…>; rel="next"` header while there is one.
//!
//! The API key travels only in the `Authorization` header; an error names
//! the method, the URL without its query, the status and Freshservice's
//! own words, never the key.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{ACCEPT, LINK};
use reqwest::{Method, Url};
use serde_json::Value;

use crate::http::{base_url, one_line, retry_after, with_path};
use crate::{Secret, WriteError};

mod config;
mod desk;
mod source;

pub use config::Section;

/// Its config section, its route (`/v1/hooks/freshservice`), its events'
/// source and its write-backs' system.
pub const NAME: &str = "freshservice";

/// Freshservice, as the registry knows it.
pub(crate) const INTEGRATION: crate::registry::Integration = crate::registry::Integration {
    name: NAME,
    ticket_system: true,
    build: config::build,
    check: crate::section::check::<config::Section>,
};

/// How many entries one page asks for: Freshservice's largest.
const PER_PAGE: u32 = 100;

/// How many pages a list is read to at most: 10,000 conversations or
/// groups, far beyond a ticket's or a desk's, and a bound on a peer whose
/// `Link` never ends.
const MAX_PAGES: usize = 100;

/// A ticket's status: Freshservice's numbers.
pub(crate) mod status {
    pub const OPEN: u64 = 2;
    pub const PENDING: u64 = 3;
    pub const RESOLVED: u64 = 4;
    pub const CLOSED: u64 = 5;

    /// The status as Freshservice's agents see it.
    pub fn label(status: u64) -> &'static str {
        match status {
            OPEN => "Open",
            PENDING => "Pending",
            RESOLVED => "Resolved",
            CLOSED => "Closed",
            _ => "Custom",
        }
    }
}

#[derive(Debug, Clone)]
pub struct FreshserviceConfig {
    /// `https://<domain>.freshservice.com`, without `/api/v2`.
    pub base_url: String,
    pub api_key: Secret,
    /// Bounds each HTTP exchange.
    pub timeout: Duration,
}

/// A Freshservice API v2 client. Cheap to clone.
#[derive(Clone)]
pub struct Freshservice {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base_url: Url,
    api_key: Secret,
}

impl std::fmt::Debug for Freshservice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Freshservice")
            .field("base_url", &self.inner.base_url.as_str())
            .field("api_key", &"***")
            .finish()
    }
}

impl Freshservice {
    pub fn new(config: FreshserviceConfig) -> crate::Result<Freshservice> {
        let base_url = base_url(&config.base_url).map_err(|reason| crate::Error::Config {
            at: "freshservice.base_url".to_owned(),
            message: reason,
        })?;
        crate::install_crypto_provider();
        let http = crate::outbound_client(config.timeout).build()?;
        Ok(Freshservice {
            inner: Arc::new(Inner {
                http,
                base_url,
                api_key: config.api_key,
            }),
        })
    }

    /// `GET /api/v2/tickets/{id}`: the ticket.
    pub async fn ticket(&self, id: u64) -> Result<Value, WriteError> {
        let answer = self
            .send(Method::GET, &["tickets", &id.to_string()], None)
            .await?;
        unwrap(answer.body, "ticket", &answer.what)
    }

    /// `GET /api/v2/requesters/{id}`: the person a ticket is for.
    pub async fn requester(&self, id: u64) -> Result<Value, WriteError> {
        let answer = self
            .send(Method::GET, &["requesters", &id.to_string()], None)
            .await?;
        unwrap(answer.body, "requester", &answer.what)
    }

    /// `PUT /api/v2/tickets/{id}` with the fields to change.
    pub async fn update_ticket(&self, id: u64, fields: &Value) -> Result<(), WriteError> {
        self.send(Method::PUT, &["tickets", &id.to_string()], Some(fields))
            .await
            .map(drop)
    }

    /// `POST /api/v2/tickets/{id}/notes`: a private note, `html` its body.
    pub async fn add_private_note(&self, id: u64, html: &str) -> Result<(), WriteError> {
        let body = serde_json::json!({"body": html, "private": true});
        self.send(
            Method::POST,
            &["tickets", &id.to_string(), "notes"],
            Some(&body),
        )
        .await
        .map(drop)
    }

    /// Whether a note or reply on ticket `id` contains `marker`: every
    /// page of its conversations is read.
    pub async fn has_conversation_with(&self, id: u64, marker: &str) -> Result<bool, WriteError> {
        let path = ["tickets", &id.to_string(), "conversations"];
        let mut found = false;
        self.each_page(&path, "conversations", |conversation| {
            let text = conversation["body_text"]
                .as_str()
                .or_else(|| conversation["body"].as_str())
                .unwrap_or_default();
            found |= text.contains(marker);
            !found
        })
        .await?;
        Ok(found)
    }

    /// The id of the agent group named `name` (compared ignoring case).
    pub async fn group_named(&self, name: &str) -> Result<Option<u64>, WriteError> {
        let wanted = name.to_lowercase();
        let mut id = None;
        self.each_page(&["groups"], "groups", |group| {
            if group["name"]
                .as_str()
                .is_some_and(|found| found.to_lowercase() == wanted)
            {
                id = group["id"].as_u64();
            }
            id.is_none()
        })
        .await?;
        Ok(id)
    }

    /// Reads the list at `path` page by page, handing each entry of its
    /// `field` to `visit` until it answers `false` or the last page.
    async fn each_page(
        &self,
        path: &[&str],
        field: &str,
        mut visit: impl FnMut(&Value) -> bool,
    ) -> Result<(), WriteError> {
        let mut url = self.url(path);
        url.query_pairs_mut()
            .append_pair("per_page", &PER_PAGE.to_string())
            .append_pair("page", "1");
        for _ in 0..MAX_PAGES {
            let answer = self.request(Method::GET, url.clone(), None).await?;
            let Some(entries) = answer.body[field].as_array() else {
                return Err(WriteError::malformed(
                    &answer.what,
                    &format!("no `{field}` list"),
                ));
            };
            if !entries.iter().all(&mut visit) {
                return Ok(());
            }
            match answer.next.and_then(|next| self.same_origin(&next)) {
                Some(next) => url = next,
                None => return Ok(()),
            }
        }
        Ok(())
    }

    /// The next page's URL, when it lies on the configured address: a
    /// `Link` elsewhere would carry the API key there.
    fn same_origin(&self, next: &str) -> Option<Url> {
        let url = Url::parse(next).ok()?;
        (url.origin() == self.inner.base_url.origin()).then_some(url)
    }

    fn url(&self, path: &[&str]) -> Url {
        let mut segments = vec!["api", "v2"];
        segments.extend(path);
        with_path(&self.inner.base_url, &segments)
    }

    async fn send(
        &self,
        method: Method,
        path: &[&str],
        body: Option<&Value>,
    ) -> Result<Answer, WriteError> {
        self.request(method, self.url(path), body).await
    }

    async fn request(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> Result<Answer, WriteError> {
        let what = {
            let mut shown = url.clone();
            shown.set_query(None);
            format!("Freshservice {method} {shown}")
        };
        let mut request = self
            .inner
            .http
            .request(method, url)
            .header(ACCEPT, "application/json")
            .basic_auth(self.inner.api_key.expose(), Some("X"));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|error| WriteError::unanswered(&what, error))?;
        let status = response.status();
        let retry_after = retry_after(&response);
        let next = next_link(response.headers());
        let text = response
            .text()
            .await
            .map_err(|error| WriteError::unanswered(&what, error))?;
        if !status.is_success() {
            let message = format!("{what}: {status}{}", refusal(&text));
            return Err(WriteError::refused(status, message, retry_after));
        }
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .map_err(|error| WriteError::malformed(&what, &error.to_string()))?
        };
        Ok(Answer { what, body, next })
    }
}

/// A successful answer.
struct Answer {
    /// The call, as errors name it.
    what: String,
    body: Value,
    /// The next page, from the `Link` header.
    next: Option<String>,
}

/// The resource an answer wraps (`{"ticket": {…}}`).
fn unwrap(mut body: Value, field: &str, what: &str) -> Result<Value, WriteError> {
    match body.get_mut(field).map(Value::take) {
        Some(resource @ Value::Object(_)) => Ok(resource),
        _ => Err(WriteError::malformed(what, &format!("no `{field}` object"))),
    }
}

/// Freshservice's own words on a refusal: the validation envelope's
/// description and each error (field, message, code), or a `{"code",
/// "message"}` body; nothing for an empty or non-JSON body (a proxy's
/// page), whose status says enough.
fn refusal(text: &str) -> String {
    let Ok(body) = serde_json::from_str::<Value>(text) else {
        return String::new();
    };
    let mut said = Vec::new();
    if let Some(description) = body["description"].as_str() {
        said.push(one_line(Some(description)));
    }
    if let Some(message) = body["message"].as_str() {
        said.push(one_line(Some(message)));
    }
    for error in body["errors"].as_array().into_iter().flatten() {
        said.push(format!(
            "{}: {} ({})",
            error["field"].as_str().unwrap_or("?"),
            one_line(error["message"].as_str()),
            error["code"].as_str().unwrap_or("?")
        ));
    }
    if said.is_empty() {
        String::new()
    } else {
        format!(": {}", said.join("; "))
    }
}

/// The `rel="next"` target of a `Link` header.
fn next_link(headers: &reqwest::header::HeaderMap) -> Option<String> {
    let link = headers.get(LINK)?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|param| {
                let param = param.trim().replace(' ', "");
                param == "rel=\"next\"" || param == "rel=next"
            })
            .then(|| {
                target
                    .trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_owned()
            })
    })
}

/// The ticket number an id in any of Freshservice's spellings names:
/// `1001`, `"1001"`, `"#INC-1001"`, `"SR-1001"`.
pub(crate) fn ticket_number(text: &str) -> Option<u64> {
    let text = text.trim().trim_start_matches('#');
    let digits = match text.rsplit_once('-') {
        Some((prefix, digits))
            if !prefix.is_empty() && prefix.bytes().all(|b| b.is_ascii_alphabetic()) =>
        {
            digits
        }
        Some(_) => return None,
        None => text,
    };
    if digits.is_empty() || digits.len() > 18 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|number| *number > 0)
}

#[cfg(test)]
mod tests {
    use super::{next_link, refusal, ticket_number};

    #[test]
    fn ticket_numbers_in_every_spelling() {
        for (text, number) in [
            ("1001", Some(1001)),
            (" #INC-1001 ", Some(1001)),
            ("SR-7", Some(7)),
            ("0", None),
            ("", None),
            ("INC-", None),
            ("1001/../groups", None),
            ("IN C-1001", None),
            ("-5", None),
            ("99999999999999999999", None),
        ] {
            assert_eq!(ticket_number(text), number, "{text:?}");
        }
    }

    #[test]
    fn a_refusal_says_what_freshservice_said() {
        assert_eq!(
            refusal(
                r#"{"description":"Validation failed","errors":[{"field":"status","message":"It should be one of these values: '2,3,4,5'","code":"invalid_value"}]}"#
            ),
            ": Validation failed; status: It should be one of these values: '2,3,4,5' (invalid_value)"
        );
        assert_eq!(
            refusal(
                r#"{"code":"invalid_credentials","message":"You have to be logged in to perform this action."}"#
            ),
            ": You have to be logged in to perform this action."
        );
        assert_eq!(refusal("<html>502</html>"), "");
        assert_eq!(refusal(""), "");
    }

    #[test]
    fn the_next_page_is_read_from_link() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::LINK,
            r#"<https://acme.freshservice.com/api/v2/groups?page=2&per_page=100>; rel="next""#
                .parse()
                .unwrap(),
        );
        assert_eq!(
            next_link(&headers).as_deref(),
            Some("https://acme.freshservice.com/api/v2/groups?page=2&per_page=100")
        );
        headers.insert(
            reqwest::header::LINK,
            r#"<https://x/a?page=1>; rel="prev""#.parse().unwrap(),
        );
        assert_eq!(next_link(&headers), None);
    }
}
