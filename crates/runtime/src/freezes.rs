//! The kill switch: freezes issued and lifted by operators, and what they
//! do to runs.
//!
//! A freeze is stored (with its audit record) and announced; every
//! instance keeps the active freezes in memory and reads them again when
//! one is announced, so the check a driver makes before each step costs a
//! lock and a scan of a short list, and a freeze reaches every instance
//! as soon as the announcement does — nothing polls. The engine does the
//! rest: handed the freeze that holds a run ([`engine::Hold`]), it pauses
//! the run where a step would start, or cancels it with its rollbacks.
//! A paused run is resumed by the freeze loop here, on whichever instance
//! claims it first, once no freeze holds it: lifted, or expired.
//!
//! Events that arrive during a freeze that covers what they would run are
//! stored as `frozen` by intake, and start nothing.

use std::sync::{Arc, RwLock};

use domain::{Freeze, FreezeScope, Lifted, OnRuns, Plan, Principal, RunState};
use engine::{Hold, Input};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::driver::Decided;
use crate::{Error, Result, Runtime, SYSTEM_ACTOR, new_id};

/// The longest reason a freeze takes, in characters: enough for a
/// sentence and an incident link, and no place for a log dump.
const MAX_REASON_CHARS: usize = 500;

/// A freeze as an operator asks for it.
#[derive(Debug, Clone)]
pub struct FreezeOrder {
    pub scope: FreezeScope,
    /// Why; required, so that whoever finds automation stopped knows.
    pub reason: String,
    /// When it ends by itself; `None`: when it is lifted.
    pub expires_at: Option<Timestamp>,
    pub on_runs: OnRuns,
}

/// Whether automation is live, at a glance.
#[derive(Debug, Clone, Serialize)]
pub struct AutomationStatus {
    /// `live` (no freeze), `partly_frozen` (a freeze covers some runbooks,
    /// targets or principals) or `frozen` (all automation is frozen).
    pub automation: Automation,
    /// The freezes in force, oldest first.
    pub freezes: Vec<Freeze>,
    /// The runs a freeze paused, waiting for it to lift.
    pub paused_runs: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Automation {
    Live,
    PartlyFrozen,
    Frozen,
}

impl Automation {
    pub fn as_str(self) -> &'static str {
        match self {
            Automation::Live => "live",
            Automation::PartlyFrozen => "partly_frozen",
            Automation::Frozen => "frozen",
        }
    }
}

/// The freezes in force on this instance, as last read from the store.
#[derive(Default)]
pub(crate) struct ActiveFreezes(RwLock<Arc<Vec<Freeze>>>);

impl ActiveFreezes {
    fn current(&self) -> Arc<Vec<Freeze>> {
        self.0.read().expect("freeze list lock").clone()
    }

    fn replace(&self, freezes: Vec<Freeze>) {
        *self.0.write().expect("freeze list lock") = Arc::new(freezes);
    }
}

/// What a freeze is judged against: the run's runbook and targets, and who
/// posted its event (read only when a freeze names principals).
pub(crate) struct Covered<'a> {
    pub runbook_id: &'a str,
    pub targets: &'a [String],
    pub requester: Option<&'a str>,
}

/// Whether `freeze` covers `run`. Every pattern is a glob.
fn covers(freeze: &Freeze, run: &Covered<'_>) -> bool {
    match &freeze.scope {
        FreezeScope::Everything => true,
        FreezeScope::Runbook(pattern) => policy::glob_matches(pattern, run.runbook_id),
        FreezeScope::Targets(pattern) => run
            .targets
            .iter()
            .any(|target| policy::glob_matches(pattern, target)),
        FreezeScope::Principal(pattern) => run
            .requester
            .is_some_and(|requester| policy::glob_matches(pattern, requester)),
    }
}

/// The freeze that holds `run` among `freezes` at `now`: one that cancels
/// wins over one that pauses (the stricter order), then the oldest.
fn holding<'f>(freezes: &'f [Freeze], run: &Covered<'_>, now: Timestamp) -> Option<&'f Freeze> {
    let mut covering = freezes
        .iter()
        .filter(|freeze| freeze.is_active(now) && covers(freeze, run));
    let first = covering.next()?;
    if first.on_runs == OnRuns::Cancel {
        return Some(first);
    }
    Some(
        covering
            .find(|freeze| freeze.on_runs == OnRuns::Cancel)
            .unwrap_or(first),
    )
}

