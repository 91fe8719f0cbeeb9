//! The store's behaviour, written once for both backends.
//!
//! `store_methods!` expands the same method bodies inside `sqlite.rs` and
//! `postgres.rs`. Each backend module supplies what differs, by name:
//! `StoreImpl` (its store type), `Db` and `Conn` (sqlx's database and
//! connection types), `sql` (its placeholder dialect: SQL here is written
//! with `?`), `StoreImpl::reader` / `StoreImpl::begin_write` (its pools and
//! how a write transaction starts), `lock_audit_chain` (how audit appends
//! take turns), `announce_work` / `announce_timers` / `announce_settled` (how
//! other instances learn that work may be waiting, that a timer was asked
//! for, or that a run settled), and `skip_locked!` (how concurrent claimers
//! pass over rows another is claiming). A macro rather than generics: sqlx's generic bounds
//! for "any database that can bind these types" would outweigh the code.

/// A migrator for embedded migrations `(version, description, sql)`.
pub(crate) fn migrator(
    migrations: &'static [(i64, &'static str, &'static str)],
) -> sqlx::migrate::Migrator {
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    Migrator::with_migrations(
        migrations
            .iter()
            .map(|(version, description, sql)| {
                let sql = sqlx::SqlSafeStr::into_sql_str(*sql);
                Migration::new(
                    *version,
                    std::borrow::Cow::Borrowed(*description),
                    MigrationType::Simple,
                    sql,
                    false,
                )
            })
            .collect(),
    )
}

/// The newest migration in `migrations` (numbered from 1, without gaps).
pub(crate) fn latest_version(migrations: &[(i64, &str, &str)]) -> i64 {
    migrations
        .iter()
        .map(|(version, _, _)| *version)
        .max()
        .unwrap_or(0)
}

/// A database migrated by a newer opsgate may hold data this build would
/// misread or corrupt: refuse it rather than guess. `found` is the
/// database's newest applied migration, if it has any.
pub(crate) fn refuse_newer_than(
    found: Option<i64>,
    migrations: &[(i64, &str, &str)],
) -> crate::Result<()> {
    let known = latest_version(migrations);
    match found {
        Some(found) if found > known => Err(crate::Error::SchemaTooNew { found, known }),
        _ => Ok(()),
    }
}

/// Whether `error` is a violation of the named constraint.
pub(crate) fn violates(error: &sqlx::Error, constraint: &str) -> bool {
    error
        .as_database_error()
        .and_then(|error| error.constraint())
        == Some(constraint)
}

