//! What calling each route takes, and the authentication settings and
//! state every request shares: the vocabulary the router declares routes
//! in and the middleware (`auth.rs`) enforces, kept apart from both so
//! that neither imports the other.

use std::sync::Mutex;
use std::time::Duration;

use axum::http::Method;
use domain::{Principal, Role, Secret};

use crate::refusals::RefusalLedger;

/// The route of every event source, by its name.
pub(crate) const HOOK_ROUTE: &str = "/v1/hooks/{source}";

/// What a route lets its caller do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Post events (`POST /v1/events`).
    Ingest,
    /// Propose a runbook run, dry-run a proposal, withdraw one's own
    /// (`/v1/proposals`, MCP): an agent's only.
    Propose,
    /// Post a sender's webhooks (`/v1/hooks/<sender>`): a source only its
    /// own, the one the path names.
    ReceiveWebhook,
    /// Plan without acting (`POST /v1/plan`).
    DryRun,
    /// Read runs and runbooks.
    Read,
    /// Approve or deny runs.
    Decide,
    /// Cancel a run before it acts, or end a time-bound change early.
    Cancel,
    /// Ask for one's own signed approval link (a link is a credential for
    /// one person: nobody is handed another's).
    IssueLinks,
    /// Pull the emergency stop, or lift it: freeze automation. Never an
    /// agent's, nor a source's.
    Freeze,
}

impl Permission {
    /// The roles granted this permission: the whole authorisation policy of
    /// the API, in one place.
    pub fn roles(self) -> &'static [Role] {
        use Role::*;
        match self {
            Permission::Ingest => &[Admin, Operator, Agent, Source],
            Permission::Propose => &[Agent],
            Permission::ReceiveWebhook => &[Admin, Source],
            Permission::DryRun => &[Admin, Operator, Approver, Agent, Viewer],
            Permission::Read => &[Admin, Operator, Approver, Agent, Viewer],
            Permission::Decide => &[Approver],
            Permission::Cancel => &[Admin, Operator, Approver],
            Permission::IssueLinks => &[Approver],
            Permission::Freeze => &[Admin, Operator, Approver],
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Ingest => "ingest",
            Permission::Propose => "propose",
            Permission::ReceiveWebhook => "receive_webhooks",
            Permission::DryRun => "dry_run",
            Permission::Read => "read",
            Permission::Decide => "decide",
            Permission::Cancel => "cancel",
            Permission::IssueLinks => "ask for an approval link",
            Permission::Freeze => "freeze or unfreeze automation",
        }
    }

    /// Why `principal` may not do this at `path`; `None` when it may.
    /// Beyond the role, a source speaks only for itself: another sender's
    /// webhook is refused to it.
    pub fn refusal(self, principal: &Principal, path: &str) -> Option<String> {
        if !self.roles().contains(&principal.role) {
            return Some(format!(
                "{} has the role {}, which may not {} (allowed: {})",
                principal.actor(),
                principal.role,
                self.as_str().replace('_', " "),
                self.roles()
                    .iter()
                    .map(|role| role.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        // The path's last segment names the sender: `/v1/hooks/{source}`.
        let sender = path.rsplit('/').next().unwrap_or_default();
        (self == Permission::ReceiveWebhook
            && principal.role == Role::Source
            && principal.name != sender)
            .then(|| {
                format!(
                    "{} has the role source, which speaks only for itself: \
                     /v1/hooks/{sender} takes the webhooks of source `{sender}` only",
                    principal.actor()
                )
            })
    }
}

/// What calling a route takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Nothing: the public `/healthz`; the approval page, whose signed link
    /// is its own credential; and Slack's and Jira's callbacks, which carry
    /// their sender's signature instead of a token, verified (and a refusal
    /// audited) by their handler before anything else of the request is read.
    Public,
    /// An authenticated caller whose role has this permission.
    Needs(Permission),
    /// The route exists but does not take this method: answered 405
    /// before anyone is asked who they are, and no handler runs.
    MethodNotAllowed,
}

/// What each route takes, method by method: the one table of every route
/// and method the API serves, filled in where each route is registered
/// (`routes.rs`). A pair missing from it is refused (405), so nothing is
/// served that was not declared.
#[derive(Debug, Default)]
pub(crate) struct RouteTable {
    /// Per route, what each of its methods takes.
    routes: std::collections::HashMap<&'static str, Vec<(Method, Access)>>,
}

impl RouteTable {
    /// Declares what calling `method` on `route` takes.
    pub(crate) fn declare(&mut self, method: Method, route: &'static str, access: Access) {
        let methods = self.routes.entry(route).or_default();
        assert!(
            methods.iter().all(|(declared, _)| *declared != method),
            "{method} {route} is declared twice"
        );
        methods.push((method, access));
    }

    /// What `method` on `route` takes; HEAD is GET without the body
    /// (RFC 9110), so it takes whatever GET does.
    pub(crate) fn access(&self, method: &Method, route: &str) -> Access {
        let method = if method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        self.routes
            .get(route)
            .and_then(|methods| methods.iter().find(|(declared, _)| declared == method))
            .map_or(Access::MethodNotAllowed, |(_, access)| *access)
    }

    /// Every route and method declared, for checks that nothing is served
    /// undocumented.
    #[cfg(test)]
    pub(crate) fn declared(&self) -> impl Iterator<Item = (&'static str, &Method)> + '_ {
        self.routes
            .iter()
            .flat_map(|(route, methods)| methods.iter().map(move |(method, _)| (*route, method)))
    }

    /// The methods `route` takes, as an `Allow` header lists them.
    pub(crate) fn methods_served(&self, route: &str) -> String {
        [Method::GET, Method::HEAD, Method::POST]
            .into_iter()
            .filter(|method| self.access(method, route) != Access::MethodNotAllowed)
            .map(|method| method.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A webhook sender that signs its requests with its own shared secret.
#[derive(Debug, Clone)]
pub struct SignedSource {
    pub name: String,
    pub secret: Secret,
}

/// Settings of authentication.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub signed_sources: Vec<SignedSource>,
    /// How far a signature's timestamp may be from now, either way.
    pub replay_window: Duration,
    /// How long repeats of a refusal are counted before their summary is
    /// audited (`refusals.rs`).
    pub refusal_window: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            signed_sources: Vec::new(),
            replay_window: Duration::from_secs(300),
            refusal_window: Duration::from_secs(60),
        }
    }
}

/// How many kinds of refusal are counted apart; beyond, one overflow tally.
const REFUSAL_KINDS: usize = 256;

/// Authentication state shared by all requests.
pub(crate) struct Authenticator {
    pub(crate) config: AuthConfig,
    pub(crate) body_limit: usize,
    refusals: Mutex<RefusalLedger>,
}

impl Authenticator {
    pub(crate) fn new(config: AuthConfig, body_limit: usize) -> Authenticator {
        let refusals = RefusalLedger::new(config.refusal_window, REFUSAL_KINDS);
        Authenticator {
            config,
            body_limit,
            refusals: Mutex::new(refusals),
        }
    }

    /// How far a signature's timestamp may be from now, either way.
    pub(crate) fn replay_window(&self) -> Duration {
        self.config.replay_window
    }

    /// How often open refusal windows should be looked at.
    pub(crate) fn refusal_window(&self) -> Duration {
        self.config.refusal_window
    }

    pub(crate) fn ledger(&self) -> std::sync::MutexGuard<'_, RefusalLedger> {
        // The ledger is plain counters: one a panic interrupted is still
        // worth using.
        self.refusals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
