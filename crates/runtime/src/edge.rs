//! What the edge (the HTTP server, and later MCP and the console) is
//! handed of the integration seam, and the two services it calls for
//! requests an outside system sends: a source's signal taken in
//! ([`Intake::take_in`]), and a click on a chat message's Approve or Deny
//! made a decision ([`Decisions::decide_click`]).
//!
//! The edge verifies a request as its part says ([`Verification`],
//! [`Signature`]) and applies the one replay rule; everything after that —
//! reading the body, the events' checks, who a chat user is, whether the
//! message's stage is still open, the decision itself, and what the person
//! is told — happens here, below every interface.

use std::sync::Arc;

use domain::{NewEvent, Principal, Role, RunState};
use serde_json::json;

pub use connectors::seam::parse_json;
pub use connectors::{
    Answer, ButtonSource, EventSource, Pressed, Reply, Signature, SignatureRefused, SignedRequest,
    SourceError, Verification,
};

use crate::{Decisions, Error, Intake, IntakeReport, Result};

/// What a source's request brought: the intake report of each event, and
/// the shape the sender is answered in.
#[derive(Debug)]
pub struct Taken {
    pub answer: Answer,
    pub reports: Vec<IntakeReport>,
}

/// A click on Approve or Deny, read from a verified request.
#[derive(Debug, Clone)]
pub struct Click {
    pub run: String,
    /// The approval stage the message was posted for.
    pub stage: String,
    pub approving: bool,
    /// The person's id on the chat platform.
    pub user_id: String,
}

/// What became of a click.
#[derive(Debug, Clone)]
pub enum Clicked {
    /// The decision was recorded, as the directory's person (`person`, their
    /// name); the run is now in `state`.
    Recorded { person: String, state: RunState },
    /// It was not, and why; the refusal is audited.
    Refused { reason: String },
}

/// Why an event cannot be taken in as it is: the fields every event needs.
pub fn check_event(event: &NewEvent) -> Result<()> {
    for (name, value) in [
        ("source", &event.source),
        ("kind", &event.kind),
        ("dedup_key", &event.dedup_key),
        ("subject", &event.subject),
    ] {
        if value.trim().is_empty() {
            return Err(Error::InvalidEvent {
                message: format!("`{name}` must not be empty"),
            });
        }
    }
    if !event.fields.is_object() {
        return Err(Error::InvalidEvent {
            message: "`fields` must be a JSON object".to_owned(),
        });
    }
    Ok(())
}

/// The answer the person who clicked sees at once.
pub fn click_answer(click: &Click, clicked: &Clicked) -> String {
    match clicked {
        Clicked::Recorded { state, .. } => format!(
            "You {} run {}; it is now {state}.",
            if click.approving {
                "approved"
            } else {
                "denied"
            },
            click.run
        ),
        Clicked::Refused { reason } => format!("Not recorded: {reason}."),
    }
}

/// The approval stage open now (empty when none is).
pub fn open_stage(run: &crate::RunRow) -> String {
    let progress = &run.machine.progress;
    progress
        .stages
        .get(progress.stage)
        .map_or_else(String::new, |stage| stage.name.clone())
}

/// A platform's name as people write it: capitalised.
fn platform_title(platform: &str) -> String {
    let mut chars = platform.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

impl Intake<'_> {
    /// A verified request of `source`: the source reads it (and, when it
    /// only names what changed, reads the system back) into events; every
    /// one is checked before any is taken in, as `caller`.
    pub async fn take_in(
        &self,
        source: &dyn EventSource,
        caller: &Principal,
        body: &[u8],
    ) -> Result<Taken> {
        let heard = source
            .heard(body, &self.0.people())
            .await
            .map_err(Error::Source)?;
        for event in &heard.events {
            check_event(event)?;
        }
        let mut reports = Vec::with_capacity(heard.events.len());
        for event in heard.events {
            reports.push(self.ingest(event, caller).await?);
        }
        Ok(Taken {
            answer: heard.answer,
            reports,
        })
    }

    /// The event source of `/v1/hooks/<name>`, when it is plugged in.
    pub fn source(&self, name: &str) -> Option<Arc<dyn EventSource>> {
        self.0.integrations().source(name).cloned()
    }
}

