//! The running system: carries out the engine's effects with the store and
//! the connectors.
//!
//! One driver task per executing run feeds the engine, commits each
//! transition, and only then performs the effect it authorises (a call, a
//! timer). Waiting is a `sleep_until` on the exact due time, never a poll.
//! Every committed transition is also published on a broadcast channel
//! ([`Runtime::subscribe`]), which is how the demo tells each run's story and
//! how the API's long-poll learns a run finished.
//!
//! A run is driven only under its lease in the store (which also holds its
//! targets): claimed before driving, renewed by a heartbeat, carried as a
//! fencing token on every commit, released at the end. [`Runtime::recover`]
//! claims the runs nobody holds — after a restart, or after another
//! instance died — and the engine decides what is safe to repeat.
//!
//! Durable timers (an approval's expiry) live in the store, not in memory:
//! [`Runtime::spawn_timer_loop`] sleeps until the earliest is due, claims
//! it under a lease, and fires it with the run's transition in one commit,
//! so it fires once across the cluster and still fires after a restart.

mod anchor;
mod approvals;
mod ids;
mod intake;
mod reads;
mod writeback;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use domain::RunState;
use engine::{Effect, Input};
use jiff::Timestamp;
use runbook::{Catalog, TemplateEnv};
use store::Store;
use tokio::sync::broadcast;

pub use anchor::{AnchorConfig, AnchorLoop, AnchorSink};
pub use ids::new_id;
pub use intake::{DryRun, IntakeReport, dry_run};
pub use policy::ChatPlatform;
pub use reads::{
    AttemptRow, AuditEntry, AuditLog, AuditRow, EventRow, Reads, RunDetail, RunFilter, RunRow,
    TimerRow, TokenRow, Tokens, WritebackRow,
};
/// The store's error, as the runtime's services report it.
pub use store::Error as StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Engine(#[from] engine::Error),
    #[error("run `{run_id}` does not exist")]
    UnknownRun { run_id: String },
    /// An approval that separation of duties forbids; it is audited.
    #[error("{reason}")]
    ApprovalRefused { reason: String },
    /// An event that cannot be taken in as it is; nothing was stored.
    #[error("{message}")]
    InvalidEvent { message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One committed transition, as published to subscribers. For a run that
/// another instance settled, `records` is empty.
#[derive(Debug, Clone)]
pub struct RunUpdate {
    pub run_id: String,
    pub state: RunState,
    pub reason: Option<String>,
    /// The audit records of the transition: kind and detail.
    pub records: Vec<(domain::RecordKind, serde_json::Value)>,
}

pub struct Config {
    pub catalog: Catalog,
    pub template_env: TemplateEnv,
    pub connectors: connectors::Connectors,
    /// How long a run's lease lasts without renewal. The driving instance
    /// renews it every third of this; another instance takes the run over
    /// once it has expired.
    pub lease_ttl_ms: u64,
    /// A limit on runs over all runbooks together, judged by the gate
    /// like a runbook's own `rate_limit`.
    pub global_rate_limit: Option<runbook::RateLimit>,
    /// The people who may approve, when the organisation's directory is
    /// configured: a person approves only under their directory id.
    pub directory: Option<policy::Directory>,
    /// The organisation's Rego policies, when configured: they take part in
    /// every decision and can only tighten it.
    pub policies: Option<policy::PolicySet>,
    /// The outside systems the config plugged in: event sources, ticket
    /// systems runs write back to, chat channels asked for approvals.
    pub integrations: connectors::Integrations,
    /// Mints signed approval-page URLs for chat messages.
    pub approval_pages: Option<Arc<dyn ApprovalPages>>,
}

/// The people of the directory, found by email; nobody without one.
pub struct DirectoryPeople<'a>(Option<&'a policy::Directory>);

impl connectors::People for DirectoryPeople<'_> {
    fn by_email(&self, email: &str) -> Option<String> {
        self.0
            .and_then(|directory| directory.find_by_email(email))
            .map(|person| person.id.clone())
    }
}

/// Signed approval pages, as chat messages link to them. The server holds
/// the key; the runtime only asks for a URL, and audits what it was given.
pub trait ApprovalPages: Send + Sync {
    /// The page on which `approver` (a directory id) decides `stage` of
    /// `run_id`, bound to `plan_hash`. Its link works until `expires_at` —
    /// the run's approval expiry, so that a link posted early still works
    /// while the run waits — as far as the signer lets a link live; without
    /// an expiry, for the signer's default lifetime.
    fn page(
        &self,
        run_id: &str,
        stage: &str,
        approver: &str,
        plan_hash: &str,
        expires_at: Option<Timestamp>,
    ) -> ApprovalPage;
}

/// A signed approval page, minted for one approver.
#[derive(Debug, Clone)]
pub struct ApprovalPage {
    /// The page's address; its token is the approver's credential, so it
    /// goes to the chat message and nowhere else (never to the audit).
    pub url: String,
    /// When the link stops working, as signed into it.
    pub expires_at: Timestamp,
}

