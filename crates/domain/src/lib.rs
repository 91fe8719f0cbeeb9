//! The shared vocabulary of opsgate: events, plans, decisions, runs and their
//! states, as plain data.
//!
//! Every other crate speaks in these types, so they carry no behaviour that
//! needs IO, async or a clock: a value here can be built in a unit test from
//! literals. Identifiers are opaque strings made by the caller (the runtime),
//! which keeps id generation — like the clock — an input rather than a hidden
//! effect.

mod action;
mod audit;
mod event;
mod freeze;
mod hosts;
mod narrate;
mod plan;
mod principal;
mod proposal;
mod run;
mod secret;

pub use action::{ActionShape, Key, Kind, Literal, Refusal};
pub use audit::RecordKind;
pub use event::{Event, EventStatus, NewEvent};
pub use freeze::{Freeze, FreezeScope, Lifted, OnRuns};
pub use hosts::{host_matches, is_host_pattern};
pub use narrate::{Told, Voice, narrate};
pub use plan::{
    ApprovalStage, Decision, DecisionKind, HaltRollback, Plan, PlannedCall, PlannedStep, Precheck,
    RetryOn, RetryPolicy, RiskClass, Rollout, StageRule, StopWhen, TargetPlan, Verification,
};
pub use principal::{Principal, PrincipalKind, Role, person_key, same_person};
pub use proposal::limits as proposal_limits;
pub use proposal::{
    Evidence, Model, PROPOSAL_FIELDS, PROPOSAL_KIND, PROPOSAL_SOURCE, Proposal, Scope,
};
pub use run::{AttemptOutcome, FailureCause, RunState, StepPhase};
pub use secret::Secret;

/// Errors in the shared vocabulary: values that do not name a known variant.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown {what} `{value}`; expected one of: {expected}")]
    UnknownVariant {
        what: &'static str,
        value: String,
        expected: &'static str,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Writes `value` as canonical JSON: object keys sorted, no insignificant
/// whitespace. Hashes (runbook version, plan hash, audit chain) are taken over
/// this form so that they do not depend on field order or formatting.
pub fn canonical_json(value: &serde_json::Value) -> String {
    let mut out = String::with_capacity(256);
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable();
            out.push('{');
            for (index, key) in keys.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The first 12 characters of a hash (a runbook version, a plan hash, a
/// policy set's version, an audit record's hash): how one is shown to
/// people, enough to tell two apart at a glance.
pub fn short_hash(hash: &str) -> &str {
    hash.char_indices()
        .nth(12)
        .map_or(hash, |(end, _)| &hash[..end])
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::{canonical_json, short_hash};
    use serde_json::json;

    #[test]
    fn a_short_hash_is_its_first_twelve_characters() {
        let check = |hash: &str, expect: &str| assert_eq!(short_hash(hash), expect, "{hash}");
        check(
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "9f86d081884c",
        );
        check("abc", "abc");
        check("", "");
        // Never cut inside a character, whatever it is given.
        check("éééééééééééééé", "éééééééééééé");
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let value = json!({"b": 1, "a": {"d": [true, null], "c": "x"}});
        assert_eq!(
            canonical_json(&value),
            r#"{"a":{"c":"x","d":[true,null]},"b":1}"#
        );
    }
}
