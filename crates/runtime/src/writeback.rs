//! Telling the ticket what happens: each run started from a ticket writes
//! its story back as work notes, in order, once each, and resolves the
//! ticket when the runbook says so.
//!
//! The run's audit records are the queue. A write-back keeps a cursor (the
//! last record written); an instance claims it under a lease when records
//! lie beyond, writes them as one note, and moves the cursor — fenced, so
//! an instance that stalled cannot move it back. Before calling the ticket
//! system it stores the batch's end; every note carries a marker naming
//! its records, so a retry after a crash finds a note that already made it
//! and does not post it twice. The ticket system being down only holds the
//! cursor back: the run itself never waits for it.

use domain::RecordKind;
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use store::{AuditRow, ClaimedWriteback};

use crate::{Result, Runtime, SYSTEM_ACTOR};

/// How many write-backs one pass claims, and how many records one note
/// covers at most.
const CLAIM_BATCH: u32 = 16;

/// How long a write-back claim lasts at least. A claim is not renewed while
/// the ticket system answers, so it outlasts the calls of one note (each
/// bounded by the connector's timeout); an instance that dies holding one
/// delays that ticket's notes by this much, never more.
const CLAIM_MIN_MS: i64 = 120_000;
const RECORDS_PER_NOTE: u32 = 200;

/// The write-back system of ServiceNow tickets.
pub(crate) const SERVICENOW: &str = "servicenow";

/// The write-back system of the Teams channel. A webhook cannot be asked
/// what it already shows, so a card posted just before a crash may be
/// posted again: chat is told at least once, the ticket exactly once.
pub(crate) const TEAMS: &str = "teams";

/// The write-back system of the Slack channel: approval requests with
/// buttons, and progress. Told at least once, as Teams is.
pub(crate) const SLACK: &str = "slack";

/// The write-back system of Jira issues: comments, and transitions looked
/// up by the status they lead to.
pub(crate) const JIRA: &str = "jira";

/// How many people an approval card for a stage that names nobody links
/// at most. Each link is about 600 bytes and a Teams message holds about
/// 28 KB; a directory larger than this gets a card without buttons rather
/// than one Teams drops.
const MAX_ANY_APPROVER_LINKS: usize = 20;

/// The ServiceNow table incidents live in.
const INCIDENT_TABLE: &str = "incident";

/// The ServiceNow table of requested catalog items (`RITM…`).
pub(crate) const REQUEST_ITEM_TABLE: &str = "sc_req_item";

/// The ServiceNow table of approvals of catalog items and changes.
const APPROVAL_TABLE: &str = "sysapproval_approver";

/// ServiceNow's incident state for a resolved incident.
const RESOLVED_STATE: &str = "6";

/// ServiceNow's requested-item state for work done ("Closed Complete").
const CLOSED_COMPLETE_STATE: &str = "3";

impl Runtime {
    /// Writes back what is due, as long as there is something: claims,
    /// writes, moves cursors. Returns how many write-backs it handled.
    pub(crate) async fn write_back_due(&self) -> Result<usize> {
        let store = &self.inner.store;
        let ttl = (self.inner.lease_ttl_ms as i64).max(CLAIM_MIN_MS);
        let mut handled = 0;
        loop {
            let claimed = store
                .claim_writebacks(&self.inner.instance, Timestamp::now(), ttl, CLAIM_BATCH)
                .await?;
            if claimed.is_empty() {
                return Ok(handled);
            }
            for claim in claimed {
                handled += 1;
                if let Err(error) = self.write_back(&claim).await {
                    tracing::warn!(run_id = %claim.run_id, error = %error, "write-back stopped; its claim lapses and it is tried again");
                }
            }
        }
    }