impl Config {
    pub const DEFAULT_LEASE_TTL_MS: u64 = 15_000;
}

/// The runtime. Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    catalog: Catalog,
    template_env: TemplateEnv,
    connectors: connectors::Connectors,
    /// This process's name in leases and audit records.
    instance: String,
    lease_ttl_ms: u64,
    global_rate_limit: Option<runbook::RateLimit>,
    directory: Option<policy::Directory>,
    policies: Option<policy::PolicySet>,
    integrations: connectors::Integrations,
    approval_pages: Option<Arc<dyn ApprovalPages>>,
    /// Runs that have a driver task in this process.
    driving: Mutex<HashSet<String>>,
    updates: broadcast::Sender<RunUpdate>,
    /// Wakes the timer loop: a timer was asked for, here or elsewhere.
    timers_changed: tokio::sync::Notify,
    /// Wakes the write-back loop: a run wrote audit records here.
    records_written: tokio::sync::Notify,
}

/// A person's decision on a run awaiting approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Approve,
    Deny,
}

impl Verdict {
    fn verb(self) -> &'static str {
        match self {
            Verdict::Approve => "approve",
            Verdict::Deny => "deny",
        }
    }
}

/// How many due timers the timer loop claims at once.
const TIMER_BATCH: u32 = 32;

/// The system's own name in audit records.
const SYSTEM_ACTOR: &str = "opsgate";

