//! Microsoft Teams: approval requests and run progress as Adaptive Cards,
//! posted to a channel through a Workflows (Power Automate) webhook.
//!
//! A card posted by a webhook has no bot behind it, so it cannot call
//! opsgate back: `Action.Execute` needs a bot. Approving therefore happens on
//! opsgate's signed approval page, and the card's buttons are `Action.OpenUrl`
//! links to it.
//!
//! Every piece of text that comes from a run — a title, a request line, a
//! reason, a target — goes into a `TextRun`, which Adaptive Cards render
//! without markdown. A request line cannot turn into a link that looks like
//! part of the approval card; only the headings written here are `TextBlock`s.
//!
//! The webhook answers `202 Accepted` once the flow is triggered, before the
//! card is posted; a card Teams refuses shows up in the flow's run history,
//! not in the answer. That is why the tests check every card against
//! Microsoft's published Adaptive Card schema.
//!
//! The webhook URL carries the flow's signature (`sig=`): whoever holds it can
//! post to the channel. It is kept as a [`Secret`]; messages name its host only.

use std::time::Duration;

use domain::RunState;
use reqwest::Url;
use reqwest::header::CONTENT_TYPE;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Secret;
use crate::WriteError;
use crate::http::{error_chain, one_line, retry_after};
use crate::text::clip;

mod channel;

pub use channel::Section;

/// Its config section and its write-backs' system.
pub const NAME: &str = "teams";

/// Teams, as the registry knows it.
pub(crate) const INTEGRATION: crate::registry::Integration = crate::registry::Integration {
    name: NAME,
    ticket_system: false,
    build: channel::build,
    check: crate::section::check::<channel::Section>,
};

/// The Adaptive Card version of every card built here: the newest one Teams
/// renders on every client.
pub const CARD_VERSION: &str = "1.5";

/// Longer texts are cut: a Teams message holds about 28 KB in all.
const MAX_TEXT_CHARS: usize = 400;
/// Steps past this many are summed up in one line.
const MAX_LISTED_STEPS: usize = 15;
/// Links past this many go to the card's overflow menu (`mode: secondary`).
const MAX_PRIMARY_BUTTONS: usize = 5;

/// What an approval request says, in words ready to show.
#[derive(Debug, Clone)]
pub struct ApprovalCard {
    pub run_id: String,
    pub runbook_title: String,
    pub steps: Vec<CardStep>,
    /// The hosts, services or tickets the run acts on.
    pub targets: Vec<String>,
    /// Why the policy asks for a person: one sentence each.
    pub reasons: Vec<String>,
    /// The stage awaiting a decision, as people say it: "1 of 2 (service owner)".
    pub approval_stage: String,
    /// Who may approve this stage: people and groups.
    pub approvers: Vec<String>,
    pub links: ApprovalLinks,
}

/// One step of the plan.
#[derive(Debug, Clone)]
pub struct CardStep {
    pub name: String,
    /// `http.request`, `command.run`, …
    pub action: String,
    /// The rendered request on one line: `POST https://…/restart`.
    pub request: String,
}

/// Where approvers decide. Every link is visible to the whole channel, so
/// the page must still establish who is deciding.
#[derive(Debug, Clone)]
pub enum ApprovalLinks {
    /// One page for everyone who may approve.
    Shared { url: String },
    /// One signed page per approver.
    PerApprover(Vec<ApproverLink>),
}

#[derive(Debug, Clone)]
pub struct ApproverLink {
    pub approver: String,
    pub url: String,
}

/// One progress update of a run.
#[derive(Debug, Clone)]
pub struct ProgressCard {
    pub run_id: String,
    pub runbook_title: String,
    pub state: RunState,
    /// In a sentence: "Step restart-nginx succeeded on the second attempt."
    pub what_happened: String,
    pub facts: Vec<Fact>,
    /// The run's page in opsgate, when there is one to link to.
    pub run_url: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Fact {
    pub title: String,
    pub value: String,
}

/// The card asking for approval of a run.
pub fn approval_card(request: &ApprovalCard) -> Value {
    let mut body = vec![
        banner("Approval needed", "warning"),
        title(&request.runbook_title),
        heading("What will run"),
    ];
    for (index, step) in request.steps.iter().take(MAX_LISTED_STEPS).enumerate() {
        body.push(json!({
            "type": "Container",
            "spacing": "small",
            "items": [
                rich_text(vec![
                    separator(format!("{}. ", index + 1)),
                    bold(&step.name),
                    separator(" · ".to_owned()),
                    monospace(&step.action),
                ]),
                rich_text(vec![monospace(&step.request)]),
            ],
        }));
    }
    if request.steps.len() > MAX_LISTED_STEPS {
        let more = request.steps.len() - MAX_LISTED_STEPS;
        body.push(subtle(&format!(
            "… and {more} more, listed on the approval page."
        )));
    }
    body.push(labelled("On", &listed(&request.targets)));
    body.push(heading("Why approval is needed"));
    for reason in &request.reasons {
        body.push(rich_text(vec![
            separator("• ".to_owned()),
            text_run(reason),
        ]));
    }
    body.push(labelled("Approval stage", &request.approval_stage));
    body.push(labelled("Who may approve", &listed(&request.approvers)));
    body.push(labelled("Run", &request.run_id));

    let actions: Vec<Value> = match &request.links {
        ApprovalLinks::Shared { url } => vec![open_url("Review and decide", url)],
        ApprovalLinks::PerApprover(links) => links
            .iter()
            .map(|link| open_url(&format!("Review as {}", link.approver), &link.url))
            .collect(),
    };
    card(body, with_overflow(actions))
}

/// The card for one progress update of a run; it names the run, so it reads
/// on its own wherever the flow posts it.
pub fn progress_card(update: &ProgressCard) -> Value {
    let (label, style) = state_banner(update.state);
    let mut body = vec![
        banner(label, style),
        title(&update.runbook_title),
        rich_text(vec![text_run(&update.what_happened)]),
    ];
    for fact in &update.facts {
        body.push(labelled(&fact.title, &fact.value));
    }
    body.push(labelled("Run", &update.run_id));
    let actions = match &update.run_url {
        Some(url) => vec![open_url("Open the run", url)],
        None => Vec::new(),
    };
    card(body, actions)
}

/// The body a Workflows webhook expects: a message with one Adaptive Card
/// attachment.
pub fn message(card: Value) -> Value {
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": card,
        }],
    })
}

