//! The `chat_completions:` section of the config, and what it plugs in:
//! the classifier that triages tickets no runbook's rules took.
//!
//! ```yaml
//! chat_completions:
//!   url: https://api.openai.com/v1   # requests go to {url}/chat/completions
//!   model: gpt-4o-mini
//!   api_key: env:TRIAGE_API_KEY      # by reference; leave out for a local endpoint
//!   timeout: 10s                     # default 10s; `500ms`, `10s`, `1m`
//!   prompt_version: triage-v1        # default: the newest
//!   min_confidence: 0.8              # below it a suggestion only goes to the ticket
//!   max_concurrent: 4                # requests in flight, at most
//!   max_per_minute: 60               # requests sent in any minute, at most
//! ```

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::{ChatCompletions, ChatCompletionsConfig, NAME};
use crate::seam::Parts;
use crate::section::{read, secret};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Section {
    /// The API's base URL; requests go to `{url}/chat/completions`.
    pub url: String,
    pub model: String,
    /// By reference (`env:NAME`, `file:PATH`); none for an endpoint that
    /// takes no key.
    pub api_key: Option<String>,
    /// How long one ticket's call may take (default 10s).
    pub timeout: Option<String>,
    /// Which prompt to ask with (default: the newest).
    pub prompt_version: Option<String>,
    /// The confidence a suggestion needs to be proposed (default 0.8).
    pub min_confidence: Option<f64>,
    /// Requests in flight at once (default 4).
    pub max_concurrent: Option<usize>,
    /// Requests sent in any minute (default 60).
    pub max_per_minute: Option<u32>,
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// A call longer than this holds a ticket's intake up for nothing.
const MAX_TIMEOUT: Duration = Duration::from_secs(300);
const DEFAULT_MIN_CONFIDENCE: f64 = 0.8;
const DEFAULT_MAX_CONCURRENT: usize = 4;
const DEFAULT_MAX_PER_MINUTE: u32 = 60;

impl Section {
    /// The client's settings, every value checked; the key is read only
    /// when `resolve_key` is set (a config being checked at load reads
    /// none).
    fn settings(&self, resolve_key: bool) -> crate::Result<ChatCompletionsConfig> {
        let timeout = match &self.timeout {
            None => DEFAULT_TIMEOUT,
            Some(text) => duration(text).ok_or_else(|| crate::Error::Config {
                at: format!("{NAME}.timeout"),
                message: format!(
                    "`{text}` is not a duration of at most {} s, such as `500ms`, `10s` or `1m`",
                    MAX_TIMEOUT.as_secs()
                ),
            })?,
        };
        let api_key = match (&self.api_key, resolve_key) {
            (Some(reference), true) => Some(secret(&format!("{NAME}.api_key"), reference)?),
            _ => None,
        };
        Ok(ChatCompletionsConfig {
            url: self.url.clone(),
            model: self.model.clone(),
            api_key,
            timeout,
            prompt_version: self
                .prompt_version
                .clone()
                .unwrap_or_else(|| super::prompt::CURRENT.to_owned()),
            min_confidence: self.min_confidence.unwrap_or(DEFAULT_MIN_CONFIDENCE),
            max_concurrent: self.max_concurrent.unwrap_or(DEFAULT_MAX_CONCURRENT),
            max_per_minute: self.max_per_minute.unwrap_or(DEFAULT_MAX_PER_MINUTE),
        })
    }
}

/// `500ms`, `10s`, `2m`: more than nothing, at most [`MAX_TIMEOUT`].
fn duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let duration = match unit {
        "ms" => Duration::from_millis(number),
        "s" => Duration::from_secs(number),
        "m" => Duration::from_secs(number.checked_mul(60)?),
        _ => return None,
    };
    (!duration.is_zero() && duration <= MAX_TIMEOUT).then_some(duration)
}

pub(crate) fn build(section: &serde_json::Value) -> crate::Result<Parts> {
    let section: Section = read(NAME, section)?;
    let client = ChatCompletions::new(section.settings(true)?)?;
    Ok(Parts {
        classifier: Some(Arc::new(client)),
        ..Parts::default()
    })
}

/// The section read and every setting checked, without reading the key.
pub(crate) fn check(name: &'static str, section: &serde_json::Value) -> crate::Result<()> {
    let section: Section = read(name, section)?;
    ChatCompletions::new(section.settings(false)?).map(drop)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn durations() {
        for (text, expect) in [
            ("500ms", Some(Duration::from_millis(500))),
            ("10s", Some(Duration::from_secs(10))),
            (" 2m ", Some(Duration::from_secs(120))),
            ("0s", None),
            ("10", None),
            ("s", None),
            ("1h", None),
            ("301s", None),
            ("-1s", None),
        ] {
            assert_eq!(duration(text), expect, "{text}");
        }
    }

    #[test]
    fn mistakes_name_the_key() {
        let check = |section: serde_json::Value, expect: &str| {
            let error = super::check(NAME, &section).expect_err("refused");
            assert_eq!(error.to_string(), expect, "{section}");
        };
        let base = || json!({"url": "https://models.example/v1", "model": "m-1"});
        let with = |key: &str, value: serde_json::Value| {
            let mut section = base();
            section[key] = value;
            section
        };
        super::check(NAME, &base()).expect("the defaults hold");
        check(
            with("timeout", json!("forever")),
            "chat_completions.timeout: `forever` is not a duration of at most 300 s, such as `500ms`, `10s` or `1m`",
        );
        check(
            with("min_confidence", json!(1.5)),
            "chat_completions.min_confidence: 1.5 is outside 0 to 1",
        );
        check(
            with("prompt_version", json!("v0")),
            "chat_completions.prompt_version: no prompt has version `v0` (there are: triage-v1)",
        );
        check(
            with("max_concurrent", json!(0)),
            "chat_completions.max_concurrent: must be at least 1",
        );
        check(
            with("url", json!("ftp://models.example")),
            "chat_completions.url: `ftp://models.example/` is not an http(s) address",
        );
        check(
            with("model", json!(" ")),
            "chat_completions.model: name the model to ask",
        );
        check(
            with("apikey", json!("env:KEY")),
            "chat_completions.apikey: unknown field `apikey`, expected one of `url`, `model`, `api_key`, `timeout`, `prompt_version`, `min_confidence`, `max_concurrent`, `max_per_minute`",
        );
        // The key is read by reference, and only when the section is built.
        super::check(NAME, &with("api_key", json!("env:OPSGATE_TEST_UNSET_9c1e")))
            .expect("not read yet");
        let error = build(&with("api_key", json!("sk-inline")))
            .err()
            .expect("refused");
        assert_eq!(
            error.to_string(),
            "chat_completions.api_key: a secret is given by reference, `env:NAME` or `file:PATH`, never inline"
        );
    }
}
