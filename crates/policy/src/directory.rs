//! The directory: people, groups and who owns which CI, as data.
//!
//! Approval stages and policies name approvers by relation —
//! `manager_of(requester)`, `owner_of(ci)`, `group:security` — and this is
//! where those relations are answered. The directory is a YAML file kept
//! under version control beside the runbooks (docs/directory.md is its
//! reference), not a live connection to an identity provider: a decision
//! must be reproducible from files, and a test must not need an LDAP server.
//!
//! As with runbooks, the file is read in two steps. Serde reads it into
//! private raw structs that refuse unknown keys and remember where every
//! name was written; validation then checks what serde cannot — that every
//! manager, backup, member and owner names someone, that ids, emails and
//! chat ids are unique, that managers form no cycle, that out-of-office
//! ranges end after they start — and reports every problem at its line.
//! Only a directory without problems becomes a [`Directory`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use runbook::{Diagnostic, suggestion};
use serde::Deserialize;
use serde_saphyr::{MessageFormatter, Spanned};

use crate::glob::glob_matches;
use crate::{Error, Result};

mod relations;

pub use relations::RelationContext;

/// A validated directory. Its invariants: person ids, emails and chat ids
/// are unique; every manager, backup, group member and CI owner exists;
/// following managers always ends.
#[derive(Debug, Clone)]
pub struct Directory {
    /// In file order.
    people: Vec<Person>,
    index_by_id: HashMap<String, usize>,
    /// Group name → member ids, in file order.
    groups: BTreeMap<String, Vec<String>>,
    /// CI name or glob → owning group.
    ci_owners: Vec<(String, String)>,
}

/// One person who may request or approve.
#[derive(Debug, Clone, PartialEq)]
pub struct Person {
    pub id: String,
    pub name: String,
    pub email: Option<String>,
    pub chat: Chat,
    /// The person's manager's id.
    pub manager: Option<String>,
    /// Who approves in their stead when they are out of office.
    pub backup: Option<String>,
    /// The zone their out-of-office dates are read in: their own, or the
    /// directory's.
    pub time_zone: TimeZone,
    pub out_of_office: Vec<Absence>,
}

/// Chat identities, for finding who pressed an approval button.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chat {
    /// A Slack member id (`U012ABCDEF`).
    pub slack: Option<String>,
    /// A Microsoft Teams user id (`29:1abc…`).
    pub teams: Option<String>,
}

/// Which chat system an id comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatPlatform {
    Slack,
    Teams,
}

impl ChatPlatform {
    /// The platform of a chat integration, by its name (`slack`).
    pub fn named(name: &str) -> Option<ChatPlatform> {
        match name {
            "slack" => Some(ChatPlatform::Slack),
            "teams" => Some(ChatPlatform::Teams),
            _ => None,
        }
    }
}

/// Days away, `from` and `to` both included, read in the person's zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Absence {
    pub from: Date,
    pub to: Date,
}

impl Person {
    /// Whether `at`, on the person's own calendar, falls on a day they are away.
    pub fn is_out_of_office(&self, at: Timestamp) -> bool {
        let today = at.to_zoned(self.time_zone.clone()).date();
        self.out_of_office
            .iter()
            .any(|absence| absence.from <= today && today <= absence.to)
    }
}