/// Freezes, one of the runtime's services: the kill switch, issued and
/// lifted by operators through any interface, and the status it leaves.
#[derive(Clone, Copy)]
pub struct Freezes<'r>(pub(crate) &'r Runtime);

impl Freezes<'_> {
    /// Issues a freeze for `by`: stored and audited, in force on this
    /// instance when this returns and on the others when the store's
    /// announcement reaches them. Runs it covers pause (or are cancelled)
    /// before their next step; a run already paused by another freeze is
    /// cancelled now when this one cancels.
    pub async fn issue(&self, order: FreezeOrder, by: &Principal) -> Result<Freeze> {
        let now = self.0.now();
        self.check(&order, now)?;
        let freeze = Freeze {
            id: new_id("frz"),
            scope: order.scope,
            on_runs: order.on_runs,
            reason: order.reason.trim().to_owned(),
            issued_by: by.actor(),
            issued_at: now,
            expires_at: order.expires_at,
            lifted: None,
        };
        let record = store::AuditEntry::new(
            domain::RecordKind::FreezeIssued,
            &freeze.issued_by,
            json!({
                "freeze": freeze.id, "scope": freeze.scope.to_string(),
                "scope_kind": freeze.scope.kind(), "pattern": freeze.scope.pattern(),
                "on_runs": freeze.on_runs.as_str(), "reason": freeze.reason,
                "expires_at": freeze.expires_at,
            }),
        );
        self.0.inner.store.issue_freeze(&freeze, &record).await?;
        self.0.records_written();
        tracing::info!(freeze = %freeze.id, scope = %freeze.scope, on_runs = freeze.on_runs.as_str(), by = %freeze.issued_by, "automation frozen");
        self.0.reload_freezes().await?;
        self.0.inner.freezes_changed.notify_one();
        Ok(freeze)
    }

    /// Lifts the active freeze `id` for `by`. The runs it paused resume
    /// (those no other freeze holds), on whichever instance claims each.
    pub async fn lift(&self, id: &str, by: &Principal, reason: Option<String>) -> Result<Freeze> {
        let reason = reason
            .map(|reason| reason.trim().to_owned())
            .filter(|reason| !reason.is_empty());
        if let Some(reason) = &reason {
            check_reason(reason)?;
        }
        let lifted = Lifted {
            by: by.actor(),
            at: self.0.now(),
            reason,
        };
        let record = store::AuditEntry::new(
            domain::RecordKind::FreezeLifted,
            &lifted.by,
            json!({"freeze": id, "reason": lifted.reason}),
        );
        let store = &self.0.inner.store;
        let Some(freeze) = store.lift_freeze(id, &lifted, &record).await? else {
            return Err(match store.freeze(id).await? {
                None => Error::UnknownFreeze { id: id.to_owned() },
                Some(_) => Error::FreezeNotActive { id: id.to_owned() },
            });
        };
        self.0.records_written();
        tracing::info!(freeze = %id, by = %lifted.by, "freeze lifted");
        self.0.reload_freezes().await?;
        self.0.inner.freezes_changed.notify_one();
        Ok(freeze)
    }

    /// The freezes in force now, as stored: oldest first.
    pub async fn active(&self) -> Result<Vec<Freeze>> {
        Ok(self.0.inner.store.active_freezes(self.0.now()).await?)
    }

    /// Whether automation is live, the freezes in force and the runs they
    /// paused.
    pub async fn status(&self) -> Result<AutomationStatus> {
        let freezes = self.active().await?;
        let automation = if freezes.is_empty() {
            Automation::Live
        } else if freezes
            .iter()
            .any(|freeze| freeze.scope == FreezeScope::Everything)
        {
            Automation::Frozen
        } else {
            Automation::PartlyFrozen
        };
        let paused_runs = self
            .0
            .inner
            .store
            .runs(&store::RunFilter {
                state: Some(RunState::Paused),
                limit: Some(1000),
            })
            .await?
            .into_iter()
            .map(|run| run.id)
            .collect();
        Ok(AutomationStatus {
            automation,
            freezes,
            paused_runs,
        })
    }

    /// Why `order` cannot be issued, said so its issuer can fix it.
    fn check(&self, order: &FreezeOrder, now: Timestamp) -> Result<()> {
        check_reason(order.reason.trim())?;
        if order.reason.trim().is_empty() {
            return Err(invalid(
                "a freeze needs a reason: say why automation is stopped",
            ));
        }
        if let Some(expires) = order.expires_at
            && expires <= now
        {
            return Err(invalid(&format!(
                "the freeze would expire at {expires}, which is not in the future"
            )));
        }
        if let Some(pattern) = order.scope.pattern() {
            if pattern.trim().is_empty() || pattern.chars().any(char::is_control) {
                return Err(invalid(&format!(
                    "the {} pattern must name something (a glob: `*` and `?` are wildcards)",
                    order.scope.kind()
                )));
            }
            if pattern.chars().count() > 200 {
                return Err(invalid("the pattern is longer than 200 characters"));
            }
        }
        match &order.scope {
            FreezeScope::Runbook(pattern) => {
                let catalog = &self.0.inner.catalog;
                if !catalog
                    .iter()
                    .any(|runbook| policy::glob_matches(pattern, &runbook.id))
                {
                    let known: Vec<&str> =
                        catalog.iter().map(|runbook| runbook.id.as_str()).collect();
                    return Err(invalid(&format!(
                        "no loaded runbook matches `{pattern}` (loaded: {})",
                        known.join(", ")
                    )));
                }
            }
            FreezeScope::Principal(pattern) => {
                if domain::PrincipalKind::of_actor(pattern).is_none() {
                    return Err(invalid(&format!(
                        "`{pattern}` is not a principal: write its kind and name, \
                         e.g. `agent:triage-bot`, `agent:*` or `source:alertmanager`"
                    )));
                }
            }
            FreezeScope::Everything | FreezeScope::Targets(_) => {}
        }
        Ok(())
    }
}