macro_rules! store_methods {
    () => {
impl StoreImpl {
    /// The schema version the database is at.
    pub async fn schema_version(&self) -> Result<i64> {
        let version: Option<i64> = sqlx::query(sql("SELECT MAX(version) FROM _sqlx_migrations"))
            .fetch_one(self.reader())
            .await?
            .try_get(0)?;
        Ok(version.unwrap_or(0))
    }

    /// Stores an event and, when intake decided so, the run it starts — in
    /// one transaction. When another open run already owns the dedup key,
    /// the run is not created and the event is stored as a duplicate.
    pub async fn intake(&self, intake: Intake, now: Timestamp) -> Result<IntakeOutcome> {
        match self.try_intake(&intake, now).await {
            // Another writer opened a run for this dedup key between our
            // check and our insert; the unique index refused ours. Once
            // more: now the check finds that run, and the event is a duplicate.
            Err(Error::Database(error)) if violates(&error, "runs_one_open_per_dedup_key") => {
                self.try_intake(&intake, now).await
            }
            other => other,
        }
    }

    async fn try_intake(&self, intake: &Intake, now: Timestamp) -> Result<IntakeOutcome> {
        let mut tx = self.begin_write().await?;
        if intake.run.is_some()
            && let Some(existing_run_id) = open_run_for(&mut tx, &intake.event.dedup_key).await?
        {
            let detail = format!("run {existing_run_id} is already open for this dedup key");
            let row = EventInsert {
                requester: intake.requester.as_deref(),
                disposition: Disposition::Duplicate,
                detail: Some(&detail),
                run_id: Some(&existing_run_id),
                recurrence_key: intake.recurrence_key.as_deref(),
            };
            insert_event(&mut tx, &intake.event, row).await?;
            let mut records = intake.records.clone();
            records.push(AuditEntry::new(
                "event.duplicate",
                "opsgate",
                serde_json::json!({"dedup_key": intake.event.dedup_key, "existing_run": existing_run_id}),
            ));
            append_audit(&mut tx, now, None, Some(&intake.event.id), &records).await?;
            tx.commit().await?;
            self.audit_appended();
            return Ok(IntakeOutcome::Duplicate { existing_run_id });
        }
        let run_id = intake.run.as_ref().map(|run| run.id.as_str());
        let row = EventInsert {
            requester: intake.requester.as_deref(),
            disposition: intake.disposition,
            detail: intake.detail.as_deref(),
            run_id,
            recurrence_key: intake.recurrence_key.as_deref(),
        };
        insert_event(&mut tx, &intake.event, row).await?;
        append_audit(&mut tx, now, None, Some(&intake.event.id), &intake.records).await?;
        if let Some(run) = &intake.run {
            let now_text = now.to_string();
            sqlx::query(sql(
                "INSERT INTO runs (id, event_id, dedup_key, runbook_id, runbook_version, state, is_open, plan, \
                 decision, machine, reason, revision, created_at, created_ms, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 1, $12, $13, $14)",
            ))
            .bind(&run.id)
            .bind(&intake.event.id)
            .bind(&intake.event.dedup_key)
            .bind(&run.plan.runbook_id)
            .bind(&run.plan.runbook_version)
            .bind(run.machine.state.as_str())
            .bind(!run.machine.state.is_terminal())
            .bind(serde_json::to_string(&run.plan)?)
            .bind(serde_json::to_string(&run.decision)?)
            .bind(serde_json::to_string(&run.machine)?)
            .bind(&run.machine.reason)
            .bind(&now_text)
            .bind(now.as_millisecond())
            .bind(&now_text)
            .execute(&mut *tx)
            .await?;
            append_audit(
                &mut tx,
                now,
                Some(&run.id),
                Some(&intake.event.id),
                &run.records,
            )
            .await?;
            schedule_timers(&mut tx, &run.id, run.machine.state, &run.timers).await?;
            for writeback in &run.writebacks {
                sqlx::query(sql(
                    "INSERT INTO writebacks (run_id, system, destination, next_attempt_ms) VALUES ($1, $2, $3, $4)",
                ))
                .bind(&run.id)
                .bind(&writeback.system)
                .bind(&writeback.destination)
                .bind(now.as_millisecond())
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        self.audit_appended();
        Ok(IntakeOutcome::Stored)
    }

    /// The open run for a dedup key, if any.
    pub async fn open_run_for_dedup_key(&self, dedup_key: &str) -> Result<Option<String>> {
        let mut connection = self.reader().acquire().await?;
        open_run_for(&mut connection, dedup_key).await
    }

    /// Commits one transition of a run: its new state, the attempts it
    /// starts or finishes, and its audit records. Fails with
    /// [`Error::Conflict`] when the run changed since `expected_revision`.
    /// Returns the new revision.
    pub async fn commit(
        &self,
        run_id: &str,
        expected_revision: i64,
        transition: &Transition,
        actor: &str,
        now: Timestamp,
    ) -> Result<i64> {
        self.commit_with(run_id, expected_revision, None, transition, actor, now).await
    }

    /// [`Self::commit`] for the holder of the run's lease: refused with
    /// [`Error::Fenced`] once another instance has claimed the run.
    pub async fn commit_fenced(
        &self,
        run_id: &str,
        expected_revision: i64,
        lease: &Lease,
        transition: &Transition,
        actor: &str,
        now: Timestamp,
    ) -> Result<i64> {
        self.commit_with(run_id, expected_revision, Some(lease), transition, actor, now).await
    }

    async fn commit_with(
        &self,
        run_id: &str,
        expected_revision: i64,
        lease: Option<&Lease>,
        transition: &Transition,
        actor: &str,
        now: Timestamp,
    ) -> Result<i64> {
        let mut tx = self.begin_write().await?;
        let revision =
            write_transition(&mut tx, run_id, expected_revision, lease, transition, actor, now).await?;
        tx.commit().await?;
        self.audit_appended();
        Ok(revision)
    }

    /// Claims the run for `owner` until `now + ttl_ms`, when it is open,
    /// nobody holds an unexpired lease on it, and no other run holds one of
    /// its targets. Each claim bumps the fencing token. `None` when the run
    /// or a target is held elsewhere (or the run is finished).
    pub async fn claim_run(&self, run_id: &str, owner: &str, now: Timestamp, ttl_ms: i64) -> Result<Option<Lease>> {
        let expires_ms = now.as_millisecond() + ttl_ms;
        let mut tx = self.begin_write().await?;
        let claimed = sqlx::query(sql(
            "UPDATE runs SET lease_owner = $1, lease_token = lease_token + 1, lease_expires_ms = $2 \
             WHERE id = $3 AND is_open = TRUE AND (lease_owner IS NULL OR lease_expires_ms < $4) \
             RETURNING lease_token, plan",
        ))
        .bind(owner)
        .bind(expires_ms)
        .bind(run_id)
        .bind(now.as_millisecond())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(claimed) = claimed else {
            return Ok(None);
        };
        let plan: domain::Plan = serde_json::from_str(&claimed.try_get::<String, _>("plan")?)?;
        let mut targets: Vec<&String> = plan.targets.iter().collect();
        targets.sort_unstable();
        targets.dedup();
        for target in targets {
            let held = sqlx::query(sql(
                "INSERT INTO target_holds (target, run_id, expires_ms) VALUES ($1, $2, $3) \
                 ON CONFLICT (target) DO UPDATE SET run_id = excluded.run_id, expires_ms = excluded.expires_ms \
                 WHERE target_holds.run_id = excluded.run_id OR target_holds.expires_ms < $4",
            ))
            .bind(target)
            .bind(run_id)
            .bind(expires_ms)
            .bind(now.as_millisecond())
            .execute(&mut *tx)
            .await?;
            if held.rows_affected() == 0 {
                // Another run acts on this target: no claim at all.
                tx.rollback().await?;
                return Ok(None);
            }
        }
        let token = claimed.try_get("lease_token")?;
        tx.commit().await?;
        Ok(Some(Lease { owner: owner.to_owned(), token, expires_ms }))
    }

    /// Extends a lease still held; `None` when it was lost (expired and
    /// claimed by another instance).
    pub async fn renew_lease(&self, run_id: &str, lease: &Lease, now: Timestamp, ttl_ms: i64) -> Result<Option<Lease>> {
        let expires_ms = now.as_millisecond() + ttl_ms;
        let mut tx = self.begin_write().await?;
        let renewed = sqlx::query(sql(
            "UPDATE runs SET lease_expires_ms = $1 WHERE id = $2 AND lease_owner = $3 AND lease_token = $4",
        ))
        .bind(expires_ms)
        .bind(run_id)
        .bind(&lease.owner)
        .bind(lease.token)
        .execute(&mut *tx)
        .await?;
        if renewed.rows_affected() != 1 {
            return Ok(None);
        }
        sqlx::query(sql("UPDATE target_holds SET expires_ms = $1 WHERE run_id = $2"))
            .bind(expires_ms)
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(Lease { expires_ms, ..lease.clone() }))
    }

    /// Gives a lease and its target holds back, so that nobody need wait
    /// for them to expire (a run waiting for approval, a finished run).
    pub async fn release_lease(&self, run_id: &str, lease: &Lease) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let released = sqlx::query(sql(
            "UPDATE runs SET lease_owner = NULL, lease_expires_ms = NULL \
             WHERE id = $1 AND lease_owner = $2 AND lease_token = $3",
        ))
        .bind(run_id)
        .bind(&lease.owner)
        .bind(lease.token)
        .execute(&mut *tx)
        .await?;
        if released.rows_affected() == 1 {
            sqlx::query(sql("DELETE FROM target_holds WHERE run_id = $1"))
                .bind(run_id)
                .execute(&mut *tx)
                .await?;
            // Runs that waited for these targets may be claimable now.
            announce_work(&mut tx, run_id).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Open runs that should be executing but that nobody holds: new
    /// approved runs, and runs whose instance stopped renewing. Oldest first.
    pub async fn claimable_runs(&self, now: Timestamp) -> Result<Vec<String>> {
        let rows = sqlx::query(sql(
            "SELECT id FROM runs WHERE is_open = TRUE \
             AND state IN ('approved', 'running', 'verifying', 'rolling_back') \
             AND (lease_owner IS NULL OR lease_expires_ms < $1) ORDER BY created_ms, id",
        ))
        .bind(now.as_millisecond())
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(|row| Ok(row.try_get("id")?)).collect()
    }

    /// Claims up to `limit` timers due at `now` that nobody holds, for
    /// `owner` until `now + ttl_ms`, earliest first. Each claim bumps the
    /// timer's fencing token; concurrent claimers never get the same timer.
    pub async fn claim_due_timers(&self, owner: &str, now: Timestamp, ttl_ms: i64, limit: u32) -> Result<Vec<ClaimedTimer>> {
        let now_ms = now.as_millisecond();
        let expires_ms = now_ms + ttl_ms;
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(sql(concat!(
            "UPDATE timers SET lease_owner = $1, lease_token = lease_token + 1, lease_expires_ms = $2 \
             WHERE id IN (SELECT id FROM timers WHERE status = 'pending' AND due_ms <= $3 \
             AND (lease_owner IS NULL OR lease_expires_ms < $4) ORDER BY due_ms, id LIMIT $5",
            skip_locked!(),
            ") RETURNING id, run_id, kind, lease_token"
        )))
        .bind(owner)
        .bind(expires_ms)
        .bind(now_ms)
        .bind(now_ms)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut claimed = rows
            .iter()
            .map(|row| {
                Ok(ClaimedTimer {
                    id: row.try_get("id")?,
                    run_id: row.try_get("run_id")?,
                    kind: crate::rows::timer_kind(&row.try_get::<String, _>("kind")?)?,
                    lease: Lease { owner: owner.to_owned(), token: row.try_get("lease_token")?, expires_ms },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        claimed.sort_by_key(|timer| timer.id);
        Ok(claimed)
    }

    /// Fires a claimed timer: marks it fired and commits `transition` (the
    /// run's answer to it, read at `run_revision`) in one transaction, so
    /// it fires exactly once. With no transition (the run cannot take the
    /// timer any more) the timer is disarmed instead. Refused with
    /// [`Error::Fenced`] when another instance claimed the timer since;
    /// [`Error::Conflict`] when the run changed since `run_revision`.
    pub async fn fire_timer(
        &self,
        timer: &ClaimedTimer,
        run_revision: i64,
        transition: Option<&Transition>,
        actor: &str,
        now: Timestamp,
    ) -> Result<TimerFiring> {
        let mut tx = self.begin_write().await?;
        let status = if transition.is_some() { "fired" } else { "disarmed" };
        let settled = sqlx::query(sql(
            "UPDATE timers SET status = $1, settled_at = $2, lease_owner = NULL, lease_expires_ms = NULL \
             WHERE id = $3 AND status = 'pending' AND lease_owner = $4 AND lease_token = $5",
        ))
        .bind(status)
        .bind(now.to_string())
        .bind(timer.id)
        .bind(&timer.lease.owner)
        .bind(timer.lease.token)
        .execute(&mut *tx)
        .await?;
        if settled.rows_affected() != 1 {
            let current = sqlx::query(sql("SELECT status FROM timers WHERE id = $1"))
                .bind(timer.id)
                .fetch_one(&mut *tx)
                .await?;
            let current: String = current.try_get("status")?;
            if current != "pending" {
                return Ok(TimerFiring::AlreadySettled);
            }
            return Err(Error::Fenced { run_id: timer.run_id.clone() });
        }
        let firing = match transition {
            Some(transition) => {
                write_transition(&mut tx, &timer.run_id, run_revision, None, transition, actor, now).await?;
                TimerFiring::Fired
            }
            None => TimerFiring::Disarmed,
        };
        tx.commit().await?;
        self.audit_appended();
        Ok(firing)
    }

    /// When the timer loop should next look: the earliest due time of a
    /// pending timer, or of its claim's expiry when another instance holds it.
    pub async fn next_timer_check(&self) -> Result<Option<Timestamp>> {
        let next: Option<i64> = sqlx::query(sql(
            "SELECT MIN(CASE WHEN lease_expires_ms IS NOT NULL AND lease_expires_ms > due_ms \
             THEN lease_expires_ms ELSE due_ms END) FROM timers WHERE status = 'pending'",
        ))
        .fetch_one(self.reader())
        .await?
        .try_get(0)?;
        next.map(|ms| {
            Timestamp::from_millisecond(ms).map_err(|error| Error::Corrupt(format!("timer due time {ms}: {error}")))
        })
        .transpose()
    }

    /// Claims up to `limit` write-backs that have audit records beyond their
    /// cursor, are due (not backing off), and that nobody holds, for `owner`
    /// until `now + ttl_ms`. Each claim bumps the fencing token.
    pub async fn claim_writebacks(&self, owner: &str, now: Timestamp, ttl_ms: i64, limit: u32) -> Result<Vec<ClaimedWriteback>> {
        let now_ms = now.as_millisecond();
        let expires_ms = now_ms + ttl_ms;
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(sql(concat!(
            "UPDATE writebacks SET lease_owner = $1, lease_token = lease_token + 1, lease_expires_ms = $2 \
             WHERE (run_id, system) IN (SELECT w.run_id, w.system FROM writebacks w WHERE w.done = FALSE AND w.next_attempt_ms <= $3 \
             AND (w.lease_owner IS NULL OR w.lease_expires_ms < $4) \
             AND EXISTS (SELECT 1 FROM audit a WHERE a.run_id = w.run_id AND a.seq > w.cursor_seq) \
             ORDER BY w.next_attempt_ms LIMIT $5",
            skip_locked!(),
            ") RETURNING run_id, system, destination, cursor_seq, pending_to_seq, failures, lease_token"
        )))
        .bind(owner)
        .bind(expires_ms)
        .bind(now_ms)
        .bind(now_ms)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter()
            .map(|row| {
                Ok(ClaimedWriteback {
                    run_id: row.try_get("run_id")?,
                    system: row.try_get("system")?,
                    destination: row.try_get("destination")?,
                    cursor_seq: row.try_get("cursor_seq")?,
                    pending_to_seq: row.try_get("pending_to_seq")?,
                    failures: i64::from(row.try_get::<i32, _>("failures")?),
                    lease: Lease { owner: owner.to_owned(), token: row.try_get("lease_token")?, expires_ms },
                })
            })
            .collect()
    }

    /// The run's audit records after `after_seq`, in order, at most `limit`.
    pub async fn run_audit_after(&self, run_id: &str, after_seq: i64, limit: u32) -> Result<Vec<AuditRow>> {
        let rows = sqlx::query(sql(
            "SELECT seq, recorded_at, run_id, event_id, kind, actor, detail, prev_hash, hash FROM audit \
             WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        ))
        .bind(run_id)
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(audit_row).collect()
    }

    /// Records that the batch up to `to_seq` is about to be written, before
    /// the system is called. Fenced by the claim's token.
    pub async fn begin_writeback_batch(&self, claimed: &ClaimedWriteback, to_seq: i64) -> Result<()> {
        self.update_writeback(
            claimed,
            "UPDATE writebacks SET pending_to_seq = $1 WHERE run_id = $2 AND system = $3 AND lease_owner = $4 AND lease_token = $5",
            |query| query.bind(to_seq),
        )
        .await
    }

    /// The batch up to `to_seq` is written: moves the cursor, clears
    /// the failures, marks the write-back `done` when asked, and gives the
    /// claim back. Fenced by the claim's token.
    pub async fn finish_writeback_batch(&self, claimed: &ClaimedWriteback, to_seq: i64, done: bool) -> Result<()> {
        self.update_writeback(
            claimed,
            "UPDATE writebacks SET cursor_seq = $1, pending_to_seq = NULL, done = $2, failures = 0, last_error = NULL, \
             lease_owner = NULL, lease_expires_ms = NULL WHERE run_id = $3 AND system = $4 AND lease_owner = $5 AND lease_token = $6",
            |query| query.bind(to_seq).bind(done),
        )
        .await
    }

    /// Writing failed: counts it, keeps `error`, waits until `retry_at`, and
    /// gives the claim back. Fenced by the claim's token.
    pub async fn fail_writeback(&self, claimed: &ClaimedWriteback, error: &str, retry_at: Timestamp) -> Result<()> {
        self.update_writeback(
            claimed,
            "UPDATE writebacks SET failures = failures + 1, last_error = $1, next_attempt_ms = $2, \
             lease_owner = NULL, lease_expires_ms = NULL WHERE run_id = $3 AND system = $4 AND lease_owner = $5 AND lease_token = $6",
            |query| query.bind(error.to_owned()).bind(retry_at.as_millisecond()),
        )
        .await
    }

    /// Runs `statement`, an UPDATE of one write-back ending in
    /// `WHERE run_id = ? AND system = ? AND lease_owner = ? AND lease_token = ?`,
    /// with `bind`'s values then the claim's; refused as [`Error::Fenced`]
    /// when the claim is no longer held.
    async fn update_writeback<'q>(
        &self,
        claimed: &'q ClaimedWriteback,
        statement: &'static str,
        bind: impl FnOnce(
            sqlx::query::Query<'q, Db, <Db as sqlx::Database>::Arguments>,
        ) -> sqlx::query::Query<'q, Db, <Db as sqlx::Database>::Arguments>,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let updated = bind(sqlx::query(sql(statement)))
            .bind(claimed.run_id.as_str())
            .bind(claimed.system.as_str())
            .bind(claimed.lease.owner.as_str())
            .bind(claimed.lease.token)
            .execute(&mut *tx)
            .await?;
        if updated.rows_affected() != 1 {
            return Err(Error::Fenced { run_id: claimed.run_id.clone() });
        }
        tx.commit().await?;
        Ok(())
    }

    /// A run's write-backs, one per system.
    pub async fn writebacks(&self, run_id: &str) -> Result<Vec<WritebackRow>> {
        let rows = sqlx::query(sql(
            "SELECT system, destination, cursor_seq, done, failures, last_error FROM writebacks WHERE run_id = $1 ORDER BY system",
        ))
        .bind(run_id)
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(|row| {
            Ok(WritebackRow {
                system: row.try_get("system")?,
                destination: row.try_get("destination")?,
                cursor_seq: row.try_get("cursor_seq")?,
                done: row.try_get("done")?,
                failures: i64::from(row.try_get::<i32, _>("failures")?),
                last_error: row.try_get("last_error")?,
            })
        })
        .collect()
    }

    /// A run's timers, in the order they were asked for.
    pub async fn timers(&self, run_id: &str) -> Result<Vec<TimerRow>> {
        let rows = sqlx::query(sql(
            "SELECT id, run_id, kind, armed_in, due_at, status, settled_at FROM timers WHERE run_id = $1 ORDER BY id",
        ))
        .bind(run_id)
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(timer_row).collect()
    }

    /// Imports an exported audit log (another database's, in order) into
    /// this database's empty audit table, verbatim: sequence numbers, times
    /// and hashes are kept, so the chain verifies here as it did there, and
    /// new records continue it. Refused whole when the chain does not hold
    /// or the table is not empty. Returns how many records were imported.
    pub async fn import_audit(&self, rows: &[AuditRow]) -> Result<u64> {
        let mut checker = ChainChecker::new();
        for row in rows {
            if !checker.check(row) {
                break;
            }
        }
        let report = checker.report();
        if let Some(broken) = report.first_break {
            return Err(Error::ImportRefused(format!("record {}: {}", broken.seq, broken.reason)));
        }
        let mut tx = self.begin_write().await?;
        lock_audit_chain(&mut tx).await?;
        let existing: i64 = sqlx::query(sql("SELECT COUNT(*) FROM audit")).fetch_one(&mut *tx).await?.try_get(0)?;
        if existing > 0 {
            return Err(Error::ImportRefused(format!("the audit table already holds {existing} record(s)")));
        }
        for row in rows {
            sqlx::query(sql(
                "INSERT INTO audit (seq, recorded_at, run_id, event_id, kind, actor, detail, prev_hash, hash) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            ))
            .bind(row.seq)
            .bind(&row.recorded_at)
            .bind(&row.run_id)
            .bind(&row.event_id)
            .bind(&row.kind)
            .bind(&row.actor)
            .bind(domain::canonical_json(&row.detail))
            .bind(&row.prev_hash)
            .bind(&row.hash)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.audit_appended();
        Ok(rows.len() as u64)
    }

    /// Tells whoever waits on [`Self::audit_appends`] that this process
    /// committed audit records.
    fn audit_appended(&self) {
        self.audit_appends.send_modify(|commits| *commits += 1);
    }

    /// Changes each time this process commits audit records (a count of
    /// such commits); records other instances append are not seen here.
    pub fn audit_appends(&self) -> tokio::sync::watch::Receiver<u64> {
        self.audit_appends.subscribe()
    }

    /// The chain's newest record: its sequence number and hash.
    pub async fn audit_head(&self) -> Result<Option<(i64, String)>> {
        let row = sqlx::query(sql("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1"))
            .fetch_optional(self.reader())
            .await?;
        row.map(|row| Ok((row.try_get("seq")?, row.try_get("hash")?))).transpose()
    }

    /// The hash of record `seq`, if the chain holds it.
    pub async fn audit_hash(&self, seq: i64) -> Result<Option<String>> {
        let row = sqlx::query(sql("SELECT hash FROM audit WHERE seq = $1"))
            .bind(seq)
            .fetch_optional(self.reader())
            .await?;
        Ok(row.map(|row| row.try_get("hash")).transpose()?)
    }

    /// Appends audit records that belong to no transition (an API refusal,
    /// an operator action).
    pub async fn append_audit(
        &self,
        run_id: Option<&str>,
        entries: &[AuditEntry],
        now: Timestamp,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        append_audit(&mut tx, now, run_id, None, entries).await?;
        tx.commit().await?;
        self.audit_appended();
        Ok(())
    }

    pub async fn run(&self, run_id: &str) -> Result<Option<RunRow>> {
        let row = sqlx::query(sql(select_runs!("WHERE id = $1")))
            .bind(run_id)
            .fetch_optional(self.reader())
            .await?;
        row.map(|row| run_row(&row)).transpose()
    }

    /// Runs, newest first.
    pub async fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRow>> {
        let limit = filter.limit.unwrap_or(100) as i64;
        let rows = match filter.state {
            Some(state) => {
                sqlx::query(sql(select_runs!(
                    "WHERE state = $1 ORDER BY created_ms DESC, id DESC LIMIT $2"
                )))
                .bind(state.as_str())
                .bind(limit)
                .fetch_all(self.reader())
                .await?
            }
            None => {
                sqlx::query(sql(select_runs!("ORDER BY created_ms DESC, id DESC LIMIT $1")))
                    .bind(limit)
                    .fetch_all(self.reader())
                    .await?
            }
        };
        rows.iter().map(run_row).collect()
    }

    pub async fn attempts(&self, run_id: &str) -> Result<Vec<AttemptRow>> {
        let rows = sqlx::query(sql(
            "SELECT seq, phase, step_id, attempt, action, request, started_at, finished_at, outcome \
             FROM attempts WHERE run_id = $1 ORDER BY seq",
        ))
        .bind(run_id)
        .fetch_all(self.reader())
        .await?;
        rows.iter()
            .map(|row| {
                let outcome: Option<String> = row.try_get("outcome")?;
                Ok(AttemptRow {
                    seq: row.try_get("seq")?,
                    phase: row.try_get("phase")?,
                    step_id: row.try_get("step_id")?,
                    attempt: row.try_get("attempt")?,
                    action: row.try_get("action")?,
                    request: serde_json::from_str(&row.try_get::<String, _>("request")?)?,
                    started_at: row.try_get("started_at")?,
                    finished_at: row.try_get("finished_at")?,
                    outcome: outcome
                        .map(|text| serde_json::from_str(&text))
                        .transpose()?,
                })
            })
            .collect()
    }

    pub async fn event(&self, event_id: &str) -> Result<Option<EventRow>> {
        let row = sqlx::query(sql(
            "SELECT id, source, kind, dedup_key, subject, fields, status, received_at, disposition, detail, run_id, \
             requester FROM events WHERE id = $1",
        ))
        .bind(event_id)
        .fetch_optional(self.reader())
        .await?;
        row.map(|row| event_row(&row)).transpose()
    }

    /// How many distinct incidents (dedup keys other than `except_dedup_key`)
    /// with this recurrence key arrived at or after `since`.
    pub async fn count_recurrences(
        &self,
        recurrence_key: &str,
        since: Timestamp,
        except_dedup_key: &str,
    ) -> Result<i64> {
        let row = sqlx::query(sql(
            "SELECT COUNT(DISTINCT dedup_key) FROM events \
             WHERE recurrence_key = $1 AND received_ms >= $2 AND dedup_key <> $3",
        ))
        .bind(recurrence_key)
        .bind(since.as_millisecond())
        .bind(except_dedup_key)
        .fetch_one(self.reader())
        .await?;
        Ok(row.try_get(0)?)
    }

    /// When each run of `runbook_id` created at or after `since` that the
    /// gate let through (every state but `denied`) was created, and its
    /// targets: what cooldowns and rate limits count. `except_run_id` leaves
    /// out the run being judged again.
    pub async fn recent_run_targets(
        &self,
        runbook_id: &str,
        since: Timestamp,
        except_run_id: Option<&str>,
    ) -> Result<Vec<(Timestamp, Vec<String>)>> {
        let rows = sqlx::query(sql(
            "SELECT created_ms, plan FROM runs WHERE runbook_id = $1 AND created_ms >= $2 AND state <> 'denied' \
             AND ($3 IS NULL OR id <> $4)",
        ))
        .bind(runbook_id)
        .bind(since.as_millisecond())
        .bind(except_run_id)
        .bind(except_run_id)
        .fetch_all(self.reader())
        .await?;
        rows.iter()
            .map(|row| {
                let plan: domain::Plan = serde_json::from_str(&row.try_get::<String, _>("plan")?)?;
                let created_ms: i64 = row.try_get("created_ms")?;
                let created = Timestamp::from_millisecond(created_ms)
                    .map_err(|error| Error::Corrupt(format!("run creation time {created_ms}: {error}")))?;
                Ok((created, plan.targets))
            })
            .collect()
    }

    /// How many runs of any runbook the gate let through (every state but
    /// `denied`) were created at or after `since`, leaving out `except_run_id`.
    pub async fn count_runs_since(&self, since: Timestamp, except_run_id: Option<&str>) -> Result<i64> {
        let row = sqlx::query(sql(
            "SELECT COUNT(*) FROM runs WHERE created_ms >= $1 AND state <> 'denied' AND ($2 IS NULL OR id <> $3)",
        ))
        .bind(since.as_millisecond())
        .bind(except_run_id)
        .bind(except_run_id)
        .fetch_one(self.reader())
        .await?;
        Ok(row.try_get(0)?)
    }

    pub async fn event_count(&self) -> Result<i64> {
        Ok(sqlx::query(sql("SELECT COUNT(*) FROM events"))
            .fetch_one(self.reader())
            .await?
            .try_get(0)?)
    }

    /// Audit records of one run (or all, when `run_id` is `None`), in order.
    pub async fn audit(&self, run_id: Option<&str>) -> Result<Vec<AuditRow>> {
        let rows = match run_id {
            Some(run_id) => {
                sqlx::query(sql(
                    "SELECT seq, recorded_at, run_id, event_id, kind, actor, detail, prev_hash, hash FROM audit \
                     WHERE run_id = $1 OR event_id = (SELECT event_id FROM runs WHERE id = $2) ORDER BY seq",
                ))
                .bind(run_id)
                .bind(run_id)
                .fetch_all(self.reader())
                .await?
            }
            None => {
                sqlx::query(sql("SELECT seq, recorded_at, run_id, event_id, kind, actor, detail, prev_hash, hash FROM audit ORDER BY seq"))
                    .fetch_all(self.reader())
                    .await?
            }
        };
        rows.iter().map(audit_row).collect()
    }

    /// Walks the whole audit chain and names the first broken record.
    pub async fn verify_audit(&self) -> Result<ChainReport> {
        use futures_util::TryStreamExt;
        let mut checker = ChainChecker::new();
        let mut rows = sqlx::query(sql(
            "SELECT seq, recorded_at, run_id, event_id, kind, actor, detail, prev_hash, hash FROM audit ORDER BY seq",
        ))
        .fetch(self.reader());
        while let Some(row) = rows.try_next().await? {
            match audit_row(&row) {
                Ok(record) if checker.check(&record) => {}
                Ok(_) => break,
                // A detail that no longer parses was edited by hand.
                Err(Error::Corrupt(problem)) => {
                    checker.break_at(
                        row.try_get("seq")?,
                        format!("its detail is not valid JSON ({problem}): altered?"),
                    );
                    break;
                }
                Err(other) => return Err(other),
            }
        }
        Ok(checker.report())
    }

}

/// Writes one transition of a run inside the caller's transaction (see
/// [`StoreImpl::commit`]); `lease`, when given, fences the write.
async fn write_transition(
    tx: &mut Transaction<'_, Db>,
    run_id: &str,
    expected_revision: i64,
    lease: Option<&Lease>,
    transition: &Transition,
    actor: &str,
    now: Timestamp,
) -> Result<i64> {
    let now_text = now.to_string();
    let fence = lease.map(|lease| lease.token);
    let machine = &transition.run;
    let updated = sqlx::query(sql(
        "UPDATE runs SET state = $1, is_open = $2, machine = $3, reason = $4, revision = revision + 1, updated_at = $5 \
         WHERE id = $6 AND revision = $7 AND ($8 IS NULL OR lease_token = $9)",
    ))
    .bind(machine.state.as_str())
    .bind(!machine.state.is_terminal())
    .bind(serde_json::to_string(machine)?)
    .bind(&machine.reason)
    .bind(&now_text)
    .bind(run_id)
    .bind(expected_revision)
    .bind(fence)
    .bind(fence)
    .execute(&mut **tx)
    .await?;
    if updated.rows_affected() != 1 {
        let current = sqlx::query(sql("SELECT lease_token FROM runs WHERE id = $1"))
            .bind(run_id)
            .fetch_optional(&mut **tx)
            .await?;
        let Some(current) = current else {
            return Err(Error::UnknownRun { run_id: run_id.to_owned() });
        };
        let current_token: i64 = current.try_get("lease_token")?;
        if fence.is_some_and(|token| token != current_token) {
            return Err(Error::Fenced { run_id: run_id.to_owned() });
        }
        return Err(Error::Conflict {
            run_id: run_id.to_owned(),
            expected: expected_revision,
        });
    }
    for record in &transition.records {
        match record.kind {
            "attempt.finished" => {
                finish_attempt(tx, run_id, &record.detail, &now_text).await?
            }
            "run.recovered" => {
                sqlx::query(sql(
                    "UPDATE attempts SET finished_at = $1, outcome = $2 WHERE run_id = $3 AND finished_at IS NULL",
                ))
                .bind(&now_text)
                .bind(r#"{"outcome":"interrupted","reason":"opsgate stopped while the call was in flight"}"#)
                .bind(run_id)
                .execute(&mut **tx)
                .await?;
            }
            _ => {}
        }
    }
    if let Some(Effect::Call {
        phase,
        step_id,
        attempt,
        call,
    }) = &transition.effect
    {
        sqlx::query(sql(
            "INSERT INTO attempts (run_id, seq, phase, step_id, attempt, action, request, started_at) \
             VALUES ($1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM attempts WHERE run_id = $2), $3, $4, $5, $6, $7, $8)",
        ))
        .bind(run_id)
        .bind(run_id)
        .bind(phase.as_str())
        .bind(step_id)
        .bind(*attempt as i64)
        .bind(&call.action)
        .bind(serde_json::to_string(&call.request)?)
        .bind(&now_text)
        .execute(&mut **tx)
        .await?;
    }
    let entries: Vec<AuditEntry> = transition
        .records
        .iter()
        .map(|record| AuditEntry::new(record.kind, actor, record.detail.clone()))
        .collect();
    append_audit(tx, now, Some(run_id), None, &entries).await?;
    // Timers armed for the state the run left no longer apply. Only a
    // change of state (which the engine always records) can disarm one,
    // so the steps of a running run pay nothing for timers.
    if transition.records.iter().any(|record| record.kind == "run.state") {
        sqlx::query(sql(
            "UPDATE timers SET status = 'disarmed', settled_at = $1, lease_owner = NULL, lease_expires_ms = NULL \
             WHERE run_id = $2 AND status = 'pending' AND armed_in <> $3",
        ))
        .bind(&now_text)
        .bind(run_id)
        .bind(machine.state.as_str())
        .execute(&mut **tx)
        .await?;
    }
    schedule_timers(tx, run_id, machine.state, &transition.timers).await?;
    if machine.state.is_settled() {
        // Whoever waits for this run on another instance learns it here.
        announce_settled(tx, run_id, machine.state).await?;
    }
    Ok(expected_revision + 1)
}


/// Stores the timers a run asked for on entering `armed_in`, and tells the
/// instances' timer loops that the next due time may have moved.
async fn schedule_timers(
    tx: &mut Transaction<'_, Db>,
    run_id: &str,
    armed_in: domain::RunState,
    timers: &[engine::Timer],
) -> Result<()> {
    for timer in timers {
        sqlx::query(sql(
            "INSERT INTO timers (run_id, kind, armed_in, due_at, due_ms, status) VALUES ($1, $2, $3, $4, $5, 'pending')",
        ))
        .bind(run_id)
        .bind(timer.kind.as_str())
        .bind(armed_in.as_str())
        .bind(timer.due.to_string())
        .bind(timer.due.as_millisecond())
        .execute(&mut **tx)
        .await?;
    }
    if !timers.is_empty() {
        announce_timers(tx, run_id).await?;
    }
    Ok(())
}

async fn open_run_for(
    connection: &mut Conn,
    dedup_key: &str,
) -> Result<Option<String>> {
    let row = sqlx::query(sql("SELECT id FROM runs WHERE dedup_key = $1 AND is_open = TRUE"))
        .bind(dedup_key)
        .fetch_optional(&mut *connection)
        .await?;
    Ok(row.map(|row| row.try_get("id")).transpose()?)
}

/// What intake records about an event besides the event itself.
struct EventInsert<'a> {
    requester: Option<&'a str>,
    disposition: Disposition,
    detail: Option<&'a str>,
    run_id: Option<&'a str>,
    recurrence_key: Option<&'a str>,
}

async fn insert_event(
    tx: &mut Transaction<'_, Db>,
    event: &Event,
    row: EventInsert<'_>,
) -> Result<()> {
    sqlx::query(sql(
        "INSERT INTO events (id, source, kind, dedup_key, subject, fields, status, received_at, received_ms, \
         recurrence_key, disposition, detail, run_id, requester) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    ))
    .bind(&event.id)
    .bind(&event.source)
    .bind(&event.kind)
    .bind(&event.dedup_key)
    .bind(&event.subject)
    .bind(serde_json::to_string(&event.fields)?)
    .bind(event.status.as_str())
    .bind(event.received_at.to_string())
    .bind(event.received_at.as_millisecond())
    .bind(row.recurrence_key)
    .bind(row.disposition.as_str())
    .bind(row.detail)
    .bind(row.run_id)
    .bind(row.requester)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn finish_attempt(
    tx: &mut Transaction<'_, Db>,
    run_id: &str,
    detail: &Value,
    now: &str,
) -> Result<()> {
    sqlx::query(sql(
        "UPDATE attempts SET finished_at = $1, outcome = $2 \
         WHERE run_id = $3 AND phase = $4 AND step_id = $5 AND attempt = $6 AND finished_at IS NULL",
    ))
    .bind(now)
    .bind(serde_json::to_string(&detail["outcome"])?)
    .bind(run_id)
    .bind(detail["phase"].as_str().unwrap_or_default())
    .bind(detail["step"].as_str().unwrap_or_default())
    .bind(detail["attempt"].as_i64().unwrap_or_default())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Appends records to the chain. Runs inside the caller's transaction on the
/// single writer connection, so "read the head, append after it" cannot race.
///
/// `now` was read by the caller before it got its turn at the chain, so a
/// writer that waited may hold an older time than the record it now
/// follows. Records are stamped with the later of the two, so that time
/// never goes backwards along the chain and two runs never seem to overlap.
async fn append_audit(
    tx: &mut Transaction<'_, Db>,
    now: Timestamp,
    run_id: Option<&str>,
    event_id: Option<&str>,
    entries: &[AuditEntry],
) -> Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    lock_audit_chain(tx).await?;
    let head = sqlx::query(sql("SELECT seq, hash, recorded_at FROM audit ORDER BY seq DESC LIMIT 1"))
        .fetch_optional(&mut **tx)
        .await?;
    let (mut seq, mut prev_hash, head_time) = match head {
        Some(row) => (
            row.try_get::<i64, _>("seq")?,
            row.try_get::<String, _>("hash")?,
            Some(row.try_get::<String, _>("recorded_at")?),
        ),
        None => (0, GENESIS_HASH.to_owned(), None),
    };
    let recorded_at = crate::audit::not_before_head(now, head_time.as_deref(), seq).to_string();
    for entry in entries {
        seq += 1;
        let hash = chain_hash(
            &prev_hash,
            &ChainedRecord {
                seq,
                recorded_at: &recorded_at,
                run_id,
                event_id,
                kind: &entry.kind,
                actor: &entry.actor,
                detail: &entry.detail,
            },
        );
        sqlx::query(sql(
            "INSERT INTO audit (seq, recorded_at, run_id, event_id, kind, actor, detail, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        ))
        .bind(seq)
        .bind(&recorded_at)
        .bind(run_id)
        .bind(event_id)
        .bind(&entry.kind)
        .bind(&entry.actor)
        .bind(domain::canonical_json(&entry.detail))
        .bind(&prev_hash)
        .bind(&hash)
        .execute(&mut **tx)
        .await?;
        prev_hash = hash;
    }
    Ok(())
}

    };
}
pub(crate) use store_methods;
