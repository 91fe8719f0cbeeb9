//! The integration seam and everything behind it: the code that talks to
//! outside systems.
//!
//! [`seam`] says what an outside system can be to opsgate — an event
//! source, a ticket system, a chat channel, a step action, a classifier
//! of tickets — in words that name no vendor. Each system that sends
//! signals, is written back to or is asked to triage is a folder
//! ([`servicenow`], [`jira`], [`freshservice`], [`teams`], [`slack`],
//! [`chat_completions`]) with its client, the parts it plugs in, and its
//! config section; [`registry`] lists them and builds the configured ones
//! into [`Integrations`]. The step actions (`actions.rs`) each turn one
//! rendered call ([`domain::PlannedCall`]) into one
//! [`domain::AttemptOutcome`]: they never retry (the engine decides that,
//! from the step's policy and the [`domain::FailureCause`] reported here)
//! and never panic on a peer's answer. Responses are summarised — status, a
//! few headers, parsed JSON, a bounded slice of the body — so that what is
//! stored and shown stays small. The clients that write back report a
//! [`WriteError`] that says whether trying later can help.
//!
//! A step that authenticates names a [`Credential`] of
//! [`Config::credentials`]; its secret is added only as the request is sent,
//! and only to the hosts the credential names.
//!
//! No HTTP client here follows redirects on its own: an approved plan names
//! the URLs it calls, and a `302 Location: http://elsewhere/` must not send
//! the step — and its credential — to a host nobody approved. A redirect is
//! an answer like any other; `http.request` follows one only when the step
//! asks for it, and only within the same origin.
//! `awx.job_template` and `jenkins.build` start jobs that outlive a call: once
//! one is asked for, a timeout is an unknown outcome, never a retryable one.

mod actions;
mod alertmanager;
mod ansible;
mod awx;
pub mod chat_completions;
mod command;
mod credentials;
mod event_time;
pub mod freshservice;
pub mod graph;
mod http;
mod jenkins;
pub mod jira;
mod pagerduty;
mod poll;
pub mod registry;
pub mod seam;
pub mod section;
pub mod servicenow;
pub mod slack;
pub mod teams;
mod text;
mod write_error;

use std::sync::Arc;

use domain::{AttemptOutcome, FailureCause, PlannedCall};

pub use actions::STEP_ACTIONS;
pub use ansible::AnsibleConfig;
pub use credentials::{Auth, ClientIdentity, ClientTls, Credential};
/// Every connector's configuration holds its credentials as `domain::Secret`.
pub use domain::Secret;
pub use graph::{GraphConfig, group_membership};
pub use jira::{Jira, JiraAuth, JiraConfig};
pub use seam::{
    Answer, ApprovalDecision, ApprovalRequest, ApproverLink, ButtonSource, ChatChannel,
    EventSource, Heard, Integrations, NoPeople, Note, Outcome, Parts, People, Pressed, Progress,
    Reply, RequestStep, Signature, SignatureRefused, SignedRequest, SourceError, StepAction,
    TicketState, TicketSystem, TicketUpdate, Verification,
};
/// Triage: a classifier of tickets no runbook's rules took.
pub use seam::{
    Candidate, Classifier, ClassifyFailure, ClassifyFailureKind, Exchange, Suggestion,
    TriageRequest,
};
pub use servicenow::{ServiceNow, ServiceNowAuth, ServiceNowConfig};
pub use slack::{Slack, SlackConfig, approval_message};
pub use write_error::WriteError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not build the HTTP client: {0}")]
    HttpClient(#[from] reqwest::Error),
    #[error("invalid ServiceNow instance URL: {0}")]
    InstanceUrl(String),
    #[error("invalid Jira base URL: {0}")]
    JiraUrl(String),
    #[error("invalid Slack API URL: {0}")]
    SlackApiUrl(String),
    #[error("invalid Microsoft Graph settings: {0}")]
    Graph(String),
    #[error("credential `{name}`: {reason}")]
    Credential { name: String, reason: String },
    /// A config section that cannot be used as it is: `at` names the key
    /// (`servicenow.basic.password`).
    #[error("{at}: {message}")]
    Config { at: String, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

const USER_AGENT: &str = concat!("opsgate/", env!("CARGO_PKG_VERSION"));

/// A client for an outside system opsgate writes to (a ticket, a chat
/// channel): it follows no redirect. What opsgate sends — a ticket's
/// story, an approval card with signed links, a credential — goes to the
/// configured address only; a 3xx is that system's answer.
pub(crate) fn outbound_client(timeout: std::time::Duration) -> reqwest::ClientBuilder {
    install_crypto_provider();
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
}

/// Settings shared by the connectors.
#[derive(Debug, Clone)]
pub struct Config {
    /// How many bytes of a response body or command output are kept.
    pub body_limit: usize,
    pub user_agent: String,
    pub ansible: AnsibleConfig,
    /// The credentials steps name (`with: { credential: NAME }`).
    pub credentials: std::collections::BTreeMap<String, Credential>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            body_limit: 4096,
            user_agent: USER_AGENT.to_owned(),
            ansible: AnsibleConfig::default(),
            credentials: std::collections::BTreeMap::new(),
        }
    }
}

