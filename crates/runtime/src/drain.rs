//! Shutting down without leaving work for a person: draining.
//!
//! Killed mid-call, an instance leaves a non-idempotent step's outcome
//! unknown, and the run goes to `needs_human`. So a routine stop drains
//! first. From [`Runtime::drain`] on, this instance claims nothing new — no
//! run, no timer — and its drivers carry on only until the calls already in
//! flight have finished and their outcomes are committed: a run stops at
//! the next step boundary, the call it would start handed over
//! (`engine::hand_over`), and gives back its lease and its targets, so
//! another instance goes on at once (or this one, after its restart).
//! [`Runtime::drained`] says when no driver is left. The server meanwhile
//! reports itself not ready, so that load balancers send work elsewhere.

use crate::Runtime;

impl Runtime {
    /// Starts draining: nothing new is claimed from now on, and every
    /// driver stops at its run's next step boundary.
    pub fn drain(&self) {
        self.inner.draining.send_replace(true);
        tracing::info!(
            driving = self.inner.driving.lock().expect("driver set lock").len(),
            "draining: finishing the calls in flight, claiming nothing new"
        );
    }

    /// True once [`Runtime::drain`] was called.
    pub fn is_draining(&self) -> bool {
        *self.inner.draining.borrow()
    }

    /// Resolves when draining begins (at once if it has).
    pub(crate) async fn draining_begins(&self) {
        let mut draining = self.inner.draining.subscribe();
        // The sender lives as long as the runtime, so this cannot fail.
        let _ = draining.wait_for(|draining| *draining).await;
    }

    /// Resolves when no run has a driver in this process any more.
    pub async fn drained(&self) {
        loop {
            let stopped = self.inner.driver_stopped.notified();
            tokio::pin!(stopped);
            // Registered before looking, so a driver that stops in between
            // is not missed.
            stopped.as_mut().enable();
            if self
                .inner
                .driving
                .lock()
                .expect("driver set lock")
                .is_empty()
            {
                return;
            }
            stopped.await;
        }
    }
}
