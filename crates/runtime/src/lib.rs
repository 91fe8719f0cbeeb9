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

mod ids;
mod intake;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use domain::RunState;
use engine::{Effect, Input};
use jiff::Timestamp;
use runbook::{Catalog, TemplateEnv};
use store::Store;
use tokio::sync::broadcast;

pub use ids::new_id;
pub use intake::{DryRun, IntakeReport, dry_run};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Engine(#[from] engine::Error),
    #[error("run `{run_id}` does not exist")]
    UnknownRun { run_id: String },
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
    pub records: Vec<(String, serde_json::Value)>,
}

pub struct Config {
    pub catalog: Catalog,
    pub template_env: TemplateEnv,
    pub connectors: connectors::Connectors,
    /// How long a run's lease lasts without renewal. The driving instance
    /// renews it every third of this; another instance takes the run over
    /// once it has expired.
    pub lease_ttl_ms: u64,
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
    /// Runs that have a driver task in this process.
    driving: Mutex<HashSet<String>>,
    updates: broadcast::Sender<RunUpdate>,
}

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
                driving: Mutex::new(HashSet::new()),
                updates,
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
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
            self.spawn_driver(run_id, Input::Recover);
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

    /// Approves a run awaiting approval; it starts executing at once.
    pub async fn approve(
        &self,
        run_id: &str,
        by: &str,
        comment: Option<String>,
    ) -> Result<RunState> {
        self.apply_external(
            run_id,
            Input::Approve {
                by: by.to_owned(),
                comment,
            },
            by,
        )
        .await
    }

    pub async fn deny(&self, run_id: &str, by: &str, comment: Option<String>) -> Result<RunState> {
        self.apply_external(
            run_id,
            Input::Deny {
                by: by.to_owned(),
                comment,
            },
            by,
        )
        .await
    }

    pub async fn cancel(&self, run_id: &str, by: &str, reason: String) -> Result<RunState> {
        self.apply_external(
            run_id,
            Input::Cancel {
                by: by.to_owned(),
                reason,
            },
            by,
        )
        .await
    }

    async fn apply_external(&self, run_id: &str, input: Input, actor: &str) -> Result<RunState> {
        let store = &self.inner.store;
        let run = store.run(run_id).await?.ok_or_else(|| Error::UnknownRun {
            run_id: run_id.to_owned(),
        })?;
        let now = Timestamp::now();
        let transition = match engine::step(&run.machine, &run.plan, input, now, rand::random()) {
            Ok(transition) => transition,
            Err(error) => {
                let refusal = store::AuditEntry::new(
                    "run.input_refused",
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
            self.spawn_driver(run_id.to_owned(), Input::Begin);
        }
        Ok(state)
    }

    fn publish(&self, run_id: &str, transition: &engine::Transition) {
        let update = RunUpdate {
            run_id: run_id.to_owned(),
            state: transition.run.state,
            reason: transition.run.reason.clone(),
            records: transition
                .records
                .iter()
                .map(|record| (record.kind.to_owned(), record.detail.clone()))
                .collect(),
        };
        // No subscriber is fine: the store is the record, this is a courtesy.
        let _ = self.inner.updates.send(update);
    }

    /// Drives the run in a task of its own, if this instance can claim its
    /// lease; the lease is renewed while the task runs and given back after.
    pub(crate) fn spawn_driver(&self, run_id: String, first: Input) {
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
                    match runtime.drive(&run_id, first, &renewed).await {
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

    /// Feeds the engine until the run waits for something outside itself
    /// (an approval) or finishes.
    async fn drive(
        &self,
        run_id: &str,
        first: Input,
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
        let (plan, mut machine, mut revision) = (run.plan, run.machine, run.revision);
        let mut input = first;
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
