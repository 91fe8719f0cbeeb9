//! Telling the ticket and the chat channels what happens: each run started
//! from a ticket writes its story back as notes, in order, once each, and
//! leaves the ticket resolved or with a person when the runbook says so; a
//! run that waits for a person asks each chat channel for approval and
//! tells it the run's progress.
//!
//! What is said, and when, is decided here; how it is said is the
//! integration's, behind the seam ([`connectors::TicketSystem`],
//! [`connectors::ChatChannel`]): this module names no outside system.
//!
//! The run's audit records are the queue. A write-back keeps a cursor (the
//! last record written); an instance claims it under a lease when records
//! lie beyond, writes them as one note, and moves the cursor — fenced, so
//! an instance that stalled cannot move it back. Before calling the ticket
//! system it stores the batch's end; every note carries a marker naming
//! its records, so a retry after a crash finds a note that already made it
//! and does not post it twice. The ticket system being down only holds the
//! cursor back: the run itself never waits for it.

use connectors::{
    ApprovalDecision, ApprovalRequest, ApproverLink, ChatChannel, Note, Outcome, Progress,
    RequestStep, TicketUpdate,
};
use domain::RecordKind;
use jiff::{SignedDuration, Timestamp};
use serde_json::json;
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

/// How many people an approval card for a stage that names nobody links
/// at most. Each link is about 600 bytes and the smallest chat message
/// limit is about 28 KB; a directory larger than this gets a request
/// without links rather than one the channel drops.
const MAX_ANY_APPROVER_LINKS: usize = 20;

impl Runtime {
    /// Whether any system to write back to is configured.
    pub(crate) fn writes_back(&self) -> bool {
        self.inner.integrations.writes_back()
    }

    /// Wakes the write-back loop, when there is a system to write to.
    pub(crate) fn records_written(&self) {
        if self.writes_back() {
            self.inner.records_written.notify_one();
        }
    }

    /// Remembers that a write-back may be tried again at `at`, so that the
    /// loop wakes then: the earliest retry still ahead is kept.
    fn retry_writeback_at(&self, at: Timestamp) {
        let now = self.now();
        let mut earliest = self
            .inner
            .writeback_retry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if earliest.is_none_or(|earliest| earliest <= now || at < earliest) {
            *earliest = Some(at);
        }
    }

    /// How long the write-back loop may sleep: until the earliest retry
    /// this instance scheduled, and at most `safety_net`. A retry that is
    /// due is forgotten as the loop goes round for it.
    fn writeback_sleep(&self, safety_net: std::time::Duration) -> std::time::Duration {
        let mut earliest = self
            .inner
            .writeback_retry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(at) = *earliest else {
            return safety_net;
        };
        match std::time::Duration::try_from(at.duration_since(self.now())) {
            Ok(until) if !until.is_zero() => until.min(safety_net),
            // Due now (or passed): go round for it once.
            _ => {
                *earliest = None;
                std::time::Duration::ZERO
            }
        }
    }

    /// Writes runs' stories back to their tickets as records are written:
    /// woken by this instance's commits, at the retry time of a write-back
    /// it failed, and with a slow look every few seconds for what others
    /// wrote.
    pub fn spawn_writeback_loop(&self) -> Option<tokio::task::JoinHandle<()>> {
        if !self.writes_back() {
            return None;
        }
        let runtime = self.clone();
        let safety_net =
            std::time::Duration::from_millis(self.inner.lease_ttl_ms.clamp(1_000, 5_000));
        Some(tokio::spawn(async move {
            loop {
                if let Err(error) = runtime.write_back_due().await {
                    tracing::warn!(error = %error, "writing back failed");
                }
                let sleep = runtime.writeback_sleep(safety_net);
                tokio::select! {
                    () = tokio::time::sleep(sleep) => {}
                    () = runtime.inner.records_written.notified() => {}
                }
            }
        }))
    }