impl Runtime {
    pub fn new(store: Store, config: Config) -> Runtime {
        let (updates, _) = broadcast::channel(1024);
        Runtime {
            inner: Arc::new(Inner {
                store,
                catalog: config.catalog,
                template_env: config.template_env,
                connectors: config.connectors,
                instance: new_id("opsgate"),
                lease_ttl_ms: config.lease_ttl_ms,
                global_rate_limit: config.global_rate_limit,
                directory: config.directory,
                policies: config.policies,
                integrations: config.integrations,
                approval_pages: config.approval_pages,
                driving: Mutex::new(HashSet::new()),
                updates,
                timers_changed: tokio::sync::Notify::new(),
                records_written: tokio::sync::Notify::new(),
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    /// The outside systems plugged in.
    pub fn integrations(&self) -> &connectors::Integrations {
        &self.inner.integrations
    }

    /// The directory of people, when one is configured.
    pub fn directory(&self) -> Option<&policy::Directory> {
        self.inner.directory.as_ref()
    }

    /// The directory, as an event source looks people up in it.
    pub fn people(&self) -> DirectoryPeople<'_> {
        DirectoryPeople(self.inner.directory.as_ref())
    }

    /// Every committed transition from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<RunUpdate> {
        self.inner.updates.subscribe()
    }

    /// Starts a driver for every run that should be executing but that no
    /// live instance holds: after a restart, or after another instance
    /// stopped renewing its leases. Returns how many runs were found; each
    /// driver still has to win its run's claim.
    pub async fn recover(&self) -> Result<usize> {
        let claimable = self.inner.store.claimable_runs(Timestamp::now()).await?;
        let count = claimable.len();
        for run_id in claimable {
            self.spawn_driver(run_id, Input::Recover, Decided::Earlier);
        }
        Ok(count)
    }

    /// Runs [`Runtime::recover`] every half lease: the safety net that
    /// picks up runs whose instance died. New work does not wait for it:
    /// intake and approvals start their runs directly, and an instance that
    /// releases a run announces it to the others (on PostgreSQL), which look
    /// at once. Runs settled by other instances are re-published to this
    /// instance's subscribers (with their state only; the records are in the
    /// store).
    pub fn spawn_takeover_loop(&self) -> tokio::task::JoinHandle<()> {
        let runtime = self.clone();
        let period = std::time::Duration::from_millis((self.inner.lease_ttl_ms / 2).max(100));
        tokio::spawn(async move {
            let signals = match runtime.inner.store.work_signals().await {
                Ok(signals) => signals,
                Err(error) => {
                    tracing::warn!(error = %error, "cannot listen for work announcements; relying on the periodic check");
                    None
                }
            };
            if let Some(mut signals) = signals {
                let listener = runtime.clone();
                tokio::spawn(async move {
                    loop {
                        match signals.next().await {
                            Ok(store::Signal::WorkReleased) => listener.nudge(),
                            Ok(store::Signal::TimerScheduled) => listener.timers_changed(),
                            // Settled elsewhere: tell this instance's waiters.
                            Ok(store::Signal::RunSettled { run_id, state }) => {
                                let update = RunUpdate {
                                    run_id,
                                    state,
                                    reason: None,
                                    records: Vec::new(),
                                };
                                let _ = listener.inner.updates.send(update);
                            }
                            Err(error) => {
                                tracing::warn!(error = %error, "work announcements interrupted");
                                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                            }
                        }
                    }
                });
            }
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if let Err(error) = runtime.recover().await {
                    tracing::warn!(error = %error, "looking for runs to take over failed");
                }
            }
        })
    }

    /// Fires durable timers as they fall due, on whichever instance claims
    /// each first, and otherwise sleeps until the earliest one — woken
    /// early when a timer is asked for here, or announced by another
    /// instance. Timers that fell due while no instance ran fire at once.
    pub fn spawn_timer_loop(&self) -> tokio::task::JoinHandle<()> {
        let runtime = self.clone();
        // A look at least this often, in case an announcement was missed.
        let safety_net = std::time::Duration::from_millis(self.inner.lease_ttl_ms.max(1_000));
        // And never more often than this: a timer another instance is
        // firing stays due until that instance commits.
        let breather = std::time::Duration::from_millis(20);
        tokio::spawn(async move {
            loop {
                if let Err(error) = runtime.fire_due_timers().await {
                    tracing::warn!(error = %error, "firing due timers failed");
                }
                let wait = match runtime.inner.store.next_timer_check().await {
                    Ok(Some(next)) => {
                        std::time::Duration::try_from(next.duration_since(Timestamp::now()))
                            .unwrap_or_default()
                            .min(safety_net)
                    }
                    Ok(None) => safety_net,
                    Err(error) => {
                        tracing::warn!(error = %error, "reading the next timer failed");
                        safety_net
                    }
                };
                tokio::select! {
                    () = tokio::time::sleep(wait.max(breather)) => {}
                    () = runtime.inner.timers_changed.notified() => {}
                }
            }
        })
    }

    /// Wakes the timer loop to look at the next due time again.
    fn timers_changed(&self) {
        self.inner.timers_changed.notify_one();
    }

    async fn fire_due_timers(&self) -> Result<()> {
        let ttl = self.inner.lease_ttl_ms as i64;
        loop {
            let claimed = self
                .inner
                .store
                .claim_due_timers(&self.inner.instance, Timestamp::now(), ttl, TIMER_BATCH)
                .await?;
            let more = claimed.len() == TIMER_BATCH as usize;
            for timer in claimed {
                let run_id = timer.run_id.clone();
                if let Err(error) = self.fire_timer(timer).await {
                    tracing::warn!(run_id = %run_id, error = %error, "a timer did not fire; its claim lapses and it is tried again");
                }
            }
            if !more {
                return Ok(());
            }
        }
    }

    /// Feeds a claimed timer to its run and commits the firing with the
    /// run's transition; a timer the run can no longer take is disarmed.
    async fn fire_timer(&self, timer: store::ClaimedTimer) -> Result<()> {
        let store = &self.inner.store;
        // A run that changes between our read and our write (an approval
        // racing the expiry) is read again; the store settles who was first.
        for _ in 0..3 {
            let run = store
                .run(&timer.run_id)
                .await?
                .ok_or_else(|| Error::UnknownRun {
                    run_id: timer.run_id.clone(),
                })?;
            let now = Timestamp::now();
            let input = Input::TimerFired(timer.kind);
            let transition = engine::step(&run.machine, &run.plan, input, now, rand::random()).ok();
            match store
                .fire_timer(
                    &timer,
                    run.revision,
                    transition.as_ref(),
                    &self.inner.instance,
                    now,
                )
                .await
            {
                Ok(store::TimerFiring::Fired) => {
                    let transition = transition.expect("a timer fires only with a transition");
                    tracing::info!(run_id = %timer.run_id, timer = timer.kind.as_str(), state = %transition.run.state, "timer fired");
                    self.publish(&timer.run_id, &transition);
                    if transition.effect == Some(Effect::Begin) {
                        self.spawn_driver(timer.run_id.clone(), Input::Begin, Decided::Earlier);
                    }
                    return Ok(());
                }
                Ok(store::TimerFiring::Disarmed | store::TimerFiring::AlreadySettled) => {
                    tracing::debug!(run_id = %timer.run_id, timer = timer.kind.as_str(), "timer no longer applies");
                    return Ok(());
                }
                Err(store::Error::Conflict { .. }) => continue,
                Err(store::Error::Fenced { .. }) => {
                    tracing::warn!(run_id = %timer.run_id, timer = timer.kind.as_str(), "another instance claimed the timer");
                    return Ok(());
                }
                Err(error) => return Err(error.into()),
            }
        }
        Ok(())
    }

    /// Approves a run awaiting approval; once enough distinct people have,
    /// it starts executing at once. Separation of duties holds here,
    /// whatever the caller checked: only approvers (people, and in the
    /// directory when there is one) decide, and nobody approves the run
    /// their own event started or approves twice. A refusal is audited.
    pub async fn approve(
        &self,
        run_id: &str,
        approver: &domain::Principal,
        comment: Option<String>,
    ) -> Result<RunState> {
        self.decide(run_id, approver, Verdict::Approve, comment)
            .await
    }

    /// Denies a run awaiting approval. Whoever may approve may deny,
    /// including the requester (withdrawing their own request).
    pub async fn deny(
        &self,
        run_id: &str,
        approver: &domain::Principal,
        comment: Option<String>,
    ) -> Result<RunState> {
        self.decide(run_id, approver, Verdict::Deny, comment).await
    }

    async fn decide(
        &self,
        run_id: &str,
        approver: &domain::Principal,
        verdict: Verdict,
        comment: Option<String>,
    ) -> Result<RunState> {
        let store = &self.inner.store;
        let run = self.load_run(run_id).await?;
        let actor = approver.actor();
        if let Some(reason) = self.refusal(&run, approver, verdict).await? {
            let refusal = store::AuditEntry::new(
                domain::RecordKind::ApprovalRefused,
                &actor,
                serde_json::json!({"reason": reason, "plan_hash": run.plan.plan_hash}),
            );
            store
                .append_audit(Some(run_id), &[refusal], Timestamp::now())
                .await?;
            return Err(Error::ApprovalRefused { reason });
        }
        let by = actor.clone();
        let input = match verdict {
            Verdict::Approve => Input::Approve { by, comment },
            Verdict::Deny => Input::Deny { by, comment },
        };
        self.apply_to(run, input, &actor).await
    }

    /// Why separation of duties forbids `approver` this verdict, if it does.
    async fn refusal(
        &self,
        run: &store::RunRow,
        approver: &domain::Principal,
        verdict: Verdict,
    ) -> Result<Option<String>> {
        let actor = approver.actor();
        let verb = verdict.verb();
        if approver.kind() == domain::PrincipalKind::Agent {
            return Ok(Some(format!(
                "{actor} is an agent: agents may propose, never {verb}"
            )));
        }
        if approver.role != domain::Role::Approver {
            return Ok(Some(format!(
                "{actor} has the role {}, not approver",
                approver.role
            )));
        }
        // Whichever way the decision came (a token, a signed link, a chat
        // button), it counts only from someone who holds the role now.
        if !self.holds_approver_role(&approver.name).await? {
            return Ok(Some(format!(
                "wrong person: {} does not hold the approver role",
                approver.name
            )));
        }
        if let Some(directory) = &self.inner.directory
            && directory.person(&approver.name).is_none()
        {
            return Ok(Some(format!(
                "wrong person: {actor} is not a person in the directory"
            )));
        }
        if verdict == Verdict::Deny {
            return Ok(None);
        }
        if self.requester(run).await?.is(&actor) {
            return Ok(Some(format!(
                "{actor} requested this run and cannot {verb} it (separation of duties)"
            )));
        }
        // Who the open stage takes (the engine checks this again).
        let progress = &run.machine.progress;
        if run.state == RunState::AwaitingApproval {
            return Ok(engine::approval_refusal(
                &progress.stages,
                progress.stage,
                &actor,
            ));
        }
        Ok(None)
    }

    /// Why `approver` may not approve `run` now, if they may not: the
    /// rules [`Runtime::approve`] applies (no agent, the approver role, a
    /// person of the directory, not the requester, the open stage's
    /// people). A signed link is issued only to someone this allows.
    pub async fn approval_refusal(
        &self,
        run: &store::RunRow,
        approver: &domain::Principal,
    ) -> Result<Option<String>> {
        self.refusal(run, approver, Verdict::Approve).await
    }

    /// Whether `actor` (`user:bob`) asked for `run`: posted its event, or
    /// is named in it as the requester.
    pub async fn is_requester(&self, run: &store::RunRow, actor: &str) -> Result<bool> {
        Ok(self.requester(run).await?.is(actor))
    }

    /// Whether `person` holds the approver role now: an unrevoked approver
    /// token in their name. A signed link lets its holder decide as its
    /// approver, so it is issued (and honoured) only for someone who could
    /// decide with their own token.
    pub async fn holds_approver_role(&self, person: &str) -> Result<bool> {
        Ok(self
            .inner
            .store
            .holds_role(person, domain::Role::Approver)
            .await?)
    }

    /// The principals holding an unrevoked approver token.
    pub(crate) async fn approver_role_holders(&self) -> Result<std::collections::HashSet<String>> {
        Ok(self
            .inner
            .store
            .tokens()
            .await?
            .into_iter()
            .filter(|token| token.role == domain::Role::Approver && token.revoked_at.is_none())
            .map(|token| token.principal)
            .collect())
    }

    /// Who asked for `run`, as its event tells.
    pub(crate) async fn requester(&self, run: &store::RunRow) -> Result<Requester> {
        let event = self.inner.store.event(&run.event_id).await?;
        Ok(Requester {
            poster: event.as_ref().and_then(|event| event.requester.clone()),
            named: event.as_ref().and_then(|event| {
                event
                    .event
                    .fields
                    .get("requested_by")
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_owned)
            }),
        })
    }

