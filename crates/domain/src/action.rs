//! What a step action takes in its `with:`: its [`ActionShape`].
//!
//! Each step action (in `connectors`) declares its shape; the runbook
//! loader (in `runbook`, which sits below `connectors`) is handed the shapes
//! and checks every step, rollback and probe against them, with a line and
//! a hint for each problem. The shape is plain data plus the action's own
//! checks of a literal value ([`Kind::Checked`]), so a vendor's id format
//! stays in its connector.

/// The keys a step action's `with:` takes.
#[derive(Debug)]
pub struct ActionShape {
    /// The name a runbook's `action:` gives it (`http.request`).
    pub name: &'static str,
    pub keys: &'static [Key],
    /// Pairs of keys that cannot both be given.
    pub exclusive: &'static [(&'static str, &'static str)],
    /// A value filled in when the runbook leaves its key out.
    pub default: Option<(&'static str, Literal)>,
    /// The key whose URL says where the call goes: a credential's `hosts`
    /// and a runbook's `allowed_hosts` are checked against it.
    pub address: Option<&'static str>,
}

impl ActionShape {
    /// The keys every call must give.
    pub fn required(&self) -> impl Iterator<Item = &'static str> {
        self.keys
            .iter()
            .filter(|key| key.required)
            .map(|key| key.name)
    }

    pub fn key(&self, name: &str) -> Option<&'static Key> {
        self.keys.iter().find(|key| key.name == name)
    }
}

/// One key of a `with:`.
#[derive(Debug)]
pub struct Key {
    pub name: &'static str,
    pub required: bool,
    pub kind: Kind,
}

impl Key {
    pub const fn required(name: &'static str, kind: Kind) -> Key {
        Key {
            name,
            required: true,
            kind,
        }
    }

    pub const fn optional(name: &'static str, kind: Kind) -> Key {
        Key {
            name,
            required: false,
            kind,
        }
    }
}

/// What a key's value may be. Where a template may stand for the value,
/// the kind says so; a template is checked once rendered, by the call.
#[derive(Debug)]
pub enum Kind {
    /// Any text.
    Text,
    /// Text, or a template, that the action checks itself when it is
    /// written out.
    Checked(fn(&str) -> Result<(), Refusal>),
    /// One of these words, or a template.
    Choice(&'static [&'static str]),
    /// One of these words, written out.
    Fixed(&'static [&'static str]),
    /// A URL whose scheme and host come from the runbook or from
    /// configuration, with event values encoded where they land.
    Url,
    /// An http(s) address, or a template; its host is checked against
    /// `allowed_hosts` once rendered.
    BaseUrl,
    /// Names separated by `/` (a job inside folders), or a template; once
    /// rendered, no name may be `.` or `..`.
    PathOfNames(fn(&str) -> Result<(), Refusal>),
    /// The name of one of the server's `credentials:`, written out.
    Credential,
    /// A whole number from 1 up, or a template; `what` names it in an
    /// error, `hint` says where to find it.
    Number {
        what: &'static str,
        hint: &'static str,
    },
    /// A map of strings, or a template.
    StringMap,
    /// A list of strings, or a template.
    StringList,
    /// A list of whole numbers within bounds, or a template.
    IntegerList { min: i64, max: i64 },
    /// A map of any values, or a template.
    Map,
    /// `true` or `false`.
    Boolean,
    /// Any JSON value.
    Json,
    /// A duration (`30s`), handed to the action in milliseconds under the
    /// key `into`.
    Duration { into: &'static str },
}

/// A value filled in by default.
#[derive(Debug, Clone, Copy)]
pub enum Literal {
    Text(&'static str),
    Boolean(bool),
    Integers(&'static [i64]),
}

impl Literal {
    pub fn to_json(self) -> serde_json::Value {
        match self {
            Literal::Text(text) => text.into(),
            Literal::Boolean(value) => value.into(),
            Literal::Integers(values) => values.into(),
        }
    }
}

/// Why an action refuses a value: what is wrong, and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub message: String,
    pub hint: Option<String>,
}

impl Refusal {
    pub fn new(message: impl Into<String>, hint: impl Into<String>) -> Refusal {
        Refusal {
            message: message.into(),
            hint: Some(hint.into()),
        }
    }
}
