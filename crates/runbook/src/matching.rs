//! Matching: does a runbook handle this event?
//!
//! Conditions address the event through its JSON form (`subject`,
//! `fields.signature`, `fields.labels.alertname`), the same form templates
//! see, so an author learns one way of naming event data. Monitoring
//! systems send numbers as strings ("95"), so numeric comparisons accept a
//! string that holds a number; everything else compares exactly.

use domain::Event;
use serde_json::Value;

use crate::model::{Condition, ConditionTest, Matcher, Recurrence, Runbook};

impl Runbook {
    /// True when `event` has the runbook's source and kind and meets every
    /// `when` condition. Recurrence is not checked here: counting events
    /// over time is the runtime's job (see [`Recurrence::key_for`]).
    pub fn matches(&self, event: &Event) -> bool {
        self.matcher.accepts(event)
    }
}

impl Matcher {
    pub fn accepts(&self, event: &Event) -> bool {
        if self
            .source
            .as_ref()
            .is_some_and(|source| *source != event.source)
            || self.kind.as_ref().is_some_and(|kind| *kind != event.kind)
        {
            return false;
        }
        if self.when.is_empty() {
            return true;
        }
        let event = event_json(event);
        self.when.iter().all(|condition| condition.holds(&event))
    }
}

impl Condition {
    /// Whether the condition holds for an event in its JSON form.
    pub fn holds(&self, event: &Value) -> bool {
        let value = field(event, &self.field).filter(|value| !value.is_null());
        match &self.test {
            ConditionTest::Exists(expected) => value.is_some() == *expected,
            ConditionTest::Equals(expected) => value.is_some_and(|value| same(value, expected)),
            ConditionTest::OneOf(candidates) => {
                value.is_some_and(|value| candidates.iter().any(|candidate| same(value, candidate)))
            }
            ConditionTest::AtLeast(minimum) => value
                .and_then(as_number)
                .is_some_and(|number| number >= *minimum),
        }
    }
}

impl Recurrence {
    /// The key that groups recurring events: the canonical JSON of the
    /// values of the `key` fields, `null` for a missing one. Two events
    /// recur when their keys are equal.
    pub fn key_for(&self, event: &Event) -> String {
        let event = event_json(event);
        let values = self
            .key
            .iter()
            .map(|path| field(&event, path).cloned().unwrap_or(Value::Null))
            .collect();
        domain::canonical_json(&Value::Array(values))
    }
}

/// The event as templates and conditions see it:
/// `{id, source, kind, dedup_key, subject, fields, status, received_at}`.
pub(crate) fn event_json(event: &Event) -> Value {
    serde_json::to_value(event).expect("an event always serialises")
}

/// Follows a dotted path; a numeric segment indexes a list.
fn field<'v>(root: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.')
        .try_fold(root, |value, segment| match value {
            Value::Object(map) => map.get(segment),
            Value::Array(items) => segment
                .parse::<usize>()
                .ok()
                .and_then(|index| items.get(index)),
            _ => None,
        })
}

/// Equality, with numbers compared by value (`1` = `1.0`) and a string
/// holding a number equal to that number (`"95"` = `95`).
fn same(value: &Value, expected: &Value) -> bool {
    match (value, expected) {
        (Value::Number(_), _) | (_, Value::Number(_)) => {
            matches!((as_number(value), as_number(expected)), (Some(a), Some(b)) if a == b)
        }
        _ => value == expected,
    }
}

fn as_number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => text
            .trim()
            .parse()
            .ok()
            .filter(|number: &f64| number.is_finite()),
        _ => None,
    }
}