    async fn write_back(&self, claim: &ClaimedWriteback) -> Result<()> {
        let store = &self.inner.store;
        // The run first, its records second: a run read as finished has all
        // of its story in the records read after.
        let run = self.load_run(&claim.run_id).await?;
        let records = store
            .run_audit_after(&claim.run_id, claim.cursor_seq, RECORDS_PER_NOTE)
            .await?;
        let Some(last) = records.last() else {
            store
                .finish_writeback_batch(claim, claim.cursor_seq, false)
                .await?;
            return Ok(());
        };
        // A batch begun before (and maybe written) is written again as it was.
        let to_seq = claim
            .pending_to_seq
            .filter(|pending| *pending > claim.cursor_seq)
            .unwrap_or(last.seq);
        if claim.pending_to_seq != Some(to_seq) {
            store.begin_writeback_batch(claim, to_seq).await?;
        }
        let batch: Vec<&AuditRow> = records.iter().filter(|row| row.seq <= to_seq).collect();
        let runbook = self.inner.catalog.get(&run.plan.runbook_id);
        let close_code = runbook.and_then(|runbook| runbook.writeback.close_code.clone());
        let on_failure = runbook.map(|runbook| runbook.on_failure.clone());
        let mut note = note(&claim.run_id, &batch);
        let failed = batch.iter().any(|row| {
            row.kind == RecordKind::RunState
                && matches!(
                    row.detail["to"].as_str(),
                    Some("needs_human" | "rolled_back")
                )
        });
        if failed && let Some(note) = &mut note {
            note.add_line(&last_success(&run));
        }
        let mut fields = serde_json::Map::new();
        let (table, _) = ticket_of(&claim.destination);
        let mut reassign_to = None;
        if failed && let Some(on_failure) = &on_failure {
            if let Some(state) = on_failure.ticket_state.as_deref() {
                fields.insert("state".to_owned(), json!(ticket_state(table, state)));
            }
            reassign_to = on_failure
                .escalate_to
                .as_deref()
                .and_then(|group| group.strip_prefix("group:"));
        }
        let succeeded = batch.iter().any(|row| took_effect(row));
        if succeeded && let Some(close_code) = &close_code {
            // A requested item is closed complete; it has no resolution code.
            if table == REQUEST_ITEM_TABLE {
                fields.insert("state".to_owned(), json!(CLOSED_COMPLETE_STATE));
            } else {
                fields.insert("state".to_owned(), json!(RESOLVED_STATE));
                fields.insert("close_code".to_owned(), json!(close_code));
            }
            fields.insert(
                "close_notes".to_owned(),
                json!(format!(
                    "Resolved by opsgate run {}: the fix ran and was verified.",
                    claim.run_id
                )),
            );
        }
        let written = match (claim.system.as_str(), &self.inner.servicenow) {
            (SERVICENOW, Some(servicenow)) => {
                let ticket = Ticket {
                    destination: &claim.destination,
                    fields,
                    reassign_to,
                    // Only a requested item has approval records to decide.
                    decisions: if table == REQUEST_ITEM_TABLE {
                        self.approval_decisions(&claim.run_id, &batch)
                    } else {
                        Vec::new()
                    },
                };
                self.send(servicenow, ticket, note).await
            }
            (JIRA, _) if self.inner.jira.is_some() => {
                let failed_status = on_failure
                    .as_ref()
                    .is_some_and(|on_failure| on_failure.ticket_state.is_some());
                let move_to = match (succeeded && close_code.is_some(), failed && failed_status) {
                    (true, _) => Some(JiraMove::Resolved),
                    (_, true) => Some(JiraMove::NeedsHuman),
                    _ => None,
                };
                self.tell_jira(&claim.destination, note, move_to).await
            }
            (TEAMS, _) if self.inner.teams.is_some() => self.tell_teams(&run, &batch).await,
            (SLACK, _) if self.inner.slack.is_some() => self.tell_slack(&run, &batch).await,
            (system, _) => Err(connectors::WriteError::Permanent {
                message: format!("no `{system}` is configured to write back to"),
            }),
        };
        match written {
            Ok(()) => {
                let finished = run.state.is_terminal() && records.len() == batch.len();
                store
                    .finish_writeback_batch(claim, to_seq, finished)
                    .await?;
                tracing::debug!(run_id = %claim.run_id, destination = %claim.destination, to_seq, "written back");
            }
            Err(error) => {
                let (message, retry_after) = match &error {
                    connectors::WriteError::Retryable {
                        message,
                        retry_after,
                    } => (
                        message.clone(),
                        retry_after.and_then(|after| SignedDuration::try_from(after).ok()),
                    ),
                    connectors::WriteError::Permanent { message } => (message.clone(), None),
                };
                let wait = retry_after.unwrap_or_else(|| backoff(claim.failures));
                tracing::warn!(run_id = %claim.run_id, destination = %claim.destination, error = %message, "write-back failed; retrying later");
                store
                    .fail_writeback(claim, &message, Timestamp::now() + wait)
                    .await?;
            }
        }
        Ok(())
    }

