//! A classifier behind any endpoint that speaks the chat-completions wire
//! format (`POST {url}/chat/completions`): a hosted model or one run on
//! the organisation's own machines. It reads a ticket no runbook's rules
//! took and suggests a runbook for it, as a [`Classifier`].
//!
//! One ticket is one request: the prompt (`prompt.rs`, versioned) lists
//! the candidate runbooks with their inputs schemas, asks for a strict
//! JSON-schema answer at temperature 0, and the answer is checked
//! strictly (`answer.rs`). Nothing is retried here. A failure is reported
//! at once, with what was sent and received, so that the audit tells what
//! happened and the ticket simply gets no suggestion.
//!
//! What keeps a struggling endpoint from a storm of requests: a `429`
//! (or a `503` that says when to come back) makes the client answer every
//! call [`ClassifyFailureKind::RateLimited`] without sending until its
//! `Retry-After` — or [`DEFAULT_BACKOFF`] when it gave none — has passed;
//! it sends at most `max_per_minute` requests in any minute and has at
//! most `max_concurrent` in flight, a call waiting for a slot no longer
//! than its timeout.
//!
//! The API key, when there is one, travels only in `Authorization:
//! Bearer`, a header reqwest marks sensitive; it is never logged, never
//! part of the [`Exchange`] the audit keeps, and scrubbed from any answer
//! that echoes it. The client follows no redirect.
//!
//! `config.rs` is its `chat_completions:` section.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::header::ACCEPT;
use reqwest::{StatusCode, Url};
use serde_json::Value;

use crate::Secret;
use crate::http::{base_url, error_chain, one_line, retry_after, with_path};
use crate::seam::{
    BoxFuture, Classifier, ClassifyFailure, ClassifyFailureKind, Exchange, Suggestion,
    TriageRequest,
};
use crate::text::truncate;

mod answer;
mod config;
mod prompt;

pub use config::Section;
pub use prompt::CURRENT as CURRENT_PROMPT_VERSION;

/// Its config section, and the name its suggestions are recorded under.
pub const NAME: &str = "chat_completions";

/// The chat-completions classifier, as the registry knows it.
pub(crate) const INTEGRATION: crate::registry::Integration = crate::registry::Integration {
    name: NAME,
    ticket_system: false,
    build: config::build,
    check: config::check,
};

/// How long the client backs off after a `429` that says nothing of when
/// to come back.
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(30);

/// The longest back-off a `Retry-After` can ask for: a day's worth would
/// turn triage off without anyone noticing.
const MAX_BACKOFF: Duration = Duration::from_secs(3_600);

/// How much of an answer's body is read, and kept for the audit.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The settings of a [`ChatCompletions`] client.
#[derive(Debug, Clone)]
pub struct ChatCompletionsConfig {
    /// The API's base URL (`https://api.example/v1`): requests go to
    /// `{url}/chat/completions`.
    pub url: String,
    /// The model asked, as the endpoint names it.
    pub model: String,
    /// Sent as `Authorization: Bearer`; none for an endpoint that wants
    /// no key.
    pub api_key: Option<Secret>,
    /// How long one call may take, waiting for a free slot included.
    pub timeout: Duration,
    /// Which of the prompt's versions to ask with.
    pub prompt_version: String,
    /// The confidence a suggestion needs to be proposed.
    pub min_confidence: f64,
    /// Requests in flight at once, at most.
    pub max_concurrent: usize,
    /// Requests sent in any minute, at most.
    pub max_per_minute: u32,
}

/// A chat-completions endpoint, asked to triage tickets.
pub struct ChatCompletions {
    http: reqwest::Client,
    /// `{url}/chat/completions`.
    endpoint: Url,
    model: String,
    api_key: Option<Secret>,
    timeout: Duration,
    prompt: &'static prompt::Prompt,
    min_confidence: f64,
    /// One permit per request in flight.
    slots: tokio::sync::Semaphore,
    max_concurrent: usize,
    pace: Mutex<Pace>,
}

impl std::fmt::Debug for ChatCompletions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatCompletions")
            .field("endpoint", &self.endpoint.as_str())
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .field("prompt_version", &self.prompt.version)
            .finish()
    }
}