    /// Writes back what is due, as long as there is something: claims,
    /// writes, moves cursors. Returns how many write-backs it handled. The
    /// write-back loop calls it; so may whoever moves a manual clock.
    pub async fn write_back_due(&self) -> Result<usize> {
        let store = &self.inner.store;
        let ttl = (self.inner.lease_ttl_ms as i64).max(CLAIM_MIN_MS);
        let mut handled = 0;
        loop {
            let claimed = store
                .claim_writebacks(&self.inner.instance, self.now(), ttl, CLAIM_BATCH)
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
        let integrations = &self.inner.integrations;
        let written = if let Some(system) = integrations.ticket_system(&claim.system) {
            let update = self.ticket_update(&run, &batch);
            system.write(&claim.destination, update).await
        } else if let Some(chat) = integrations.chat(&claim.system) {
            self.tell_chat(chat.as_ref(), &run, &batch).await
        } else {
            Err(connectors::WriteError::Permanent {
                message: format!("no `{}` is configured to write back to", claim.system),
            })
        };
        match written {
            Ok(()) => {
                let caught_up = records.len() == batch.len();
                let finished = caught_up
                    && (run.state.is_terminal()
                        || (ends_the_run(&batch)
                            && self.story_complete(&claim.run_id, to_seq).await?));
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
                let retry_at = self.now() + wait;
                store.fail_writeback(claim, &message, retry_at).await?;
                self.retry_writeback_at(retry_at);
            }
        }
        Ok(())
    }

    /// Whether the story of `run_id` ends at record `to_seq`: the run is
    /// finished (read first) and no record lies beyond (read second). Asked
    /// when a batch written for a run read as still going held the run's
    /// end: without it, that write-back would never be marked done, as
    /// nothing beyond its cursor would bring it back.
    async fn story_complete(&self, run_id: &str, to_seq: i64) -> Result<bool> {
        if !self.load_run(run_id).await?.state.is_terminal() {
            return Ok(false);
        }
        Ok(self
            .inner
            .store
            .run_audit_after(run_id, to_seq, 1)
            .await?
            .is_empty())
    }

    /// What `batch` tells the ticket of `run`: the note (with where a
    /// failed run got to), where the ticket goes now, and the approvals
    /// and denials people gave.
    fn ticket_update(&self, run: &store::RunRow, batch: &[&AuditRow]) -> TicketUpdate {
        let runbook = self.inner.catalog.get(&run.plan.runbook_id);
        let mut note = note(&run.id, batch);
        let failed = batch.iter().any(|row| {
            row.kind == RecordKind::RunState
                && matches!(
                    row.detail["to"].as_str(),
                    Some("needs_human" | "rolled_back")
                )
        });
        if failed && let Some(note) = &mut note {
            note.add_line(&last_success(run));
        }
        // Held back by a limit on how often: what the runbook fixes keeps
        // coming back, and the ticket goes to people as a failed run's does.
        let held_back = batch.iter().any(|row| row.kind == RecordKind::RunHeldBack);
        let close_code = runbook.and_then(|runbook| runbook.writeback.close_code.clone());
        let succeeded = batch.iter().any(|row| took_effect(row));
        let outcome = match (close_code, runbook.map(|runbook| &runbook.on_failure)) {
            (Some(close_code), _) if succeeded => Some(Outcome::Resolved {
                close_code,
                close_notes: format!(
                    "Resolved by opsgate run {}: the fix ran and was verified.",
                    run.id
                ),
            }),
            (_, Some(on_failure))
                if (failed || held_back)
                    && (on_failure.ticket_state.is_some() || on_failure.escalate_to.is_some()) =>
            {
                Some(Outcome::NeedsPerson {
                    state: on_failure.ticket_state.clone(),
                    group: on_failure
                        .escalate_to
                        .as_deref()
                        .and_then(|group| group.strip_prefix("group:"))
                        .map(str::to_owned),
                })
            }
            _ => None,
        };
        TicketUpdate {
            run_id: run.id.clone(),
            note,
            outcome,
            decisions: self.approval_decisions(&run.id, batch),
        }
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
}

impl Runtime {
    /// Tells `chat` about `batch`: an approval request for each stage that
    /// opened in it, and what else happened as one message.
    async fn tell_chat(
        &self,
        chat: &dyn ChatChannel,
        run: &store::RunRow,
        batch: &[&AuditRow],
    ) -> std::result::Result<(), connectors::WriteError> {
        // The run was read before its records: a stage that opened since is
        // in `batch` while the run read still says where it was before.
        // The records and the state they lead to were committed together,
        // so the run read again says whether it still waits.
        let waiting = if stage_opened(batch) && run.state != domain::RunState::AwaitingApproval {
            std::borrow::Cow::Owned(self.load_run(&run.id).await.map_err(|error| {
                connectors::WriteError::Retryable {
                    message: format!("reading run {} again: {error}", run.id),
                    retry_after: None,
                }
            })?)
        } else {
            std::borrow::Cow::Borrowed(run)
        };
        if stage_opened(batch)
            && waiting.state == domain::RunState::AwaitingApproval
            && let Some(request) = self
                .approval_request(&waiting, chat.links_approvers())
                .await
                .map_err(|error| connectors::WriteError::Retryable {
                    message: format!("issuing the approval request's links: {error}"),
                    retry_after: None,
                })?
        {
            chat.ask_approval(&request).await?;
        }
        let lines = progress_lines(batch);
        if lines.is_empty() {
            return Ok(());
        }
        chat.tell_progress(&Progress {
            run_id: run.id.clone(),
            runbook_id: run.plan.runbook_id.clone(),
            runbook_title: run.plan.title.clone(),
            state: run.state,
            targets: run.plan.targets.clone(),
            lines,
        })
        .await
    }

    /// The approval request for the stage `run` waits on: what will run,
    /// where, why, and who may approve. For a channel that links approvers
    /// (`page_links`), a signed page for each of the stage's approvers,
    /// valid until the run's approval expires (a card posted at nine still
    /// works at noon if the run still waits); every link is audited as
    /// `approval.link_issued` — like a link issued through the API, with
    /// the system as its issuer and without its token — before the request
    /// can be posted, and without approval links configured there is no
    /// request to post (`None`). A channel with buttons of its own gets the
    /// request without links.
    ///
    /// A stage that names nobody in particular (anyone with the approver
    /// role) gets a link for each person of the directory who may approve
    /// it, as [`Runtime::any_approvers`] finds them. A single page shared
    /// by everyone would need the page to learn who is deciding, and it
    /// cannot: a link's approver is who decides, so a shared page would
    /// decide as nobody in particular, past separation of duties. Without a
    /// directory, or with more such people than a card holds, the request
    /// asks for approval without links and says who may give it.
    async fn approval_request(
        &self,
        run: &store::RunRow,
        page_links: bool,
    ) -> Result<Option<ApprovalRequest>> {
        let pages = match (page_links, self.inner.approval_pages.as_ref()) {
            (true, None) => return Ok(None),
            (true, Some(pages)) => Some(pages),
            (false, _) => None,
        };
        let progress = &run.machine.progress;
        let Some(stage) = progress.stages.get(progress.stage) else {
            return Ok(None);
        };
        let mut request = ApprovalRequest {
            run_id: run.id.clone(),
            runbook_title: run.plan.title.clone(),
            steps: run
                .plan
                .steps
                .iter()
                .map(|step| RequestStep {
                    name: step.id.clone(),
                    action: step.call.action.clone(),
                    request: step.call.describe(),
                })
                .collect(),
            targets: run.plan.targets.clone(),
            reasons: run.decision.reasons.clone(),
            stage: stage.name.clone(),
            stage_label: format!(
                "{} ({} of {})",
                stage.name,
                progress.stage + 1,
                progress.stages.len()
            ),
            approvers: stage.eligible.clone(),
            links: Vec::new(),
        };
        let Some(pages) = pages else {
            if request.approvers.is_empty() {
                request.approvers = vec!["anyone with the approver role".to_owned()];
            }
            return Ok(Some(request));
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
        let mut issued = Vec::with_capacity(linked.len());
        // A link lets its holder decide as its approver: only someone who
        // holds the approver role gets one. A stage's person without it is
        // still named as who may approve.
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
            request.links.push(ApproverLink {
                approver: person.to_owned(),
                url: page.url,
            });
        }
        if !issued.is_empty() {
            self.inner
                .store
                .append_audit(Some(&run.id), &issued, self.now())
                .await?;
        }
        request.approvers = approvers;
        Ok(Some(request))
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

/// Whether `batch` holds a run reaching a final state.
fn ends_the_run(batch: &[&AuditRow]) -> bool {
    batch.iter().any(|row| {
        row.kind == RecordKind::RunState
            && row.detail["to"]
                .as_str()
                .and_then(|to| domain::RunState::parse(to).ok())
                .is_some_and(domain::RunState::is_terminal)
    })
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

/// 1 s after the first failure, doubling, at most 5 minutes: a ticket
/// system that blinked is caught up at once, one that is down for an hour
/// is asked every 5 minutes.
fn backoff(failures: i64) -> SignedDuration {
    let doublings = failures.clamp(0, 9) as u32;
    SignedDuration::from_secs((1_i64 << doublings).min(300))
}

/// Where a failed run got to, for the person taking the ticket over.
fn last_success(run: &store::RunRow) -> String {
    let progress = &run.machine.progress;
    // A rollout's note lists its done, failed and untouched targets.
    if let (Some(rollout), Some(outcomes)) = (&run.plan.rollout, &progress.rollout) {
        let done = outcomes
            .outcomes
            .iter()
            .filter(|outcome| outcome.state == engine::TargetState::Done)
            .count();
        return format!("Rollout: {done} of {} targets done.", rollout.targets.len());
    }
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