impl Directory {
    /// Reads and validates the directory file at `path`.
    pub fn load(path: &Path) -> Result<Directory> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        Directory::parse(path, &text)
    }

    /// Validates `text`; `path` is only named in diagnostics.
    pub fn parse(path: &Path, text: &str) -> Result<Directory> {
        let options = serde_saphyr::options! { strict_booleans: true };
        let raw: RawDirectory =
            serde_saphyr::from_str_with_options(text, options).map_err(|error| {
                let (line, column) = error
                    .location()
                    .map(|location| (location.line() as u32, location.column() as u32))
                    .unwrap_or((1, 1));
                let message =
                    serde_saphyr::DefaultMessageFormatter.format_message(error.without_snippet());
                // Advice meant for the programmer, not for whoever edits the file.
                let message = message
                    .split(", set DuplicateKeyPolicy")
                    .next()
                    .unwrap_or_default();
                Error::Directory {
                    path: path.to_owned(),
                    diagnostics: vec![Diagnostic {
                        file: path.to_owned(),
                        line: line.max(1),
                        column: column.max(1),
                        message: message.to_owned(),
                        hint: None,
                    }],
                }
            })?;
        Validation {
            file: path.to_owned(),
            diagnostics: Vec::new(),
        }
        .directory(raw)
        .map_err(|diagnostics| Error::Directory {
            path: path.to_owned(),
            diagnostics,
        })
    }

    /// Everyone, in file order.
    pub fn people(&self) -> &[Person] {
        &self.people
    }

    pub fn person(&self, id: &str) -> Option<&Person> {
        self.index_by_id.get(id).map(|&index| &self.people[index])
    }

    /// The person a name given from outside (an event's `requested_by`)
    /// means: the one with that id, or else the one whose id is the same
    /// person in the normal form people are compared in
    /// ([`domain::person_key`]), so `KIM` finds kim as separation of
    /// duties already takes `KIM` to be kim.
    pub fn person_named(&self, name: &str) -> Option<&Person> {
        self.person(name).or_else(|| {
            let key = domain::person_key(name);
            self.people
                .iter()
                .find(|person| domain::person_key(&person.id) == key)
        })
    }

    /// The members of group `name`, in file order.
    pub fn group(&self, name: &str) -> Option<Vec<&Person>> {
        let members = self.groups.get(name)?;
        Some(members.iter().filter_map(|id| self.person(id)).collect())
    }

    pub fn group_names(&self) -> impl Iterator<Item = &str> {
        self.groups.keys().map(String::as_str)
    }

    /// The group that owns CI `ci`: the entry naming it exactly, or else
    /// the matching glob with the most literal characters (`db-prod-*`
    /// before `db-*`; equal ones in alphabetical order).
    pub fn owner_of(&self, ci: &str) -> Option<&str> {
        if let Some((_, group)) = self
            .ci_owners
            .iter()
            .find(|(pattern, _)| !is_glob(pattern) && pattern.eq_ignore_ascii_case(ci))
        {
            return Some(group);
        }
        self.ci_owners
            .iter()
            .filter(|(pattern, _)| is_glob(pattern) && glob_matches(pattern, ci))
            .max_by(|(a, _), (b, _)| literal_length(a).cmp(&literal_length(b)).then(b.cmp(a)))
            .map(|(_, group)| group.as_str())
    }

    /// The person with this email address (case is ignored).
    pub fn find_by_email(&self, email: &str) -> Option<&Person> {
        self.people.iter().find(|person| {
            person
                .email
                .as_deref()
                .is_some_and(|own| own.eq_ignore_ascii_case(email))
        })
    }

    /// The person with this chat id on `platform` (exact: chat ids are
    /// case-sensitive).
    pub fn find_by_chat(&self, platform: ChatPlatform, id: &str) -> Option<&Person> {
        self.people.iter().find(|person| {
            let own = match platform {
                ChatPlatform::Slack => &person.chat.slack,
                ChatPlatform::Teams => &person.chat.teams,
            };
            own.as_deref() == Some(id)
        })
    }

    /// Who can act for `person` at `at`: the person, or when they are out
    /// of office their backup, or the backup's backup, and so on; `None`
    /// when everyone along that line is away (or there is no backup).
    pub fn available_stand_in<'d>(
        &'d self,
        person: &'d Person,
        at: Timestamp,
    ) -> Option<&'d Person> {
        let mut current = person;
        let mut seen = vec![person.id.as_str()];
        while current.is_out_of_office(at) {
            let backup = self.person(current.backup.as_deref()?)?;
            if seen.contains(&backup.id.as_str()) {
                return None;
            }
            seen.push(&backup.id);
            current = backup;
        }
        Some(current)
    }
}

fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?'])
}

fn literal_length(pattern: &str) -> usize {
    pattern.chars().filter(|c| !matches!(c, '*' | '?')).count()
}