fn card(body: Vec<Value>, actions: Vec<Value>) -> Value {
    let mut card = json!({
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": CARD_VERSION,
        "body": body,
    });
    if !actions.is_empty() {
        card["actions"] = Value::Array(actions);
    }
    card
}

/// The label and container style of a state.
fn state_banner(state: RunState) -> (&'static str, &'static str) {
    match state {
        RunState::Planned => ("Planned", "default"),
        RunState::AwaitingApproval => ("Awaiting approval", "warning"),
        RunState::Approved => ("Approved", "good"),
        RunState::Running => ("Running", "accent"),
        RunState::Verifying => ("Verifying", "accent"),
        RunState::InEffect => ("In effect until its end date", "good"),
        RunState::Paused => ("Paused by a freeze", "warning"),
        RunState::Succeeded => ("Succeeded", "good"),
        RunState::Denied => ("Denied", "attention"),
        RunState::Expired => ("Expired without a decision", "warning"),
        RunState::Cancelled => ("Cancelled", "default"),
        RunState::Failed => ("Failed", "attention"),
        RunState::RollingBack => ("Rolling back", "warning"),
        RunState::RolledBack => ("Rolled back", "warning"),
        RunState::NeedsHuman => ("Needs a person", "attention"),
        RunState::Shadowed => ("Shadow mode: nothing was executed", "default"),
    }
}

fn banner(label: &'static str, style: &'static str) -> Value {
    json!({
        "type": "Container",
        "style": style,
        "bleed": true,
        "items": [{"type": "TextBlock", "text": label, "weight": "bolder", "wrap": true}],
    })
}

/// Fixed wording only: a `TextBlock` renders markdown.
fn heading(text: &'static str) -> Value {
    json!({"type": "TextBlock", "text": text, "weight": "bolder", "spacing": "medium", "wrap": true})
}

fn title(text: &str) -> Value {
    json!({
        "type": "RichTextBlock",
        "inlines": [{"type": "TextRun", "text": cut(text), "size": "large", "weight": "bolder"}],
    })
}

fn subtle(text: &str) -> Value {
    json!({
        "type": "RichTextBlock",
        "inlines": [{"type": "TextRun", "text": cut(text), "isSubtle": true}],
    })
}

/// `Label: value` on one line, the value as plain text.
fn labelled(label: &str, value: &str) -> Value {
    rich_text(vec![
        bold(label),
        separator(": ".to_owned()),
        text_run(value),
    ])
}

fn rich_text(inlines: Vec<Value>) -> Value {
    json!({"type": "RichTextBlock", "inlines": inlines})
}

fn text_run(text: &str) -> Value {
    json!({"type": "TextRun", "text": cut(text)})
}

/// Punctuation between runs, kept as written: [`cut`] would trim its spaces.
fn separator(text: String) -> Value {
    json!({"type": "TextRun", "text": text})
}

fn bold(text: &str) -> Value {
    json!({"type": "TextRun", "text": cut(text), "weight": "bolder"})
}

fn monospace(text: &str) -> Value {
    json!({"type": "TextRun", "text": cut(text), "fontType": "monospace"})
}

fn open_url(title: &str, url: &str) -> Value {
    json!({"type": "Action.OpenUrl", "title": cut(title), "url": url})
}

/// Keeps the first buttons in view and moves the rest to the overflow menu.
fn with_overflow(mut actions: Vec<Value>) -> Vec<Value> {
    for action in actions.iter_mut().skip(MAX_PRIMARY_BUTTONS) {
        action["mode"] = json!("secondary");
    }
    actions
}

