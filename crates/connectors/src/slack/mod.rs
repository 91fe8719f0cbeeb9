//! The Slack Web API client that posts approval requests, and the Block Kit
//! message it posts.
//!
//! Slack answers almost everything with HTTP 200 and says in the body
//! whether it worked: `{"ok": true, …}` or `{"ok": false, "error":
//! "channel_not_found"}`. So a 200 is not a success until `ok` says so, and
//! the error code decides whether trying later can help. A rate-limited call
//! gets `429` with `Retry-After` (seconds). Like [`crate::servicenow`], the
//! client never waits and retries itself: it reports a [`WriteError`] and its
//! caller owns the schedule.
//!
//! The message's Approve and Deny buttons carry an [`ApprovalButton`] as
//! their value; the click is read back into the same type (`buttons.rs`,
//! `interaction.rs`), so what the button says and what is read cannot
//! drift apart.
//! The bot token travels only in the `Authorization` header and never
//! appears in an error message.
//!
//! A click is answered through its payload's `response_url` by a
//! `Responder` (`interaction_response` builds the body): the message can
//! be replaced with who decided, or the person who clicked told alone. That
//! URL arrives in the payload, so the responder posts only under a base it
//! was configured with (Slack's `https://hooks.slack.com/`), never wherever
//! a payload points.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use reqwest::header::ACCEPT;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::http::{error_chain, retry_after};
use crate::text::clip;
use crate::{Secret, WriteError};

mod buttons;
mod channel;
mod interaction;

pub use buttons::slack_signature;
pub use channel::Section;
use interaction::{Interaction, read_interaction};

/// Its config section and its write-backs' system.
pub const NAME: &str = "slack";

/// Slack, as the registry knows it.
pub(crate) const INTEGRATION: crate::registry::Integration = crate::registry::Integration {
    name: NAME,
    ticket_system: false,
    build: channel::build,
    check: crate::section::check::<channel::Section>,
};

/// Where Slack's Web API lives; tests point the client at `slack_sim`.
pub const SLACK_API_URL: &str = "https://slack.com/api";

/// The `action_id` of the Approve button.
pub const APPROVE_ACTION: &str = "approve";
/// The `action_id` of the Deny button.
pub const DENY_ACTION: &str = "deny";
/// The `action_id` of the link button to the signed approval page. Slack
/// sends an interaction for it too; it decides nothing.
pub const OPEN_PAGE_ACTION: &str = "open_approval_page";

#[derive(Debug, Clone)]
pub struct SlackConfig {
    /// The Web API's base URL, normally [`SLACK_API_URL`].
    pub api_url: String,
    /// A bot token (`xoxb-…`) with the `chat:write` scope.
    pub bot_token: Secret,
    /// Bounds each call.
    pub timeout: Duration,
}

/// A Slack workspace's Web API, ready to call. Cheap to clone.
#[derive(Clone)]
pub struct Slack {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    api_url: Url,
    bot_token: Secret,
}

impl std::fmt::Debug for Slack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slack")
            .field("api_url", &self.inner.api_url.as_str())
            .finish_non_exhaustive()
    }
}

/// Where a posted message landed: enough to update or thread on it later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostedMessage {
    /// The channel's id (Slack answers with the id even when given a name).
    pub channel: String,
    /// The message's timestamp, its id within the channel.
    pub ts: String,
}

impl Slack {
    pub fn new(config: SlackConfig) -> crate::Result<Slack> {
        let api_url = parse_api_url(&config.api_url)?;
        crate::install_crypto_provider();
        let http = crate::outbound_client(config.timeout).build()?;
        Ok(Slack {
            inner: Arc::new(Inner {
                http,
                api_url,
                bot_token: config.bot_token,
            }),
        })
    }

    /// `chat.postMessage`: posts `message` (an object with `text` and
    /// optionally `blocks`, such as [`approval_message`] makes) to `channel`.
    pub async fn post_message(
        &self,
        channel: &str,
        message: &Value,
    ) -> Result<PostedMessage, WriteError> {
        let what = "Slack chat.postMessage";
        let Some(fields) = message.as_object() else {
            return Err(WriteError::Permanent {
                message: format!("{what}: the message must be a JSON object"),
            });
        };
        let mut body = fields.clone();
        body.insert("channel".to_owned(), json!(channel));
        let answer = self.call("chat.postMessage", &Value::Object(body)).await?;
        match (answer["channel"].as_str(), answer["ts"].as_str()) {
            (Some(channel), Some(ts)) => Ok(PostedMessage {
                channel: channel.to_owned(),
                ts: ts.to_owned(),
            }),
            _ => Err(WriteError::Permanent {
                message: format!("{what}: malformed answer: no `channel` and `ts`"),
            }),
        }
    }

