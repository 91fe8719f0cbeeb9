//! Settings for `serve`: flags beat `OPSGATE_*` environment variables, which
//! beat the config file, which beats the defaults.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DATABASE: &str = "sqlite://opsgate.db";
pub const DEFAULT_RUNBOOKS: &str = "runbooks";

/// The config file (YAML). Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub listen: Option<String>,
    pub database: Option<String>,
    pub runbooks: Option<PathBuf>,
    pub log: Option<String>,
    pub lease_ttl_ms: Option<u64>,
    /// Extra variables for templates' `env` (base URLs and the like).
    #[serde(default)]
    pub vars: std::collections::BTreeMap<String, String>,
    /// Webhook senders that sign their requests (HMAC-SHA256) instead of
    /// carrying a token.
    #[serde(default)]
    pub signed_sources: Vec<SignedSourceEntry>,
    /// Signed approval links: the key (shared by every instance) and the
    /// URL people reach the server at.
    pub approval_links: Option<ApprovalLinksEntry>,
    /// At most this many runs over all runbooks together within the
    /// window: `{ runs: 50, window: 1h }`.
    pub global_rate_limit: Option<GlobalRateLimitEntry>,
    /// The organisation's directory (people, groups, CI owners), YAML.
    pub directory: Option<PathBuf>,
    /// A directory of Rego policies that take part in every decision.
    pub policies: Option<PathBuf>,
    /// The ServiceNow instance runs started from its tickets write back to.
    /// The Teams channel told about runs that wait for approval:
    /// `{ webhook_url: env:NAME }` (a Workflows webhook; its URL carries a
    /// signature, so it is given by reference).
    pub teams: Option<TeamsEntry>,
    /// Where `ansible.playbook` steps find relative playbooks and
    /// inventories.
    pub playbooks: Option<PathBuf>,
    pub servicenow: Option<ServiceNowEntry>,
    /// The Entra tenant `graph.group_membership` steps act in.
    pub graph: Option<GraphEntry>,
    /// The Slack app whose buttons approve runs (docs/slack.md).
    pub slack: Option<SlackEntry>,
    /// The Jira site whose issues start runs and are written back to
    /// (docs/jira.md).
    pub jira: Option<JiraEntry>,
}

/// `jira: { base_url, email + api_token | token, webhook_secret,
/// resolved_status, needs_human_status }`; the secrets by reference.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JiraEntry {
    pub base_url: String,
    /// Jira Cloud: the integration account's email, with `api_token`.
    pub email: Option<String>,
    pub api_token: Option<String>,
    /// Jira Data Center: a personal access token.
    pub token: Option<String>,
    /// The secret the issue webhook was registered with; without it,
    /// `/v1/hooks/jira` answers 404.
    pub webhook_secret: Option<String>,
    /// Where a run that succeeded moves its issue (default `Done`).
    pub resolved_status: Option<String>,
    /// Where a failed run moves its issue (default `In Progress`).
    pub needs_human_status: Option<String>,
    /// Seconds each call may take (default 30).
    pub timeout_seconds: Option<u64>,
}

impl JiraEntry {
    pub fn desk(&self) -> anyhow::Result<runtime::JiraDesk> {
        let secret = |what: &str, reference: &str| -> anyhow::Result<connectors::Secret> {
            let bytes = resolve_secret(reference).with_context(|| format!("jira.{what}"))?;
            let text = String::from_utf8(bytes)
                .with_context(|| format!("jira.{what} is not UTF-8 text"))?;
            Ok(connectors::Secret::new(text))
        };
        let auth = match (&self.email, &self.api_token, &self.token) {
            (Some(email), Some(api_token), None) => connectors::JiraAuth::Basic {
                email: email.clone(),
                api_token: secret("api_token", api_token)?,
            },
            (None, None, Some(token)) => connectors::JiraAuth::Bearer {
                token: secret("token", token)?,
            },
            _ => anyhow::bail!(
                "jira: give `email` with `api_token` (Jira Cloud), or `token` (Data Center)"
            ),
        };
        let client = connectors::Jira::new(connectors::JiraConfig {
            base_url: self.base_url.clone(),
            auth,
            timeout: std::time::Duration::from_secs(self.timeout_seconds.unwrap_or(30)),
        })?;
        Ok(runtime::JiraDesk {
            client,
            resolved_status: self
                .resolved_status
                .clone()
                .unwrap_or_else(|| "Done".to_owned()),
            needs_human_status: self
                .needs_human_status
                .clone()
                .unwrap_or_else(|| "In Progress".to_owned()),
        })
    }

