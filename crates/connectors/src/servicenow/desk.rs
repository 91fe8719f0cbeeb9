//! ServiceNow as a ticket system: a run's story as work notes on its
//! incident or requested item, the record resolved (or closed complete)
//! when the fix worked, handed to a resolver group when it did not, and
//! the approvers' decisions recorded on a requested item's own approvals.
//!
//! Every state code and table name of ServiceNow that a write-back needs
//! lives here.

use serde_json::{Value, json};

use super::ServiceNow;
use crate::WriteError;
use crate::seam::{
    ApprovalDecision, BoxFuture, Note, Outcome, TicketState, TicketSystem, TicketUpdate,
};

/// The table incidents live in.
const INCIDENT_TABLE: &str = "incident";

/// The table of requested catalog items (`RITM…`).
pub(crate) const REQUEST_ITEM_TABLE: &str = "sc_req_item";

/// The table of approvals of catalog items and changes.
const APPROVAL_TABLE: &str = "sysapproval_approver";

/// An incident's state once resolved.
const RESOLVED_STATE: &str = "6";

/// A requested item's state for work done ("Closed Complete").
const CLOSED_COMPLETE_STATE: &str = "3";

/// ServiceNow, written back to.
pub(crate) struct Desk {
    pub(crate) client: ServiceNow,
}

impl TicketSystem for Desk {
    fn name(&self) -> &'static str {
        super::NAME
    }

    /// Its own events' tickets, and a ticket another source's event names
    /// (`fields.ticket`, with `fields.ticket_table` for a table other than
    /// `incident`): an incident by its number, a requested item as
    /// `table/number`. Only the tables whose tickets opsgate works are
    /// written to: the table comes from whoever sent the event (an
    /// operator, an agent's proposal), and a name like `change_request`
    /// must not have opsgate's notes and states written into another kind
    /// of record.
    fn ticket_of(&self, event: &domain::Event) -> Option<String> {
        let ticket = event.fields.get("ticket")?.as_str()?;
        match event.fields["ticket_table"].as_str() {
            None | Some(INCIDENT_TABLE) => Some(ticket.to_owned()),
            Some(REQUEST_ITEM_TABLE) => Some(format!("{REQUEST_ITEM_TABLE}/{ticket}")),
            Some(other) => {
                tracing::warn!(
                    event = %event.id,
                    table = other,
                    "a ticket in a table opsgate does not work is not written to"
                );
                None
            }
        }
    }

    fn write<'a>(
        &'a self,
        ticket: &'a str,
        update: TicketUpdate,
    ) -> BoxFuture<'a, Result<(), WriteError>> {
        Box::pin(self.send(ticket, update))
    }

    fn state_of<'a>(&'a self, ticket: &'a str) -> BoxFuture<'a, Result<TicketState, WriteError>> {
        Box::pin(async move {
            let (table, number) = ticket_of(ticket);
            let record = self
                .client
                .find_by_number(table, number)
                .await?
                .ok_or_else(|| WriteError::Permanent {
                    message: format!("no {table} numbered {number} in ServiceNow"),
                })?;
            let state = record["state"].as_str().unwrap_or_default();
            Ok(match closed_state_name(table, state) {
                Some(name) => TicketState::Closed {
                    state: name.to_owned(),
                },
                None => TicketState::Open,
            })
        })
    }
}

/// The name of `state` when it closes a record of `table`: an incident
/// Resolved (6), Closed (7) or Canceled (8); a requested item Closed
/// Complete (3), Closed Incomplete (4) or Closed Skipped (7).
fn closed_state_name(table: &str, state: &str) -> Option<&'static str> {
    match (table == REQUEST_ITEM_TABLE, state) {
        (false, "6") => Some("Resolved"),
        (false, "7") => Some("Closed"),
        (false, "8") => Some("Canceled"),
        (true, "3") => Some("Closed Complete"),
        (true, "4") => Some("Closed Incomplete"),
        (true, "7") => Some("Closed Skipped"),
        _ => None,
    }
}

