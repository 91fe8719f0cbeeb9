//! Approver references — `user:alice`, `group:security`,
//! `manager_of(requester)`, `backup_of(user:alice)`, `owner_of(ci)` — and
//! the people they stand for.
//!
//! A reference is text because it is written in runbooks, policies and
//! approval stages; it is resolved against the directory when a run needs
//! approvers, not when the text is read, so that a changed directory takes
//! effect without touching those files. Resolving fails loudly: an
//! approval addressed to nobody would wait forever, so a reference that
//! names no one is an error saying what and which name.

use super::{Directory, Person};
use crate::{Error, Result};

/// What relations are relative to: who asked for the run and which CI it
/// acts on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelationContext<'a> {
    /// The requester's person id, when the requester is a person (an
    /// agent or a webhook source has no manager).
    pub requester: Option<&'a str>,
    /// The CI (configuration item, usually the target) the run acts on.
    pub ci: Option<&'a str>,
}

const FORMS: &str = runbook::APPROVER_REFERENCE_FORMS;

impl Directory {
    /// The people `reference` stands for, each once, in directory order
    /// within a group.
    pub fn resolve(&self, reference: &str, context: &RelationContext) -> Result<Vec<&Person>> {
        let fail = |problem: String| Error::Reference {
            reference: reference.to_owned(),
            problem,
        };
        let text = reference.trim();
        if let Some(id) = text.strip_prefix("user:") {
            return self.user(id).map(|person| vec![person]).map_err(fail);
        }
        if let Some(name) = text.strip_prefix("group:") {
            return self.group_members(name).map_err(fail);
        }
        if let Some(argument) = call(text, "manager_of") {
            let person = self.subject(argument, context).map_err(fail)?;
            return match &person.manager {
                Some(manager) => Ok(vec![self.user(manager).map_err(fail)?]),
                None => Err(fail(format!(
                    "`{}` has no manager in the directory",
                    person.id
                ))),
            };
        }
        if let Some(argument) = call(text, "backup_of") {
            let person = self.subject(argument, context).map_err(fail)?;
            return match &person.backup {
                Some(backup) => Ok(vec![self.user(backup).map_err(fail)?]),
                None => Err(fail(format!(
                    "`{}` has no backup in the directory",
                    person.id
                ))),
            };
        }
        if let Some(argument) = call(text, "owner_of") {
            let ci = match argument {
                "ci" => context
                    .ci
                    .ok_or_else(|| fail("no CI is known for this run".to_owned()))?,
                named => named.strip_prefix("ci:").ok_or_else(|| {
                    fail(format!("`owner_of` takes `ci` or `ci:NAME`, not `{named}`"))
                })?,
            };
            let group = self
                .owner_of(ci)
                .ok_or_else(|| fail(format!("no group owns CI `{ci}` (see `ownership.ci`)")))?;
            return self.group_members(group).map_err(fail);
        }
        Err(fail(format!("not an approver reference; {FORMS}")))
    }

    fn user(&self, id: &str) -> Result<&Person, String> {
        self.person(id).ok_or_else(|| {
            let known: Vec<&str> = self
                .people
                .iter()
                .map(|person| person.id.as_str())
                .collect();
            format!(
                "no person has the id `{id}` ({})",
                runbook::suggestion(id, &known, "the people are")
            )
        })
    }

    fn group_members(&self, name: &str) -> Result<Vec<&Person>, String> {
        self.group(name).ok_or_else(|| {
            let known: Vec<&str> = self.group_names().collect();
            format!(
                "no group is named `{name}` ({})",
                runbook::suggestion(name, &known, "the groups are")
            )
        })
    }

    /// `requester` or `user:ID`: whose manager or backup is meant.
    fn subject(&self, argument: &str, context: &RelationContext) -> Result<&Person, String> {
        match argument {
            "requester" => {
                let id = context.requester.ok_or_else(|| {
                    "the run was not requested by a person (but by an agent or a source), so it has no requester in the directory".to_owned()
                })?;
                self.person_named(id)
                    .ok_or_else(|| format!("the requester `{id}` is not in the directory"))
            }
            other => match other.strip_prefix("user:") {
                Some(id) => self.user(id),
                None => Err(format!(
                    "expected `requester` or `user:ID`, found `{other}`"
                )),
            },
        }
    }
}

/// `name(argument)` → the argument, trimmed.
fn call<'t>(text: &'t str, name: &str) -> Option<&'t str> {
    let argument = text.strip_prefix(name)?.trim_start().strip_prefix('(')?;
    Some(argument.strip_suffix(')')?.trim())
}