    /// Writes to the ticket: `note` (unless the ticket holds it already)
    /// with the ticket's fields, the reassignment, and the approvers'
    /// decisions on a requested item's approval records.
    async fn send(
        &self,
        servicenow: &connectors::ServiceNow,
        ticket: Ticket<'_>,
        mut note: Option<Note>,
    ) -> std::result::Result<(), connectors::WriteError> {
        // A batch with nothing for the ticket (attempts starting, links
        // issued for a chat card) costs no call: the cursor just moves on.
        if note.is_none()
            && ticket.fields.is_empty()
            && ticket.reassign_to.is_none()
            && ticket.decisions.is_empty()
        {
            return Ok(());
        }
        let (table, number) = ticket_of(ticket.destination);
        let record = servicenow
            .find_by_number(table, number)
            .await?
            .ok_or_else(|| connectors::WriteError::Permanent {
                message: format!("no {table} numbered {number} in ServiceNow"),
            })?;
        let record_id = sys_id(&record).ok_or_else(|| connectors::WriteError::Permanent {
            message: format!("{table} {number} came without a sys_id"),
        })?;
        let mut fields = ticket.fields;
        if let Some(group) = ticket.reassign_to {
            let found = servicenow
                .find_where("sys_user_group", &[("name", group)], 1)
                .await?;
            match found.first().and_then(sys_id) {
                Some(group_id) => {
                    fields.insert("assignment_group".to_owned(), json!(group_id));
                    fields.insert("assigned_to".to_owned(), json!(""));
                    if let Some(note) = &mut note {
                        note.add_line(&format!("Reassigned to {group}."));
                    }
                }
                None => {
                    if let Some(note) = &mut note {
                        note.add_line(&format!(
                            "Could not reassign to {group}: ServiceNow has no group of that name."
                        ));
                    }
                }
            }
        }
        for decision in &ticket.decisions {
            let outcome = self
                .decide_catalog_approval(servicenow, &record_id, decision)
                .await?;
            if let (Some(line), Some(note)) = (outcome, &mut note) {
                note.add_line(&line);
            }
        }
        if let Some(note) = &note
            && !servicenow.has_work_note(&record_id, &note.marker).await?
        {
            fields.insert("work_notes".to_owned(), json!(note.text));
        }
        if fields.is_empty() {
            return Ok(());
        }
        servicenow
            .update(table, &record_id, &Value::Object(fields))
            .await
    }

    /// The approvals and denials in `batch`, by directory person.
    fn approval_decisions(&self, run_id: &str, batch: &[&AuditRow]) -> Vec<ApprovalDecision> {
        batch
            .iter()
            .filter_map(|row| {
                let approved = match RecordKind::parse(&row.kind)? {
                    RecordKind::ApprovalGranted => true,
                    RecordKind::ApprovalDenied => false,
                    _ => return None,
                };
                let by = row.detail["by"].as_str()?;
                let person = by.strip_prefix("user:").unwrap_or(by);
                let email = self
                    .inner
                    .directory
                    .as_ref()
                    .and_then(|directory| directory.person(person))
                    .and_then(|person| person.email.clone());
                Some(ApprovalDecision {
                    person: person.to_owned(),
                    email,
                    approved,
                    comment: format!(
                        "{} in opsgate, run {run_id}{}",
                        if approved { "Approved" } else { "Rejected" },
                        row.detail["stage"]
                            .as_str()
                            .map(|stage| format!(", stage {stage}"))
                            .unwrap_or_default()
                    ),
                })
            })
            .collect()
    }