fn listed(items: &[String]) -> String {
    if items.is_empty() {
        "none given".to_owned()
    } else {
        items.join(", ")
    }
}

/// `text` on one line, at most [`MAX_TEXT_CHARS`] characters.
fn cut(text: &str) -> String {
    clip(&one_line(Some(text)), MAX_TEXT_CHARS)
}

/// A Workflows webhook, ready to post to. Cheap to clone; `Debug` shows the
/// URL as `***`.
#[derive(Debug, Clone)]
pub struct Teams {
    http: reqwest::Client,
    webhook_url: Secret,
}

impl Teams {
    /// `timeout` bounds each post. The URL is checked when posting, so that
    /// a mistyped one is reported like any other refusal.
    pub fn new(webhook_url: Secret, timeout: Duration) -> crate::Result<Teams> {
        crate::install_crypto_provider();
        let http = crate::outbound_client(timeout).build()?;
        Ok(Teams { http, webhook_url })
    }

    /// Posts `message` (see [`message`]). `Ok` means the flow was triggered:
    /// whether it then posted the card shows only in its run history.
    pub async fn post(&self, message: &Value) -> Result<(), WriteError> {
        let url = self.url()?;
        let what = format!("Teams webhook POST {}", origin(&url));
        let response = self
            .http
            .post(url)
            .json(message)
            .send()
            .await
            .map_err(|error| self.transport_failure(&what, error))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = retry_after(&response);
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("no content type")
            .to_owned();
        let text = response
            .text()
            .await
            .map_err(|error| self.transport_failure(&what, error))?;
        let said = match serde_json::from_str::<Envelope>(&text) {
            Ok(Envelope { error }) => {
                let code = one_line(error.code.as_deref());
                let message = one_line(error.message.as_deref());
                match (code.is_empty(), message.is_empty()) {
                    (false, false) => format!(": {code}: {message}"),
                    (false, true) => format!(": {code}"),
                    (true, false) => format!(": {message}"),
                    (true, true) => String::new(),
                }
            }
            // A gateway's HTML page: not worth quoting.
            Err(_) => format!(" ({content_type}, {} bytes)", text.len()),
        };
        let message = self.redact(format!("{what} answered {status}{said}"));
        Err(WriteError::refused(status, message, retry_after))
    }

    fn url(&self) -> Result<Url, WriteError> {
        let refused = |reason: &str| WriteError::Permanent {
            message: format!("the Teams webhook URL {reason}"),
        };
        let url = Url::parse(self.webhook_url.expose().trim())
            .map_err(|error| refused(&format!("is not a URL ({error})")))?;
        if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
            return Err(refused("is not an http(s) address"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(refused("carries a user name or password"));
        }
        Ok(url)
    }

    fn transport_failure(&self, what: &str, error: reqwest::Error) -> WriteError {
        let message = self.redact(format!(
            "{what} failed: {}",
            error_chain(&error.without_url())
        ));
        WriteError::Retryable {
            message,
            retry_after: None,
        }
    }

    /// Takes out the URL and its signature, should a peer's answer repeat them.
    fn redact(&self, mut message: String) -> String {
        let url = self.webhook_url.expose().trim();
        let signature = Url::parse(url).ok().and_then(|url| {
            url.query_pairs()
                .find(|(name, _)| name == "sig")
                .map(|(_, value)| value.into_owned())
        });
        for secret in [Some(url.to_owned()), signature].into_iter().flatten() {
            if !secret.is_empty() {
                message = message.replace(&secret, "***");
            }
        }
        message
    }
}

/// `https://host[:port]`: the path names the flow and the query signs it.
fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

/// The Power Automate / Logic Apps error envelope: `{"error": {"code", "message"}}`.
#[derive(Deserialize)]
struct Envelope {
    error: EnvelopeError,
}

#[derive(Deserialize)]
struct EnvelopeError {
    code: Option<String>,
    message: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_are_cut_on_one_line() {
        let check = |text: &str, expect: &str| assert_eq!(cut(text), expect, "{text}");
        check("restart\n  nginx", "restart nginx");
        check(&"é".repeat(MAX_TEXT_CHARS), &"é".repeat(MAX_TEXT_CHARS));
        // At most MAX_TEXT_CHARS in all, the `…` included.
        check(
            &"é".repeat(MAX_TEXT_CHARS + 1),
            &format!("{}…", "é".repeat(MAX_TEXT_CHARS - 1)),
        );
    }

    #[test]
    fn links_past_the_fifth_go_to_the_overflow_menu() {
        let actions = (0..7)
            .map(|n| open_url(&n.to_string(), "https://a.test"))
            .collect();
        let actions = with_overflow(actions);
        let modes: Vec<_> = actions
            .iter()
            .map(|action| action.get("mode").and_then(Value::as_str))
            .collect();
        assert_eq!(
            modes,
            [
                None,
                None,
                None,
                None,
                None,
                Some("secondary"),
                Some("secondary")
            ]
        );
    }
}