    /// Calls the Web API `method` with a JSON body and returns Slack's
    /// answer once its `ok` is true.
    async fn call(&self, method: &str, body: &Value) -> Result<Value, WriteError> {
        let what = format!("Slack {method}");
        let mut url = self.inner.api_url.clone();
        url.path_segments_mut()
            .expect("an http(s) URL always has a path")
            .pop_if_empty()
            .push(method);
        let response = self
            .inner
            .http
            .post(url)
            .header(ACCEPT, "application/json")
            .bearer_auth(self.inner.bot_token.expose())
            .json(body)
            .send()
            .await
            .map_err(|error| WriteError::unanswered(&what, error))?;
        let status = response.status();
        let retry_after = retry_after(&response);
        let text = response
            .text()
            .await
            .map_err(|error| WriteError::Retryable {
                message: format!("{what} failed reading the answer: {}", error_chain(&error)),
                retry_after: None,
            })?;
        let answer: Option<Value> = serde_json::from_str(&text).ok();
        let code = answer
            .as_ref()
            .and_then(|answer| answer["error"].as_str())
            .map(str::to_owned);
        if !status.is_success() {
            let said = code.map(|code| format!(": {code}")).unwrap_or_default();
            let message = format!("{what} answered {status}{said}");
            return Err(WriteError::refused(status, message, retry_after));
        }
        let Some(answer) = answer else {
            return Err(WriteError::Permanent {
                message: format!("{what}: malformed answer: {status} without JSON"),
            });
        };
        if answer["ok"] == json!(true) {
            return Ok(answer);
        }
        let code = code.unwrap_or_else(|| "no error code".to_owned());
        let message = format!("{what} refused: {code}");
        Err(if is_transient(&code) {
            WriteError::Retryable {
                message,
                retry_after,
            }
        } else {
            WriteError::Permanent { message }
        })
    }
}

/// Error codes Slack documents as its own trouble or a limit, which pass;
/// every other code (`channel_not_found`, `invalid_auth`, `not_in_channel`,
/// `missing_scope`, …) stays until someone changes the configuration.
fn is_transient(code: &str) -> bool {
    matches!(
        code,
        "ratelimited"
            | "rate_limited"
            | "internal_error"
            | "fatal_error"
            | "service_unavailable"
            | "request_timeout"
    )
}

fn parse_api_url(text: &str) -> crate::Result<Url> {
    let invalid = |reason: String| crate::Error::SlackApiUrl(reason);
    let url = Url::parse(text.trim()).map_err(|error| invalid(format!("`{text}`: {error}")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("it carries credentials".to_owned()));
    }
    if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
        return Err(invalid(format!("`{url}` is not an http(s) address")));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(format!("`{url}` has a query or a fragment")));
    }
    Ok(url)
}

/// Where Slack's `response_url`s live.
pub const SLACK_RESPONSE_URL_BASE: &str = "https://hooks.slack.com/";

/// Posts answers to clicks to their payload's `response_url` (Slack's
/// "message responses"), and only when that URL lies under the allowed
/// base: the payload is signed, but a server that posts wherever a payload
/// says would be one leaked signing secret away from serving anyone's
/// requests. A `response_url` lets whoever holds it post to the channel for
/// half an hour, so errors name its host only. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Responder {
    http: reqwest::Client,
    /// Scheme, host and port to match, and a path ending in `/` to begin with.
    base: Url,
}

impl Responder {
    /// A responder that posts only under `base` (normally
    /// [`SLACK_RESPONSE_URL_BASE`]), each post bounded by `timeout`.
    pub fn new(base: &str, timeout: Duration) -> crate::Result<Responder> {
        let mut base = parse_api_url(base)?;
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        crate::install_crypto_provider();
        let http = crate::outbound_client(timeout).build()?;
        Ok(Responder { http, base })
    }

