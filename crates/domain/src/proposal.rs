//! An agent's proposal: what an AI agent (or any automation identity)
//! asks opsgate to do, and everything it said about why.
//!
//! An agent may classify, gather context and recommend; it never executes.
//! A proposal is therefore only a request: the runtime turns it into an
//! event and sends it through the same match, plan, policy and approval
//! path as any other signal. What the agent said — rationale, evidence,
//! confidence, model and prompt — is kept whole on the run and in the audit,
//! so a reviewer can answer "why did the agent propose this?". Every field
//! is bounded here, once, so no path that takes a proposal (the REST API,
//! MCP, triage) can store an unbounded one.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::RiskClass;

/// The source of every event a proposal becomes. Reserved: no other way
/// in may post an event of this source.
pub const PROPOSAL_SOURCE: &str = "agent";
/// The kind of every event a proposal becomes.
pub const PROPOSAL_KIND: &str = "proposal";

/// Keys of an event's `fields` that the proposal itself fills: the
/// agent's own `fields` may not set them.
pub const PROPOSAL_FIELDS: [&str; 5] = [
    "proposal",
    "confidence",
    "rationale",
    "ticket",
    "changed_by_opsgate",
];

/// The limits a proposal is held to.
pub mod limits {
    pub const MAX_RATIONALE: usize = 4_000;
    pub const MAX_EVIDENCE_ITEMS: usize = 20;
    pub const MAX_EVIDENCE_TEXT: usize = 4_000;
    pub const MAX_EVIDENCE_TOTAL: usize = 16_000;
    pub const MAX_NAME: usize = 200;
    pub const MAX_FIELDS_BYTES: usize = 16_000;
    pub const MAX_IDEMPOTENCY_KEY: usize = 128;
}
use limits::*;

/// A proposal as an agent sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Proposal {
    /// The runbook proposed; none lets opsgate match one from `fields`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runbook: Option<String>,
    /// The runbook's inputs, as the agent would fill them. They take the
    /// place of what the runbook reads from an event (`from_event`), which
    /// fills only what the agent left out.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub inputs: Map<String, Value>,
    /// The targets the agent expects the plan to act on: when given, the
    /// plan's own targets must be exactly these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<String>>,
    /// The ticket it concerns (`INC0012345`): the run's notes go there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// What the proposal is about (a device, a user); the ticket, else the
    /// first target, when not said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// What the agent read (a ticket's fields): what a runbook's `match`
    /// and templates see as the event's `fields`.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub fields: Map<String, Value>,
    /// Why the agent proposes this, in its own words.
    pub rationale: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<Evidence>,
    /// How sure the agent is, from 0 to 1.
    pub confidence: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<Model>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_version: Option<String>,
    /// The same key sent again is the same proposal: it answers the run
    /// the first one started, never a second run.
    pub idempotency_key: String,
}

/// One piece of evidence: a link, or an excerpt (a log, a command's output).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    /// What it is: `link`, `log`, `metric`, `note`, ….
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// The model behind a proposal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Model {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// What an agent's token lets it propose: runbooks and targets by pattern
/// (`restart-*`, `LAPTOP-*`), and the highest risk. Empty lists allow any.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runbooks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_risk: Option<RiskClass>,
}

impl Scope {
    /// Whether the scope limits nothing.
    pub fn is_open(&self) -> bool {
        self.runbooks.is_empty() && self.targets.is_empty() && self.max_risk.is_none()
    }
}

impl RiskClass {
    /// Risks in order: read-only, then reversible, then irreversible.
    pub fn rank(self) -> u8 {
        match self {
            RiskClass::ReadOnly => 0,
            RiskClass::Reversible => 1,
            RiskClass::Irreversible => 2,
        }
    }

    pub fn parse(value: &str) -> crate::Result<RiskClass> {
        [
            RiskClass::ReadOnly,
            RiskClass::Reversible,
            RiskClass::Irreversible,
        ]
        .into_iter()
        .find(|risk| risk.as_str() == value)
        .ok_or_else(|| crate::Error::UnknownVariant {
            what: "risk",
            value: value.to_owned(),
            expected: "read_only, reversible, irreversible",
        })
    }
}

