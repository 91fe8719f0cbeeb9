//! Durable timers (an approval's expiry, a time-bound change's end): the
//! loop sleeps until the earliest is due, woken when one is asked for here
//! or announced by another instance, claims it under a lease, and fires it
//! with the run's transition in one commit — once, across the cluster.

use engine::{Effect, Input};

use crate::driver::Decided;
use crate::{Error, Result, Runtime};

/// How many due timers the timer loop claims at once.
pub(crate) const TIMER_BATCH: u32 = 32;

impl Runtime {
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
                        std::time::Duration::try_from(next.duration_since(runtime.now()))
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
    pub(crate) fn timers_changed(&self) {
        self.inner.timers_changed.notify_one();
    }

    pub(crate) async fn fire_due_timers(&self) -> Result<()> {
        let ttl = self.inner.lease_ttl_ms as i64;
        loop {
            // Shutting down: the timers wait for another instance.
            if self.is_draining() {
                return Ok(());
            }
            let claimed = self
                .inner
                .store
                .claim_due_timers(&self.inner.instance, self.now(), ttl, TIMER_BATCH)
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
    pub(crate) async fn fire_timer(&self, timer: store::ClaimedTimer) -> Result<()> {
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
            let now = self.now();
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
}