    /// `response_url` parsed, when it lies under the allowed base: the
    /// same scheme, host and port, no credentials, and a path (normalised,
    /// so `..` cannot climb out) that begins with the base's.
    fn allowed(&self, response_url: &str) -> Option<Url> {
        let url = Url::parse(response_url).ok()?;
        let under_base = url.scheme() == self.base.scheme()
            && url.host() == self.base.host()
            && url.port_or_known_default() == self.base.port_or_known_default()
            && url.username().is_empty()
            && url.password().is_none()
            && url.path().starts_with(self.base.path());
        under_base.then_some(url)
    }

    /// Posts `response` (as [`interaction_response`] builds it) to
    /// `response_url`; a URL outside the allowed base is refused without a
    /// request. Slack answers `200 ok`; anything else is an error.
    pub async fn respond(&self, response_url: &str, response: &Value) -> Result<(), WriteError> {
        let Some(url) = self.allowed(response_url) else {
            return Err(WriteError::Permanent {
                message: format!(
                    "not answering a Slack click at a response_url outside {}",
                    self.base
                ),
            });
        };
        let what = format!(
            "Slack response_url on {}",
            url.host_str().unwrap_or_default()
        );
        let response = self
            .http
            .post(url)
            .json(response)
            .send()
            .await
            .map_err(|error| WriteError::unanswered(&what, error))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = retry_after(&response);
        // Slack says why in a word (`no_text`, `expired_url`, …).
        let said = response.text().await.unwrap_or_default();
        let said = clip(said.trim(), 100);
        Err(WriteError::refused(
            status,
            format!("{what} answered {status}: {said}"),
            retry_after,
        ))
    }
}

/// How an answer to a click shows in Slack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResponseKind {
    /// Replaces the message the click came from, buttons and all, for
    /// everyone in the channel.
    ReplaceOriginal,
    /// A new message in the channel; the original stays as it was.
    InChannel,
    /// Shown only to the person who clicked; the original stays.
    Ephemeral,
}

/// The body answering a click with `text` (mrkdwn; `&`, `<` and `>` are
/// escaped here), shown as `kind` says: for a `response_url`, or as the
/// immediate answer to the interaction request.
pub(crate) fn interaction_response(kind: ResponseKind, text: &str) -> Value {
    let text = clip(&escape(text), SECTION_TEXT_LIMIT);
    match kind {
        ResponseKind::ReplaceOriginal => json!({
            "replace_original": true,
            "text": text,
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
        }),
        ResponseKind::InChannel => json!({
            "response_type": "in_channel",
            "replace_original": false,
            "text": text,
        }),
        ResponseKind::Ephemeral => json!({
            "response_type": "ephemeral",
            "replace_original": false,
            "text": text,
        }),
    }
}

/// What the Approve and Deny buttons carry: the run and the approval stage
/// the message was posted for. A click on a message from an earlier stage
/// is refused rather than counted for the stage open now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalButton {
    pub run: String,
    pub stage: String,
}

impl ApprovalButton {
    /// The button's `value`: compact JSON, well under Slack's 2000 characters
    /// for run ids and stage names.
    pub fn to_value(&self) -> String {
        serde_json::to_string(self).expect("a button value serialises")
    }

    /// The button a `value` came from; `None` when it is not one of ours.
    pub fn parse(value: &str) -> Option<ApprovalButton> {
        serde_json::from_str(value).ok()
    }
}

/// Limits Block Kit sets on what we fill in.
const SECTION_TEXT_LIMIT: usize = 3000;
const FIELD_TEXT_LIMIT: usize = 2000;
const BUTTON_URL_LIMIT: usize = 3000;
/// How many targets and reasons the message lists before "and N more".
const LISTED: usize = 10;