impl ChatCompletions {
    pub fn new(config: ChatCompletionsConfig) -> crate::Result<ChatCompletions> {
        let invalid = |key: &str, message: String| crate::Error::Config {
            at: format!("{NAME}.{key}"),
            message,
        };
        let base = base_url(&config.url).map_err(|reason| invalid("url", reason))?;
        if config.model.trim().is_empty() {
            return Err(invalid("model", "name the model to ask".to_owned()));
        }
        let prompt = prompt::named(&config.prompt_version).ok_or_else(|| {
            invalid(
                "prompt_version",
                format!(
                    "no prompt has version `{}` (there are: {})",
                    config.prompt_version,
                    prompt::versions().join(", ")
                ),
            )
        })?;
        if !(0.0..=1.0).contains(&config.min_confidence) {
            return Err(invalid(
                "min_confidence",
                format!("{} is outside 0 to 1", config.min_confidence),
            ));
        }
        if config.max_concurrent == 0 {
            return Err(invalid("max_concurrent", "must be at least 1".to_owned()));
        }
        if config.max_per_minute == 0 {
            return Err(invalid("max_per_minute", "must be at least 1".to_owned()));
        }
        if config.timeout.is_zero() {
            return Err(invalid("timeout", "must be longer than 0".to_owned()));
        }
        let http = crate::outbound_client(config.timeout).build()?;
        Ok(ChatCompletions {
            http,
            endpoint: with_path(&base, &["chat", "completions"]),
            model: config.model,
            api_key: config.api_key,
            timeout: config.timeout,
            prompt,
            min_confidence: config.min_confidence,
            slots: tokio::sync::Semaphore::new(config.max_concurrent),
            max_concurrent: config.max_concurrent,
            pace: Mutex::new(Pace::new(config.max_per_minute)),
        })
    }

    /// The exchange so far: who is asked, with which prompt.
    fn exchange(&self, request: Option<Value>, answer: Option<String>) -> Exchange {
        Exchange {
            model: self.model.clone(),
            prompt_version: self.prompt.version.to_owned(),
            request,
            answer,
        }
    }

    fn pace(&self) -> std::sync::MutexGuard<'_, Pace> {
        // A poisoned lock still holds the last pace written.
        self.pace
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn ask(&self, request: &TriageRequest) -> Result<Suggestion, ClassifyFailure> {
        let started = Instant::now();
        let unsent = |kind: ClassifyFailureKind| ClassifyFailure {
            kind,
            exchange: self.exchange(None, None),
        };
        let Ok(Ok(_slot)) = tokio::time::timeout(self.timeout, self.slots.acquire()).await else {
            tracing::warn!(
                classifier = NAME,
                in_flight = self.max_concurrent,
                "every slot stayed busy for the whole timeout: nothing sent"
            );
            return Err(unsent(ClassifyFailureKind::Timeout {
                after: self.timeout,
            }));
        };
        if let Err(wait) = self.pace().admit(Instant::now()) {
            return Err(unsent(wait.failure()));
        }
        let body = prompt::request_body(self.prompt, &self.model, request);
        let remaining = self.timeout.saturating_sub(started.elapsed());
        let answered = tokio::time::timeout(remaining, self.send(&body)).await;
        let sent = |kind: ClassifyFailureKind, answer: Option<String>| ClassifyFailure {
            kind,
            exchange: self.exchange(Some(body.clone()), answer),
        };
        let (status, retry_after, text) = match answered {
            Err(_) => {
                return Err(sent(
                    ClassifyFailureKind::Timeout {
                        after: self.timeout,
                    },
                    None,
                ));
            }
            Ok(Err(error)) if error.is_timeout() => {
                return Err(sent(
                    ClassifyFailureKind::Timeout {
                        after: self.timeout,
                    },
                    None,
                ));
            }
            Ok(Err(error)) => {
                let error = error.without_url();
                return Err(sent(
                    ClassifyFailureKind::Unavailable {
                        status: None,
                        message: format!("POST {} failed: {}", self.endpoint, error_chain(&error)),
                    },
                    None,
                ));
            }
            Ok(Ok(answered)) => answered,
        };
        let text = self.scrub(&text);
        if status == StatusCode::TOO_MANY_REQUESTS
            || (status == StatusCode::SERVICE_UNAVAILABLE && retry_after.is_some())
        {
            let wait = retry_after.unwrap_or(DEFAULT_BACKOFF).min(MAX_BACKOFF);
            self.pace().back_off(Instant::now() + wait);
            let message = format!("POST {}: {status}{}", self.endpoint, refusal(&text));
            let kind = if status == StatusCode::TOO_MANY_REQUESTS {
                ClassifyFailureKind::RateLimited {
                    retry_after: wait,
                    sent: true,
                    message,
                }
            } else {
                ClassifyFailureKind::Unavailable {
                    status: Some(status.as_u16()),
                    message,
                }
            };
            return Err(sent(kind, Some(text)));
        }
        if !status.is_success() {
            let kind = ClassifyFailureKind::Unavailable {
                status: Some(status.as_u16()),
                message: format!("POST {}: {status}{}", self.endpoint, refusal(&text)),
            };
            return Err(sent(kind, Some(text)));
        }
        let content = match answer::content(&text) {
            Ok(content) => content,
            Err(kind) => return Err(sent(kind, Some(text))),
        };
        match answer::read(&content, &request.candidates) {
            Ok(answer) => Ok(Suggestion {
                runbook: answer.runbook,
                inputs: answer.inputs,
                confidence: answer.confidence,
                rationale: answer.rationale,
                exchange: self.exchange(Some(body), Some(text)),
            }),
            Err(problem) => Err(sent(ClassifyFailureKind::Malformed { problem }, Some(text))),
        }
    }