    pub fn hook(&self) -> anyhow::Result<Option<server::JiraHookConfig>> {
        let Some(reference) = &self.webhook_secret else {
            return Ok(None);
        };
        let secret = resolve_secret(reference).context("jira.webhook_secret")?;
        Ok(Some(server::JiraHookConfig {
            webhook_secret: server::Secret::new(secret),
        }))
    }
}

/// `slack: { signing_secret, bot_token, channel }`; both secrets by
/// reference (`env:NAME`, `file:PATH`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackEntry {
    /// Verifies the interaction callbacks Slack posts.
    pub signing_secret: String,
    /// A bot token (`xoxb-…`) with the `chat:write` scope.
    pub bot_token: String,
    /// The channel id approval requests are posted to (`C0123ABCD`).
    pub channel: String,
    /// The Web API's base URL (default `https://slack.com/api`).
    pub api_url: Option<String>,
    /// Seconds each Web API call may take (default 10).
    pub timeout_seconds: Option<u64>,
}

impl SlackEntry {
    /// What the server needs to verify Slack's callbacks.
    pub fn interactions(&self) -> anyhow::Result<server::SlackConfig> {
        let secret = resolve_secret(&self.signing_secret).context("slack.signing_secret")?;
        Ok(server::SlackConfig {
            signing_secret: server::Secret::new(secret),
        })
    }