    /// Sets the approver's waiting `sysapproval_approver` record of a
    /// requested item to approved or rejected, so that the catalog's own
    /// workflow moves on. Returns a line for the work note when there was
    /// nothing to decide (no such user, no approval waiting for them).
    async fn decide_catalog_approval(
        &self,
        servicenow: &connectors::ServiceNow,
        item_sys_id: &str,
        decision: &ApprovalDecision,
    ) -> std::result::Result<Option<String>, connectors::WriteError> {
        let person = &decision.person;
        let Some(email) = &decision.email else {
            return Ok(Some(format!(
                "No ServiceNow approval recorded for {person}: the directory has no email for them."
            )));
        };
        let users = servicenow
            .find_where("sys_user", &[("email", email)], 1)
            .await?;
        let Some(user) = users.first().and_then(sys_id) else {
            return Ok(Some(format!(
                "No ServiceNow approval recorded for {person}: no user has the email {email}."
            )));
        };
        let approvals = servicenow
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
                servicenow
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

/// Where a Jira issue moves at the end of its run.
#[derive(Debug, Clone, Copy)]
enum JiraMove {
    Resolved,
    NeedsHuman,
}

impl Runtime {
    /// Comments `note` on the issue `key` (unless it holds it already) and
    /// moves the issue, through whichever transition leads to the status
    /// configured for the move; Jira's transition ids differ between
    /// workflows, so they are looked up each time.
    async fn tell_jira(
        &self,
        key: &str,
        note: Option<Note>,
        move_to: Option<JiraMove>,
    ) -> std::result::Result<(), connectors::WriteError> {
        let desk = self
            .inner
            .jira
            .as_ref()
            .expect("checked by the caller: a Jira site is configured");
        if let Some(note) = &note
            && !desk.client.has_comment(key, &note.marker).await?
        {
            desk.client.add_comment(key, &note.text).await?;
        }
        let status = match move_to {
            Some(JiraMove::Resolved) => &desk.resolved_status,
            Some(JiraMove::NeedsHuman) => &desk.needs_human_status,
            None => return Ok(()),
        };
        desk.client.transition_to(key, status).await.map(drop)
    }
}

/// What one ServiceNow write-back writes besides its note.
struct Ticket<'a> {
    destination: &'a str,
    fields: serde_json::Map<String, Value>,
    /// The resolver group a failed run hands the ticket to.
    reassign_to: Option<&'a str>,
    decisions: Vec<ApprovalDecision>,
}

/// A person's approval or denial, to record on a requested item.
struct ApprovalDecision {
    person: String,
    email: Option<String>,
    approved: bool,
    comment: String,
}

/// A ServiceNow write-back's table and record number: its destination is
/// the number (`INC0012345`, an incident) or `table/number`
/// (`sc_req_item/RITM0010001`).
pub(crate) fn ticket_of(destination: &str) -> (&str, &str) {
    destination
        .split_once('/')
        .unwrap_or((INCIDENT_TABLE, destination))
}

/// The value of `on_failure.ticket_state` in `table`: a state's number is
/// written as it is; `needs_human` is "in progress", in both tables.
fn ticket_state<'s>(table: &str, state: &'s str) -> &'s str {
    match (table, state) {
        (_, "new") => "1",
        (_, "in_progress" | "needs_human") => "2",
        (INCIDENT_TABLE, "on_hold") => "3",
        // A requested item has no "on hold": it stays in progress.
        (_, "on_hold") => "2",
        (_, number) => number,
    }
}