    pub async fn cancel(&self, run_id: &str, by: &str, reason: String) -> Result<RunState> {
        let run = self.load_run(run_id).await?;
        let input = Input::Cancel {
            by: by.to_owned(),
            reason,
        };
        self.apply_to(run, input, by).await
    }

    async fn load_run(&self, run_id: &str) -> Result<store::RunRow> {
        self.inner
            .store
            .run(run_id)
            .await?
            .ok_or_else(|| Error::UnknownRun {
                run_id: run_id.to_owned(),
            })
    }

    /// Feeds an input from outside (a person, a resolved alert) to `run`,
    /// as read, and commits it; a concurrent change makes it a conflict.
    async fn apply_to(&self, run: store::RunRow, input: Input, actor: &str) -> Result<RunState> {
        let store = &self.inner.store;
        let run_id = run.id.as_str();
        let now = Timestamp::now();
        let transition = match engine::step(&run.machine, &run.plan, input, now, rand::random()) {
            Ok(transition) => transition,
            Err(error) => {
                let refusal = store::AuditEntry::new(
                    domain::RecordKind::RunInputRefused,
                    actor,
                    serde_json::json!({"reason": error.to_string(), "state": run.state.as_str()}),
                );
                store.append_audit(Some(run_id), &[refusal], now).await?;
                return Err(error.into());
            }
        };
        store
            .commit(run_id, run.revision, &transition, actor, now)
            .await?;
        self.publish(run_id, &transition);
        let state = transition.run.state;
        if transition.effect == Some(Effect::Begin) {
            self.spawn_driver(run_id.to_owned(), Input::Begin, Decided::Earlier);
        }
        Ok(state)
    }

