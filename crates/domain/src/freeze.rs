//! Freezes: the emergency stop an operator pulls, beside the scheduled
//! `freeze` windows a runbook declares among its guardrails.
//!
//! A freeze is data here — what it covers, what it does to runs already
//! under way, who issued it and why — so that the store keeps it, the
//! runtime judges runs against it and every interface shows it alike.
//! Whether a run falls under a freeze is judged in `runtime`, where the
//! glob patterns its scope uses are matched.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// What a freeze covers. Every pattern is a glob (`*`, `?`), matched
/// without regard to ASCII case, as target patterns are elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case", tag = "kind", content = "pattern")]
pub enum FreezeScope {
    /// All automation.
    Everything,
    /// Runs of the runbooks whose id matches.
    Runbook(String),
    /// Runs acting on at least one target that matches.
    Targets(String),
    /// Runs whose event was posted by a matching principal, as an actor
    /// (`agent:triage-bot`, `agent:*`, `source:alertmanager`).
    Principal(String),
}

impl FreezeScope {
    /// `everything`, `runbook`, `targets` or `principal`: the scope's kind
    /// as it is stored.
    pub fn kind(&self) -> &'static str {
        match self {
            FreezeScope::Everything => "everything",
            FreezeScope::Runbook(_) => "runbook",
            FreezeScope::Targets(_) => "targets",
            FreezeScope::Principal(_) => "principal",
        }
    }

    /// The pattern, for every scope but `everything`.
    pub fn pattern(&self) -> Option<&str> {
        match self {
            FreezeScope::Everything => None,
            FreezeScope::Runbook(pattern)
            | FreezeScope::Targets(pattern)
            | FreezeScope::Principal(pattern) => Some(pattern),
        }
    }

    /// The scope stored as `kind` and `pattern`.
    pub fn from_parts(kind: &str, pattern: Option<String>) -> crate::Result<FreezeScope> {
        let unknown = || crate::Error::UnknownVariant {
            what: "freeze scope",
            value: format!("{kind} {}", pattern.as_deref().unwrap_or("")),
            expected: "everything, or runbook, targets or principal with a pattern",
        };
        Ok(match (kind, pattern.clone()) {
            ("everything", None) => FreezeScope::Everything,
            ("runbook", Some(pattern)) => FreezeScope::Runbook(pattern),
            ("targets", Some(pattern)) => FreezeScope::Targets(pattern),
            ("principal", Some(pattern)) => FreezeScope::Principal(pattern),
            _ => return Err(unknown()),
        })
    }
}

impl std::fmt::Display for FreezeScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FreezeScope::Everything => f.write_str("all automation"),
            FreezeScope::Runbook(pattern) => write!(f, "runbook {pattern}"),
            FreezeScope::Targets(pattern) => write!(f, "targets {pattern}"),
            FreezeScope::Principal(pattern) => write!(f, "events from {pattern}"),
        }
    }
}

/// What a freeze does to a run already under way when it reaches its next
/// step: the freeze is checked at every step boundary, never mid-step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum OnRuns {
    /// The run waits, `paused`, and goes on when the freeze is lifted
    /// or expires.
    #[default]
    Pause,
    /// The run is cancelled, and the steps it completed are rolled back.
    Cancel,
}

impl OnRuns {
    pub fn as_str(self) -> &'static str {
        match self {
            OnRuns::Pause => "pause",
            OnRuns::Cancel => "cancel",
        }
    }

    pub fn parse(value: &str) -> crate::Result<OnRuns> {
        match value {
            "pause" => Ok(OnRuns::Pause),
            "cancel" => Ok(OnRuns::Cancel),
            _ => Err(crate::Error::UnknownVariant {
                what: "what a freeze does to runs",
                value: value.to_owned(),
                expected: "pause, cancel",
            }),
        }
    }
}

/// A freeze, active or lifted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Freeze {
    pub id: String,
    pub scope: FreezeScope,
    pub on_runs: OnRuns,
    /// Why it was issued, in the words of who issued it.
    pub reason: String,
    /// Who issued it, as an actor (`user:alice`).
    pub issued_by: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub issued_at: Timestamp,
    /// When it ends by itself; `None`: when it is lifted.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub expires_at: Option<Timestamp>,
    /// When, by whom and why it was lifted early.
    pub lifted: Option<Lifted>,
}

/// How a freeze was lifted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Lifted {
    pub by: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub at: Timestamp,
    pub reason: Option<String>,
}

impl Freeze {
    /// Whether the freeze holds at `now`: not lifted, not expired.
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.lifted.is_none() && self.expires_at.is_none_or(|expires| now < expires)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_is_stored_as_its_kind_and_pattern_and_read_back() {
        for scope in [
            FreezeScope::Everything,
            FreezeScope::Runbook("restart-*".to_owned()),
            FreezeScope::Targets("db-prod-*".to_owned()),
            FreezeScope::Principal("agent:*".to_owned()),
        ] {
            let read = FreezeScope::from_parts(scope.kind(), scope.pattern().map(str::to_owned));
            assert_eq!(read.unwrap(), scope);
        }
        assert!(FreezeScope::from_parts("runbook", None).is_err());
        assert!(FreezeScope::from_parts("everything", Some("x".to_owned())).is_err());
        assert!(FreezeScope::from_parts("galaxy", None).is_err());
    }

    #[test]
    fn a_freeze_is_active_until_it_is_lifted_or_expires() {
        let now: Timestamp = "2026-12-05T10:00:00Z".parse().unwrap();
        let mut freeze = Freeze {
            id: "frz-1".to_owned(),
            scope: FreezeScope::Everything,
            on_runs: OnRuns::Pause,
            reason: "incident".to_owned(),
            issued_by: "user:alice".to_owned(),
            issued_at: now,
            expires_at: None,
            lifted: None,
        };
        assert!(freeze.is_active(now));
        freeze.expires_at = Some("2026-12-05T11:00:00Z".parse().unwrap());
        assert!(freeze.is_active("2026-12-05T10:59:59Z".parse().unwrap()));
        assert!(!freeze.is_active("2026-12-05T11:00:00Z".parse().unwrap()));
        freeze.expires_at = None;
        freeze.lifted = Some(Lifted {
            by: "user:bob".to_owned(),
            at: now,
            reason: None,
        });
        assert!(!freeze.is_active(now));
    }
}
