//! Validation: the span-carrying YAML tree → a [`Runbook`], or every
//! problem as a [`Diagnostic`].
//!
//! The walk follows the file format key by key (docs/runbooks.md is its
//! reference). Each part reports its own problems and returns `None` when it
//! found any; the runbook is only assembled when no diagnostic was
//! recorded, so a [`Runbook`] value always carries the invariants its type
//! documents. Templates are checked here too, statically: syntax, and every
//! variable they read, against what exists where they are written.

use std::collections::HashMap;
use std::path::Path;

use domain::{RetryOn, RetryPolicy, RiskClass};
use serde_json::{Map, Value, json};

use crate::decode::{Decoder, Fields, in_context};
use crate::diagnostic::{Diagnostic, suggestion};
use crate::model::*;
use crate::template::{self, EVENT_FIELDS, Scope};
use crate::yaml::{self, Node, Yaml};

const TOP_LEVEL_KEYS: &[&str] = &[
    "id",
    "title",
    "owner",
    "risk",
    "match",
    "inputs",
    "targets",
    "guardrails",
    "approval",
    "steps",
    "verify",
    "on_failure",
    "writeback",
];
const STEP_KEYS: &[&str] = &[
    "id",
    "action",
    "with",
    "timeout",
    "retry",
    "idempotent",
    "rollback",
];
const CALL_KEYS: &[&str] = &["action", "with", "timeout"];
const HTTP_KEYS: &[&str] = &["method", "url", "headers", "json", "body", "expect_status"];
const HTTP_METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"];
const COMMAND_KEYS: &[&str] = &["program", "args", "env", "cwd", "stdin", "expect_exit"];

const DEFAULT_TIMEOUT_MS: u64 = 30_000;
const DEFAULT_WITHIN_MS: u64 = 60_000;
const DEFAULT_EVERY_MS: u64 = 5_000;

/// Roots a step, rollback or probe template may read.
const CALL_ROOTS: &[&str] = &["event", "inputs", "env", "targets"];

/// Reads and validates one runbook file. `path` is only used in diagnostics
/// and recorded in [`Runbook::path`].
pub fn parse_runbook(path: &Path, text: &str) -> Result<Runbook, Vec<Diagnostic>> {
    parse(path, text).map(|parsed| parsed.runbook)
}

/// A runbook and where its id is written, so that the catalog can point at
/// a duplicate id.
pub(crate) struct Parsed {
    pub runbook: Runbook,
    pub id_line: u32,
    pub id_column: u32,
}

pub(crate) fn parse(path: &Path, text: &str) -> Result<Parsed, Vec<Diagnostic>> {
    let mut decoder = Decoder::new(path);
    let root = match yaml::parse(text) {
        Ok(root) => root,
        Err(error) => {
            decoder.report_at(
                error.line,
                error.column,
                format!("invalid YAML: {}", error.message),
                None,
            );
            return Err(decoder.diagnostics);
        }
    };
    let parsed = Validator {
        d: &mut decoder,
        input_names: Vec::new(),
    }
    .runbook(&root, path);
    let mut diagnostics = decoder.diagnostics;
    match parsed {
        Some(parsed) if diagnostics.is_empty() => Ok(parsed),
        _ => {
            // Report in reading order, whatever order the walk found them in.
            diagnostics.sort_by_key(|diagnostic| (diagnostic.line, diagnostic.column));
            Err(diagnostics)
        }
    }
}

struct Validator<'d> {
    d: &'d mut Decoder,
    /// The properties of the inputs schema: what `inputs.NAME` may name.
    input_names: Vec<String>,
}