impl Desk {
    /// Writes to the record: the note (unless the record holds it
    /// already) with the outcome's fields, the reassignment, and the
    /// approvers' decisions on a requested item's approval records.
    async fn send(&self, ticket: &str, update: TicketUpdate) -> Result<(), WriteError> {
        let (table, number) = ticket_of(ticket);
        let TicketUpdate {
            mut note,
            outcome,
            decisions,
            ..
        } = update;
        // Only a requested item has approval records to decide.
        let decisions = if table == REQUEST_ITEM_TABLE {
            decisions
        } else {
            Vec::new()
        };
        let mut fields = serde_json::Map::new();
        let mut reassign_to = None;
        match &outcome {
            Some(Outcome::Resolved { .. }) if table == REQUEST_ITEM_TABLE => {
                // A requested item is closed complete; it has no resolution code.
                fields.insert("state".to_owned(), json!(CLOSED_COMPLETE_STATE));
            }
            Some(Outcome::Resolved { close_code, .. }) => {
                fields.insert("state".to_owned(), json!(RESOLVED_STATE));
                fields.insert("close_code".to_owned(), json!(close_code));
            }
            Some(Outcome::NeedsPerson { state, group }) => {
                if let Some(state) = state {
                    fields.insert("state".to_owned(), json!(state_code(table, state)));
                }
                reassign_to = group.as_deref();
            }
            None => {}
        }
        if let Some(Outcome::Resolved { close_notes, .. }) = &outcome {
            fields.insert("close_notes".to_owned(), json!(close_notes));
        }
        // A batch with nothing for the ticket (attempts starting, links
        // issued for a chat card) costs no call.
        if note.is_none() && fields.is_empty() && reassign_to.is_none() && decisions.is_empty() {
            return Ok(());
        }
        let record = self
            .client
            .find_by_number(table, number)
            .await?
            .ok_or_else(|| WriteError::Permanent {
                message: format!("no {table} numbered {number} in ServiceNow"),
            })?;
        let record_id = sys_id(&record).ok_or_else(|| WriteError::Permanent {
            message: format!("{table} {number} came without a sys_id"),
        })?;
        if let Some(group) = reassign_to {
            let found = self
                .client
                .find_where("sys_user_group", &[("name", group)], 1)
                .await?;
            match found.first().and_then(sys_id) {
                Some(group_id) => {
                    fields.insert("assignment_group".to_owned(), json!(group_id));
                    fields.insert("assigned_to".to_owned(), json!(""));
                    add_line(&mut note, &format!("Reassigned to {group}."));
                }
                None => add_line(
                    &mut note,
                    &format!(
                        "Could not reassign to {group}: ServiceNow has no group of that name."
                    ),
                ),
            }
        }
        for decision in &decisions {
            if let Some(line) = self.decide_catalog_approval(&record_id, decision).await? {
                add_line(&mut note, &line);
            }
        }
        if let Some(note) = &note
            && !self.client.has_work_note(&record_id, &note.marker).await?
        {
            fields.insert("work_notes".to_owned(), json!(note.text));
        }
        if fields.is_empty() {
            return Ok(());
        }
        self.client
            .update(table, &record_id, &Value::Object(fields))
            .await
    }

    /// Sets the approver's waiting `sysapproval_approver` record of a
    /// requested item to approved or rejected, so that the catalog's own
    /// workflow moves on. Returns a line for the work note when there was
    /// nothing to decide (no such user, no approval waiting for them).
    async fn decide_catalog_approval(
        &self,
        item_sys_id: &str,
        decision: &ApprovalDecision,
    ) -> Result<Option<String>, WriteError> {
        let person = &decision.person;
        let Some(email) = &decision.email else {
            return Ok(Some(format!(
                "No ServiceNow approval recorded for {person}: the directory has no email for them."
            )));
        };
        let users = self
            .client
            .find_where("sys_user", &[("email", email)], 1)
            .await?;
        let Some(user) = users.first().and_then(sys_id) else {
            return Ok(Some(format!(
                "No ServiceNow approval recorded for {person}: no user has the email {email}."
            )));
        };
        let approvals = self
            .client
            .find_where(
                APPROVAL_TABLE,
                &[("sysapproval", item_sys_id), ("approver", &user)],
                10,
            )
            .await?;
        let state = if decision.approved {
            "approved"
        } else {
            "rejected"
        };
        // Already decided means a retry after the update went through.
        if approvals.iter().any(|approval| approval["state"] == state) {
            return Ok(None);
        }
        let waiting: Vec<&Value> = approvals
            .iter()
            .filter(|approval| approval["state"] == "requested")
            .collect();
        if waiting.is_empty() {
            return Ok(Some(format!(
                "No ServiceNow approval was waiting for {person} on this item."
            )));
        }
        for approval in waiting {
            if let Some(approval_id) = sys_id(approval) {
                self.client
                    .update(
                        APPROVAL_TABLE,
                        &approval_id,
                        &json!({"state": state, "comments": decision.comment}),
                    )
                    .await?;
            }
        }
        Ok(None)
    }
}

fn add_line(note: &mut Option<Note>, line: &str) {
    if let Some(note) = note {
        note.add_line(line);
    }
}

/// A write-back's table and record number: the number (`INC0012345`, an
/// incident) or `table/number` (`sc_req_item/RITM0010001`).
pub(crate) fn ticket_of(ticket: &str) -> (&str, &str) {
    ticket.split_once('/').unwrap_or((INCIDENT_TABLE, ticket))
}

/// The value of `on_failure.ticket_state` in `table`: a state's number is
/// written as it is; `needs_human` is "in progress", in both tables.
fn state_code<'s>(table: &str, state: &'s str) -> &'s str {
    match (table, state) {
        (_, "new") => "1",
        (_, "in_progress" | "needs_human") => "2",
        (INCIDENT_TABLE, "on_hold") => "3",
        // A requested item has no "on hold": it stays in progress.
        (_, "on_hold") => "2",
        (_, number) => number,
    }
}

/// A record's `sys_id`, whether display values came with it or not.
pub(crate) fn sys_id(record: &Value) -> Option<String> {
    let field = &record["sys_id"];
    field
        .as_str()
        .or_else(|| field["value"].as_str())
        .map(str::to_owned)
}
