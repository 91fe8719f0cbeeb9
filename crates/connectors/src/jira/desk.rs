//! Jira as a ticket system: a run's story as comments on its issue, and
//! the issue moved — through whichever transition leads to the configured
//! status, looked up each time, since transition ids differ between
//! workflows — when the run resolved it or needs a person.

use super::Jira;
use crate::WriteError;
use crate::seam::{BoxFuture, Outcome, TicketState, TicketSystem, TicketUpdate};

/// A Jira site and the statuses a run moves its issue to.
pub(crate) struct Desk {
    pub(crate) client: Jira,
    /// Where a run that succeeded moves its issue, when its runbook
    /// resolves on success (`Done`).
    pub(crate) resolved_status: String,
    /// Where a failed run moves its issue, when its runbook names an
    /// `on_failure.ticket_state` (`In Progress`).
    pub(crate) needs_human_status: String,
}

impl TicketSystem for Desk {
    fn name(&self) -> &'static str {
        super::NAME
    }

    /// The issue of one of its own events: `fields.ticket`, the key.
    fn ticket_of(&self, event: &domain::Event) -> Option<String> {
        crate::seam::own_ticket(event, super::NAME)
    }

    fn write<'a>(
        &'a self,
        ticket: &'a str,
        update: TicketUpdate,
    ) -> BoxFuture<'a, Result<(), WriteError>> {
        Box::pin(self.tell(ticket, update))
    }

    /// Closed when the issue's status is in Jira's `done` category (every
    /// workflow's final statuses are), or is the status a resolved run
    /// moves it to.
    fn state_of<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<TicketState, WriteError>> {
        Box::pin(async move {
            let issue = self.client.get_issue(key).await?;
            let done = issue.fields["status"]["statusCategory"]["key"] == "done"
                || super::same_name(&issue.status, &self.resolved_status);
            Ok(if done {
                TicketState::Closed {
                    state: issue.status,
                }
            } else {
                TicketState::Open
            })
        })
    }
}

impl Desk {
    /// Comments the note on the issue `key` (unless it holds it already)
    /// and moves the issue where the outcome says.
    async fn tell(&self, key: &str, update: TicketUpdate) -> Result<(), WriteError> {
        if let Some(note) = &update.note
            && !self.client.has_comment(key, &note.marker).await?
        {
            self.client.add_comment(key, &note.text).await?;
        }
        let status = match &update.outcome {
            Some(Outcome::Resolved { .. }) => &self.resolved_status,
            // A failed run moves its issue only when its runbook names a
            // state for it; a group alone is not a status in Jira.
            Some(Outcome::NeedsPerson { state: Some(_), .. }) => &self.needs_human_status,
            _ => return Ok(()),
        };
        self.client.transition_to(key, status).await.map(drop)
    }
}
