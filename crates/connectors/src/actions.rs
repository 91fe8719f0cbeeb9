//! The step actions, each behind [`StepAction`]: what a runbook's
//! `action:` names, what its `with:` takes, and the call it makes.
//! [`STEP_ACTIONS`] lists what they take, for the runbook loader;
//! [`step_actions`] builds them; `Connectors::call` dispatches to them by
//! name.
//!
//! The actions share what `Connectors` built once — the HTTP client that
//! follows no redirect, the named credentials, the body limit — and each
//! keeps only what it needs of it.

use std::sync::Arc;

use domain::{ActionShape, AttemptOutcome, PlannedCall};

use crate::seam::{BoxFuture, StepAction};
use crate::{Config, Launched, ansible, awx, command, credentials, graph, http, jenkins};

/// What the actions are built from.
pub(crate) struct Shared<'a> {
    pub(crate) http: &'a reqwest::Client,
    pub(crate) credentials: &'a Arc<credentials::Credentials>,
    pub(crate) config: &'a Config,
}

/// What every step action takes, in the order a runbook's "known actions"
/// are listed: what runbooks are checked against when they load.
pub static STEP_ACTIONS: &[&ActionShape] = &[
    &http::SHAPE,
    &command::SHAPE,
    &ansible::SHAPE,
    &graph::SHAPE,
    &awx::SHAPE,
    &jenkins::SHAPE,
];

/// Every step action, ready to call, in the order of [`STEP_ACTIONS`].
pub(crate) fn step_actions(shared: Shared<'_>) -> Vec<Arc<dyn StepAction>> {
    let body_limit = shared.config.body_limit;
    vec![
        Arc::new(HttpRequest {
            http: shared.http.clone(),
            credentials: shared.credentials.clone(),
            body_limit,
        }),
        Arc::new(CommandRun { body_limit }),
        Arc::new(AnsiblePlaybook {
            config: shared.config.ansible.clone(),
            body_limit,
        }),
        // Without a `graph:` section it refuses every call; the section
        // plugs in one that acts in its tenant.
        Arc::new(GroupMembership {
            graph: None,
            http: shared.http.clone(),
        }),
        Arc::new(Job {
            shape: &awx::SHAPE,
            http: shared.http.clone(),
            credentials: shared.credentials.clone(),
            start: |http, credentials, request, launched| {
                Box::pin(awx::run(http, credentials, request, launched))
            },
        }),
        Arc::new(Job {
            shape: &jenkins::SHAPE,
            http: shared.http.clone(),
            credentials: shared.credentials.clone(),
            start: |http, credentials, request, launched| {
                Box::pin(jenkins::run(http, credentials, request, launched))
            },
        }),
    ]
}

/// `http.request`: one HTTP call, with a named credential if it says so.
#[derive(Debug)]
struct HttpRequest {
    http: reqwest::Client,
    credentials: Arc<credentials::Credentials>,
    body_limit: usize,
}

impl StepAction for HttpRequest {
    fn shape(&self) -> &'static ActionShape {
        &http::SHAPE
    }

    fn call<'a>(
        &'a self,
        call: &'a PlannedCall,
        _launched: &'a Launched,
    ) -> BoxFuture<'a, AttemptOutcome> {
        Box::pin(http::request(
            &self.http,
            &self.credentials,
            &call.request,
            self.body_limit,
        ))
    }
}

/// `command.run`: a local program, without a shell.
#[derive(Debug)]
struct CommandRun {
    body_limit: usize,
}

impl StepAction for CommandRun {
    fn shape(&self) -> &'static ActionShape {
        &command::SHAPE
    }

    fn call<'a>(
        &'a self,
        call: &'a PlannedCall,
        _launched: &'a Launched,
    ) -> BoxFuture<'a, AttemptOutcome> {
        Box::pin(command::run(&call.request, self.body_limit))
    }
}

/// `ansible.playbook`: `ansible-playbook`, its JSON callback read.
#[derive(Debug)]
struct AnsiblePlaybook {
    config: ansible::AnsibleConfig,
    body_limit: usize,
}

impl StepAction for AnsiblePlaybook {
    fn shape(&self) -> &'static ActionShape {
        &ansible::SHAPE
    }

    fn call<'a>(
        &'a self,
        call: &'a PlannedCall,
        _launched: &'a Launched,
    ) -> BoxFuture<'a, AttemptOutcome> {
        Box::pin(ansible::run(&call.request, &self.config, self.body_limit))
    }
}

/// `graph.group_membership`: a user in or out of an Entra ID group.
#[derive(Debug)]
pub(crate) struct GroupMembership {
    pub(crate) graph: Option<graph::Graph>,
    pub(crate) http: reqwest::Client,
}

impl StepAction for GroupMembership {
    fn shape(&self) -> &'static ActionShape {
        &graph::SHAPE
    }

    fn call<'a>(
        &'a self,
        call: &'a PlannedCall,
        _launched: &'a Launched,
    ) -> BoxFuture<'a, AttemptOutcome> {
        Box::pin(graph::run(self.graph.as_ref(), &self.http, &call.request))
    }
}

/// How a job server's job is started and followed to its end.
type StartJob = for<'a> fn(
    &'a reqwest::Client,
    &'a credentials::Credentials,
    &'a serde_json::Value,
    &'a Launched,
) -> BoxFuture<'a, AttemptOutcome>;

/// `awx.job_template` and `jenkins.build`: a job on a job server (its
/// `base_url`, which a credential's `hosts` are checked against), started
/// and polled to its end.
struct Job {
    shape: &'static ActionShape,
    http: reqwest::Client,
    credentials: Arc<credentials::Credentials>,
    start: StartJob,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("name", &self.shape.name)
            .finish()
    }
}

impl StepAction for Job {
    fn shape(&self) -> &'static ActionShape {
        self.shape
    }

    fn call<'a>(
        &'a self,
        call: &'a PlannedCall,
        launched: &'a Launched,
    ) -> BoxFuture<'a, AttemptOutcome> {
        (self.start)(&self.http, &self.credentials, &call.request, launched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loader_checks_runbooks_against_the_actions_that_are_built() {
        crate::install_crypto_provider();
        let config = Config::default();
        let credentials = Arc::new(
            credentials::Credentials::new(&config.credentials, &config.user_agent).unwrap(),
        );
        let built = step_actions(Shared {
            http: &reqwest::Client::new(),
            credentials: &credentials,
            config: &config,
        });
        let built: Vec<&str> = built.iter().map(|action| action.name()).collect();
        let listed: Vec<&str> = STEP_ACTIONS.iter().map(|shape| shape.name).collect();
        assert_eq!(built, listed);
    }
}