// -- the file as written ------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDirectory {
    time_zone: Spanned<String>,
    people: Vec<RawPerson>,
    #[serde(default)]
    groups: HashMap<Spanned<String>, Vec<Spanned<String>>>,
    #[serde(default)]
    ownership: RawOwnership,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPerson {
    id: Spanned<String>,
    name: String,
    email: Option<Spanned<String>>,
    #[serde(default)]
    chat: RawChat,
    manager: Option<Spanned<String>>,
    backup: Option<Spanned<String>>,
    time_zone: Option<Spanned<String>>,
    #[serde(default)]
    out_of_office: Vec<Spanned<RawAbsence>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawChat {
    slack: Option<Spanned<String>>,
    teams: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAbsence {
    from: Date,
    to: Date,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawOwnership {
    #[serde(default)]
    ci: HashMap<Spanned<String>, Spanned<String>>,
}

// -- validation ---------------------------------------------------------------

struct Validation {
    file: PathBuf,
    diagnostics: Vec<Diagnostic>,
}

impl Validation {
    fn report<T>(&mut self, at: &Spanned<T>, message: String, hint: Option<String>) {
        self.diagnostics.push(Diagnostic {
            file: self.file.clone(),
            line: (at.referenced.line() as u32).max(1),
            column: (at.referenced.column() as u32).max(1),
            message,
            hint,
        });
    }

    fn directory(mut self, raw: RawDirectory) -> Result<Directory, Vec<Diagnostic>> {
        let default_zone = self.time_zone(&raw.time_zone);

        // Ids first: everything else refers to them.
        let mut first_line: HashMap<&str, u64> = HashMap::new();
        let mut known: Vec<&str> = Vec::with_capacity(raw.people.len());
        for person in &raw.people {
            self.name(&person.id, "person id");
            match first_line.get(person.id.value.as_str()) {
                Some(line) => self.report(
                    &person.id,
                    format!("person id `{}` is used twice", person.id.value),
                    Some(format!(
                        "it is first used on line {line}; ids must be unique"
                    )),
                ),
                None => {
                    first_line.insert(&person.id.value, person.id.referenced.line());
                    known.push(&person.id.value);
                }
            }
        }

        let mut people = Vec::with_capacity(raw.people.len());
        for person in &raw.people {
            let id = &person.id.value;
            for (relation, other) in [("manager", &person.manager), ("backup", &person.backup)] {
                let Some(other) = other else { continue };
                if other.value == *id {
                    self.report(other, format!("`{id}` is their own {relation}"), None);
                } else {
                    self.reference(other, &format!("the {relation} of `{id}`"), &known);
                }
            }
            let time_zone = match &person.time_zone {
                Some(name) => self.time_zone(name),
                None => default_zone.clone(),
            };
            for absence in &person.out_of_office {
                if absence.value.to < absence.value.from {
                    self.report(
                        absence,
                        format!(
                            "an out-of-office range of `{id}` ends ({}) before it starts ({})",
                            absence.value.to, absence.value.from
                        ),
                        Some(
                            "both dates are included: a single day is `{ from: D, to: D }`".into(),
                        ),
                    );
                }
            }
            people.push(Person {
                id: id.clone(),
                name: person.name.clone(),
                email: person.email.as_ref().map(|email| email.value.clone()),
                chat: Chat {
                    slack: person.chat.slack.as_ref().map(|id| id.value.clone()),
                    teams: person.chat.teams.as_ref().map(|id| id.value.clone()),
                },
                manager: person.manager.as_ref().map(|id| id.value.clone()),
                backup: person.backup.as_ref().map(|id| id.value.clone()),
                time_zone: time_zone.unwrap_or(TimeZone::UTC),
                out_of_office: person
                    .out_of_office
                    .iter()
                    .map(|absence| Absence {
                        from: absence.value.from,
                        to: absence.value.to,
                    })
                    .collect(),
            });
        }
        // Mail addresses ignore case; chat ids do not.
        let email = |person: &RawPerson| person.email.clone();
        let slack = |person: &RawPerson| person.chat.slack.clone();
        let teams = |person: &RawPerson| person.chat.teams.clone();
        self.unique(&raw.people, "email", email, str::to_ascii_lowercase);
        self.unique(&raw.people, "Slack id", slack, str::to_owned);
        self.unique(&raw.people, "Teams id", teams, str::to_owned);
        self.manager_cycles(&raw.people);

        let mut groups = BTreeMap::new();
        for (name, members) in &raw.groups {
            self.name(name, "group name");
            if members.is_empty() {
                self.report(
                    name,
                    format!("group `{}` has no members", name.value),
                    Some("an approval addressed to it could never be given; add someone or remove the group".into()),
                );
            }
            let mut ids: Vec<String> = Vec::with_capacity(members.len());
            for member in members {
                self.reference(
                    member,
                    &format!("a member of group `{}`", name.value),
                    &known,
                );
                if !ids.contains(&member.value) {
                    ids.push(member.value.clone());
                }
            }
            groups.insert(name.value.clone(), ids);
        }

        let group_names: Vec<&str> = groups.keys().map(String::as_str).collect();
        let mut ci_owners = Vec::with_capacity(raw.ownership.ci.len());
        for (ci, group) in &raw.ownership.ci {
            if !group_names.contains(&group.value.as_str()) {
                let hint = suggestion(&group.value, &group_names, "the groups are");
                self.report(
                    group,
                    format!(
                        "CI `{}` is owned by `{}`, which is no group",
                        ci.value, group.value
                    ),
                    Some(hint),
                );
            }
            ci_owners.push((ci.value.clone(), group.value.clone()));
        }
        ci_owners.sort();

        if !self.diagnostics.is_empty() {
            self.diagnostics
                .sort_by_key(|diagnostic| (diagnostic.line, diagnostic.column));
            return Err(self.diagnostics);
        }
        let index_by_id = people
            .iter()
            .enumerate()
            .map(|(index, person)| (person.id.clone(), index))
            .collect();
        Ok(Directory {
            people,
            index_by_id,
            groups,
            ci_owners,
        })
    }

    /// Ids and group names: letters, digits, `.`, `_` and `-`, so that a
    /// reference such as `user:alice` or `group:on-call` reads unambiguously.
    fn name(&mut self, name: &Spanned<String>, what: &str) {
        let text = &name.value;
        let well_formed = !text.is_empty()
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !well_formed {
            self.report(
                name,
                format!("invalid {what} `{text}`"),
                Some("use letters, digits, `.`, `_` and `-`".into()),
            );
        }
    }

    fn reference(&mut self, name: &Spanned<String>, what: &str, known: &[&str]) {
        if !known.contains(&name.value.as_str()) {
            self.report(
                name,
                format!("{what} is `{}`, who is not in `people`", name.value),
                Some(suggestion(&name.value, known, "the people are")),
            );
        }
    }

    fn time_zone(&mut self, name: &Spanned<String>) -> Option<TimeZone> {
        match TimeZone::get(&name.value) {
            Ok(time_zone) => Some(time_zone),
            Err(_) => {
                self.report(
                    name,
                    format!("unknown time zone `{}`", name.value),
                    Some("use an IANA time zone name such as `Europe/Berlin`, `America/New_York` or `UTC`".into()),
                );
                None
            }
        }
    }

    /// Reports the second and later people sharing a value of `key`, as
    /// compared after `normalise`.
    fn unique(
        &mut self,
        people: &[RawPerson],
        what: &str,
        key: impl Fn(&RawPerson) -> Option<Spanned<String>>,
        normalise: impl Fn(&str) -> String,
    ) {
        let mut first: HashMap<String, &str> = HashMap::new();
        for person in people {
            let Some(value) = key(person) else { continue };
            match first.get(&normalise(&value.value)) {
                Some(owner) => self.report(
                    &value,
                    format!(
                        "{what} `{}` of `{}` is also that of `{owner}`",
                        value.value, person.id.value
                    ),
                    Some(format!("each {what} must belong to one person")),
                ),
                None => {
                    first.insert(normalise(&value.value), &person.id.value);
                }
            }
        }
    }

    /// Reports each cycle of managers once, at the `manager` entry of its
    /// first member in file order.
    fn manager_cycles(&mut self, people: &[RawPerson]) {
        let manager_of: HashMap<&str, &Spanned<String>> = people
            .iter()
            .filter_map(|person| Some((person.id.value.as_str(), person.manager.as_ref()?)))
            .collect();
        let mut reported: Vec<Vec<&str>> = Vec::new();
        for person in people {
            let mut chain = vec![person.id.value.as_str()];
            while let Some(manager) = manager_of.get(chain[chain.len() - 1]) {
                let manager = manager.value.as_str();
                if let Some(start) = chain.iter().position(|id| *id == manager) {
                    let mut cycle: Vec<&str> = chain[start..].to_vec();
                    // Self-management is reported where it is written.
                    if cycle.len() > 1 {
                        let mut key = cycle.clone();
                        key.sort_unstable();
                        if !reported.contains(&key) {
                            reported.push(key);
                            let first = people
                                .iter()
                                .find(|person| cycle.contains(&person.id.value.as_str()))
                                .expect("a cycle is made of people");
                            let at = cycle
                                .iter()
                                .position(|id| *id == first.id.value)
                                .unwrap_or(0);
                            cycle.rotate_left(at);
                            cycle.push(cycle[0]);
                            self.report(
                                first
                                    .manager
                                    .as_ref()
                                    .expect("in a cycle, everyone has a manager"),
                                format!("managers form a cycle: {}", cycle.join(" → ")),
                                Some(
                                    "following managers upwards must end at someone without one"
                                        .into(),
                                ),
                            );
                        }
                    }
                    break;
                }
                chain.push(manager);
            }
        }
    }
}