impl Runtime {
    /// Posts `batch` to the Teams channel: an approval card for each stage
    /// that opened in it (with a signed page per approver), and a progress
    /// card for the rest of what happened.
    async fn tell_teams(
        &self,
        run: &store::RunRow,
        batch: &[&AuditRow],
    ) -> std::result::Result<(), connectors::WriteError> {
        let teams = self.inner.teams.as_ref().expect("checked by the caller");
        if stage_opened(batch)
            && run.state == domain::RunState::AwaitingApproval
            && let Some(card) = self.approval_card(run).await.map_err(|error| {
                connectors::WriteError::Retryable {
                    message: format!("issuing the approval card's links: {error}"),
                    retry_after: None,
                }
            })?
        {
            teams
                .post(&connectors::teams::message(
                    connectors::teams::approval_card(&card),
                ))
                .await?;
        }
        let lines = progress_lines(batch);
        if lines.is_empty() {
            return Ok(());
        }
        let card = connectors::teams::ProgressCard {
            run_id: run.id.clone(),
            runbook_title: run.plan.title.clone(),
            state: run.state,
            what_happened: lines.join("\n"),
            facts: vec![
                connectors::teams::Fact {
                    title: "Runbook".to_owned(),
                    value: run.plan.runbook_id.clone(),
                },
                connectors::teams::Fact {
                    title: "Targets".to_owned(),
                    value: run.plan.targets.join(", "),
                },
            ],
            run_url: None,
        };
        teams
            .post(&connectors::teams::message(
                connectors::teams::progress_card(&card),
            ))
            .await
    }

    /// Posts `batch` to the Slack channel: an approval request with Approve
    /// and Deny buttons for each stage that opened in it, and what else
    /// happened as one message.
    async fn tell_slack(
        &self,
        run: &store::RunRow,
        batch: &[&AuditRow],
    ) -> std::result::Result<(), connectors::WriteError> {
        let slack = self.inner.slack.as_ref().expect("checked by the caller");
        let progress = &run.machine.progress;
        if stage_opened(batch)
            && run.state == domain::RunState::AwaitingApproval
            && let Some(stage) = progress.stages.get(progress.stage)
        {
            let message = connectors::approval_message(
                &run.id,
                &stage.name,
                &run.plan.title,
                &run.plan.targets,
                &run.decision.reasons,
                None,
            );
            slack.client.post_message(&slack.channel, &message).await?;
        }
        let lines = progress_lines(batch);
        if lines.is_empty() {
            return Ok(());
        }
        let text = format!(
            "*{}* (run {})\n{}",
            run.plan.title,
            run.id,
            lines.join("\n")
        );
        slack
            .client
            .post_message(&slack.channel, &json!({ "text": text }))
            .await
            .map(|_| ())
    }

