//! The runbook file format: YAML on disk → a validated [`Runbook`].
//!
//! Parsing happens in two steps, as in ripgrep's `LowArgs` → `HiArgs`: the
//! YAML is first read into a span-carrying tree (every node knows its line),
//! then a validator walks that tree, collecting *every* problem as a
//! [`Diagnostic`] with file, line and hint instead of stopping at the first.
//! Only a runbook without problems becomes a [`Runbook`]; the raw form never
//! leaves this crate.
//!
//! The crate also owns what a runbook means at plan time: matching an event,
//! rendering templates strictly (an undefined variable is an error, never an
//! empty string), validating inputs against the JSON Schema, and producing a
//! [`domain::Plan`].
//!
//! Entry points: [`parse_runbook`] and [`load_dir`] to read runbooks,
//! [`Catalog::matching`] to find the ones for an event, [`Runbook::plan`] to
//! plan a run, [`expectation_holds`] to judge a verify probe's response.

mod catalog;
mod decode;
mod diagnostic;
mod matching;
mod model;
mod plan;
mod template;
mod url_template;
mod validate;
mod yaml;

use std::path::PathBuf;

pub use catalog::{Catalog, LoadReport, load_dir};
pub use diagnostic::{Diagnostic, closest, suggestion};
pub use model::*;
pub use template::{TemplateEnv, expectation_holds};
pub use validate::parse_runbook;

/// How an approver reference is written; the directory resolves it when an
/// approval stage opens.
pub const APPROVER_REFERENCE_FORMS: &str = "write `user:ID`, `group:NAME`, `manager_of(requester)`, `manager_of(user:ID)`, `backup_of(requester)`, `backup_of(user:ID)`, `owner_of(ci)` or `owner_of(ci:NAME)`";

/// The states `on_failure.ticket_state` may name, besides a state's number
/// in the ticket system. `needs_human` hands the ticket back to people: in
/// progress, with the resolver group and nobody assigned.
pub const TICKET_STATES: &[&str] = &["needs_human", "new", "in_progress", "on_hold"];

/// Whether `text` has the shape of an approver reference (whether it names
/// anyone is for the directory to say).
pub fn is_approver_reference(text: &str) -> bool {
    let text = text.trim();
    let name = |rest: &str| {
        !rest.is_empty()
            && rest
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
    };
    let subject = |argument: &str| {
        argument == "requester" || argument.strip_prefix("user:").is_some_and(name)
    };
    let call = |function: &str| {
        text.strip_prefix(function)
            .and_then(|rest| rest.strip_prefix('('))
            .and_then(|rest| rest.strip_suffix(')'))
            .map(str::trim)
    };
    if let Some(rest) = text
        .strip_prefix("user:")
        .or_else(|| text.strip_prefix("group:"))
    {
        return name(rest);
    }
    if let Some(argument) = call("manager_of").or_else(|| call("backup_of")) {
        return subject(argument);
    }
    if let Some(argument) = call("owner_of") {
        return argument == "ci" || argument.strip_prefix("ci:").is_some_and(name);
    }
    false
}

/// A duration as runbooks write it (`500ms`, `30s`, `5m`, `1h`, `1d`), in
/// milliseconds; for configuration that speaks the same language.
pub fn parse_duration(text: &str) -> Option<u64> {
    decode::parse_duration(text)
}

/// Everything that can go wrong after a runbook was validated: reading
/// files, and planning or verifying against real event and response data.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The resolved inputs do not satisfy the schema (every violation, with
    /// its JSON pointer), or a supplied input conflicts with the event.
    #[error("invalid inputs: {message}")]
    Input { message: String },
    /// A template could not be rendered; `location` says which one, e.g.
    /// "step `restart` with.url".
    #[error("cannot render {location}: {message}")]
    Template { location: String, message: String },
    /// A rendered URL is refused: a value would leave the path the runbook
    /// names, the host is not one of `allowed_hosts`, or it is no http(s)
    /// URL. `location` names where it is written.
    #[error("refused {location}: {message}")]
    Url { location: String, message: String },
    #[error("cannot determine targets: {message}")]
    Targets { message: String },
    /// A time-bound runbook's end is not a time, already past, or further
    /// away than the runbook allows.
    #[error("cannot set the end of the time-bound change: {message}")]
    TimeBound { message: String },
    #[error("cannot evaluate the expectation `{expect}`: {message}")]
    Expectation { expect: String, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
