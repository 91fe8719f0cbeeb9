//! The wait shared by the steps that start a job and poll it to its end
//! (`awx.job_template`, `jenkins.build`).
//!
//! Once a job is asked for it runs whether or not opsgate can see it, so a
//! reading that fails is not a failed step: passing trouble (no connection,
//! 429, 5xx) is waited out — the next poll after the interval, or after the
//! peer's `Retry-After` when that is longer — and a refusal (401, 403, 404:
//! the status cannot be read for good) makes the outcome unknown. The step's
//! deadline is the call's timeout, which [`Launched`] turns into an unknown
//! outcome from the moment the job is asked for; each passing trouble is
//! recorded there, so a timeout says what was last seen. Only what a
//! reading means (the job's status, the queue item's build) and the words
//! are the connector's own.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::{Attempt, Launched, message};

/// Polls are this far apart unless the step says otherwise.
const DEFAULT_POLL_EVERY_MS: u64 = 5_000;

/// A step's `poll_every_ms`, or the default.
pub(crate) fn poll_every(request: &Value) -> Result<Duration, String> {
    match &request["poll_every_ms"] {
        Value::Null => Ok(Duration::from_millis(DEFAULT_POLL_EVERY_MS)),
        value => value
            .as_u64()
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis)
            .ok_or_else(|| format!("`poll_every_ms` must be a positive number, not {value}")),
    }
}

/// What the wait needs to know of a peer's answer.
pub(crate) trait Reply {
    fn status(&self) -> StatusCode;
    fn retry_after_ms(&self) -> Option<u64>;
    /// The request it answers, for messages (`AWX GET /api/v2/jobs/7/`).
    fn what(&self) -> &str;
}

/// How a job is followed, and what is said about it. The caller reads;
/// this paces the readings and says what each one means:
///
/// ```text
/// let answer = loop {
///     follow.due().await;
///     if let Some(answer) = follow.judge(read().await)? {
///         break answer;
///     }
/// };
/// ```
pub(crate) struct Follow<'a, Troubled, Unreadable> {
    /// Sleep this long before each reading.
    every: Duration,
    /// The next sleep: `every`, or the peer's `Retry-After` when longer.
    wait: Duration,
    launched: &'a Launched,
    /// What [`Launched`] holds after a reading failed for now: the trouble
    /// (`AWX GET … answered 503 Service Unavailable`) in the job's words.
    troubled: Troubled,
    /// Why the outcome is unknown when the peer refuses to be read.
    unreadable: Unreadable,
}

impl<'a, Troubled, Unreadable> Follow<'a, Troubled, Unreadable> {
    pub(crate) fn new(
        every: Duration,
        launched: &'a Launched,
        troubled: Troubled,
        unreadable: Unreadable,
    ) -> Self {
        Follow {
            every,
            wait: every,
            launched,
            troubled,
            unreadable,
        }
    }

    /// Sleeps until the next reading is due.
    pub(crate) async fn due(&mut self) {
        tokio::time::sleep(self.wait).await;
        self.wait = self.every;
    }

    /// What one reading means: a success to interpret (`Some`); passing
    /// trouble, recorded, to be read again after [`Follow::due`] (`None`);
    /// or, when the peer refuses, an unknown outcome.
    pub(crate) fn judge<Answer: Reply>(
        &mut self,
        reading: Attempt<Answer>,
    ) -> Attempt<Option<Answer>>
    where
        Troubled: Fn(&str) -> String,
        Unreadable: Fn(&Answer) -> String,
    {
        let trouble = match reading {
            Ok(answer) if answer.status().is_success() => return Ok(Some(answer)),
            Ok(answer) if passing(answer.status()) => {
                if let Some(retry_after) = answer.retry_after_ms() {
                    self.wait = self.wait.max(Duration::from_millis(retry_after));
                }
                format!("{} answered {}", answer.what(), answer.status())
            }
            Ok(answer) => {
                return Err(domain::AttemptOutcome::Unknown {
                    reason: (self.unreadable)(&answer),
                });
            }
            // The job runs on whether or not its peer can be reached.
            Err(outcome) => message(&outcome).to_owned(),
        };
        self.launched.record((self.troubled)(&trouble));
        Ok(None)
    }
}

/// Whether an answer is worth reading again later.
fn passing(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}