    /// The approval card for the stage `run` waits on: what will run, where,
    /// why, and a signed page for each of the stage's approvers, valid until
    /// the run's approval expires (a card posted at nine still works at
    /// noon if the run still waits). Every link is audited as
    /// `approval.link_issued` — like a link issued through the API, with
    /// the system as its issuer and without its token — before the card can
    /// be posted. `None` when no page can be signed (no approval links
    /// configured).
    ///
    /// A stage that names nobody in particular (anyone with the approver
    /// role) gets a link for each person of the directory who may approve
    /// it, as [`Runtime::any_approvers`] finds them. A single page shared
    /// by everyone ([`connectors::teams::ApprovalLinks::Shared`]) would
    /// need the page to learn who is deciding, and it cannot: a link's
    /// approver is who decides, so a shared page would decide as nobody in
    /// particular, past separation of duties. Without a directory, or with
    /// more such people than a card holds, the card asks for approval
    /// without buttons and says who may give it.
    async fn approval_card(
        &self,
        run: &store::RunRow,
    ) -> Result<Option<connectors::teams::ApprovalCard>> {
        let Some(pages) = self.inner.approval_pages.as_ref() else {
            return Ok(None);
        };
        let progress = &run.machine.progress;
        let Some(stage) = progress.stages.get(progress.stage) else {
            return Ok(None);
        };
        let holders = self.approver_role_holders().await?;
        let (approvers, with_links) = if stage.eligible.is_empty() {
            let people = self.any_approvers(run, &holders).await?;
            match people.len() {
                0 => (vec!["anyone with the approver role".to_owned()], false),
                many if many > MAX_ANY_APPROVER_LINKS => (
                    vec![format!(
                        "any of {many} people in the directory (too many to link here: each asks for their own link with their approver token)"
                    )],
                    false,
                ),
                _ => (people, true),
            }
        } else {
            (stage.eligible.clone(), true)
        };
        let linked: &[String] = if with_links { &approvers } else { &[] };
        let expires_at = self.approval_expiry(&run.id).await?;
        let mut links = Vec::with_capacity(linked.len());
        let mut issued = Vec::with_capacity(linked.len());
        // A link lets its holder decide as its approver: only someone who
        // holds the approver role gets one. A stage's person without it is
        // still named on the card as who may approve.
        for person in linked
            .iter()
            .filter_map(|actor| actor.strip_prefix("user:"))
            .filter(|person| holders.contains(*person))
        {
            let page = pages.page(
                &run.id,
                &stage.name,
                person,
                &run.plan.plan_hash,
                expires_at,
            );
            issued.push(store::AuditEntry::new(
                RecordKind::ApprovalLinkIssued,
                SYSTEM_ACTOR,
                json!({
                    "approver": person, "stage": stage.name,
                    "plan_hash": run.plan.plan_hash, "expires_at": page.expires_at.as_second(),
                }),
            ));
            links.push(connectors::teams::ApproverLink {
                approver: person.to_owned(),
                url: page.url,
            });
        }
        if !issued.is_empty() {
            self.inner
                .store
                .append_audit(Some(&run.id), &issued, Timestamp::now())
                .await?;
        }
        Ok(Some(connectors::teams::ApprovalCard {
            run_id: run.id.clone(),
            runbook_title: run.plan.title.clone(),
            steps: run
                .plan
                .steps
                .iter()
                .map(|step| connectors::teams::CardStep {
                    name: step.id.clone(),
                    action: step.call.action.clone(),
                    request: step.call.describe(),
                })
                .collect(),
            targets: run.plan.targets.clone(),
            reasons: run.decision.reasons.clone(),
            approval_stage: format!(
                "{} ({} of {})",
                stage.name,
                progress.stage + 1,
                progress.stages.len()
            ),
            approvers,
            links: connectors::teams::ApprovalLinks::PerApprover(links),
        }))
    }

    /// The people (as actors, `user:alice`) who may approve the open stage
    /// of `run` when it names nobody: the directory's people who hold the
    /// approver role (an unrevoked approver token in their name: a link
    /// must not give anyone more power than they have), but the requester,
    /// who may not approve their own run, and those who approved already,
    /// as the runtime would refuse them. Empty without a directory, which
    /// is what says who is a person.
    async fn any_approvers(
        &self,
        run: &store::RunRow,
        approvers: &std::collections::HashSet<String>,
    ) -> Result<Vec<String>> {
        let Some(directory) = self.inner.directory.as_ref() else {
            return Ok(Vec::new());
        };
        let requester = self.requester(run).await?;
        let progress = &run.machine.progress;
        Ok(directory
            .people()
            .iter()
            .filter(|person| approvers.contains(&person.id))
            .map(|person| format!("user:{}", person.id))
            .filter(|actor| !requester.is(actor))
            .filter(|actor| {
                engine::approval_refusal(&progress.stages, progress.stage, actor).is_none()
            })
            .collect())
    }

