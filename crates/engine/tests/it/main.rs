//! The engine's integration tests: one binary, one module per concern.
//!
//! Almost every case is a script played through the pure state machine
//! (`script::check`): a plan, timed inputs, and the expected trace. The clock
//! and the jitter's random number are inputs, so timeouts, backoff and
//! deadlines are tested without sleeping and the whole suite runs in
//! milliseconds.

mod approval;
mod chain;
mod execution;
mod freeze;
mod invariants;
mod precheck;
mod properties;
mod recovery;
mod remedy;
mod retry_delay;
mod rollback;
mod rollout;
mod script;
mod shadow;
mod time_bound;
mod verification;
