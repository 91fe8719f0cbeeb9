//! Teams as a chat channel, and its `teams:` config section.
//!
//! ```yaml
//! teams: { webhook_url: env:TEAMS_WEBHOOK_URL, timeout_seconds: 10 }
//! ```
//!
//! A Workflows webhook cannot call opsgate back, so every approval card
//! links each approver's signed page ([`ChatChannel::links_approvers`]).

use std::sync::Arc;

use serde::Deserialize;

use super::{
    ApprovalCard, ApprovalLinks, ApproverLink, CardStep, Fact, ProgressCard, Teams, approval_card,
    message, progress_card,
};
use crate::seam::{ApprovalRequest, BoxFuture, ChatChannel, Parts, Progress};
use crate::section::{read, seconds, secret};
use crate::{Secret, WriteError};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Section {
    /// The Workflows webhook's URL, by reference: it carries the flow's
    /// signature, so whoever holds it can post to the channel.
    pub webhook_url: String,
    /// Seconds each post may take (default 10).
    pub timeout_seconds: Option<u64>,
}

pub(crate) fn build(section: &serde_json::Value) -> crate::Result<Parts> {
    let section: Section = read(super::NAME, section)?;
    let url = secret("teams.webhook_url", &section.webhook_url)?;
    let teams = Teams::new(
        Secret::new(url.expose().trim()),
        seconds(section.timeout_seconds, 10),
    )?;
    Ok(Parts {
        chat: Some(Arc::new(teams)),
        ..Parts::default()
    })
}

impl ChatChannel for Teams {
    fn name(&self) -> &'static str {
        super::NAME
    }

    /// A webhook has one channel.
    fn destination(&self) -> String {
        "channel".to_owned()
    }

    fn links_approvers(&self) -> bool {
        true
    }

    fn ask_approval<'a>(
        &'a self,
        request: &'a ApprovalRequest,
    ) -> BoxFuture<'a, Result<(), WriteError>> {
        let card = ApprovalCard {
            run_id: request.run_id.clone(),
            runbook_title: request.runbook_title.clone(),
            steps: request
                .steps
                .iter()
                .map(|step| CardStep {
                    name: step.name.clone(),
                    action: step.action.clone(),
                    request: step.request.clone(),
                })
                .collect(),
            targets: request.targets.clone(),
            reasons: request.reasons.clone(),
            approval_stage: request.stage_label.clone(),
            approvers: request.approvers.clone(),
            links: ApprovalLinks::PerApprover(
                request
                    .links
                    .iter()
                    .map(|link| ApproverLink {
                        approver: link.approver.clone(),
                        url: link.url.clone(),
                    })
                    .collect(),
            ),
        };
        Box::pin(async move { self.post(&message(approval_card(&card))).await })
    }

    fn tell_progress<'a>(
        &'a self,
        progress: &'a Progress,
    ) -> BoxFuture<'a, Result<(), WriteError>> {
        let card = ProgressCard {
            run_id: progress.run_id.clone(),
            runbook_title: progress.runbook_title.clone(),
            state: progress.state,
            what_happened: progress.lines.join("\n"),
            facts: vec![
                Fact {
                    title: "Runbook".to_owned(),
                    value: progress.runbook_id.clone(),
                },
                Fact {
                    title: "Targets".to_owned(),
                    value: progress.targets.join(", "),
                },
            ],
            run_url: None,
        };
        Box::pin(async move { self.post(&message(progress_card(&card))).await })
    }
}