    /// Sends `body`; the answer's status, `Retry-After` and body (its
    /// start, when it is long).
    async fn send(
        &self,
        body: &Value,
    ) -> Result<(StatusCode, Option<Duration>, String), reqwest::Error> {
        let mut request = self
            .http
            .post(self.endpoint.clone())
            .header(ACCEPT, "application/json")
            .json(body);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key.expose());
        }
        let mut response = request.send().await?;
        let status = response.status();
        let wait = retry_after(&response);
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            bytes.extend_from_slice(&chunk);
            if bytes.len() > MAX_ANSWER_BYTES {
                break;
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        Ok((status, wait, truncate(&text, MAX_ANSWER_BYTES)))
    }

    /// `text` without the API key, should the endpoint have echoed it.
    fn scrub(&self, text: &str) -> String {
        match &self.api_key {
            Some(key) => text.replace(key.expose(), "***"),
            None => text.to_owned(),
        }
    }
}

impl Classifier for ChatCompletions {
    fn name(&self) -> &'static str {
        NAME
    }

    fn min_confidence(&self) -> f64 {
        self.min_confidence
    }

    fn classify<'a>(
        &'a self,
        request: &'a TriageRequest,
    ) -> BoxFuture<'a, Result<Suggestion, ClassifyFailure>> {
        Box::pin(async move {
            let outcome = self.ask(request).await;
            match &outcome {
                Ok(suggestion) => tracing::info!(
                    classifier = NAME,
                    model = %self.model,
                    prompt_version = self.prompt.version,
                    runbook = suggestion.runbook.as_deref().unwrap_or("none"),
                    confidence = suggestion.confidence,
                    "ticket classified"
                ),
                Err(failure) => tracing::warn!(
                    classifier = NAME,
                    model = %self.model,
                    prompt_version = self.prompt.version,
                    failure = failure.kind.as_str(),
                    sent = failure.exchange.request.is_some(),
                    reason = %failure.kind,
                    "no suggestion"
                ),
            }
            outcome
        })
    }
}

/// The endpoint's own words on a refusal, from the error envelope
/// `{"error": {"message", "type", "code"}}`: `: Rate limit reached
/// (requests, rate_limit_exceeded)`. Nothing for a body that is no
/// envelope (a proxy's page): the status says enough.
fn refusal(text: &str) -> String {
    let Ok(body) = serde_json::from_str::<Value>(text) else {
        return String::new();
    };
    let error = &body["error"];
    let Some(message) = error["message"].as_str() else {
        return String::new();
    };
    let tags: Vec<&str> = [&error["type"], &error["code"]]
        .into_iter()
        .filter_map(Value::as_str)
        .collect();
    let message = crate::text::clip(&one_line(Some(message)), 300);
    if tags.is_empty() {
        format!(": {message}")
    } else {
        format!(": {message} ({})", tags.join(", "))
    }
}

/// When the client may send: not before a back-off ends, and not more
/// than its rate bound in any minute. Time is passed in, so the rules are
/// checked without waiting.
#[derive(Debug)]
struct Pace {
    /// No request before this (the endpoint's `Retry-After`).
    backoff_until: Option<Instant>,
    /// When the requests of the last minute were sent, oldest first.
    sent: VecDeque<Instant>,
    max_per_minute: u32,
}

