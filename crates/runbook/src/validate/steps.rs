//! Steps and the calls they make: `action`, `with` (checked per action),
//! `timeout`, `retry`, `idempotent`, `rollback` and `requires_approval`.
//!
//! Kept apart from the rest of the walk because it is the part that grows:
//! each new action brings the keys its `with` takes. Values written as
//! literals are checked as far as the load can tell (a method's spelling, a
//! group's object id); templates are checked again by the connector, once
//! rendered.

use std::collections::HashMap;

use domain::{ActionShape, Kind, RetryOn, RetryPolicy};
use serde_json::{Value, json};

use super::{CALL_KEYS, Validator, map_value, peek_string};
use crate::decode::{Fields, in_context};
use crate::diagnostic::suggestion;
use crate::model::{CallTemplate, Step};
use crate::template;
use crate::url_template::{self, Piece};
use crate::yaml::{self, Node, Yaml};

const STEP_KEYS: &[&str] = &[
    "id",
    "action",
    "with",
    "timeout",
    "retry",
    "idempotent",
    "rollback",
    "requires_approval",
];
const DEFAULT_TIMEOUT_MS: u64 = 30_000;

/// Which list of steps is read: the first remedy (`steps`) or the second
/// (`then_if_unverified`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Remedy {
    First,
    IfUnverified,
}

impl Remedy {
    fn key(self) -> &'static str {
        match self {
            Remedy::First => "steps",
            Remedy::IfUnverified => "then_if_unverified",
        }
    }
}