    /// Tells subscribers about a committed transition, and the timer loop
    /// about the timers it asked for.
    fn publish(&self, run_id: &str, transition: &engine::Transition) {
        let update = RunUpdate {
            run_id: run_id.to_owned(),
            state: transition.run.state,
            reason: transition.run.reason.clone(),
            records: transition
                .records
                .iter()
                .map(|record| (record.kind, record.detail.clone()))
                .collect(),
        };
        // No subscriber is fine: the store is the record, this is a courtesy.
        let _ = self.inner.updates.send(update);
        if !transition.timers.is_empty() {
            self.timers_changed();
        }
        self.records_written();
    }

    /// Whether any system to write back to is configured.
    fn writes_back(&self) -> bool {
        self.inner.integrations.writes_back()
    }

    /// Wakes the write-back loop, when there is a system to write to.
    pub(crate) fn records_written(&self) {
        if self.writes_back() {
            self.inner.records_written.notify_one();
        }
    }

    /// Writes runs' stories back to their tickets as records are written:
    /// woken by this instance's commits, with a slow look every few seconds
    /// for what others wrote and for write-backs whose backoff is over.
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
                tokio::select! {
                    () = tokio::time::sleep(safety_net) => {}
                    () = runtime.inner.records_written.notified() => {}
                }
            }
        }))
    }

    /// Drives the run in a task of its own, if this instance can claim its
    /// lease; the lease is renewed while the task runs and given back after.
    pub(crate) fn spawn_driver(&self, run_id: String, first: Input, decided: Decided) {
        if !self
            .inner
            .driving
            .lock()
            .expect("driver set lock")
            .insert(run_id.clone())
        {
            return;
        }
        let runtime = self.clone();
        tokio::spawn(async move {
            let store = &runtime.inner.store;
            let ttl = runtime.inner.lease_ttl_ms as i64;
            match store
                .claim_run(&run_id, &runtime.inner.instance, Timestamp::now(), ttl)
                .await
            {
                Ok(Some(lease)) => {
                    let (renewed, heartbeat) =
                        runtime.spawn_heartbeat(run_id.clone(), lease.clone());
                    match runtime.drive(&run_id, first, decided, &renewed).await {
                        Ok(()) => {}
                        // Expected after a stall: another instance has the run now.
                        Err(Error::Store(store::Error::Fenced { .. })) => {
                            tracing::warn!(run_id = %run_id, "fenced out: another instance took the run over");
                        }
                        Err(error) => {
                            tracing::error!(run_id = %run_id, error = %error, "run driver stopped")
                        }
                    }
                    heartbeat.abort();
                    let lease = renewed.borrow().clone();
                    if let Some(lease) = lease {
                        match store.release_lease(&run_id, &lease).await {
                            // Runs that waited for this one's targets can go now.
                            Ok(()) => runtime.nudge(),
                            Err(error) => {
                                tracing::warn!(run_id = %run_id, error = %error, "could not release the lease")
                            }
                        }
                    }
                }
                Ok(None) => {
                    tracing::debug!(run_id = %run_id, "the run, or one of its targets, is held elsewhere")
                }
                Err(error) => {
                    tracing::error!(run_id = %run_id, error = %error, "could not claim the run")
                }
            }
            runtime
                .inner
                .driving
                .lock()
                .expect("driver set lock")
                .remove(&run_id);
        });
    }

    /// Looks for claimable work now rather than at the next takeover tick.
    fn nudge(&self) {
        let runtime = self.clone();
        tokio::spawn(async move {
            if let Err(error) = runtime.recover().await {
                tracing::warn!(error = %error, "looking for runs to start failed");
            }
        });
    }

    /// Renews the lease every third of its lifetime; the watch channel holds
    /// the current lease, or `None` once it is lost.
    fn spawn_heartbeat(
        &self,
        run_id: String,
        lease: store::Lease,
    ) -> (
        tokio::sync::watch::Receiver<Option<store::Lease>>,
        tokio::task::JoinHandle<()>,
    ) {
        let (sender, receiver) = tokio::sync::watch::channel(Some(lease));
        let runtime = self.clone();
        let ttl = self.inner.lease_ttl_ms;
        let task = tokio::spawn(async move {
            let mut ticks =
                tokio::time::interval(std::time::Duration::from_millis((ttl / 3).max(50)));
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(current) = sender.borrow().clone() else {
                    return;
                };
                match runtime
                    .inner
                    .store
                    .renew_lease(&run_id, &current, Timestamp::now(), ttl as i64)
                    .await
                {
                    Ok(Some(renewed)) => {
                        let _ = sender.send(Some(renewed));
                    }
                    Ok(None) => {
                        tracing::warn!(run_id = %run_id, "lease lost to another instance");
                        let _ = sender.send(None);
                        return;
                    }
                    // A failed renewal is retried at the next tick; the
                    // lease may still expire, and then fencing protects the run.
                    Err(error) => {
                        tracing::warn!(run_id = %run_id, error = %error, "lease renewal failed")
                    }
                }
            }
        });
        (receiver, task)
    }

    /// Whether an auto-approved run's decision, made by this process's
    /// intake a moment ago, can only come out the same if made again: the
    /// runbook is the version it was decided on, the plan was made with
    /// this process's template variables, and the verdict depends on
    /// neither the clock nor other runs ([`verdict_rests_on_the_plan`];
    /// no global rate limit, no Rego policies, which see the clock). Then
    /// it is not planned and decided again; any other approved run is.
    fn decision_stands(&self, run: &store::RunRow) -> bool {
        let stands = run.decision.kind == domain::DecisionKind::Allow
            && self.inner.global_rate_limit.is_none()
            && self.inner.policies.is_none()
            && self
                .inner
                .catalog
                .get(&run.plan.runbook_id)
                .is_some_and(|runbook| {
                    runbook.version == run.plan.runbook_version
                        && verdict_rests_on_the_plan(&runbook.guardrails)
                });
        if stands {
            tracing::debug!(run_id = %run.id, "decided at intake here, on the plan alone: not decided again");
        }
        stands
    }

    /// Decides again, just before an approved run starts: the reasons it
    /// may no longer run (the runbook or the plan changed, a change window
    /// closed, a freeze began, a cooldown filled up), or `None`.
    async fn decision_changed(&self, run: &store::RunRow) -> Result<Option<Vec<String>>> {
        let plan = &run.plan;
        let Some(runbook) = self.inner.catalog.get(&plan.runbook_id) else {
            return Ok(Some(vec![format!(
                "runbook `{}` is no longer loaded",
                plan.runbook_id
            )]));
        };
        if runbook.version != plan.runbook_version {
            return Ok(Some(vec![format!(
                "runbook `{}` changed since the plan was approved",
                plan.runbook_id
            )]));
        }
        let Some(event) = self.inner.store.event(&run.event_id).await? else {
            return Ok(Some(vec!["the run's event is gone".to_owned()]));
        };
        match runbook.plan(&event.event, &self.inner.template_env) {
            Ok(fresh) if fresh.plan_hash == plan.plan_hash => {}
            Ok(_) => {
                return Ok(Some(vec![
                    "the plan changed since it was approved".to_owned(),
                ]));
            }
            Err(error) => {
                return Ok(Some(vec![format!(
                    "the plan can no longer be made: {error}"
                )]));
            }
        }
        // An event stored before requesters were recorded came from a source.
        let (kind, name) = event
            .requester
            .as_deref()
            .and_then(domain::PrincipalKind::of_actor)
            .unwrap_or((domain::PrincipalKind::Source, event.event.source.as_str()));
        let requester = intake::requester_facts(kind, name, &event.event);
        let now = Timestamp::now();
        let facts = self
            .facts(runbook, plan, requester, now, Some(&run.id))
            .await?;
        let decision = self.gate(runbook, plan, &event.event, &facts);
        Ok(changed_decision(&run.decision, &decision))
    }

    /// The gate's decision: the runbook's guardrails, tightened by the
    /// organisation's policies when there are any. A policy that cannot
    /// decide denies (fails closed), saying why.
    pub(crate) fn gate(
        &self,
        runbook: &runbook::Runbook,
        plan: &domain::Plan,
        event: &domain::Event,
        facts: &policy::Facts,
    ) -> domain::Decision {
        let policies = self.inner.policies.as_ref();
        policy::decide_with_policies(runbook, plan, event, facts, policies).unwrap_or_else(
            |error| domain::Decision {
                kind: domain::DecisionKind::Deny,
                reasons: vec![format!("the policies could not decide: {error}")],
                expires_after_ms: None,
                approvals_required: 1,
                stages: Vec::new(),
                policy_version: policies.map(|set| set.version().to_owned()),
            },
        )
    }

    /// Feeds the engine until the run waits for something outside itself
    /// (an approval) or finishes.
    async fn drive(
        &self,
        run_id: &str,
        first: Input,
        decided: Decided,
        lease: &tokio::sync::watch::Receiver<Option<store::Lease>>,
    ) -> Result<()> {
        let store = &self.inner.store;
        let unknown = || Error::UnknownRun {
            run_id: run_id.to_owned(),
        };
        let run = store.run(run_id).await?.ok_or_else(unknown)?;
        if run.state.is_terminal() {
            return Ok(());
        }
        let mut input = first;
        // The approval was for a plan and a decision; both must still hold.
        if run.state == RunState::Approved
            && !(decided == Decided::AtIntakeHere && self.decision_stands(&run))
            && let Some(reasons) = self.decision_changed(&run).await?
        {
            tracing::warn!(run_id = %run_id, reasons = ?reasons, "the decision changed before the run started");
            input = Input::DecisionChanged { reasons };
        }
        let (plan, mut machine, mut revision) = (run.plan, run.machine, run.revision);
        loop {
            let Some(current_lease) = lease.borrow().clone() else {
                tracing::warn!(run_id = %run_id, "stopping: the lease was lost");
                return Ok(());
            };
            let now = Timestamp::now();
            let transition = engine::step(&machine, &plan, input, now, rand::random())?;
            revision = store
                .commit_fenced(
                    run_id,
                    revision,
                    &current_lease,
                    &transition,
                    &self.inner.instance,
                    now,
                )
                .await?;
            self.publish(run_id, &transition);
            tracing::debug!(run_id = %run_id, state = %transition.run.state, "transition committed");
            machine = transition.run;
            input = match transition.effect {
                None => return Ok(()),
                Some(Effect::Call {
                    phase,
                    step_id,
                    attempt,
                    call,
                }) => {
                    tracing::info!(run_id = %run_id, step = %step_id, phase = phase.as_str(), attempt, action = %call.action, "calling");
                    Input::CallFinished(self.inner.connectors.call(&call).await)
                }
                Some(Effect::WakeAt(until)) => {
                    let delay = until.duration_since(Timestamp::now());
                    if let Ok(delay) = std::time::Duration::try_from(delay) {
                        tokio::time::sleep(delay).await;
                    }
                    Input::Wake
                }
                Some(Effect::Begin) => Input::Begin,
            };
        }
    }
}

