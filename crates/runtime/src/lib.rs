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
//!
//! One module per job. The services every interface calls are reached
//! from the one [`Runtime`] handle: [`Runtime::intake`] (`intake.rs`:
//! ingest, dry run; `edge.rs`: a source's request taken in),
//! [`Runtime::decisions`] (`decisions.rs`: approve, deny, cancel, and every
//! separation-of-duties check; `edge.rs`: a chat button's click),
//! [`Runtime::freezes`] (`freezes.rs`: the kill switch, its status, and the
//! loop that resumes what a freeze paused), [`Runtime::shadow`]
//! (`shadow.rs`: the shadow report), [`Runtime::triage`] (`triage.rs`: a
//! ticket no runbook's rules took, given to the configured classifier),
//! and the
//! read models and what the edge records (`reads.rs`: [`Runtime::reads`],
//! [`Runtime::tokens`], [`Runtime::audit_log`]). The rest are the
//! runtime's own loops, started once by the process: `driver.rs` (leases,
//! drive, recovery, takeover, the decision made again before a run
//! starts), `timers.rs`, `writeback.rs` (tickets and chat channels,
//! through the seam) and `anchor.rs` (signed anchors of the audit chain's
//! head). This file holds
//! the handle, its configuration, and the commit-then-publish step every
//! transition goes through.

mod anchor;
mod approvals;
mod clock;
mod decisions;
mod drain;
mod driver;
mod edge;
mod freezes;
mod ids;
mod intake;
mod proposals;
mod reads;
mod shadow;
mod timers;
pub mod triage;
mod writeback;

use driver::Decided;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use domain::RunState;
use engine::{Effect, Input};
use jiff::Timestamp;
use runbook::{Catalog, TemplateEnv};
use store::Store;
use tokio::sync::broadcast;

pub use anchor::{AnchorConfig, AnchorLoop, AnchorSink};
pub use clock::{Clock, ManualClock};
pub use edge::{
    Answer, ButtonSource, Click, Clicked, EventSource, Pressed, Reply, Signature, SignatureRefused,
    SignedRequest, SourceError, Taken, Verification, check_event, click_answer, open_stage,
    parse_json,
};
pub use freezes::{Automation, AutomationStatus, FreezeOrder, Freezes};
pub use ids::new_id;
pub use intake::{DryRun, IntakeReport, dry_run};
pub use policy::ChatPlatform;
pub use proposals::{ProposalReport, Proposals, RunbookBrief};
pub use reads::{
    AttemptRow, AuditEntry, AuditLog, AuditRow, EventRow, Reads, RunDetail, RunFilter, RunRow,
    TimerRow, TokenRow, Tokens, WritebackRow,
};
pub use shadow::{
    EVERYONE, ReplayRow, ReplayTally, RunbookShadow, Shadow, ShadowCase, ShadowReport, report_since,
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
    /// A source could not read what it was sent; nothing was stored.
    #[error("{0}")]
    Source(connectors::SourceError),
    /// A freeze that cannot be issued as asked; nothing was stored.
    #[error("{message}")]
    InvalidFreeze { message: String },
    #[error("freeze `{id}` does not exist")]
    UnknownFreeze { id: String },
    #[error("freeze `{id}` is no longer in force: it was lifted or has expired")]
    FreezeNotActive { id: String },
    /// A replay that cannot be run as asked; nothing was replayed.
    #[error("{message}")]
    InvalidReplay { message: String },
    /// A proposal that cannot be taken as it is; nothing was stored.
    #[error("{message}")]
    InvalidProposal { message: String },
    /// A proposal outside what its agent may ask for; the refusal is
    /// audited, and nothing else was stored.
    #[error("{reason}")]
    ProposalRefused { reason: String },
    /// An idempotency key sent again with another proposal.
    #[error("{message}")]
    ProposalConflict { message: String },
    /// As many events as the limit are being stored already; nothing was
    /// stored, and the sender should send this one again shortly.
    #[error(
        "opsgate is storing {limit} events at once, its limit; nothing was stored: send this one again in a second"
    )]
    Overloaded { limit: usize },
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
    /// The proposers (actor globs: `agent:*`) whose events run in shadow
    /// mode whatever their runbook says.
    pub shadow_principals: Vec<String>,
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
    /// At most this many events are being stored at once; one more is
    /// refused (`Error::Overloaded`), to be sent again, rather than waiting
    /// in a queue that grows with the load.
    pub max_intake_in_flight: usize,
    /// Where the runtime reads the time: [`Clock::system`] in service.
    pub clock: Clock,
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
    pub const DEFAULT_MAX_INTAKE_IN_FLIGHT: usize = 128;
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
    shadow_principals: Vec<String>,
    directory: Option<policy::Directory>,
    policies: Option<policy::PolicySet>,
    integrations: connectors::Integrations,
    approval_pages: Option<Arc<dyn ApprovalPages>>,
    /// Runs that have a driver task in this process.
    driving: Mutex<HashSet<String>>,
    /// One permit per event being stored ([`Config::max_intake_in_flight`]).
    intake_slots: tokio::sync::Semaphore,
    max_intake_in_flight: usize,
    /// Told each time a driver stops.
    driver_stopped: tokio::sync::Notify,
    /// True once this instance is shutting down ([`Runtime::drain`]).
    draining: tokio::sync::watch::Sender<bool>,
    /// The operators' freezes in force, as this instance last read them.
    active_freezes: freezes::ActiveFreezes,
    /// Wakes the freeze loop: a freeze was issued or lifted, here or
    /// elsewhere.
    freezes_changed: tokio::sync::Notify,
    updates: broadcast::Sender<RunUpdate>,
    /// Wakes the timer loop: a timer was asked for, here or elsewhere.
    timers_changed: tokio::sync::Notify,
    /// Wakes the write-back loop: a run wrote audit records here.
    records_written: tokio::sync::Notify,
    /// The earliest time a write-back this instance failed may be tried
    /// again: the write-back loop wakes then, not at its next slow look.
    writeback_retry: Mutex<Option<Timestamp>>,
    clock: Clock,
}