impl Proposal {
    /// What is wrong with the proposal, naming the field; `None` when it
    /// holds every limit.
    pub fn problem(&self) -> Option<String> {
        let bounded = |what: &str, value: &str, max: usize| {
            (value.len() > max).then(|| format!("`{what}` is longer than {max} bytes"))
        };
        let named = |what: &str, value: &str| {
            if value.trim().is_empty() {
                Some(format!("`{what}` is empty"))
            } else if value.chars().any(char::is_control) {
                Some(format!("`{what}` holds a control character"))
            } else {
                bounded(what, value, MAX_NAME)
            }
        };
        if !(0.0..=1.0).contains(&self.confidence) || !self.confidence.is_finite() {
            return Some(format!(
                "`confidence` must be between 0 and 1, found {}",
                self.confidence
            ));
        }
        if self.rationale.trim().is_empty() {
            return Some("`rationale` is empty: say why the agent proposes this".to_owned());
        }
        if let Some(problem) = bounded("rationale", &self.rationale, MAX_RATIONALE) {
            return Some(problem);
        }
        let key = &self.idempotency_key;
        if key.is_empty()
            || key.len() > MAX_IDEMPOTENCY_KEY
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
        {
            return Some(format!(
                "`idempotency_key` must be 1 to {MAX_IDEMPOTENCY_KEY} characters of \
                 letters, digits and `-_.:`"
            ));
        }
        let names = [
            ("runbook", self.runbook.as_deref()),
            ("ticket", self.ticket.as_deref()),
            ("subject", self.subject.as_deref()),
            ("prompt_version", self.prompt_version.as_deref()),
            (
                "model.name",
                self.model.as_ref().map(|model| model.name.as_str()),
            ),
            (
                "model.version",
                self.model
                    .as_ref()
                    .and_then(|model| model.version.as_deref()),
            ),
        ];
        for (what, value) in names {
            if let Some(problem) = value.and_then(|value| named(what, value)) {
                return Some(problem);
            }
        }
        for (index, target) in self.targets.iter().flatten().enumerate() {
            if let Some(problem) = named(&format!("targets[{index}]"), target) {
                return Some(problem);
            }
        }
        if self.evidence.len() > MAX_EVIDENCE_ITEMS {
            return Some(format!(
                "`evidence` has {} items; at most {MAX_EVIDENCE_ITEMS} are kept",
                self.evidence.len()
            ));
        }
        let mut total = 0;
        for (index, evidence) in self.evidence.iter().enumerate() {
            let at = |what: &str| format!("evidence[{index}].{what}");
            if let Some(problem) = named(&at("kind"), &evidence.kind) {
                return Some(problem);
            }
            if evidence.url.is_none() && evidence.text.is_none() {
                return Some(format!("`{}` has neither `url` nor `text`", at("kind")));
            }
            if let Some(url) = &evidence.url {
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    return Some(format!("`{}` must be an http(s) URL", at("url")));
                }
                if let Some(problem) =
                    named(&at("url"), url).or_else(|| bounded(&at("url"), url, 2_000))
                {
                    return Some(problem);
                }
            }
            if let Some(text) = &evidence.text
                && let Some(problem) = bounded(&at("text"), text, MAX_EVIDENCE_TEXT)
            {
                return Some(problem);
            }
            total += evidence.text.as_ref().map_or(0, String::len)
                + evidence.url.as_ref().map_or(0, String::len);
        }
        if total > MAX_EVIDENCE_TOTAL {
            return Some(format!(
                "`evidence` holds {total} bytes; at most {MAX_EVIDENCE_TOTAL} are kept"
            ));
        }
        if let Some(reserved) = PROPOSAL_FIELDS
            .iter()
            .find(|key| self.fields.contains_key(**key))
        {
            return Some(format!(
                "`fields.{reserved}` is filled by opsgate from the proposal itself"
            ));
        }
        let fields_size = serde_json::to_string(&self.fields).map_or(0, |text| text.len())
            + serde_json::to_string(&self.inputs).map_or(0, |text| text.len());
        if fields_size > MAX_FIELDS_BYTES {
            return Some(format!(
                "`fields` and `inputs` hold {fields_size} bytes; at most {MAX_FIELDS_BYTES}"
            ));
        }
        None
    }

    /// The proposal's own hash, over its canonical JSON: the same key sent
    /// with another proposal is told apart by it.
    pub fn hash(&self) -> String {
        let value = serde_json::to_value(self).expect("a proposal serialises");
        crate::sha256_hex(crate::canonical_json(&value).as_bytes())
    }

    /// What the proposal is about: its subject, else its ticket, else its
    /// first target, else its key.
    pub fn subject(&self) -> &str {
        self.subject
            .as_deref()
            .or(self.ticket.as_deref())
            .or_else(|| self.targets.as_ref()?.first().map(String::as_str))
            .unwrap_or(&self.idempotency_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn proposal(extra: Value) -> Proposal {
        let mut base = json!({
            "rationale": "the VPN agent stopped after the 14:02 update",
            "confidence": 0.9,
            "idempotency_key": "inc-1",
        });
        for (key, value) in extra.as_object().unwrap() {
            base[key] = value.clone();
        }
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn a_proposal_is_held_to_its_limits_and_each_refusal_names_the_field() {
        let check = |extra: Value, expected: Option<&str>| {
            let problem = proposal(extra.clone()).problem();
            match expected {
                None => assert_eq!(problem, None, "{extra}"),
                Some(expected) => {
                    let problem = problem.unwrap_or_else(|| panic!("{extra} passed"));
                    assert!(problem.contains(expected), "{extra}: {problem}");
                }
            }
        };
        check(json!({}), None);
        check(
            json!({"confidence": 1.0, "runbook": "restart-endpoint-service"}),
            None,
        );
        check(
            json!({"confidence": 1.5}),
            Some("`confidence` must be between 0 and 1"),
        );
        check(json!({"confidence": -0.1}), Some("`confidence`"));
        check(json!({"rationale": "  "}), Some("`rationale` is empty"));
        check(
            json!({"rationale": "x".repeat(5000)}),
            Some("`rationale` is longer"),
        );
        check(json!({"idempotency_key": ""}), Some("`idempotency_key`"));
        check(
            json!({"idempotency_key": "a/../b"}),
            Some("`idempotency_key`"),
        );
        check(
            json!({"idempotency_key": "k".repeat(129)}),
            Some("`idempotency_key`"),
        );
        check(
            json!({"runbook": "a\nb"}),
            Some("`runbook` holds a control"),
        );
        check(
            json!({"targets": ["ok", ""]}),
            Some("`targets[1]` is empty"),
        );
        check(
            json!({"evidence": [{"kind": "log"}]}),
            Some("`evidence[0].kind` has neither"),
        );
        check(
            json!({"evidence": [{"kind": "link", "url": "file:///etc/passwd"}]}),
            Some("`evidence[0].url` must be an http(s) URL"),
        );
        check(
            json!({"evidence": [{"kind": "log", "text": "x".repeat(4001)}]}),
            Some("`evidence[0].text` is longer"),
        );
        let many: Vec<Value> = (0..21)
            .map(|_| json!({"kind": "log", "text": "x"}))
            .collect();
        check(json!({"evidence": many}), Some("`evidence` has 21 items"));
        let large: Vec<Value> = (0..5)
            .map(|_| json!({"kind": "log", "text": "x".repeat(3900)}))
            .collect();
        check(
            json!({"evidence": large}),
            Some("`evidence` holds 19500 bytes"),
        );
        check(
            json!({"fields": {"confidence": 1.0}}),
            Some("`fields.confidence` is filled by opsgate"),
        );
        check(
            json!({"fields": {"changed_by_opsgate": true}}),
            Some("`fields.changed_by_opsgate`"),
        );
        check(json!({"fields": {"requested_by": "alice"}}), None);
        check(
            json!({"fields": {"blob": "x".repeat(17_000)}}),
            Some("`fields` and `inputs` hold"),
        );
    }

    #[test]
    fn a_proposal_names_its_subject_and_its_hash_follows_its_content() {
        assert_eq!(proposal(json!({})).subject(), "inc-1");
        assert_eq!(proposal(json!({"targets": ["LT-1"]})).subject(), "LT-1");
        assert_eq!(
            proposal(json!({"targets": ["LT-1"], "ticket": "INC1"})).subject(),
            "INC1"
        );
        assert_eq!(
            proposal(json!({})).hash(),
            proposal(json!({})).hash(),
            "the same proposal"
        );
        assert_ne!(
            proposal(json!({})).hash(),
            proposal(json!({"confidence": 0.91})).hash()
        );
    }

    #[test]
    fn risks_are_ordered_and_a_scope_may_limit_nothing() {
        assert!(RiskClass::ReadOnly.rank() < RiskClass::Reversible.rank());
        assert!(RiskClass::Reversible.rank() < RiskClass::Irreversible.rank());
        assert_eq!(
            RiskClass::parse("reversible").unwrap(),
            RiskClass::Reversible
        );
        assert!(RiskClass::parse("safe").is_err());
        assert!(Scope::default().is_open());
    }
}