/// Where the decision a driver starts from was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decided {
    /// By this process's intake, which spawned the driver right after.
    AtIntakeHere,
    /// By a person's approval, before a timer, or by another process (a
    /// run recovered or taken over): made again before the run acts.
    Earlier,
}

/// Whether the gate's verdict on a runbook's plan rests on the plan, its
/// event and the runbook alone, so that deciding again cannot change it.
/// Not when it reads the clock (change windows, freezes, business hours),
/// nor when it counts other runs (cooldown, rate limit): two intakes at
/// once both count before either commits, and deciding again before the
/// run starts is what catches the one too many.
fn verdict_rests_on_the_plan(guardrails: &runbook::Guardrails) -> bool {
    // Every field named, so that a new guardrail is sorted here too.
    let runbook::Guardrails {
        environments: _,
        change_windows,
        freezes,
        business_hours,
        cooldown,
        rate_limit,
        sensitive_targets: _,
        min_confidence: _,
    } = guardrails;
    change_windows.is_empty()
        && freezes.is_empty()
        && business_hours.is_none()
        && cooldown.is_none()
        && rate_limit.is_none()
}

/// Who asked for a run: the actor who posted its event, and the person the
/// event names as requester (`fields.requested_by`, a directory id). Either
/// one may not approve the run (separation of duties).
pub(crate) struct Requester {
    poster: Option<String>,
    named: Option<String>,
}