/// Intake, one of the runtime's services: events in — taken in (a
/// source's request read by its source, or an event posted as it is), or
/// judged without storing anything (a dry run).
#[derive(Clone, Copy)]
pub struct Intake<'r>(&'r Runtime);

/// Decisions, one of the runtime's services: a run approved, denied or
/// cancelled by a person (through the API, a signed page or a chat
/// button), with every separation-of-duties check.
#[derive(Clone, Copy)]
pub struct Decisions<'r>(&'r Runtime);

/// The system's own name in audit records.
const SYSTEM_ACTOR: &str = "opsgate";

impl Runtime {
    pub fn new(store: Store, config: Config) -> Runtime {
        let (updates, _) = broadcast::channel(1024);
        // A step action a config section set up takes the place of the
        // built-in one of its name.
        let mut connectors = config.connectors;
        connectors.plug(&config.integrations.actions);
        Runtime {
            inner: Arc::new(Inner {
                store,
                catalog: config.catalog,
                template_env: config.template_env,
                connectors,
                instance: new_id("opsgate"),
                lease_ttl_ms: config.lease_ttl_ms,
                global_rate_limit: config.global_rate_limit,
                shadow_principals: config.shadow_principals,
                directory: config.directory,
                policies: config.policies,
                integrations: config.integrations,
                approval_pages: config.approval_pages,
                driving: Mutex::new(HashSet::new()),
                intake_slots: tokio::sync::Semaphore::new(config.max_intake_in_flight),
                max_intake_in_flight: config.max_intake_in_flight,
                driver_stopped: tokio::sync::Notify::new(),
                draining: tokio::sync::watch::Sender::new(false),
                active_freezes: freezes::ActiveFreezes::default(),
                freezes_changed: tokio::sync::Notify::new(),
                updates,
                timers_changed: tokio::sync::Notify::new(),
                records_written: tokio::sync::Notify::new(),
                writeback_retry: Mutex::new(None),
                clock: config.clock,
            }),
        }
    }

    /// The time, as this runtime reads it ([`Config::clock`]).
    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
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

    /// Events in.
    pub fn intake(&self) -> Intake<'_> {
        Intake(self)
    }

    /// Approvals, denials and cancellations.
    pub fn decisions(&self) -> Decisions<'_> {
        Decisions(self)
    }

    /// A ticket no runbook's rules took, given to the configured classifier.
    pub fn triage(&self) -> triage::Triage<'_> {
        triage::Triage(self)
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
        let now = self.now();
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
        if transition.run.state.is_terminal() {
            log_end(
                run_id,
                transition.run.state,
                transition.run.reason.as_deref(),
            );
        }
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
}

/// Says how a run ended, and why: a warning when a person has something
/// to look at (it failed, was rolled back or needs a human), else
/// information.
pub(crate) fn log_end(run_id: &str, state: RunState, reason: Option<&str>) {
    let reason = reason.unwrap_or("-");
    match state {
        RunState::Failed | RunState::RolledBack | RunState::NeedsHuman => {
            tracing::warn!(run_id, state = state.as_str(), reason, "run ended")
        }
        _ => tracing::info!(run_id, state = state.as_str(), reason, "run ended"),
    }
}

#[cfg(test)]
mod tests {
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