/// The connectors, ready to make calls. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Connectors {
    credentials: Arc<credentials::Credentials>,
    /// Every step action, by the name a runbook gives it.
    actions: Arc<std::collections::BTreeMap<&'static str, Arc<dyn StepAction>>>,
}

impl Connectors {
    pub fn new(config: Config) -> Result<Self> {
        install_crypto_provider();
        let http = reqwest::Client::builder()
            .user_agent(&config.user_agent)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let credentials = Arc::new(credentials::Credentials::new(
            &config.credentials,
            &config.user_agent,
        )?);
        let actions = actions::step_actions(actions::Shared {
            http: &http,
            credentials: &credentials,
            config: &config,
        })
        .into_iter()
        .map(|action| (action.name(), action))
        .collect();
        Ok(Connectors {
            credentials,
            actions: Arc::new(actions),
        })
    }

    /// Puts step actions a config section built (see
    /// [`seam::Parts::action`]) in place of the built-in ones of their names.
    pub fn plug(&mut self, actions: &[Arc<dyn StepAction>]) {
        if actions.is_empty() {
            return;
        }
        let table = Arc::make_mut(&mut self.actions);
        for action in actions {
            table.insert(action.name(), action.clone());
        }
    }

    /// Why `call` may not be made as planned, if it may not: it names a
    /// credential whose `hosts` do not include the host its URL (or, for
    /// AWX and Jenkins, its `base_url`) names. Asked when the plan is made,
    /// so such a plan is refused before anyone approves it; the connector
    /// checks again before sending.
    pub fn credential_refusal(&self, call: &PlannedCall) -> Option<String> {
        let credential = self.credentials.named(&call.request).ok()??;
        let address = self
            .actions
            .get(call.action.as_str())?
            .address(&call.request)?;
        let url = reqwest::Url::parse(address.trim()).ok()?;
        credential.allows(&url).err()
    }

    /// Makes one attempt of `call`, bounded by its timeout.
    pub async fn call(&self, call: &PlannedCall) -> AttemptOutcome {
        let timeout = std::time::Duration::from_millis(call.timeout_ms);
        let launched = Launched::default();
        let attempt = async {
            match self.actions.get(call.action.as_str()) {
                Some(action) => action.call(call, &launched).await,
                None => failed(
                    FailureCause::Other,
                    format!("unknown action `{}`", call.action),
                ),
            }
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(outcome) => outcome,
            Err(_) => match launched.take() {
                Some(running) => AttemptOutcome::Unknown {
                    reason: format!(
                        "timed out after {} waiting for {running}: nothing was cancelled, and it may still be running; look before running the step again",
                        humanize_ms(call.timeout_ms)
                    ),
                },
                None => failed(
                    FailureCause::Timeout,
                    format!("timed out after {}", humanize_ms(call.timeout_ms)),
                ),
            },
        }
    }
}

/// What a call started elsewhere that outlives the call: an AWX job, a
/// Jenkins build. When the step's timeout ends the call while one is
/// running, the outcome is unknown rather than a timeout: a policy may
/// retry a timeout, and a retry would start a second job.
#[derive(Default)]
pub struct Launched(std::sync::Mutex<Option<String>>);

impl Launched {
    /// Says what is running now (`AWX job 7 (…, last seen `running`)`).
    pub(crate) fn record(&self, running: String) {
        *self.slot() = Some(running);
    }

    fn take(&self) -> Option<String> {
        self.slot().take()
    }

    /// A poisoned lock still holds the last description written.
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Failures are whole outcomes, so that `?` can end an attempt anywhere.
pub(crate) type Attempt<T> = Result<T, AttemptOutcome>;

/// reqwest is built without a bundled TLS crypto provider: opsgate uses
/// ring. Call before building any HTTP client; calling again is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn failed(cause: FailureCause, error: String) -> AttemptOutcome {
    AttemptOutcome::Failed {
        cause,
        error,
        response: None,
        retry_after_ms: None,
    }
}

/// What a failed or unknown outcome says.
fn message(outcome: &AttemptOutcome) -> &str {
    match outcome {
        AttemptOutcome::Failed { error, .. } => error,
        AttemptOutcome::Unknown { reason } => reason,
        AttemptOutcome::Succeeded { .. } => "succeeded",
    }
}

fn humanize_ms(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}
