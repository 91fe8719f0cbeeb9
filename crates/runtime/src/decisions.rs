//! Decisions on runs, by people: approve, deny, cancel — with every
//! separation-of-duties check, here below every way of deciding (the API,
//! a signed page, a chat button), so that a rule holds on all of them.

use domain::RunState;
use engine::Input;

use crate::{Error, Result, Runtime};

/// A person's decision on a run awaiting approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Approve,
    Deny,
}

use crate::Decisions;

impl Verdict {
    pub(crate) fn verb(self) -> &'static str {
        match self {
            Verdict::Approve => "approve",
            Verdict::Deny => "deny",
        }
    }
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

impl Runtime {
    pub(crate) async fn decide(
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
                .append_audit(Some(run_id), &[refusal], self.now())
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
    pub(crate) async fn refusal(
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
        if !self.decisions().holds_approver_role(&approver.name).await? {
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
}

impl Decisions<'_> {
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
        self.0
            .decide(run_id, approver, Verdict::Approve, comment)
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
        self.0
            .decide(run_id, approver, Verdict::Deny, comment)
            .await
    }

    pub async fn cancel(&self, run_id: &str, by: &str, reason: String) -> Result<RunState> {
        let run = self.0.load_run(run_id).await?;
        let input = Input::Cancel {
            by: by.to_owned(),
            reason,
        };
        self.0.apply_to(run, input, by).await
    }

    /// Why `approver` may not approve `run` now, if they may not: the
    /// rules [`Decisions::approve`] applies (no agent, the approver role, a
    /// person of the directory, not the requester, the open stage's
    /// people). A signed link is issued only to someone this allows.
    pub async fn approval_refusal(
        &self,
        run: &store::RunRow,
        approver: &domain::Principal,
    ) -> Result<Option<String>> {
        self.0.refusal(run, approver, Verdict::Approve).await
    }

    /// Whether `actor` (`user:bob`) asked for `run`: posted its event, or
    /// is named in it as the requester.
    pub async fn is_requester(&self, run: &store::RunRow, actor: &str) -> Result<bool> {
        Ok(self.0.requester(run).await?.is(actor))
    }

    /// Whether `person` holds the approver role now: an unrevoked approver
    /// token in their name. A signed link lets its holder decide as its
    /// approver, so it is issued (and honoured) only for someone who could
    /// decide with their own token.
    pub async fn holds_approver_role(&self, person: &str) -> Result<bool> {
        Ok(self
            .0
            .inner
            .store
            .holds_role(person, domain::Role::Approver)
            .await?)
    }
}