impl Validator<'_> {
    fn runbook(&mut self, root: &Yaml, path: &Path) -> Option<Parsed> {
        if matches!(root.value, Node::Null) {
            self.d.report(
                root,
                "the file holds no runbook",
                Some("a runbook is a YAML map with at least `id`, `title`, `owner`, `risk`, `match`, `targets` and `steps`".into()),
            );
            return None;
        }
        let top = self.d.fields(root, "", TOP_LEVEL_KEYS)?;

        let id_node = self.d.required(&top, "id");
        let id = id_node.and_then(|node| self.identifier(node, "`id`", "a runbook id"));
        let title = self
            .d
            .required(&top, "title")
            .and_then(|node| self.d.string(node, "`title`"));
        let owner = self
            .d
            .required(&top, "owner")
            .and_then(|node| self.d.string(node, "`owner`"));
        let risk = self
            .d
            .required(&top, "risk")
            .and_then(|node| self.risk(node));
        let matcher = self
            .d
            .required(&top, "match")
            .and_then(|node| self.matcher(node));
        // Inputs come before everything that templates may read them from.
        let inputs = match top.get("inputs") {
            Some(node) => self.inputs(node, top.key("inputs").unwrap_or(node)),
            None => Some(Inputs {
                schema: json!({"type": "object"}),
                from_event: Default::default(),
            }),
        };
        let targets = self
            .d
            .required(&top, "targets")
            .and_then(|node| self.targets(node));
        let guardrails = top
            .get("guardrails")
            .map_or(Some(Guardrails::default()), |node| self.guardrails(node));
        let approval = match top.get("approval") {
            None => Some(ApprovalMode::Required),
            Some(node) => self
                .d
                .choice(node, "`approval`", &["auto", "required"])
                .map(|mode| match mode.as_str() {
                    "auto" => ApprovalMode::Auto,
                    _ => ApprovalMode::Required,
                }),
        };
        let steps = self
            .d
            .required(&top, "steps")
            .and_then(|node| self.steps(node));
        let verify = match top.get("verify") {
            None => Some(None),
            Some(node) => self.verify(node).map(Some),
        };
        let on_failure = top
            .get("on_failure")
            .map_or(Some(OnFailure::default()), |node| self.on_failure(node));
        let writeback = top
            .get("writeback")
            .map_or(Some(Writeback::default()), |node| self.writeback(node));

        let (
            Some(id_node),
            Some(id),
            Some(title),
            Some(owner),
            Some(risk),
            Some(matcher),
            Some(inputs),
            Some(targets),
            Some(guardrails),
            Some(approval),
            Some(steps),
            Some(verify),
            Some(on_failure),
            Some(writeback),
        ) = (
            id_node, id, title, owner, risk, matcher, inputs, targets, guardrails, approval, steps,
            verify, on_failure, writeback,
        )
        else {
            return None;
        };
        let version = domain::sha256_hex(domain::canonical_json(&yaml::to_json(root)).as_bytes());
        let runbook = Runbook {
            id,
            title,
            owner,
            risk,
            version,
            path: path.to_owned(),
            matcher,
            inputs,
            targets,
            guardrails,
            approval,
            steps,
            verify,
            on_failure,
            writeback,
        };
        Some(Parsed {
            runbook,
            id_line: yaml::line(id_node),
            id_column: yaml::column(id_node),
        })
    }

    /// Runbook and step ids: `^[a-z0-9][a-z0-9-]{1,62}$`.
    fn identifier(&mut self, node: &Yaml, what: &str, kind: &str) -> Option<String> {
        let id = self.d.string(node, what)?;
        let well_formed = (2..=63).contains(&id.len())
            && id.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !well_formed {
            self.d.report(
                node,
                format!("invalid {kind} `{id}`"),
                Some("use 2 to 63 characters: lower-case letters, digits and `-`, starting with a letter or digit".into()),
            );
            return None;
        }
        Some(id)
    }

    fn risk(&mut self, node: &Yaml) -> Option<RiskClass> {
        let risk = self
            .d
            .choice(node, "`risk`", &["read_only", "reversible", "irreversible"])?;
        Some(match risk.as_str() {
            "read_only" => RiskClass::ReadOnly,
            "reversible" => RiskClass::Reversible,
            _ => RiskClass::Irreversible,
        })
    }

    // -- match ---------------------------------------------------------------

    fn matcher(&mut self, node: &Yaml) -> Option<Matcher> {
        let fields = self
            .d
            .fields(node, "`match`", &["source", "kind", "when", "recurrence"])?;
        let source = optional(fields.get("source"), |node| {
            self.d.string(node, &fields.what("source"))
        });
        let kind = optional(fields.get("kind"), |node| {
            self.d.string(node, &fields.what("kind"))
        });
        let when = match fields.get("when") {
            None => Some(Vec::new()),
            Some(node) => self.d.list(node, &fields.what("when")).and_then(|items| {
                let conditions: Vec<Option<Condition>> =
                    items.iter().map(|item| self.condition(item)).collect();
                conditions.into_iter().collect()
            }),
        };
        let recurrence = optional(fields.get("recurrence"), |node| self.recurrence(node));
        if fields.get("source").is_none()
            && fields.get("kind").is_none()
            && fields.get("when").is_none()
        {
            self.d.report(
                node,
                "`match` accepts every event",
                Some("name a `source`, a `kind` or `when` conditions, so the runbook only handles the events it is for".into()),
            );
            return None;
        }
        Some(Matcher {
            source: source?,
            kind: kind?,
            when: when?,
            recurrence: recurrence?,
        })
    }

    fn condition(&mut self, node: &Yaml) -> Option<Condition> {
        let fields = self.d.fields(
            node,
            "a `when` condition",
            &["field", "equals", "in", "exists", "at_least"],
        )?;
        let field = self
            .d
            .required(&fields, "field")
            .and_then(|node| self.field_path(node, "`field`"));
        let tests: Vec<(&str, &Yaml)> = ["equals", "in", "exists", "at_least"]
            .into_iter()
            .filter_map(|name| fields.get(name).map(|value| (name, value)))
            .collect();
        let test = match tests.as_slice() {
            [] => {
                self.d.report(
                    node,
                    "a `when` condition has no test",
                    Some("add one of `equals`, `in`, `exists` or `at_least`".into()),
                );
                None
            }
            [(name, value)] => match *name {
                "equals" => Some(ConditionTest::Equals(yaml::to_json(value))),
                "in" => self
                    .d
                    .list(value, "`in`")
                    .map(|items| ConditionTest::OneOf(items.iter().map(yaml::to_json).collect())),
                "exists" => self.d.boolean(value, "`exists`").map(ConditionTest::Exists),
                _ => self
                    .d
                    .number(value, "`at_least`")
                    .map(ConditionTest::AtLeast),
            },
            [_, (second, value), ..] => {
                self.d.report(
                    fields.key(second).unwrap_or(value),
                    format!("a `when` condition has exactly one test; `{second}` is a second one"),
                    Some("write one condition per test; all conditions must hold".into()),
                );
                None
            }
        };
        Some(Condition {
            field: field?,
            test: test?,
        })
    }

    /// A dotted path into the event's JSON form.
    fn field_path(&mut self, node: &Yaml, what: &str) -> Option<String> {
        let path = self.d.string(node, what)?;
        let root = path.split('.').next().unwrap_or_default();
        if path.split('.').any(str::is_empty) {
            self.d.report(
                node,
                format!("{what}: `{path}` is not a dotted path"),
                Some("e.g. `fields.signature`".into()),
            );
            return None;
        }
        if !EVENT_FIELDS.contains(&root) {
            self.d.report(
                node,
                format!("{what}: an event has no field `{root}`"),
                Some(suggestion(root, &EVENT_FIELDS, "an event has")),
            );
            return None;
        }
        Some(path)
    }

    fn recurrence(&mut self, node: &Yaml) -> Option<Recurrence> {
        let fields = self
            .d
            .fields(node, "`match.recurrence`", &["count", "window", "key"])?;
        let count = self.d.required(&fields, "count").and_then(|node| {
            self.d
                .integer(node, &fields.what("count"), 1, u32::MAX.into())
        });
        let window = self
            .d
            .required(&fields, "window")
            .and_then(|node| self.d.duration(node, &fields.what("window")));
        let key = match fields.get("key") {
            None => Some(vec!["subject".to_owned()]),
            Some(node) => self.d.list(node, &fields.what("key")).and_then(|items| {
                let paths: Vec<Option<String>> = items
                    .iter()
                    .map(|item| self.field_path(item, "a recurrence key"))
                    .collect();
                paths.into_iter().collect()
            }),
        };
        Some(Recurrence {
            count: count? as u32,
            window_ms: window?,
            key: key?,
        })
    }

    // -- inputs and targets --------------------------------------------------

    /// `inputs` is a JSON Schema plus the non-schema key `from_event`.
    fn inputs(&mut self, node: &Yaml, key: &Yaml) -> Option<Inputs> {
        let Node::Map(entries) = &node.value else {
            self.d.report(
                node,
                format!(
                    "`inputs`: expected a JSON Schema map, found {}",
                    node.value.describe()
                ),
                None,
            );
            return None;
        };
        let mut schema = Map::new();
        let mut from_event_node = None;
        for (entry_key, value) in entries {
            match yaml::key_text(entry_key).as_str() {
                "from_event" => from_event_node = Some(value),
                name => {
                    schema.insert(name.to_owned(), yaml::to_json(value));
                }
            }
        }
        let mut valid = true;
        match schema.get("type") {
            None => {
                schema.insert("type".into(), json!("object"));
            }
            Some(Value::String(kind)) if kind == "object" => {}
            Some(_) => {
                self.d.report(
                    key,
                    "the `inputs` schema must describe an object",
                    Some("inputs are named values: write `type: object` and declare them under `properties`".into()),
                );
                valid = false;
            }
        }
        let schema = Value::Object(schema);
        if let Err(error) = jsonschema::validator_for(&schema) {
            let at = error.schema_path().as_str();
            let at = if at.is_empty() {
                String::new()
            } else {
                format!(" (at `{at}`)")
            };
            self.d.report(
                key,
                format!("invalid JSON Schema in `inputs`: {error}{at}"),
                None,
            );
            valid = false;
        }
        self.input_names = match schema.get("properties") {
            Some(Value::Object(properties)) => properties.keys().cloned().collect(),
            _ => Vec::new(),
        };
        let from_event = match from_event_node {
            None => Some(Default::default()),
            Some(node) => self.from_event(node),
        };
        Some(Inputs {
            schema,
            from_event: from_event?,
        })
        .filter(|_| valid)
    }

    fn from_event(&mut self, node: &Yaml) -> Option<std::collections::BTreeMap<String, String>> {
        let Node::Map(entries) = &node.value else {
            self.d.report(
                node,
                format!(
                    "`from_event`: expected a map of input names to templates, found {}",
                    node.value.describe()
                ),
                None,
            );
            return None;
        };
        let input_names = self.input_names.clone();
        let known: Vec<&str> = input_names.iter().map(String::as_str).collect();
        let scope = Scope {
            roots: &["event", "env"],
            inputs: &[],
        };
        let mut templates = std::collections::BTreeMap::new();
        let mut valid = true;
        for (key, value) in entries {
            let name = yaml::key_text(key);
            if !known.contains(&name.as_str()) {
                let hint = if known.is_empty() {
                    "declare it under `properties` in the inputs schema".to_owned()
                } else {
                    suggestion(&name, &known, "the schema's properties are")
                };
                self.d.report(
                    key,
                    format!(
                        "`from_event` sets `{name}`, which is not a property of the inputs schema"
                    ),
                    Some(hint),
                );
                valid = false;
                continue;
            }
            let text = match &value.value {
                Node::Str(text) => text.clone(),
                Node::Int(_) | Node::Float(_) | Node::Bool(_) => yaml::to_json(value).to_string(),
                other => {
                    self.d.report(
                        value,
                        format!(
                            "`from_event.{name}`: expected a template string, found {}",
                            other.describe()
                        ),
                        None,
                    );
                    valid = false;
                    continue;
                }
            };
            valid &=
                self.check_template(value, &text, &scope, &format!("inputs.from_event.{name}"));
            templates.insert(name, text);
        }
        valid.then_some(templates)
    }

    fn targets(&mut self, node: &Yaml) -> Option<Targets> {
        let fields = self.d.fields(node, "`targets`", &["from", "max_targets"])?;
        let from = self.d.required(&fields, "from").and_then(|node| {
            let expression = self.d.string(node, &fields.what("from"))?;
            let inputs = std::mem::take(&mut self.input_names);
            let problems = template::check_expression(
                &expression,
                &Scope {
                    roots: &["event", "inputs", "env"],
                    inputs: &inputs,
                },
            );
            self.input_names = inputs;
            let valid = problems.is_empty();
            for problem in problems {
                self.d.report(
                    node,
                    format!("{} in `targets.from`", problem.message),
                    problem.hint,
                );
            }
            valid.then_some(expression)
        });
        let max_targets = match fields.get("max_targets") {
            None => Some(1),
            Some(node) => self
                .d
                .integer(node, &fields.what("max_targets"), 1, u32::MAX.into()),
        };
        Some(Targets {
            from: from?,
            max_targets: max_targets? as u32,
        })
    }

    fn guardrails(&mut self, node: &Yaml) -> Option<Guardrails> {
        let fields = self
            .d
            .fields(node, "`guardrails`", &["environments", "cooldown"])?;
        let environments = fields.get("environments").map_or(Some(Vec::new()), |node| {
            self.d.string_list(node, &fields.what("environments"))
        });
        let cooldown = optional(fields.get("cooldown"), |node| self.cooldown(node));
        Some(Guardrails {
            environments: environments?,
            cooldown: cooldown?,
        })
    }

    fn cooldown(&mut self, node: &Yaml) -> Option<Cooldown> {
        let fields = self
            .d
            .fields(node, "`guardrails.cooldown`", &["per", "runs", "window"])?;
        // `per: target` is the only scope so far; the key exists so that
        // others (per runbook, per owner) can be added without a new shape.
        let per = optional(fields.get("per"), |node| {
            self.d.choice(node, &fields.what("per"), &["target"])
        });
        let runs = fields.get("runs").map_or(Some(1), |node| {
            self.d
                .integer(node, &fields.what("runs"), 1, u32::MAX.into())
        });
        let window = self
            .d
            .required(&fields, "window")
            .and_then(|node| self.d.duration(node, &fields.what("window")));
        per?;
        Some(Cooldown {
            runs: runs? as u32,
            window_ms: window?,
        })
    }

    // -- steps, calls, retry -------------------------------------------------

    fn steps(&mut self, node: &Yaml) -> Option<Vec<Step>> {
        let items = self.d.list(node, "`steps`")?;
        if items.is_empty() {
            self.d.report(
                node,
                "`steps` is empty",
                Some("a runbook needs at least one step".into()),
            );
            return None;
        }
        let mut first_use: HashMap<String, u32> = HashMap::new();
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
            let step = self.step(item, &context);
            steps.push(step.filter(|_| !duplicate));
        }
        steps.into_iter().collect()
    }

    fn step(&mut self, node: &Yaml, context: &str) -> Option<Step> {
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
    fn call(&mut self, fields: &Fields, context: &str, label: &str) -> Option<CallTemplate> {
        let action = self.d.required(fields, "action").and_then(|node| {
            let name = self.d.string(node, &fields.what("action"))?;
            let action = Action::parse(&name);
            if action.is_none() {
                let known: Vec<&str> = Action::ALL.iter().map(|action| action.as_str()).collect();
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

    /// Checks `with` against what the action takes, fills in defaults, and
    /// checks every template in it.
    fn with(
        &mut self,
        action: Action,
        node: Option<&Yaml>,
        call: &Yaml,
        context: &str,
        label: &str,
    ) -> Option<Value> {
        let with_context = format!("`with` of {context}");
        let (keys, required): (&[&str], &str) = match action {
            Action::HttpRequest => (HTTP_KEYS, "url"),
            Action::CommandRun => (COMMAND_KEYS, "program"),
        };
        let Some(node) = node else {
            self.d.report(
                call,
                format!("missing required key `with`{}", in_context(context)),
                Some(format!(
                    "`{}` needs at least `with: {{ {required}: ... }}`",
                    action.as_str()
                )),
            );
            return None;
        };
        let fields = self.d.fields(node, &with_context, keys)?;
        let mut valid = self.d.required(&fields, required).is_some();
        for (name, value) in keys
            .iter()
            .filter_map(|name| fields.get(name).map(|value| (*name, value)))
        {
            let what = fields.what(name);
            valid &= match (action, name) {
                (Action::HttpRequest, "method") => self.http_method(value, &what),
                (Action::HttpRequest, "headers") | (Action::CommandRun, "env") => {
                    self.string_map(value, &what)
                }
                (Action::HttpRequest, "expect_status") => self.integer_list(value, &what, 100, 599),
                (Action::CommandRun, "expect_exit") => {
                    self.integer_list(value, &what, i32::MIN.into(), i32::MAX.into())
                }
                (Action::CommandRun, "args") => self.list_or_template(value, &what),
                (_, "json") => true,
                _ => self.d.string(value, &what).is_some(),
            };
        }
        if let (Some(_), Some(body)) = (fields.get("json"), fields.key("body")) {
            self.d.report(
                body,
                format!(
                    "`body` and `json` cannot both be given{}",
                    in_context(&with_context)
                ),
                None,
            );
            valid = false;
        }
        valid &= self.check_templates(node, CALL_ROOTS, label);
        let mut with = yaml::to_json(node);
        if let Value::Object(map) = &mut with {
            match action {
                Action::HttpRequest => map.entry("method").or_insert_with(|| json!("GET")),
                Action::CommandRun => map.entry("expect_exit").or_insert_with(|| json!([0])),
            };
        }
        valid.then_some(with)
    }

    fn http_method(&mut self, node: &Yaml, what: &str) -> bool {
        let Some(method) = self.d.string(node, what) else {
            return false;
        };
        if HTTP_METHODS.contains(&method.as_str()) || template::is_template(&method) {
            return true;
        }
        let upper = method.to_ascii_uppercase();
        let hint = if HTTP_METHODS.contains(&upper.as_str()) {
            format!("write it in capitals: `{upper}`")
        } else {
            format!("expected one of: {}", HTTP_METHODS.join(", "))
        };
        self.d.report(
            node,
            format!("{what}: unknown HTTP method `{method}`"),
            Some(hint),
        );
        false
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
                .integer(item, &format!("{what}[{index}]"), min, max)
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
        {
            if max < initial {
                self.d.report(
                    node,
                    format!("{}: shorter than `initial`", fields.what("max")),
                    None,
                );
                return None;
            }
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

    // -- verify, on_failure, writeback ---------------------------------------

    fn verify(&mut self, node: &Yaml) -> Option<Verify> {
        let fields = self
            .d
            .fields(node, "`verify`", &["probe", "expect", "within", "every"])?;
        let probe = self.d.required(&fields, "probe").and_then(|node| {
            let probe = self.d.fields(node, "`verify.probe`", CALL_KEYS)?;
            self.call(&probe, "`verify.probe`", "verify.probe with")
        });
        let expect = self.d.required(&fields, "expect").and_then(|node| {
            let expect = self.d.string(node, &fields.what("expect"))?;
            let problems = template::check_expression(
                &expect,
                &Scope {
                    roots: &["response"],
                    inputs: &[],
                },
            );
            let valid = problems.is_empty();
            for problem in problems {
                self.d.report(
                    node,
                    format!("{} in `verify.expect`", problem.message),
                    problem.hint,
                );
            }
            valid.then_some(expect)
        });
        let within_ms = fields
            .get("within")
            .map_or(Some(DEFAULT_WITHIN_MS), |node| {
                self.d.duration(node, &fields.what("within"))
            });
        let every_ms = fields.get("every").map_or(Some(DEFAULT_EVERY_MS), |node| {
            self.d.duration(node, &fields.what("every"))
        });
        if let (Some(within), Some(every)) = (within_ms, every_ms) {
            if every > within {
                self.d.report(
                    fields.get("every").or(fields.get("within")).unwrap_or(node),
                    "`every` in `verify` is longer than `within`",
                    Some("the probe must get at least one chance before the deadline".into()),
                );
                return None;
            }
        }
        Some(Verify {
            probe: probe?,
            expect: expect?,
            within_ms: within_ms?,
            every_ms: every_ms?,
        })
    }

    fn on_failure(&mut self, node: &Yaml) -> Option<OnFailure> {
        let fields = self
            .d
            .fields(node, "`on_failure`", &["escalate_to", "ticket_state"])?;
        let escalate_to = optional(fields.get("escalate_to"), |node| {
            self.d.string(node, &fields.what("escalate_to"))
        });
        let ticket_state = optional(fields.get("ticket_state"), |node| {
            self.d.string(node, &fields.what("ticket_state"))
        });
        Some(OnFailure {
            escalate_to: escalate_to?,
            ticket_state: ticket_state?,
        })
    }

    fn writeback(&mut self, node: &Yaml) -> Option<Writeback> {
        let fields = self
            .d
            .fields(node, "`writeback`", &["ticket", "resolve_on_success"])?;
        let ticket = fields.get("ticket").map_or(Some(false), |node| {
            self.d.boolean(node, &fields.what("ticket"))
        });
        let close_code = match fields.get("resolve_on_success") {
            None => Some(None),
            Some(node) => self
                .d
                .fields(node, "`writeback.resolve_on_success`", &["close_code"])
                .and_then(|resolve| {
                    let close_code = self.d.required(&resolve, "close_code")?;
                    self.d
                        .string(close_code, &resolve.what("close_code"))
                        .map(Some)
                }),
        };
        if ticket == Some(false) && close_code.as_ref().is_some_and(Option::is_some) {
            self.d.report(
                fields.key("resolve_on_success").unwrap_or(node),
                "`resolve_on_success` needs `ticket: true` in `writeback`",
                Some("resolving is a write to the ticket".into()),
            );
            return None;
        }
        Some(Writeback {
            ticket: ticket?,
            close_code: close_code?,
        })
    }

    // -- templates -----------------------------------------------------------

    /// Checks every templated string under `node`; `label` names `node` in
    /// messages ("step `restart` with"), extended with `.key` and `[index]`.
    fn check_templates(&mut self, node: &Yaml, roots: &[&str], label: &str) -> bool {
        match &node.value {
            Node::Str(text) if template::is_template(text) => {
                let inputs = std::mem::take(&mut self.input_names);
                let valid = self.check_template(
                    node,
                    text,
                    &Scope {
                        roots,
                        inputs: &inputs,
                    },
                    label,
                );
                self.input_names = inputs;
                valid
            }
            Node::Seq(items) => items.iter().enumerate().fold(true, |valid, (index, item)| {
                self.check_templates(item, roots, &format!("{label}[{index}]")) && valid
            }),
            Node::Map(entries) => entries.iter().fold(true, |valid, (key, value)| {
                self.check_templates(value, roots, &format!("{label}.{}", yaml::key_text(key)))
                    && valid
            }),
            _ => true,
        }
    }

    fn check_template(&mut self, node: &Yaml, text: &str, scope: &Scope, label: &str) -> bool {
        let problems = template::check_template(text, scope);
        let valid = problems.is_empty();
        for problem in problems {
            self.d.report(
                node,
                format!("{} in {label}", problem.message),
                problem.hint,
            );
        }
        valid
    }
}

/// Reads an optional key: `Some(None)` when it is absent, `Some(Some(value))`
/// when it was read, `None` when reading it recorded a diagnostic.
fn optional<T>(node: Option<&Yaml>, read: impl FnOnce(&Yaml) -> Option<T>) -> Option<Option<T>> {
    match node {
        None => Some(None),
        Some(node) => read(node).map(Some),
    }
}

/// The value of `key` in a map node, without reporting anything.
fn map_value<'y>(node: &'y Yaml, key: &str) -> Option<&'y Yaml> {
    match &node.value {
        Node::Map(entries) => entries
            .iter()
            .find(|(entry, _)| yaml::key_text(entry) == key)
            .map(|(_, value)| value),
        _ => None,
    }
}

fn peek_string(node: &Yaml, key: &str) -> Option<String> {
    match &map_value(node, key)?.value {
        Node::Str(text) => Some(text.clone()),
        _ => None,
    }
}
