//! The step actions, each behind [`StepAction`]: what a runbook's
//! `action:` names, and the call it makes. [`step_actions`] is their one
//! registration; `Connectors::call` dispatches to them by name.
//!
//! The actions share what `Connectors` built once — the HTTP client that
//! follows no redirect, the named credentials, the body limit — and each
//! keeps only what it needs of it.

use std::sync::Arc;

use domain::{AttemptOutcome, PlannedCall};

use crate::seam::{BoxFuture, StepAction};
use crate::{Config, Launched, ansible, awx, command, credentials, graph, http, jenkins};

/// What the actions are built from.
pub(crate) struct Shared<'a> {
    pub(crate) http: &'a reqwest::Client,
    pub(crate) credentials: &'a Arc<credentials::Credentials>,
    pub(crate) config: &'a Config,
    pub(crate) graph: Option<graph::Graph>,
}

/// Every step action, ready to call.
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
        Arc::new(GroupMembership {
            graph: shared.graph,
            http: shared.http.clone(),
        }),
        Arc::new(Job {
            name: "awx.job_template",
            http: shared.http.clone(),
            credentials: shared.credentials.clone(),
            start: |http, credentials, request, launched| {
                Box::pin(awx::run(http, credentials, request, launched))
            },
        }),
        Arc::new(Job {
            name: "jenkins.build",
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
    fn name(&self) -> &'static str {
        "http.request"
    }

    fn address<'r>(&self, request: &'r serde_json::Value) -> Option<&'r str> {
        request["url"].as_str()
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
    fn name(&self) -> &'static str {
        "command.run"
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
    fn name(&self) -> &'static str {
        "ansible.playbook"
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
struct GroupMembership {
    graph: Option<graph::Graph>,
    http: reqwest::Client,
}

impl StepAction for GroupMembership {
    fn name(&self) -> &'static str {
        "graph.group_membership"
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
    name: &'static str,
    http: reqwest::Client,
    credentials: Arc<credentials::Credentials>,
    start: StartJob,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("name", &self.name).finish()
    }
}

impl StepAction for Job {
    fn name(&self) -> &'static str {
        self.name
    }

    fn address<'r>(&self, request: &'r serde_json::Value) -> Option<&'r str> {
        request["base_url"].as_str()
    }

    fn call<'a>(
        &'a self,
        call: &'a PlannedCall,
        launched: &'a Launched,
    ) -> BoxFuture<'a, AttemptOutcome> {
        (self.start)(&self.http, &self.credentials, &call.request, launched)
    }
}
