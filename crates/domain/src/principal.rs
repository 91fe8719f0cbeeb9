//! Who is acting: a person, an agent, or a webhook sender, and the one role
//! their credential grants.

use serde::{Deserialize, Serialize};

/// The kinds of principal (DESIGN.md, vocabulary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalKind {
    /// A person from the directory.
    User,
    /// An AI or automation identity: may propose, never approve.
    Agent,
    /// A webhook sender (Alertmanager, ServiceNow, ...).
    Source,
}

/// What a credential allows. Each credential carries exactly one role; the
/// role also fixes the kind of principal it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Manages opsgate; posts events and reads everything. Does not approve.
    Admin,
    /// Posts events and proposals, runs dry runs, reads runs.
    Operator,
    /// Approves or denies runs, reads runs.
    Approver,
    /// An agent: proposes (posts events, dry runs) and reads runs.
    Agent,
    /// Reads runs and runbooks.
    Viewer,
    /// A webhook sender: posts its events, nothing else.
    Source,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Admin,
        Role::Operator,
        Role::Approver,
        Role::Agent,
        Role::Viewer,
        Role::Source,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Approver => "approver",
            Role::Agent => "agent",
            Role::Viewer => "viewer",
            Role::Source => "source",
        }
    }

    pub fn parse(value: &str) -> crate::Result<Role> {
        Self::ALL
            .into_iter()
            .find(|role| role.as_str() == value)
            .ok_or_else(|| crate::Error::UnknownVariant {
                what: "role",
                value: value.to_owned(),
                expected: "admin, operator, approver, agent, viewer, source",
            })
    }

    /// The kind of principal a credential with this role belongs to.
    pub fn principal_kind(self) -> PrincipalKind {
        match self {
            Role::Agent => PrincipalKind::Agent,
            Role::Source => PrincipalKind::Source,
            Role::Admin | Role::Operator | Role::Approver | Role::Viewer => PrincipalKind::User,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    /// What an agent's token lets it propose; `None` limits nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<crate::Scope>,
}

impl Principal {
    /// A principal whose credential limits nothing beyond its role.
    pub fn new(name: impl Into<String>, role: Role) -> Principal {
        Principal {
            name: name.into(),
            role,
            scope: None,
        }
    }

    pub fn kind(&self) -> PrincipalKind {
        self.role.principal_kind()
    }

    /// How the principal appears as an actor in audit records and as a
    /// run's requester: `user:alice`, `agent:triage-bot`, `source:alertmanager`.
    pub fn actor(&self) -> String {
        format!("{}:{}", self.kind().as_str(), self.name)
    }
}

impl PrincipalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::User => "user",
            PrincipalKind::Agent => "agent",
            PrincipalKind::Source => "source",
        }
    }

    /// The kind and name an actor names ([`Principal::actor`]'s inverse);
    /// `None` for an actor that is no principal (`opsgate`, `anonymous`).
    pub fn of_actor(actor: &str) -> Option<(PrincipalKind, &str)> {
        let (kind, name) = actor.split_once(':')?;
        let kind = [
            PrincipalKind::User,
            PrincipalKind::Agent,
            PrincipalKind::Source,
        ]
        .into_iter()
        .find(|candidate| candidate.as_str() == kind)?;
        Some((kind, name))
    }
}

/// The one form in which names of a person are compared: compatibility
/// characters folded (NFKC: full-width `ｂｏｂ` is `bob`), characters that
/// do not show dropped (zero-width spaces and joiners, byte-order marks,
/// soft hyphens, controls), without surrounding whitespace or a `user:`
/// prefix (in any case), in lower case. Who asked for a run and who
/// approves it are compared this way, so that `BOB`, ` bob`, `user:bob`
/// and `bob` with an invisible character in it are all bob, and bob cannot
/// approve what he asked for by spelling his name differently.
pub fn person_key(name: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let visible: String = name
        .nfkc()
        .filter(|character| !character.is_control() && !is_default_ignorable(*character))
        .collect();
    let name = visible.trim();
    let name = match name.get(..5) {
        Some(prefix) if prefix.eq_ignore_ascii_case("user:") => name[5..].trim(),
        _ => name,
    };
    name.to_lowercase()
}

/// Unicode's Default_Ignorable_Code_Point: characters a text shows as
/// nothing at all.
fn is_default_ignorable(character: char) -> bool {
    matches!(
        character,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFF8}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

/// Whether two names name the same person ([`person_key`]).
pub fn same_person(one: &str, other: &str) -> bool {
    person_key(one) == person_key(other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_person_is_compared_in_one_normal_form() {
        for (one, other, same) in [
            ("bob", "bob", true),
            ("BOB", "bob", true),
            (" bob", "bob", true),
            ("bob\t", "bob", true),
            ("user:bob", "bob", true),
            ("USER:Bob", "bob", true),
            ("user: bob", "bob", true),
            ("bobby", "bob", false),
            ("agent:bob", "bob", false),
            ("", "bob", false),
            ("Ünal", "ünal", true),
            ("bob\u{200b}", "bob", true),
            ("\u{feff}bob", "bob", true),
            ("b\u{200d}ob", "bob", true),
            ("bob\u{00a0}\u{200c}", "bob", true),
            ("\u{ff42}\u{ff4f}\u{ff42}", "bob", true),
            ("b\u{00ad}ob", "bob", true),
            ("bo\u{0007}b", "bob", true),
            ("bób", "bob", false),
        ] {
            assert_eq!(same_person(one, other), same, "{one:?} vs {other:?}");
        }
    }

    #[test]
    fn an_actor_names_its_principal_kind_and_name() {
        for role in Role::ALL {
            let principal = Principal::new("kim".to_owned(), role);
            assert_eq!(
                PrincipalKind::of_actor(&principal.actor()),
                Some((principal.kind(), "kim"))
            );
        }
        assert_eq!(PrincipalKind::of_actor("opsgate"), None);
        assert_eq!(PrincipalKind::of_actor("robot:r2"), None);
    }
}