    /// When the approval `run_id` waits for expires: its pending expiry
    /// timer, the one that ends the wait. `None` when it never expires.
    async fn approval_expiry(&self, run_id: &str) -> Result<Option<Timestamp>> {
        let timers = self.inner.store.timers(run_id).await?;
        Ok(timers
            .iter()
            .find(|timer| {
                timer.kind == engine::TimerKind::ApprovalExpiry && timer.status == "pending"
            })
            .map(|timer| timer.due_at))
    }
}

/// Whether an approval stage opened within `batch` (the first, or the next
/// after one passed): chat asks for it.
fn stage_opened(batch: &[&AuditRow]) -> bool {
    batch.iter().any(|row| {
        row.kind == RecordKind::ApprovalRequested || row.kind == RecordKind::ApprovalStagePassed
    })
}

/// What else a chat channel hears about `batch`: the ticket's lines, less
/// the approval request its own message makes.
fn progress_lines(batch: &[&AuditRow]) -> Vec<String> {
    batch
        .iter()
        .filter(|row| row.kind != RecordKind::ApprovalRequested)
        .filter_map(|row| line(row))
        .collect()
}

/// A record's `sys_id`, whether display values came with it or not.
fn sys_id(record: &Value) -> Option<String> {
    let field = &record["sys_id"];
    field
        .as_str()
        .or_else(|| field["value"].as_str())
        .map(str::to_owned)
}

/// 1 s after the first failure, doubling, at most 5 minutes: a ticket
/// system that blinked is caught up at once, one that is down for an hour
/// is asked every 5 minutes.
fn backoff(failures: i64) -> SignedDuration {
    let doublings = failures.clamp(0, 9) as u32;
    SignedDuration::from_secs((1_i64 << doublings).min(300))
}

/// One work note: its text, and the marker that names its records.
pub(crate) struct Note {
    pub text: String,
    pub marker: String,
}

impl Note {
    /// Adds `line` before the marker, which stays last.
    fn add_line(&mut self, line: &str) {
        let at = self.text.rfind("\n\n").unwrap_or(self.text.len());
        self.text.insert_str(at, &format!("\n{line}"));
    }
}

/// Where a failed run got to, for the person taking the ticket over.
fn last_success(run: &store::RunRow) -> String {
    let progress = &run.machine.progress;
    match progress.completed.last() {
        Some(&index) => format!(
            "Last successful step: {} ({} of {} steps done).",
            run.plan.steps[index].id,
            progress.completed.len(),
            run.plan.steps.len()
        ),
        None => "No step succeeded.".to_owned(),
    }
}

/// Whether `row` says the run's change was made (and verified): the run
/// succeeded, or a time-bound change is in effect. Undoing a time-bound
/// change at its end (`rolling_back` → `succeeded`) is not a second success.
fn took_effect(row: &AuditRow) -> bool {
    row.kind == RecordKind::RunState
        && match row.detail["to"].as_str() {
            Some("in_effect") => true,
            Some("succeeded") => row.detail["from"] != "rolling_back",
            _ => false,
        }
}

/// The work note for `batch`, or `None` when none of its records is news
/// to the people on the ticket (an attempt starting, a retry scheduled).
pub(crate) fn note(run_id: &str, batch: &[&AuditRow]) -> Option<Note> {
    let lines: Vec<String> = batch.iter().filter_map(|row| line(row)).collect();
    if lines.is_empty() {
        return None;
    }
    let first = batch.first().map_or(0, |row| row.seq);
    let last = batch.last().map_or(0, |row| row.seq);
    let marker = format!("[opsgate {run_id} #{first}-{last}]");
    let mut text = lines.join("\n");
    text.push_str("\n\n");
    text.push_str(&marker);
    Some(Note { text, marker })
}

/// What a person on the ticket reads about one record.
fn line(row: &AuditRow) -> Option<String> {
    let record = domain::Told {
        kind: RecordKind::parse(&row.kind)?,
        detail: &row.detail,
        actor: &row.actor,
        run_id: row.run_id.as_deref(),
    };
    domain::narrate(record, domain::Voice::Ticket)
}
