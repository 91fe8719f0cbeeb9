//! Freshservice as a ticket system: a run's story as private notes on its
//! ticket, the ticket Resolved when the fix worked, and Open or Pending
//! with a group when a person must take over. Freshservice's status
//! numbers live here and in `mod.rs`, nowhere else.

use serde_json::{Map, json};

use super::{Freshservice, status, ticket_number};
use crate::WriteError;
use crate::seam::{BoxFuture, Note, Outcome, TicketState, TicketSystem, TicketUpdate};

/// Freshservice, written back to.
pub(crate) struct Desk {
    pub(crate) client: Freshservice,
}

impl TicketSystem for Desk {
    fn name(&self) -> &'static str {
        super::NAME
    }

    /// The ticket of one of its own events: `fields.ticket`, its number.
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

    /// Closed when the ticket is Resolved or Closed.
    fn state_of<'a>(&'a self, ticket: &'a str) -> BoxFuture<'a, Result<TicketState, WriteError>> {
        Box::pin(async move {
            let id = ticket_number(ticket).ok_or_else(|| WriteError::Permanent {
                message: format!("`{ticket}` is not a Freshservice ticket number"),
            })?;
            let found = self.client.ticket(id).await?;
            let code = found["status"].as_u64().unwrap_or_default();
            Ok(match code {
                status::RESOLVED | status::CLOSED => TicketState::Closed {
                    state: status::label(code).to_owned(),
                },
                _ => TicketState::Open,
            })
        })
    }
}

impl Desk {
    /// Adds the note (unless the ticket holds it already), then moves the
    /// ticket: a retry after the note went through finds it by its marker
    /// and only moves the ticket.
    async fn tell(&self, ticket: &str, update: TicketUpdate) -> Result<(), WriteError> {
        let id = ticket_number(ticket).ok_or_else(|| WriteError::Permanent {
            message: format!("`{ticket}` is not a Freshservice ticket number"),
        })?;
        let mut note = update.note;
        let mut fields = Map::new();
        match &update.outcome {
            Some(Outcome::Resolved { close_notes, .. }) => {
                fields.insert("status".to_owned(), json!(status::RESOLVED));
                add_line(&mut note, close_notes);
            }
            Some(Outcome::NeedsPerson { state, group }) => {
                if let Some(state) = state {
                    fields.insert("status".to_owned(), json!(status_for(state)?));
                }
                if let Some(group) = group {
                    match self.client.group_named(group).await? {
                        Some(group_id) => {
                            fields.insert("group_id".to_owned(), json!(group_id));
                            add_line(&mut note, &format!("Handed to the group {group}."));
                        }
                        None => add_line(
                            &mut note,
                            &format!(
                                "Could not hand the ticket to {group}: Freshservice has no group of that name."
                            ),
                        ),
                    }
                }
            }
            None => {}
        }
        if let Some(note) = &note
            && !self.client.has_conversation_with(id, &note.marker).await?
        {
            self.client.add_private_note(id, &html(&note.text)).await?;
        }
        if fields.is_empty() {
            return Ok(());
        }
        self.client
            .update_ticket(id, &serde_json::Value::Object(fields))
            .await
    }
}

fn add_line(note: &mut Option<Note>, line: &str) {
    if let Some(note) = note {
        note.add_line(line);
    }
}

/// The status `on_failure.ticket_state` names: `new`, `in_progress` and
/// `needs_human` are Open (a person picks it up), `on_hold` is Pending, a
/// number is taken as Freshservice's own (a custom status).
fn status_for(state: &str) -> Result<u64, WriteError> {
    match state {
        "new" | "in_progress" | "needs_human" => Ok(status::OPEN),
        "on_hold" => Ok(status::PENDING),
        number => number.parse().map_err(|_| WriteError::Permanent {
            message: format!(
                "on_failure.ticket_state `{number}` is no Freshservice status: give new, in_progress, needs_human, on_hold or a status number"
            ),
        }),
    }
}

/// A note's text as the HTML body Freshservice takes: escaped, each line
/// break a `<br>`.
fn html(text: &str) -> String {
    let mut body = String::with_capacity(text.len() + 16);
    for character in text.chars() {
        match character {
            '&' => body.push_str("&amp;"),
            '<' => body.push_str("&lt;"),
            '>' => body.push_str("&gt;"),
            '"' => body.push_str("&quot;"),
            '\n' => body.push_str("<br>"),
            other => body.push(other),
        }
    }
    body
}

#[cfg(test)]
mod tests {
    use super::{html, status_for};

    #[test]
    fn a_note_is_escaped_html() {
        assert_eq!(
            html("Step <restart> ran & \"passed\"\n\n[opsgate run-1 #1-2]"),
            "Step &lt;restart&gt; ran &amp; &quot;passed&quot;<br><br>[opsgate run-1 #1-2]"
        );
    }

    #[test]
    fn failure_states_in_freshservice_statuses() {
        assert_eq!(status_for("needs_human").unwrap(), 2);
        assert_eq!(status_for("on_hold").unwrap(), 3);
        assert_eq!(status_for("7").unwrap(), 7);
        assert!(status_for("waiting").is_err());
    }
}