impl Validator<'_> {
    /// The steps of one remedy. `first_use` holds the line each step id
    /// was first used on, across both lists: ids are unique in a runbook.
    pub(super) fn steps(
        &mut self,
        node: &Yaml,
        remedy: Remedy,
        first_use: &mut HashMap<String, u32>,
    ) -> Option<Vec<Step>> {
        let key = remedy.key();
        let items = self.d.list(node, &format!("`{key}`"))?;
        if items.is_empty() {
            self.d.report(
                node,
                format!("`{key}` is empty"),
                Some(match remedy {
                    Remedy::First => "a runbook needs at least one step".into(),
                    Remedy::IfUnverified => {
                        "write the second remedy's steps, or leave `then_if_unverified` out".into()
                    }
                }),
            );
            return None;
        }
        let mut steps = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            let id = peek_string(item, "id");
            let context = match &id {
                Some(id) => format!("step `{id}`"),
                None => format!("step {}", index + 1),
            };
            let mut duplicate = false;
            if let (Some(id), Some(id_node)) = (&id, map_value(item, "id")) {
                match first_use.get(id) {
                    Some(first_line) => {
                        self.d.report(
                            id_node,
                            format!("step id `{id}` is used twice"),
                            Some(format!("it is first used on line {first_line}; step ids must be unique within a runbook")),
                        );
                        duplicate = true;
                    }
                    None => {
                        first_use.insert(id.clone(), yaml::line(id_node));
                    }
                }
            }
            // The second remedy is riskier than the first: its first step
            // asks for an approval of its own unless the runbook says not.
            let gated_by_default = remedy == Remedy::IfUnverified && index == 0;
            let step = self
                .step(item, &context, gated_by_default)
                .map(|step| Step {
                    if_unverified: remedy == Remedy::IfUnverified,
                    ..step
                });
            steps.push(step.filter(|_| !duplicate));
        }
        steps.into_iter().collect()
    }

    fn step(&mut self, node: &Yaml, context: &str, gated_by_default: bool) -> Option<Step> {
        let fields = self.d.fields(node, context, STEP_KEYS)?;
        let id = self
            .d
            .required(&fields, "id")
            .and_then(|node| self.identifier(node, &fields.what("id"), "step id"));
        let call = self.call(&fields, context, &format!("{context} with"));
        let retry = fields
            .get("retry")
            .map_or(Some(RetryPolicy::none()), |node| self.retry(node, context));
        let idempotent = fields.get("idempotent").map_or(Some(false), |node| {
            self.d.boolean(node, &fields.what("idempotent"))
        });
        let requires_approval = fields
            .get("requires_approval")
            .map_or(Some(gated_by_default), |node| {
                self.d.boolean(node, &fields.what("requires_approval"))
            });
        let rollback = match fields.get("rollback") {
            None => Some(None),
            Some(node) => self
                .rollback(node, fields.key("rollback").unwrap_or(node), context)
                .map(Some),
        };
        Some(Step {
            id: id?,
            call: call?,
            retry: retry?,
            idempotent: idempotent?,
            rollback: rollback?,
            requires_approval: requires_approval?,
            if_unverified: false,
        })
    }

    fn rollback(&mut self, node: &Yaml, key: &Yaml, step_context: &str) -> Option<CallTemplate> {
        let references_nothing = match &node.value {
            Node::Null => true,
            Node::Map(entries) => !entries
                .iter()
                .any(|(entry, _)| yaml::key_text(entry) == "action"),
            _ => false,
        };
        if references_nothing {
            self.d.report(
                key,
                format!("rollback references nothing in {step_context}"),
                Some("name the compensating call: `rollback: { action: http.request, with: { ... } }`, or remove `rollback`".into()),
            );
            return None;
        }
        let context = format!("the rollback of {step_context}");
        let fields = self.d.fields(node, &context, CALL_KEYS)?;
        self.call(&fields, &context, &format!("{step_context} rollback.with"))
    }

    /// `action`, `with` and `timeout`, read from `fields` (a step, a
    /// rollback or a probe). `label` names the `with` tree in template errors.
    pub(super) fn call(
        &mut self,
        fields: &Fields,
        context: &str,
        label: &str,
    ) -> Option<CallTemplate> {
        let action = self.d.required(fields, "action").and_then(|node| {
            let name = self.d.string(node, &fields.what("action"))?;
            let action = self
                .actions
                .iter()
                .copied()
                .find(|action| action.name == name);
            if action.is_none() {
                let known: Vec<&str> = self.actions.iter().map(|action| action.name).collect();
                self.d.report(
                    node,
                    format!("unknown action `{name}`{}", in_context(context)),
                    Some(suggestion(&name, &known, "known actions")),
                );
            }
            action
        });
        let timeout_ms = fields
            .get("timeout")
            .map_or(Some(DEFAULT_TIMEOUT_MS), |node| {
                self.d.duration(node, &fields.what("timeout"))
            });
        let with = match action {
            // An unknown action's `with` cannot be checked; its error is reported.
            None => None,
            Some(action) => self.with(action, fields.get("with"), fields.node, context, label),
        };
        Some(CallTemplate {
            action: action?,
            with: with?,
            timeout_ms: timeout_ms?,
        })
    }

    /// Checks `with` against what the action takes (its shape), fills in
    /// its default, and checks every template in it.
    fn with(
        &mut self,
        action: &'static ActionShape,
        node: Option<&Yaml>,
        call: &Yaml,
        context: &str,
        label: &str,
    ) -> Option<Value> {
        let with_context = format!("`with` of {context}");
        let Some(node) = node else {
            self.d.report(
                call,
                format!("missing required key `with`{}", in_context(context)),
                Some(format!(
                    "`{}` needs at least `with: {{ {} }}`",
                    action.name,
                    action
                        .required()
                        .map(|key| format!("{key}: ..."))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            );
            return None;
        };
        let names: Vec<&str> = action.keys.iter().map(|key| key.name).collect();
        let fields = self.d.fields(node, &with_context, &names)?;
        // Every missing key is reported, not only the first.
        let missing = action
            .required()
            .filter(|key| self.d.required(&fields, key).is_none())
            .count();
        let mut valid = missing == 0;
        let mut durations = Vec::new();
        for key in action.keys {
            let Some(value) = fields.get(key.name) else {
                continue;
            };
            let what = fields.what(key.name);
            valid &= match &key.kind {
                Kind::Text => self.d.string(value, &what).is_some(),
                Kind::Checked(check) | Kind::PathOfNames(check) => {
                    self.checked(value, &what, *check)
                }
                Kind::Choice(choices) => self.choice_or_template(value, &what, choices),
                Kind::Fixed(choices) => self.d.choice(value, &what, choices).is_some(),
                Kind::Url => self.url(value, &what),
                Kind::BaseUrl => self.base_url(value, &what),
                Kind::Credential => self.credential_name(value, &what),
                Kind::Number { what: named, hint } => self.number(value, &what, named, hint),
                Kind::StringMap => self.string_map(value, &what),
                Kind::StringList => self.list_or_template(value, &what),
                Kind::IntegerList { min, max } => self.integer_list(value, &what, *min, *max),
                Kind::Map => self.map_or_template(value, &what),
                Kind::Boolean => self.d.boolean(value, &what).is_some(),
                Kind::Json => true,
                Kind::Duration { into } => match self.d.duration(value, &what) {
                    Some(milliseconds) => {
                        durations.push((key.name, *into, milliseconds));
                        true
                    }
                    None => false,
                },
            };
        }
        for (first, second) in action.exclusive {
            if let (Some(_), Some(later)) = (fields.get(first), fields.key(second)) {
                self.d.report(
                    later,
                    format!(
                        "`{second}` and `{first}` cannot both be given{}",
                        in_context(&with_context)
                    ),
                    None,
                );
                valid = false;
            }
        }
        valid &= self.check_templates(node, self.call_roots, label);
        let mut with = yaml::to_json(node);
        if let Value::Object(map) = &mut with {
            if let Some((key, value)) = action.default {
                map.entry(key).or_insert(value.to_json());
            }
            // The action takes a duration in milliseconds, under its own
            // key; without it, it uses its own default.
            for (key, into, milliseconds) in durations {
                map.remove(key);
                map.insert(into.to_owned(), json!(milliseconds));
            }
        }
        valid.then_some(with)
    }

    /// Text the action checks itself when it is written out; a template is
    /// checked once rendered.
    fn checked(
        &mut self,
        node: &Yaml,
        what: &str,
        check: fn(&str) -> Result<(), domain::Refusal>,
    ) -> bool {
        let Some(text) = self.d.string(node, what) else {
            return false;
        };
        if template::is_template(&text) {
            return true;
        }
        match check(&text) {
            Ok(()) => true,
            Err(refusal) => {
                self.d
                    .report(node, format!("{what}: {}", refusal.message), refusal.hint);
                false
            }
        }
    }

    /// A URL: fixed text and `{{ expression }}`s, whose base — when an
    /// expression starts it — comes from configuration (`env`), so that
    /// no event value can choose the host. The values are encoded, and the
    /// result checked, at plan time (`url_template.rs`).
    fn url(&mut self, node: &Yaml, what: &str) -> bool {
        let Some(text) = self.d.string(node, what) else {
            return false;
        };
        if !template::is_template(&text) {
            return true;
        }
        // A template that does not compile, or reads what does not exist,
        // is reported with the other templates.
        let scope = template::Scope {
            roots: self.call_roots,
            inputs: &self.input_names,
        };
        if !template::check_template(&text, &scope).is_empty() {
            return true;
        }
        let pieces = match url_template::pieces(&text) {
            Ok(pieces) => pieces,
            Err(message) => {
                self.d.report(node, format!("{what}: {message}"), None);
                return false;
            }
        };
        let Some(Piece::Expression(base)) = pieces.first() else {
            return true;
        };
        let Some(roots) = template::expression_roots(base) else {
            return true;
        };
        let from_elsewhere: Vec<&str> = roots
            .iter()
            .map(String::as_str)
            .filter(|root| *root != "env" && self.call_roots.contains(root))
            .collect();
        if from_elsewhere.is_empty() {
            return true;
        }
        self.d.report(
            node,
            format!(
                "{what}: `{base}` starts the URL, so it gives its scheme and host, and it reads `{}`",
                from_elsewhere.join("`, `")
            ),
            Some("start the URL with its base from configuration (`{{ env.API }}/...`) or with `https://host/`, and put event values after the host, where they are encoded".into()),
        );
        false
    }

    /// One of `choices`, or a template.
    fn choice_or_template(&mut self, node: &Yaml, what: &str, choices: &[&str]) -> bool {
        match &node.value {
            Node::Str(text) if template::is_template(text) => true,
            _ => self.d.choice(node, what, choices).is_some(),
        }
    }

    /// A credential's name, written as it is: credentials are matched
    /// against the server's configuration when it loads the runbooks, which
    /// a name known only at plan time would escape.
    fn credential_name(&mut self, node: &Yaml, what: &str) -> bool {
        let Some(name) = self.d.string(node, what) else {
            return false;
        };
        if template::is_template(&name) {
            self.d.report(
                node,
                format!("{what}: a credential is named as it is, not by a template"),
                Some("write the name of an entry of the server's `credentials:` (e.g. `credential: awx-prod`)".into()),
            );
            return false;
        }
        if name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return true;
        }
        self.d.report(
            node,
            format!("{what}: `{name}` is not a credential name"),
            Some("credential names are letters, digits, `-`, `_` and `.`".into()),
        );
        false
    }

    /// An http(s) address, or a template. The connector checks the rest
    /// once it is rendered.
    fn base_url(&mut self, node: &Yaml, what: &str) -> bool {
        let Some(url) = self.d.string(node, what) else {
            return false;
        };
        if template::is_template(&url) || url.starts_with("https://") || url.starts_with("http://")
        {
            return true;
        }
        self.d.report(
            node,
            format!("{what}: `{url}` is not an http(s) address"),
            Some("give the server's address, such as `https://awx.example.com`, or a template such as `\"{{ env.AWX_URL }}\"`".into()),
        );
        false
    }

    /// A whole number from 1 up (`named` in an error), or a template.
    fn number(&mut self, node: &Yaml, what: &str, named: &str, hint: &str) -> bool {
        match &node.value {
            Node::Str(text) if template::is_template(text) => true,
            Node::Int(_) => self.d.integer(node, what, 1, i64::MAX).is_some(),
            other => {
                self.d.report(
                    node,
                    format!("{what}: expected {named}, found {}", other.describe()),
                    Some(hint.to_owned()),
                );
                false
            }
        }
    }

    /// A map of strings, or one template that yields it.
    fn string_map(&mut self, node: &Yaml, what: &str) -> bool {
        match &node.value {
            Node::Str(text) if template::is_template(text) => true,
            Node::Map(entries) => entries.iter().fold(true, |valid, (key, value)| {
                self.d
                    .string(value, &format!("{what}.{}", yaml::key_text(key)))
                    .is_some()
                    && valid
            }),
            other => {
                self.d.report(
                    node,
                    format!(
                        "{what}: expected a map of strings, found {}",
                        other.describe()
                    ),
                    None,
                );
                false
            }
        }
    }

    /// A map with values of any type, or one template that yields it.
    fn map_or_template(&mut self, node: &Yaml, what: &str) -> bool {
        match &node.value {
            Node::Str(text) if template::is_template(text) => true,
            Node::Map(_) => true,
            other => {
                self.d.report(
                    node,
                    format!("{what}: expected a map, found {}", other.describe()),
                    None,
                );
                false
            }
        }
    }

    /// A list, or one template that yields it.
    fn list_or_template(&mut self, node: &Yaml, what: &str) -> bool {
        match &node.value {
            Node::Str(text) if template::is_template(text) => true,
            _ => self.d.string_list(node, what).is_some(),
        }
    }

    fn integer_list(&mut self, node: &Yaml, what: &str, min: i64, max: i64) -> bool {
        if matches!(&node.value, Node::Str(text) if template::is_template(text)) {
            return true;
        }
        let Some(items) = self.d.list(node, what) else {
            return false;
        };
        items.iter().enumerate().fold(true, |valid, (index, item)| {
            self.d
                .integer(item, &format!("{what}, item {}", index + 1), min, max)
                .is_some()
                && valid
        })
    }

    fn retry(&mut self, node: &Yaml, context: &str) -> Option<RetryPolicy> {
        let fields = self.d.fields(
            node,
            &format!("`retry` of {context}"),
            &[
                "attempts", "backoff", "initial", "max", "jitter", "retry_on",
            ],
        )?;
        let attempts = self
            .d
            .required(&fields, "attempts")
            .and_then(|node| self.d.integer(node, &fields.what("attempts"), 1, 100));
        let multiplier = match fields.get("backoff") {
            None => Some(2.0),
            Some(node) => self
                .d
                .choice(node, &fields.what("backoff"), &["exponential", "fixed"])
                .map(|backoff| if backoff == "fixed" { 1.0 } else { 2.0 }),
        };
        let initial_ms = fields.get("initial").map_or(Some(1_000), |node| {
            self.d.duration(node, &fields.what("initial"))
        });
        let max_delay_ms = fields.get("max").map_or(Some(30_000), |node| {
            self.d.duration(node, &fields.what("max"))
        });
        let jitter = fields.get("jitter").map_or(Some(true), |node| {
            self.d.boolean(node, &fields.what("jitter"))
        });
        let retry_on = match fields.get("retry_on") {
            None => Some(vec![
                RetryOn::Connect,
                RetryOn::Timeout,
                RetryOn::Status(429),
                RetryOn::Status(502),
                RetryOn::Status(503),
                RetryOn::Status(504),
            ]),
            Some(node) => self
                .d
                .list(node, &fields.what("retry_on"))
                .and_then(|items| {
                    let conditions: Vec<Option<RetryOn>> =
                        items.iter().map(|item| self.retry_on(item)).collect();
                    conditions.into_iter().collect()
                }),
        };
        if let (Some(initial), Some(max), Some(node)) =
            (initial_ms, max_delay_ms, fields.get("max"))
            && max < initial
        {
            self.d.report(
                node,
                format!("{}: shorter than `initial`", fields.what("max")),
                None,
            );
            return None;
        }
        Some(RetryPolicy {
            attempts: attempts? as u32,
            initial_ms: initial_ms?,
            max_delay_ms: max_delay_ms?,
            multiplier: multiplier?,
            jitter: jitter?,
            retry_on: retry_on?,
        })
    }

    fn retry_on(&mut self, node: &Yaml) -> Option<RetryOn> {
        let parsed = match &node.value {
            Node::Int(status) => u16::try_from(*status)
                .ok()
                .filter(|status| (100..=599).contains(status))
                .map(RetryOn::Status),
            Node::Str(text) => match text.as_str() {
                "connect" => Some(RetryOn::Connect),
                "timeout" => Some(RetryOn::Timeout),
                other => other
                    .strip_prefix("exit:")
                    .and_then(|code| code.trim().parse().ok())
                    .map(RetryOn::ExitCode),
            },
            _ => None,
        };
        if parsed.is_none() {
            self.d.report(
                node,
                format!("`retry_on`: cannot retry on `{}`", yaml::to_json(node)),
                Some("expected `connect`, `timeout`, an HTTP status such as 503, or `exit:N` for a command's exit code".into()),
            );
        }
        parsed
    }
}