/// The message asking for approval of `run_id` in approval stage `stage`:
/// what will run (`title`), where (`targets`), why the gate asked
/// (`reasons`), Approve and Deny buttons, and — when `approve_url` is given —
/// a link button to the signed approval page with the full plan. The result
/// is a `chat.postMessage` body without its `channel`: `{"text", "blocks"}`,
/// where `text` is the notification's fallback.
pub fn approval_message(
    run_id: &str,
    stage: &str,
    title: &str,
    targets: &[String],
    reasons: &[String],
    approve_url: Option<&str>,
) -> Value {
    let button = ApprovalButton {
        run: run_id.to_owned(),
        stage: stage.to_owned(),
    }
    .to_value();
    let stage_note = if stage.is_empty() {
        String::new()
    } else {
        format!(", stage `{}`", escape(stage))
    };
    let headline = format!(
        "*Approval needed:* {}\nRun `{}`{stage_note}",
        escape(title),
        escape(run_id)
    );
    let targets_text = format!(
        "*Targets*\n{}",
        listed(targets, |target| format!("`{}`", escape(target)), ", ")
    );
    let reasons_text = format!(
        "*Why approval is needed*\n{}",
        listed(reasons, |reason| format!("• {}", escape(reason)), "\n")
    );
    let mut buttons = vec![
        json!({
            "type": "button", "action_id": APPROVE_ACTION, "style": "primary",
            "text": {"type": "plain_text", "text": "Approve"}, "value": button,
        }),
        json!({
            "type": "button", "action_id": DENY_ACTION, "style": "danger",
            "text": {"type": "plain_text", "text": "Deny"}, "value": button,
        }),
    ];
    if let Some(url) = approve_url.filter(|url| url.len() <= BUTTON_URL_LIMIT) {
        buttons.push(json!({
            "type": "button", "action_id": OPEN_PAGE_ACTION,
            "text": {"type": "plain_text", "text": "Review the plan"}, "url": url,
        }));
    }
    json!({
        "text": clip(&escape(&format!("Approval needed: {title} (run {run_id})")), SECTION_TEXT_LIMIT),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": clip(&headline, SECTION_TEXT_LIMIT)}},
            {"type": "section", "fields": [
                {"type": "mrkdwn", "text": clip(&targets_text, FIELD_TEXT_LIMIT)},
                {"type": "mrkdwn", "text": clip(&reasons_text, FIELD_TEXT_LIMIT)},
            ]},
            {"type": "actions", "block_id": clip(&format!("opsgate-approval-{run_id}"), 255), "elements": buttons},
        ],
    })
}

/// The first [`LISTED`] items, shown by `show` and joined, then how many
/// more there are; `none` for an empty list.
fn listed(items: &[String], show: impl Fn(&str) -> String, separator: &str) -> String {
    if items.is_empty() {
        return "none".to_owned();
    }
    let mut text = items
        .iter()
        .take(LISTED)
        .map(|item| show(item))
        .collect::<Vec<_>>()
        .join(separator);
    if items.len() > LISTED {
        text.push_str(&format!("{separator}and {} more", items.len() - LISTED));
    }
    text
}