    /// The Web API client approval requests are posted with.
    pub fn client(&self) -> anyhow::Result<connectors::Slack> {
        let token = resolve_secret(&self.bot_token).context("slack.bot_token")?;
        let token = String::from_utf8(token).context("slack.bot_token is not UTF-8 text")?;
        anyhow::ensure!(
            !self.channel.trim().is_empty(),
            "slack.channel must name a channel id"
        );
        Ok(connectors::Slack::new(connectors::SlackConfig {
            api_url: self
                .api_url
                .clone()
                .unwrap_or_else(|| connectors::slack::SLACK_API_URL.to_owned()),
            bot_token: connectors::Secret::new(token),
            timeout: std::time::Duration::from_secs(self.timeout_seconds.unwrap_or(10)),
        })?)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamsEntry {
    pub webhook_url: String,
    /// Seconds each post may take (default 10).
    pub timeout_seconds: Option<u64>,
}

impl TeamsEntry {
    pub fn resolve(&self) -> anyhow::Result<connectors::teams::Teams> {
        let url = resolve_secret(&self.webhook_url).context("teams.webhook_url")?;
        let url = String::from_utf8(url).context("teams.webhook_url is not UTF-8 text")?;
        Ok(connectors::teams::Teams::new(
            connectors::Secret::new(url.trim()),
            std::time::Duration::from_secs(self.timeout_seconds.unwrap_or(10)),
        )?)
    }
}

/// `servicenow: { instance_url, basic: { username, password } }` or
/// `oauth: { client_id, client_secret, username, password }`; every secret
/// by reference (`env:NAME`, `file:PATH`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceNowEntry {
    pub instance_url: String,
    pub basic: Option<BasicEntry>,
    pub oauth: Option<OAuthEntry>,
    /// Seconds each call may take (default 30).
    pub timeout_seconds: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicEntry {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthEntry {
    pub client_id: String,
    pub client_secret: String,
    pub username: String,
    pub password: String,
}

impl ServiceNowEntry {
    pub fn resolve(&self) -> anyhow::Result<connectors::ServiceNow> {
        let secret = |what: &str, reference: &str| -> anyhow::Result<connectors::Secret> {
            let bytes = resolve_secret(reference).with_context(|| format!("servicenow.{what}"))?;
            let text = String::from_utf8(bytes)
                .with_context(|| format!("servicenow.{what} is not UTF-8 text"))?;
            Ok(connectors::Secret::new(text))
        };
        let auth = match (&self.basic, &self.oauth) {
            (Some(basic), None) => connectors::ServiceNowAuth::Basic {
                username: basic.username.clone(),
                password: secret("basic.password", &basic.password)?,
            },
            (None, Some(oauth)) => connectors::ServiceNowAuth::OAuth {
                client_id: oauth.client_id.clone(),
                client_secret: secret("oauth.client_secret", &oauth.client_secret)?,
                username: oauth.username.clone(),
                password: secret("oauth.password", &oauth.password)?,
            },
            _ => anyhow::bail!("servicenow: give exactly one of `basic` and `oauth`"),
        };
        Ok(connectors::ServiceNow::new(connectors::ServiceNowConfig {
            instance_url: self.instance_url.clone(),
            auth,
            timeout: std::time::Duration::from_secs(self.timeout_seconds.unwrap_or(30)),
        })?)
    }
}

/// `graph: { tenant_id, client_id, client_secret }`, the client secret by
/// reference (`env:NAME`, `file:PATH`); `authority_url` and `graph_url`
/// change only for a national cloud (or a test).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphEntry {
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
    /// Default `https://login.microsoftonline.com`.
    pub authority_url: Option<String>,
    /// Default `https://graph.microsoft.com`.
    pub graph_url: Option<String>,
}

impl GraphEntry {
    pub fn resolve(&self) -> anyhow::Result<connectors::GraphConfig> {
        let secret = resolve_secret(&self.client_secret).context("graph.client_secret")?;
        let secret = String::from_utf8(secret).context("graph.client_secret is not UTF-8 text")?;
        Ok(connectors::GraphConfig {
            tenant_id: self.tenant_id.clone(),
            client_id: self.client_id.clone(),
            client_secret: connectors::Secret::new(secret),
            authority_url: self
                .authority_url
                .clone()
                .unwrap_or_else(|| connectors::GraphConfig::AUTHORITY_URL.to_owned()),
            graph_url: self
                .graph_url
                .clone()
                .unwrap_or_else(|| connectors::GraphConfig::GRAPH_URL.to_owned()),
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalRateLimitEntry {
    pub runs: u32,
    pub window: String,
}

impl GlobalRateLimitEntry {
    pub fn resolve(&self) -> anyhow::Result<runbook::RateLimit> {
        let window_ms = runbook::parse_duration(&self.window).with_context(|| {
            format!(
                "global_rate_limit.window: `{}` is not a duration such as `30s`, `5m` or `1h`",
                self.window
            )
        })?;
        anyhow::ensure!(self.runs > 0, "global_rate_limit.runs must be at least 1");
        Ok(runbook::RateLimit {
            runs: self.runs,
            window_ms,
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalLinksEntry {
    /// `env:NAME` or `file:PATH`.
    pub secret: String,
    pub public_url: Option<String>,
    /// Seconds a link stays valid (default 3600).
    pub ttl_seconds: Option<i64>,
}

impl ApprovalLinksEntry {
    pub fn resolve(&self) -> anyhow::Result<server::LinkConfig> {
        let key = resolve_secret(&self.secret).context("the approval links' secret")?;
        Ok(server::LinkConfig {
            key: server::Secret::new(key),
            public_url: self.public_url.clone(),
            default_ttl_seconds: self.ttl_seconds.unwrap_or(3600),
        })
    }
}

/// A signing webhook sender. Its secret is given by reference only:
/// `env:NAME` (an environment variable) or `file:PATH`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedSourceEntry {
    pub name: String,
    pub secret: String,
}

impl SignedSourceEntry {
    /// Reads the secret the entry refers to.
    pub fn resolve(&self) -> anyhow::Result<server::SignedSource> {
        let secret = resolve_secret(&self.secret)
            .with_context(|| format!("the secret of signed source `{}`", self.name))?;
        Ok(server::SignedSource {
            name: self.name.clone(),
            secret: server::Secret::new(secret),
        })
    }
}

/// `env:NAME` or `file:PATH` → the secret's bytes. A secret written inline
/// is refused: configuration files end up in repositories.
pub fn resolve_secret(reference: &str) -> anyhow::Result<Vec<u8>> {
    let secret = if let Some(name) = reference.strip_prefix("env:") {
        std::env::var(name).with_context(|| format!("environment variable `{name}` is not set"))?
    } else if let Some(path) = reference.strip_prefix("file:") {
        std::fs::read_to_string(path)
            .with_context(|| format!("reading {path}"))?
            .trim_end_matches(['\r', '\n'])
            .to_owned()
    } else {
        anyhow::bail!("a secret is given by reference, `env:NAME` or `file:PATH`, never inline");
    };
    if secret.is_empty() {
        anyhow::bail!("the secret `{reference}` refers to is empty");
    }
    Ok(secret.into_bytes())
}

impl File {
    pub fn load(path: &Path) -> anyhow::Result<File> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        serde_saphyr::from_str(&text).with_context(|| format!("config file {}", path.display()))
    }
}

/// Loads the catalog from `dir`, printing every problem; fails when any
/// runbook is invalid, so a server never runs with half its runbooks.
pub fn load_catalog(dir: &Path) -> anyhow::Result<runbook::Catalog> {
    let report = runbook::load_dir(dir)
        .with_context(|| format!("loading runbooks from {}", dir.display()))?;
    if !report.diagnostics.is_empty() {
        for diagnostic in &report.diagnostics {
            eprintln!("{diagnostic}");
        }
        anyhow::bail!(
            "{} problem(s) in the runbooks under {}",
            report.diagnostics.len(),
            dir.display()
        );
    }
    Ok(report.catalog)
}