/// Why a request may not go now, and for how long.
#[derive(Debug, Clone, PartialEq)]
enum Wait {
    /// The endpoint asked for a pause.
    BackingOff(Duration),
    /// The client's own bound.
    RateBound { wait: Duration, per_minute: u32 },
}

impl Wait {
    fn failure(self) -> ClassifyFailureKind {
        match self {
            Wait::BackingOff(wait) => ClassifyFailureKind::RateLimited {
                retry_after: wait,
                sent: false,
                message: "the endpoint asked for a pause (429) that has not ended: nothing sent"
                    .to_owned(),
            },
            Wait::RateBound { wait, per_minute } => ClassifyFailureKind::RateLimited {
                retry_after: wait,
                sent: false,
                message: format!(
                    "{per_minute} requests were sent in the last minute, the configured bound (`max_per_minute`): nothing sent"
                ),
            },
        }
    }
}

const MINUTE: Duration = Duration::from_secs(60);

impl Pace {
    fn new(max_per_minute: u32) -> Pace {
        Pace {
            backoff_until: None,
            sent: VecDeque::new(),
            max_per_minute,
        }
    }

    /// Whether a request may be sent at `now`; if so, it is counted.
    fn admit(&mut self, now: Instant) -> Result<(), Wait> {
        if let Some(until) = self.backoff_until {
            if now < until {
                return Err(Wait::BackingOff(until - now));
            }
            self.backoff_until = None;
        }
        while self
            .sent
            .front()
            .is_some_and(|sent| now.duration_since(*sent) >= MINUTE)
        {
            self.sent.pop_front();
        }
        if self.sent.len() >= self.max_per_minute as usize {
            let oldest = self.sent.front().copied().unwrap_or(now);
            return Err(Wait::RateBound {
                wait: MINUTE.saturating_sub(now.duration_since(oldest)),
                per_minute: self.max_per_minute,
            });
        }
        self.sent.push_back(now);
        Ok(())
    }

    /// Sends nothing before `until` (a later back-off already in force
    /// stands).
    fn back_off(&mut self, until: Instant) {
        if self.backoff_until.is_none_or(|current| current < until) {
            self.backoff_until = Some(until);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pace_holds_back_after_a_429_and_at_the_rate_bound() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut pace = Pace::new(3);
        // (time, back off until, expected) in order.
        let steps: &[(u64, Option<u64>, Result<(), Wait>)] = &[
            (0, None, Ok(())),
            (
                10,
                Some(2_010),
                Err(Wait::BackingOff(Duration::from_millis(2_000))),
            ),
            (2_009, None, Err(Wait::BackingOff(Duration::from_millis(1)))),
            (2_010, None, Ok(())),
            (2_020, None, Ok(())),
            (
                2_030,
                None,
                Err(Wait::RateBound {
                    wait: Duration::from_millis(57_970),
                    per_minute: 3,
                }),
            ),
            // The first request is a minute old: one more may go.
            (60_000, None, Ok(())),
            (
                60_001,
                None,
                Err(Wait::RateBound {
                    wait: Duration::from_millis(2_009),
                    per_minute: 3,
                }),
            ),
        ];
        for (now, back_off, expect) in steps {
            if let Some(until) = back_off {
                pace.back_off(at(*until));
            }
            assert_eq!(pace.admit(at(*now)), *expect, "at {now} ms");
        }
        // A shorter back-off does not shorten one in force.
        pace.back_off(at(90_000));
        pace.back_off(at(70_000));
        assert_eq!(
            pace.admit(at(80_000)),
            Err(Wait::BackingOff(Duration::from_secs(10)))
        );
    }

    #[test]
    fn a_refusal_quotes_the_error_envelope() {
        let check = |text: &str, expect: &str| assert_eq!(refusal(text), expect, "{text}");
        check(
            r#"{"error": {"message": "Rate limit reached for requests", "type": "requests", "param": null, "code": "rate_limit_exceeded"}}"#,
            ": Rate limit reached for requests (requests, rate_limit_exceeded)",
        );
        check(
            r#"{"error": {"message": "The server had an error\nwhile processing your request.", "type": "server_error", "param": null, "code": null}}"#,
            ": The server had an error while processing your request. (server_error)",
        );
        check(r#"{"error": {"message": "bad"}}"#, ": bad");
        check("<html>502 Bad Gateway</html>", "");
        check(r#"{"detail": "nope"}"#, "");
    }
}