/// Slack reads `&`, `<` and `>` in message text as markup (links,
/// mentions): escaped, a runbook's title cannot ping `@channel`.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|item| (*item).to_owned()).collect()
    }

    #[test]
    fn the_buttons_carry_the_run_and_stage_and_the_link_goes_to_the_page() {
        let message = approval_message(
            "run-1",
            "security",
            "Restart the spooler",
            &strings(&["HOST-1"]),
            &strings(&["risk is irreversible"]),
            Some("https://opsgate.example/approve/abc"),
        );
        let elements = message["blocks"][2]["elements"].as_array().unwrap();
        let ids: Vec<&str> = elements
            .iter()
            .map(|element| element["action_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, [APPROVE_ACTION, DENY_ACTION, OPEN_PAGE_ACTION]);
        let expected = ApprovalButton {
            run: "run-1".into(),
            stage: "security".into(),
        };
        for button in &elements[..2] {
            let value = button["value"].as_str().unwrap();
            assert_eq!(ApprovalButton::parse(value), Some(expected.clone()));
        }
        assert_eq!(elements[2]["url"], "https://opsgate.example/approve/abc");
        assert!(elements[2].get("value").is_none());
        assert!(
            message["text"]
                .as_str()
                .unwrap()
                .contains("Restart the spooler")
        );
    }

    #[test]
    fn without_a_page_there_is_no_link_button() {
        let message = approval_message("run-1", "", "Title", &[], &[], None);
        assert_eq!(
            message["blocks"][2]["elements"].as_array().unwrap().len(),
            2
        );
        let headline = message["blocks"][0]["text"]["text"].as_str().unwrap();
        assert!(!headline.contains("stage"), "{headline}");
        assert_eq!(message["blocks"][1]["fields"][0]["text"], "*Targets*\nnone");
    }

    #[test]
    fn text_from_runbooks_cannot_become_slack_markup() {
        let message = approval_message(
            "run-1",
            "s",
            "Fix <!channel> & friends",
            &strings(&["<@U123>"]),
            &[],
            None,
        );
        let text = message.to_string();
        assert!(
            !text.contains("<!channel>") && !text.contains("<@U123>"),
            "{text}"
        );
        assert!(text.contains("&lt;!channel&gt; &amp; friends"), "{text}");
    }

    #[test]
    fn long_lists_are_cut_within_block_kit_limits() {
        let targets: Vec<String> = (0..500)
            .map(|n| format!("host-{n:04}-{}", "x".repeat(20)))
            .collect();
        let message = approval_message("run-1", "s", &"t".repeat(5000), &targets, &targets, None);
        let targets_text = message["blocks"][1]["fields"][0]["text"].as_str().unwrap();
        assert!(targets_text.ends_with("and 490 more"), "{targets_text}");
        for text in [
            message["blocks"][0]["text"]["text"].as_str().unwrap(),
            message["blocks"][1]["fields"][1]["text"].as_str().unwrap(),
        ] {
            assert!(text.chars().count() <= SECTION_TEXT_LIMIT);
        }
    }

    #[test]
    fn a_responder_posts_only_under_its_base() {
        let check = |base: &str, url: &str, expected: bool| {
            let responder = Responder::new(base, Duration::from_secs(1)).unwrap();
            assert_eq!(
                responder.allowed(url).is_some(),
                expected,
                "{url} under {base}"
            );
        };
        let slack = SLACK_RESPONSE_URL_BASE;
        check(slack, "https://hooks.slack.com/actions/T1/2/abc", true);
        check(slack, "https://HOOKS.slack.com:443/actions/T1/2/abc", true);
        check(slack, "http://hooks.slack.com/actions/T1/2/abc", false);
        check(slack, "https://hooks.slack.com:8443/actions/T1", false);
        check(
            slack,
            "https://hooks.slack.com.example.net/actions/T1",
            false,
        );
        check(
            slack,
            "https://hooks.slack.com@example.net/actions/T1",
            false,
        );
        check(slack, "https://user:pw@hooks.slack.com/actions/T1", false);
        check(
            slack,
            "https://example.net/?https://hooks.slack.com/",
            false,
        );
        check(slack, "/actions/T1/2/abc", false);
        check(slack, "", false);
        let local = "http://127.0.0.1:4000/responses";
        check(local, "http://127.0.0.1:4000/responses/1/abc", true);
        check(local, "http://127.0.0.1:4000/responses-not/1", false);
        check(local, "http://127.0.0.1:4000/responses/../admin", false);
        check(local, "http://127.0.0.1:4000/responses/%2e%2e/admin", false);
        check(local, "http://127.0.0.1:4001/responses/1", false);
    }

    #[test]
    fn responses_replace_the_message_or_speak_to_the_clicker_alone() {
        let replaced = interaction_response(ResponseKind::ReplaceOriginal, "Approved by <!here>");
        assert_eq!(replaced["replace_original"], true);
        assert_eq!(replaced["text"], "Approved by &lt;!here&gt;");
        assert_eq!(replaced["blocks"][0]["text"]["text"], replaced["text"]);
        let refused = interaction_response(ResponseKind::Ephemeral, "Refused: wrong person.");
        assert_eq!(refused["response_type"], "ephemeral");
        assert_eq!(refused["replace_original"], false);
        let told = interaction_response(ResponseKind::InChannel, "Approved by Ann.");
        assert_eq!(told["response_type"], "in_channel");
        assert_eq!(told["replace_original"], false);
    }

    #[test]
    fn a_value_that_is_not_ours_is_no_button() {
        for value in [
            "",
            "run-1",
            "{\"run\":\"r\"}",
            "{\"run\":\"r\",\"stage\":\"s\",\"x\":1}",
        ] {
            assert_eq!(ApprovalButton::parse(value), None, "{value}");
        }
    }
}