impl Decisions<'_> {
    /// Approves or denies `click`'s run as the person the directory knows
    /// by `click.user_id` on the platform of `buttons`, with the approver
    /// role, so every separation-of-duties rule applies as on any other
    /// path. A click from someone the directory does not know, or on a
    /// message of a stage that is no longer open, is refused and audited as
    /// `approval.refused` on the run.
    pub async fn decide_click(&self, buttons: &dyn ButtonSource, click: &Click) -> Result<Clicked> {
        let platform = buttons.name();
        let decision = if click.approving { "approve" } else { "deny" };
        let run = self.0.reads().run(&click.run).await?;
        let directory = self.0.directory();
        let found = policy::ChatPlatform::named(platform).and_then(|chat| {
            directory.and_then(|directory| directory.find_by_chat(chat, &click.user_id))
        });
        let user_id = &click.user_id;
        let checked = match (&run, found) {
            (None, _) => Err(format!("run `{}` does not exist", click.run)),
            (Some(_), None) if directory.is_none() => Err(format!(
                "wrong person: no directory is configured, so {platform} user {user_id} cannot be matched to a person"
            )),
            (Some(_), None) => Err(format!(
                "wrong person: {platform} user {user_id} is not a person in the directory"
            )),
            (Some(run), Some(_))
                if run.state == RunState::AwaitingApproval && open_stage(run) != click.stage =>
            {
                Err(format!(
                    "this message was for approval stage `{}`; the run is now at stage `{}`",
                    click.stage,
                    open_stage(run)
                ))
            }
            (Some(_), Some(person)) => Ok(person),
        };
        let person = match checked {
            Ok(person) => person,
            Err(reason) => {
                let actor = found.map_or_else(
                    || format!("{platform}:{user_id}"),
                    |person| format!("user:{}", person.id),
                );
                let record = crate::AuditEntry::new(
                    domain::RecordKind::ApprovalRefused,
                    actor,
                    json!({"reason": reason, "decision": decision, (format!("{platform}_user")): user_id, "stage": click.stage}),
                );
                let run_id = run.as_ref().map(|run| run.id.as_str());
                self.0.audit_log().append(run_id, &[record]).await?;
                tracing::warn!(run_id = %click.run, platform, user = %user_id, reason = %reason, "decision from chat refused");
                return Ok(Clicked::Refused { reason });
            }
        };
        let approver = Principal::new(person.id.clone(), Role::Approver);
        let comment = Some(format!(
            "from {} (user {user_id})",
            platform_title(platform)
        ));
        let outcome = if click.approving {
            self.approve(&click.run, &approver, comment).await
        } else {
            self.deny(&click.run, &approver, comment).await
        };
        // Refusals from here on (separation of duties, a run that moved on)
        // are audited by the decision itself.
        match outcome {
            Ok(state) => Ok(Clicked::Recorded {
                person: person.name.clone(),
                state,
            }),
            Err(Error::ApprovalRefused { reason }) => Ok(Clicked::Refused { reason }),
            Err(Error::Engine(error)) => Ok(Clicked::Refused {
                reason: error.to_string(),
            }),
            Err(Error::Store(store::Error::Conflict { .. })) => Ok(Clicked::Refused {
                reason: "the run changed meanwhile; look at it and try again".to_owned(),
            }),
            Err(error) => Err(error),
        }
    }

    /// What the message a click came from is told once the decision is
    /// made: a decision replaces its buttons with who decided — except an
    /// approval that leaves the stage waiting for more people, whose
    /// buttons must stay: that one is a line in the channel. A refusal is
    /// for the person who clicked only.
    pub async fn click_follow_up(&self, click: &Click, clicked: &Clicked) -> (Reply, String) {
        let (person, run_state) = match clicked {
            Clicked::Refused { reason } => {
                return (Reply::ToThePerson, format!("Refused: {reason}."));
            }
            Clicked::Recorded { person, state } => (person, *state),
        };
        if !click.approving {
            return (
                Reply::ReplaceMessage,
                format!(
                    "Denied by {person} (stage `{}`); the run is now {run_state}.",
                    click.stage
                ),
            );
        }
        // Read again: how far the stage got is known only after the
        // decision. A run that cannot be read is told as the decision left it.
        let run = self.0.reads().run(&click.run).await.ok().flatten();
        let stages = run
            .as_ref()
            .map_or(&[][..], |run| run.machine.progress.stages.as_slice());
        let position = stages
            .iter()
            .position(|stage| stage.name == click.stage)
            .map(|index| format!(", {} of {}", index + 1, stages.len()))
            .unwrap_or_default();
        let approved = format!("Approved by {person} (stage `{}`{position})", click.stage);
        let stage_still_waiting = run
            .as_ref()
            .filter(|run| run.state == RunState::AwaitingApproval)
            .and_then(|run| run.machine.progress.stages.get(run.machine.progress.stage))
            .filter(|stage| stage.name == click.stage);
        match stage_still_waiting {
            Some(stage) => {
                let missing = stage
                    .required
                    .saturating_sub(stage.approved_by.len() as u32);
                (
                    Reply::InChannel,
                    format!("{approved}; the stage waits for {missing} more approval(s)."),
                )
            }
            None => (
                Reply::ReplaceMessage,
                format!("{approved}; the run is now {run_state}."),
            ),
        }
    }

    /// The chat buttons of `/v1/hooks/<name>/interactions`, when plugged in.
    pub fn buttons(&self, name: &str) -> Option<Arc<dyn ButtonSource>> {
        self.0.integrations().buttons(name).cloned()
    }
}
