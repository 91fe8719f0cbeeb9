//! The `jira:` section of the config, and what it plugs in: the event
//! source of Jira's issue webhook (whose `X-Hub-Signature` the server
//! verifies with [`Section::webhook_secret`]) and the ticket system runs
//! started from Jira issues write back to.
//!
//! ```yaml
//! jira:
//!   base_url: https://acme.atlassian.net
//!   email: opsgate@acme.example        # Jira Cloud, with api_token
//!   api_token: env:JIRA_API_TOKEN
//!   # token: env:JIRA_PAT              # Data Center
//!   webhook_secret: env:JIRA_HOOK_SECRET
//!   account_id: "557058:f58131cb-b67d-43c7-b30d-6b58d40bd077"  # who opsgate writes as
//!   resolved_status: Done
//!   needs_human_status: In Progress
//! ```

use std::sync::Arc;

use serde::Deserialize;

use super::{Jira, JiraAuth, JiraConfig};
use crate::Secret;
use crate::seam::Parts;
use crate::section::{read, seconds, secret};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Section {
    pub base_url: String,
    /// Jira Cloud: the integration account's email, with `api_token`.
    pub email: Option<String>,
    pub api_token: Option<String>,
    /// Jira Data Center: a personal access token.
    pub token: Option<String>,
    /// The secret the issue webhook was registered with; without it,
    /// `/v1/hooks/jira` takes nothing from Jira.
    pub webhook_secret: Option<String>,
    /// The account opsgate writes as, as Jira's webhook names who made a
    /// change: its account id on Jira Cloud (a webhook rarely carries an
    /// email), its user name on Data Center. An update it made is marked
    /// `changed_by_opsgate` and never starts a run; without it, only
    /// `email` can be matched, when the webhook shows it.
    pub account_id: Option<String>,
    /// Where a run that succeeded moves its issue (default `Done`).
    pub resolved_status: Option<String>,
    /// Where a failed run moves its issue (default `In Progress`).
    pub needs_human_status: Option<String>,
    /// Seconds each call may take (default 30).
    pub timeout_seconds: Option<u64>,
}

impl Section {
    /// Reads the `jira:` section.
    pub fn read(section: &serde_json::Value) -> crate::Result<Section> {
        read(super::NAME, section)
    }

    /// The client the section describes, its secrets read.
    pub fn client(&self) -> crate::Result<Jira> {
        let auth = match (&self.email, &self.api_token, &self.token) {
            (Some(email), Some(api_token), None) => JiraAuth::Basic {
                email: email.clone(),
                api_token: secret("jira.api_token", api_token)?,
            },
            (None, None, Some(token)) => JiraAuth::Bearer {
                token: secret("jira.token", token)?,
            },
            _ => {
                return Err(crate::Error::Config {
                    at: "jira".to_owned(),
                    message: "give `email` with `api_token` (Jira Cloud), or `token` (Data Center)"
                        .to_owned(),
                });
            }
        };
        Jira::new(JiraConfig {
            base_url: self.base_url.clone(),
            auth,
            timeout: seconds(self.timeout_seconds, 30),
        })
    }

    /// The secret Jira signs its webhooks with, when one is configured.
    pub fn webhook_secret(&self) -> crate::Result<Option<Secret>> {
        self.webhook_secret
            .as_deref()
            .map(|reference| secret("jira.webhook_secret", reference))
            .transpose()
    }
}

pub(crate) fn build(section: &serde_json::Value) -> crate::Result<Parts> {
    let section = Section::read(section)?;
    // Without the secret its webhook was registered with, Jira's requests
    // cannot be told from anyone's: no source.
    let source = section.webhook_secret()?.map(|webhook_secret| {
        Arc::new(super::source::Source {
            webhook_secret,
            writes_as: super::source::WritesAs {
                account_id: section.account_id.clone(),
                email: section.email.clone(),
            },
        }) as Arc<dyn crate::EventSource>
    });
    Ok(Parts {
        source,
        ticket_system: Some(Arc::new(super::desk::Desk {
            client: section.client()?,
            resolved_status: section
                .resolved_status
                .clone()
                .unwrap_or_else(|| "Done".to_owned()),
            needs_human_status: section
                .needs_human_status
                .clone()
                .unwrap_or_else(|| "In Progress".to_owned()),
        })),
        ..Parts::default()
    })
}