impl Requester {
    /// Whether `actor` (`user:alice`) is the one who asked. People are
    /// compared in one normal form ([`domain::same_person`]): `BOB`,
    /// ` bob` and `user:bob` named as requester are all bob.
    pub(crate) fn is(&self, actor: &str) -> bool {
        let person = |actor: &str| match domain::PrincipalKind::of_actor(actor) {
            Some((domain::PrincipalKind::User, name)) => Some(name.to_owned()),
            _ => None,
        };
        let Some(name) = person(actor) else {
            return self.poster.as_deref() == Some(actor);
        };
        self.poster
            .as_deref()
            .and_then(person)
            .is_some_and(|poster| domain::same_person(&poster, &name))
            || self
                .named
                .as_deref()
                .is_some_and(|named| domain::same_person(named, &name))
    }
}

/// Why a run decided as `before` may not go on under `now`, the decision
/// made again just before it starts: now denied; now requiring an approval
/// it was not given (it was allowed on its own); or requiring other
/// approval stages than the ones it passed (a policy changed).
fn changed_decision(before: &domain::Decision, now: &domain::Decision) -> Option<Vec<String>> {
    use domain::DecisionKind::{Allow, Deny, RequireApproval};
    let mut reasons = match (before.kind, now.kind) {
        (_, Deny) => now.reasons.clone(),
        (Allow, RequireApproval) => {
            let mut reasons = vec!["it now requires approval".to_owned()];
            reasons.extend(now.reasons.iter().cloned());
            reasons
        }
        (RequireApproval, RequireApproval) if before.stages != now.stages => {
            vec!["it now requires other approval stages than the ones it passed".to_owned()]
        }
        _ => return None,
    };
    if before.policy_version != now.policy_version {
        reasons.push(format!(
            "the policy set changed since the decision ({} → {})",
            short_version(before.policy_version.as_deref()),
            short_version(now.policy_version.as_deref()),
        ));
    }
    Some(reasons)
}