fn check_reason(reason: &str) -> Result<()> {
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(invalid(&format!(
            "the reason is longer than {MAX_REASON_CHARS} characters: link to the incident instead"
        )));
    }
    if reason.chars().any(|c| c.is_control() && c != '\n') {
        return Err(invalid("the reason holds control characters"));
    }
    Ok(())
}

fn invalid(message: &str) -> Error {
    Error::InvalidFreeze {
        message: message.to_owned(),
    }
}

impl Runtime {
    /// The kill switch.
    pub fn freezes(&self) -> Freezes<'_> {
        Freezes(self)
    }

    /// Reads the active freezes from the store into this instance's list.
    pub(crate) async fn reload_freezes(&self) -> Result<()> {
        let active = self.inner.store.active_freezes(self.now()).await?;
        self.inner.active_freezes.replace(active);
        Ok(())
    }

    /// The freeze that holds a run of `plan` now, if any. The check every
    /// step boundary makes: with no freeze in force, a lock and an empty
    /// list. `requester` is read (once per driver) only when a freeze
    /// names principals.
    pub(crate) async fn hold_for(
        &self,
        plan: &Plan,
        event_id: &str,
        requester: &mut Option<Option<String>>,
    ) -> Result<Option<Hold>> {
        let freezes = self.inner.active_freezes.current();
        if freezes.is_empty() {
            return Ok(None);
        }
        let names_principals = freezes
            .iter()
            .any(|freeze| matches!(freeze.scope, FreezeScope::Principal(_)));
        if names_principals && requester.is_none() {
            let event = self.inner.store.event(event_id).await?;
            *requester = Some(event.and_then(|event| event.requester));
        }
        let covered = Covered {
            runbook_id: &plan.runbook_id,
            targets: &plan.targets,
            requester: requester.as_ref().and_then(Option::as_deref),
        };
        Ok(holding(&freezes, &covered, self.now()).map(Hold::of))
    }

    /// The freeze that covers a new run, at intake: its event is stored
    /// `frozen` and nothing runs.
    pub(crate) fn freeze_covering(&self, covered: &Covered<'_>, now: Timestamp) -> Option<Freeze> {
        let freezes = self.inner.active_freezes.current();
        holding(&freezes, covered, now).cloned()
    }

    /// Reads the freezes (announced here or by another instance, or at an
    /// expiry), then resumes each paused run no freeze holds any more and
    /// cancels each one a cancelling freeze holds: the loop that lifts
    /// what a freeze stopped. Started once, by [`Runtime::start`].
    pub(crate) fn spawn_freeze_loop(&self) -> tokio::task::JoinHandle<()> {
        let runtime = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(error) = runtime.reload_freezes().await {
                    tracing::warn!(error = %error, "could not read the freezes");
                }
                if let Err(error) = runtime.release_paused_runs().await {
                    tracing::warn!(error = %error, "could not resume paused runs");
                }
                let next_expiry = runtime
                    .inner
                    .active_freezes
                    .current()
                    .iter()
                    .filter_map(|freeze| freeze.expires_at)
                    .min();
                let changed = runtime.inner.freezes_changed.notified();
                match next_expiry {
                    Some(expiry) => {
                        let wait = expiry.duration_since(runtime.now());
                        let wait = std::time::Duration::try_from(wait).unwrap_or_default();
                        tokio::select! {
                            () = changed => {}
                            () = tokio::time::sleep(wait) => {}
                        }
                    }
                    None => changed.await,
                }
            }
        })
    }

    /// Drives each paused run that no freeze holds any more (it resumes)
    /// or that a cancelling freeze holds (it rolls back).
    async fn release_paused_runs(&self) -> Result<()> {
        let paused = self
            .inner
            .store
            .runs(&store::RunFilter {
                state: Some(RunState::Paused),
                limit: Some(10_000),
            })
            .await?;
        for run in paused {
            let mut requester = None;
            let input = match self
                .hold_for(&run.plan, &run.event_id, &mut requester)
                .await?
            {
                None => Input::Resume {
                    by: SYSTEM_ACTOR.to_owned(),
                },
                Some(hold) if hold.on_runs == OnRuns::Cancel => Input::Cancel {
                    by: hold.by.clone(),
                    reason: format!("freeze {}: {}", hold.freeze, hold.reason),
                },
                Some(_) => continue,
            };
            self.spawn_driver(run.id, input, Decided::Earlier);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn freeze(id: &str, scope: FreezeScope, on_runs: OnRuns) -> Freeze {
        Freeze {
            id: id.to_owned(),
            scope,
            on_runs,
            reason: "incident".to_owned(),
            issued_by: "user:olga".to_owned(),
            issued_at: "2026-12-05T09:00:00Z".parse().unwrap(),
            expires_at: None,
            lifted: None,
        }
    }

    /// Which of `freezes` holds a run of `runbook` on `targets` posted by
    /// `requester`, by id.
    fn check(freezes: &[Freeze], runbook: &str, targets: &[&str], requester: &str, expect: &str) {
        let targets: Vec<String> = targets.iter().map(|target| target.to_string()).collect();
        let covered = Covered {
            runbook_id: runbook,
            targets: &targets,
            requester: Some(requester),
        };
        let now = "2026-12-05T10:00:00Z".parse().unwrap();
        let held = holding(freezes, &covered, now).map_or("-", |freeze| freeze.id.as_str());
        assert_eq!(held, expect, "{runbook} {targets:?} {requester}");
    }

    #[test]
    fn a_freeze_covers_runs_by_its_scope() {
        use FreezeScope::*;
        let runbook = [freeze("a", Runbook("restart-*".into()), OnRuns::Pause)];
        check(&runbook, "restart-vpn", &["ws-1"], "source:am", "a");
        check(&runbook, "RESTART-VPN", &["ws-1"], "source:am", "a");
        check(&runbook, "raise-quota", &["ws-1"], "source:am", "-");
        let targets = [freeze("t", Targets("db-prod-*".into()), OnRuns::Pause)];
        check(&targets, "any", &["web-1", "DB-PROD-02"], "user:al", "t");
        check(&targets, "any", &["db-test-1"], "user:al", "-");
        let agents = [freeze("p", Principal("agent:*".into()), OnRuns::Pause)];
        check(&agents, "any", &["x"], "agent:triage-bot", "p");
        check(&agents, "any", &["x"], "user:alice", "-");
        let everything = [freeze("e", Everything, OnRuns::Pause)];
        check(&everything, "any", &[], "user:alice", "e");
    }

    #[test]
    fn a_cancelling_freeze_wins_then_the_oldest() {
        use FreezeScope::*;
        let both = [
            freeze("pause", Everything, OnRuns::Pause),
            freeze("cancel", Runbook("r".into()), OnRuns::Cancel),
            freeze("later", Everything, OnRuns::Pause),
        ];
        check(&both, "r", &[], "user:a", "cancel");
        check(&both, "other", &[], "user:a", "pause");
    }

    #[test]
    fn a_lifted_or_expired_freeze_holds_nothing() {
        let mut expired = freeze("x", FreezeScope::Everything, OnRuns::Pause);
        expired.expires_at = Some("2026-12-05T10:00:00Z".parse().unwrap());
        let mut lifted = freeze("y", FreezeScope::Everything, OnRuns::Pause);
        lifted.lifted = Some(Lifted {
            by: "user:olga".to_owned(),
            at: "2026-12-05T09:30:00Z".parse().unwrap(),
            reason: None,
        });
        check(&[expired, lifted], "r", &[], "user:a", "-");
    }
}
