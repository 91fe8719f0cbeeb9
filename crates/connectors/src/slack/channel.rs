//! Slack as a chat channel, and its `slack:` config section.
//!
//! ```yaml
//! slack:
//!   signing_secret: env:SLACK_SIGNING_SECRET   # verifies button clicks
//!   bot_token: env:SLACK_BOT_TOKEN             # chat:write
//!   channel: C0123ABCD
//! ```
//!
//! An approval request carries Approve and Deny buttons, answered through
//! the server's Slack endpoint, so it links no signed page.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;

use super::{Responder, SLACK_API_URL, SLACK_RESPONSE_URL_BASE, Slack, SlackConfig};
use crate::seam::{ApprovalRequest, BoxFuture, ChatChannel, Parts, Progress};
use crate::section::{read, seconds, secret};
use crate::{Secret, WriteError};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Section {
    /// Verifies the interaction callbacks Slack posts.
    pub signing_secret: String,
    /// A bot token (`xoxb-…`) with the `chat:write` scope.
    pub bot_token: String,
    /// The channel id approval requests are posted to (`C0123ABCD`).
    pub channel: String,
    /// The Web API's base URL (default `https://slack.com/api`).
    pub api_url: Option<String>,
    /// Seconds each Web API call (and each answer to a click) may take
    /// (default 10).
    pub timeout_seconds: Option<u64>,
    /// Where answers to clicks may be posted: a click's `response_url` is
    /// followed only when it lies under this base (default
    /// `https://hooks.slack.com/`).
    pub response_url_base: Option<String>,
}

impl Section {
    /// Reads the `slack:` section.
    fn read(section: &serde_json::Value) -> crate::Result<Section> {
        read(super::NAME, section)
    }

    /// The secret Slack signs its callbacks with.
    fn signing_secret(&self) -> crate::Result<Secret> {
        secret("slack.signing_secret", &self.signing_secret)
    }

    /// What answers clicks, through their `response_url`.
    fn responder(&self) -> crate::Result<Responder> {
        Responder::new(
            self.response_url_base
                .as_deref()
                .unwrap_or(SLACK_RESPONSE_URL_BASE),
            seconds(self.timeout_seconds, 10),
        )
    }

    fn channel(&self) -> crate::Result<Channel> {
        if self.channel.trim().is_empty() {
            return Err(crate::Error::Config {
                at: "slack.channel".to_owned(),
                message: "must name a channel id".to_owned(),
            });
        }
        let client = Slack::new(SlackConfig {
            api_url: self
                .api_url
                .clone()
                .unwrap_or_else(|| SLACK_API_URL.to_owned()),
            bot_token: secret("slack.bot_token", &self.bot_token)?,
            timeout: seconds(self.timeout_seconds, 10),
        })?;
        Ok(Channel {
            client,
            channel: self.channel.clone(),
        })
    }
}

pub(crate) fn build(section: &serde_json::Value) -> crate::Result<Parts> {
    let section = Section::read(section)?;
    let buttons = super::buttons::Buttons {
        signing_secret: section.signing_secret()?,
        responder: section.responder()?,
    };
    tracing::info!(channel = %section.channel, "Slack approvals enabled");
    Ok(Parts {
        chat: Some(Arc::new(section.channel()?)),
        buttons: Some(Arc::new(buttons)),
        ..Parts::default()
    })
}

/// A Slack channel and the client that posts to it.
struct Channel {
    client: Slack,
    /// The channel id (`C0123ABCD`).
    channel: String,
}

impl ChatChannel for Channel {
    fn name(&self) -> &'static str {
        super::NAME
    }

    fn destination(&self) -> String {
        self.channel.clone()
    }

    fn links_approvers(&self) -> bool {
        false
    }

    fn ask_approval<'a>(
        &'a self,
        request: &'a ApprovalRequest,
    ) -> BoxFuture<'a, Result<(), WriteError>> {
        let message = super::approval_message(
            &request.run_id,
            &request.stage,
            &request.runbook_title,
            &request.targets,
            &request.reasons,
            None,
        );
        Box::pin(async move {
            self.client
                .post_message(&self.channel, &message)
                .await
                .map(drop)
        })
    }

    fn tell_progress<'a>(
        &'a self,
        progress: &'a Progress,
    ) -> BoxFuture<'a, Result<(), WriteError>> {
        let text = format!(
            "*{}* (run {})\n{}",
            progress.runbook_title,
            progress.run_id,
            progress.lines.join("\n")
        );
        Box::pin(async move {
            self.client
                .post_message(&self.channel, &json!({ "text": text }))
                .await
                .map(drop)
        })
    }
}