fn short_version(version: Option<&str>) -> &str {
    version.map_or("none", domain::short_hash)
}

#[cfg(test)]
mod tests {
    use super::verdict_rests_on_the_plan;

    /// Whether a runbook with these `guardrails:` lines is decided on its
    /// plan alone.
    fn check(guardrails: &str, expect: bool) {
        let text = format!(
            "id: guarded\ntitle: Guarded\nowner: ops\nrisk: reversible\napproval: auto\n\
             match:\n  source: alertmanager\ntargets:\n  from: \"[event.subject]\"\n\
             steps:\n  - id: act\n    action: http.request\n    with: {{ method: POST, url: \"https://ops.example.com/act\" }}\n    idempotent: true\n\
             guardrails:\n{guardrails}"
        );
        let runbook = runbook::parse_runbook(std::path::Path::new("guarded.yaml"), &text)
            .unwrap_or_else(|problems| panic!("{problems:?}\n{text}"));
        assert_eq!(
            verdict_rests_on_the_plan(&runbook.guardrails),
            expect,
            "{guardrails}"
        );
    }

    #[test]
    fn only_guardrails_of_the_plan_alone_let_a_decision_stand() {
        check("  environments: [production]\n", true);
        check("  sensitive_targets: [\"db-prod-*\"]\n", true);
        check("  min_confidence: 0.8\n", true);
        // The clock.
        check(
            "  change_windows:\n    - { days: [sat, sun], time_zone: Europe/Berlin }\n",
            false,
        );
        check(
            "  freeze:\n    - { from: \"2026-12-20T00:00\", to: \"2027-01-04T00:00\", time_zone: UTC }\n",
            false,
        );
        check(
            "  business_hours: { days: [mon-fri], from: \"08:00\", to: \"18:00\", time_zone: UTC }\n",
            false,
        );
        // Other runs.
        check("  cooldown: { per: target, runs: 3, window: 1h }\n", false);
        check("  rate_limit: { runs: 10, window: 1h }\n", false);
    }

    /// The runtime decides when an outside system is told what; the
    /// integrations behind the seam know how. So no source file here names
    /// one: a vendor's name in the runtime is a vendor detail that leaked.
    #[test]
    fn the_runtime_names_no_outside_system() {
        let vendors: Vec<&str> = connectors::registry::names()
            .into_iter()
            .chain([
                "service-now",
                "atlassian",
                "microsoft",
                "entra",
                "awx",
                "jenkins",
                "ansible",
            ])
            .collect();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut named = Vec::new();
        for entry in std::fs::read_dir(&dir).expect("the runtime's sources") {
            let path = entry.expect("a source file").path();
            let text = std::fs::read_to_string(&path).expect("readable");
            // This test names them, to look for them.
            let text = text
                .split("fn the_runtime_names_no_outside_system")
                .next()
                .unwrap_or_default();
            for (number, line) in text.lines().enumerate() {
                let lower = line.to_lowercase();
                for vendor in &vendors {
                    if lower.contains(vendor) {
                        named.push(format!("{}:{}: {vendor}", path.display(), number + 1));
                    }
                }
            }
        }
        assert!(
            named.is_empty(),
            "vendors named in the runtime:\n{}",
            named.join("\n")
        );
    }
}
