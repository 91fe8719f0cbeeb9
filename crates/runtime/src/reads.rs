//! The services the edge reads and records through, so that no interface
//! (the REST API, the approval page, a chat channel's buttons, and later
//! MCP and a console) reaches the store itself:
//!
//! - [`Reads`]: the read models — runs by filter, one run with its event,
//!   attempts, timers, write-backs and timeline, a token by its id;
//! - [`Tokens`]: what is used once — a webhook signature, an approval
//!   link — checked and marked in one step, across instances;
//! - [`AuditLog`]: records the edge writes itself (a refused request, a
//!   link issued or used), appended to the one chain.
//!
//! The row types are the store's, re-exported: they are what the
//! services answer in.

use jiff::Timestamp;

pub use store::{
    AttemptRow, AuditEntry, AuditRow, EventRow, RunFilter, RunRow, TimerRow, TokenRow, WritebackRow,
};

use crate::{Result, Runtime};

/// One run, whole.
#[derive(Debug, Clone)]
pub struct RunDetail {
    pub run: RunRow,
    /// The event that started it (gone only if the database was edited).
    pub event: Option<EventRow>,
    pub attempts: Vec<AttemptRow>,
    pub timers: Vec<TimerRow>,
    pub writebacks: Vec<WritebackRow>,
    /// Its audit records, in order.
    pub timeline: Vec<AuditRow>,
}

/// The read models.
pub struct Reads<'a>(&'a Runtime);

/// What is used once.
pub struct Tokens<'a>(&'a Runtime);

/// Records the edge writes itself.
pub struct AuditLog<'a>(&'a Runtime);

impl Runtime {
    pub fn reads(&self) -> Reads<'_> {
        Reads(self)
    }

    pub fn tokens(&self) -> Tokens<'_> {
        Tokens(self)
    }

    pub fn audit_log(&self) -> AuditLog<'_> {
        AuditLog(self)
    }
}

impl Reads<'_> {
    /// The runs `filter` selects, newest first.
    pub async fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRow>> {
        Ok(self.0.store().runs(filter).await?)
    }

    pub async fn run(&self, run_id: &str) -> Result<Option<RunRow>> {
        Ok(self.0.store().run(run_id).await?)
    }

    /// The run `run_id` with everything that happened to it.
    pub async fn run_detail(&self, run_id: &str) -> Result<Option<RunDetail>> {
        let store = self.0.store();
        let Some(run) = store.run(run_id).await? else {
            return Ok(None);
        };
        Ok(Some(RunDetail {
            event: store.event(&run.event_id).await?,
            attempts: store.attempts(run_id).await?,
            timers: store.timers(run_id).await?,
            writebacks: store.writebacks(run_id).await?,
            timeline: store.audit(Some(run_id)).await?,
            run,
        }))
    }

    /// The event with this id.
    pub async fn event(&self, event_id: &str) -> Result<Option<EventRow>> {
        Ok(self.0.store().event(event_id).await?)
    }

    /// The API token with this id, revoked or not.
    pub async fn token(&self, id: &str) -> Result<Option<TokenRow>> {
        Ok(self.0.store().token(id).await?)
    }
}

impl Tokens<'_> {
    /// Marks the webhook signature `key` used, at `now`, until
    /// `expires_at`: `true` for its first use anywhere, `false` for a
    /// replay.
    pub async fn use_signature(
        &self,
        key: &str,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<bool> {
        Ok(self.0.store().use_signature(key, expires_at, now).await?)
    }

    /// Forgets a signature's use, so that the sender's retry is taken.
    pub async fn release_signature(&self, key: &str) -> Result<()> {
        Ok(self.0.store().release_signature(key).await?)
    }

    /// Marks the approval link `nonce` of `run_id` used: `true` the first
    /// time only.
    pub async fn use_approval_link(&self, nonce: &str, run_id: &str) -> Result<bool> {
        Ok(self
            .0
            .store()
            .use_approval_link(nonce, run_id, self.0.now())
            .await?)
    }
}

impl AuditLog<'_> {
    /// Appends `entries`, about `run_id` when they concern a run.
    pub async fn append(&self, run_id: Option<&str>, entries: &[AuditEntry]) -> Result<()> {
        Ok(self
            .0
            .store()
            .append_audit(run_id, entries, self.0.now())
            .await?)
    }
}
