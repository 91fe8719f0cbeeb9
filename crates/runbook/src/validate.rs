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

use domain::{ActionShape, ApprovalStage, RiskClass, StageRule};
use serde_json::{Map, Value, json};

use crate::decode::Decoder;
use crate::diagnostic::{Diagnostic, suggestion};
use crate::model::*;
use crate::template::{self, EVENT_FIELDS, Scope};
use crate::yaml::{self, Node, Yaml};

mod guardrails;
mod rollout;
mod steps;

use steps::Remedy;

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
    "then_if_unverified",
    "precheck",
    "verify",
    "time_bound",
    "rollout",
    "on_failure",
    "writeback",
    "allowed_hosts",
    "mode",
    "shadow_hold",
];

const CALL_KEYS: &[&str] = &["action", "with", "timeout"];

const DEFAULT_WITHIN_MS: u64 = 60_000;
const DEFAULT_EVERY_MS: u64 = 5_000;

/// Roots a step, rollback or probe template may read.
const CALL_ROOTS: &[&str] = &["event", "inputs", "env", "targets"];

/// In a rollout, a step, its rollback and the verification probe are
/// rendered once per target, and may read that `target` too.
const ROLLOUT_CALL_ROOTS: &[&str] = &["event", "inputs", "env", "targets", "target"];

/// Reads and validates one runbook file. `path` is only used in diagnostics
/// and recorded in [`Runbook::path`]. `actions` are the step actions a
/// runbook may name, each checking its own `with:`.
pub fn parse_runbook(
    path: &Path,
    text: &str,
    actions: &[&'static ActionShape],
) -> Result<Runbook, Vec<Diagnostic>> {
    parse(path, text, actions).map(|parsed| parsed.runbook)
}

/// A runbook and where its id is written, so that the catalog can point at
/// a duplicate id.
pub(crate) struct Parsed {
    pub runbook: Runbook,
    pub id_line: u32,
    pub id_column: u32,
}

pub(crate) fn parse(
    path: &Path,
    text: &str,
    actions: &[&'static ActionShape],
) -> Result<Parsed, Vec<Diagnostic>> {
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
        actions,
        call_roots: CALL_ROOTS,
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
    /// The step actions a call may name.
    actions: &'d [&'static ActionShape],
    /// What the templates of the calls being read may name: `target` too
    /// for the steps and probe of a rollout.
    call_roots: &'static [&'static str],
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
        let id = id_node.and_then(|node| self.identifier(node, "`id`", "runbook id"));
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
            None => Some(Approval::required()),
            Some(node) => self.approval(node),
        };
        let rollout = optional(top.get("rollout"), |node| self.rollout(node));
        // Steps and the probe are rendered per target in a rollout; the
        // precheck is read once, before the first target.
        if top.get("rollout").is_some() {
            self.call_roots = ROLLOUT_CALL_ROOTS;
        }
        let mut first_use = HashMap::new();
        let first_remedy = self
            .d
            .required(&top, "steps")
            .and_then(|node| self.steps(node, Remedy::First, &mut first_use));
        // Named for when it runs — after the steps, if verification still
        // fails — rather than `escalate`, which already names widening an
        // approval stage and `on_failure.escalate_to`.
        let second_remedy = optional(top.get("then_if_unverified"), |node| {
            self.steps(node, Remedy::IfUnverified, &mut first_use)
        });
        let verify = match top.get("verify") {
            None => Some(None),
            Some(node) => self.verify(node).map(Some),
        };
        if let (Some(None), Some(key)) = (&verify, top.key("then_if_unverified")) {
            self.d.report(
                key,
                "`then_if_unverified` needs `verify`",
                Some("the second remedy runs only when the runbook's verification fails after the first; without `verify` it never would".into()),
            );
        }
        let steps = match (first_remedy, second_remedy) {
            (Some(mut steps), Some(second)) => {
                steps.extend(second.into_iter().flatten());
                Some(steps)
            }
            _ => None,
        };
        self.call_roots = CALL_ROOTS;
        let precheck = optional(top.get("precheck"), |node| self.precheck(node));
        let time_bound = optional(top.get("time_bound"), |node| self.time_bound(node));
        if let (Some(Some(_)), Some(steps)) = (&time_bound, &steps) {
            for step in steps.iter().filter(|step| step.rollback.is_none()) {
                self.d.report(
                    top.key("time_bound").unwrap_or(root),
                    format!(
                        "`time_bound` needs a rollback on every step, and step `{}` has none",
                        step.id
                    ),
                    Some("the rollbacks are what undoes the change at its end".into()),
                );
            }
        }
        if let (Some(Some(_)), Some(node)) = (&time_bound, top.key("rollout")) {
            self.d.report(
                node,
                "`rollout` and `time_bound` cannot be used together",
                Some("a time-bound change is undone at its end on every target at once; write two runbooks, or drop one of them".into()),
            );
        }
        let on_failure = top
            .get("on_failure")
            .map_or(Some(OnFailure::default()), |node| self.on_failure(node));
        let writeback = top
            .get("writeback")
            .map_or(Some(Writeback::default()), |node| self.writeback(node));
        let allowed_hosts = top
            .get("allowed_hosts")
            .map_or(Some(Vec::new()), |node| self.allowed_hosts(node));
        let mode = self.mode(top.get("mode"), top.get("shadow_hold"));

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
            Some(precheck),
            Some(verify),
            Some(time_bound),
            Some(rollout),
            Some(on_failure),
            Some(writeback),
            Some(allowed_hosts),
            Some(mode),
        ) = (
            id_node,
            id,
            title,
            owner,
            risk,
            matcher,
            inputs,
            targets,
            guardrails,
            approval,
            steps,
            precheck,
            verify,
            time_bound,
            rollout,
            on_failure,
            writeback,
            allowed_hosts,
            mode,
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
            precheck,
            verify,
            time_bound,
            rollout,
            on_failure,
            writeback,
            allowed_hosts,
            mode,
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

    /// `mode: live | shadow`, and `shadow_hold`, which only a shadow
    /// runbook takes.
    fn mode(&mut self, mode: Option<&Yaml>, hold: Option<&Yaml>) -> Option<Mode> {
        let shadow = match mode {
            None => false,
            Some(node) => self.d.choice(node, "`mode`", &["live", "shadow"])? == "shadow",
        };
        match (shadow, hold) {
            (false, None) => Some(Mode::Live),
            (false, Some(node)) => {
                self.d.report(
                    node,
                    "`shadow_hold` needs `mode: shadow`",
                    Some("a live runbook's repeats are held off by its `cooldown`".into()),
                );
                None
            }
            (true, None) => Some(Mode::Shadow {
                hold_ms: Mode::DEFAULT_SHADOW_HOLD_MS,
            }),
            (true, Some(node)) => {
                let hold_ms = self.d.duration(node, "`shadow_hold`")?;
                Some(Mode::Shadow { hold_ms })
            }
        }
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
        let fields = self.d.fields(
            node,
            "`match`",
            &["source", "kind", "when", "recurrence", "rerun"],
        )?;
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
        let rerun = optional(fields.get("rerun"), |node| self.rerun(node));
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
            rerun: rerun?,
        })
    }

    fn rerun(&mut self, node: &Yaml) -> Option<Rerun> {
        let fields = self.d.fields(node, "`match.rerun`", &["after"])?;
        let after = self.d.required(&fields, "after")?;
        // A duration is never zero: an update cannot rerun at once.
        let after_ms = self.d.duration(after, &fields.what("after"))?;
        Some(Rerun { after_ms })
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
            Some(node) => self.event_templates(node),
        };
        Some(Inputs {
            schema,
            from_event: from_event?,
        })
        .filter(|_| valid)
    }

    fn event_templates(
        &mut self,
        node: &Yaml,
    ) -> Option<std::collections::BTreeMap<String, String>> {
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

    /// `approval: auto|required`, or the long form
    /// `approval: { mode: auto|required, expires: 8h, approvals: 2, stages: [...] }`.
    fn approval(&mut self, node: &Yaml) -> Option<Approval> {
        let mode = |this: &mut Self, node: &Yaml, what: &str| {
            this.d
                .choice(node, what, &["auto", "required"])
                .map(|mode| match mode.as_str() {
                    "auto" => ApprovalMode::Auto,
                    _ => ApprovalMode::Required,
                })
        };
        if !matches!(node.value, Node::Map(_)) {
            return mode(self, node, "`approval`").map(|mode| Approval {
                mode,
                ..Approval::required()
            });
        }
        let fields = self.d.fields(
            node,
            "`approval`",
            &["mode", "expires", "approvals", "stages"],
        )?;
        let chosen = self
            .d
            .required(&fields, "mode")
            .and_then(|node| mode(self, node, &fields.what("mode")));
        let expires = fields
            .get("expires")
            .map_or(Some(Approval::DEFAULT_EXPIRES_MS), |node| {
                self.d.duration(node, &fields.what("expires"))
            });
        let approvals = fields.get("approvals").map_or(Some(1), |node| {
            self.d.integer(node, &fields.what("approvals"), 1, 10)
        });
        let stages = fields
            .get("stages")
            .map_or(Some(Vec::new()), |node| self.stages(node));
        if let (Some(stages_node), Some(_)) = (fields.get("stages"), fields.get("approvals")) {
            self.d.report(
                stages_node,
                "`approval` has both `approvals` and `stages`",
                Some("with stages, say how many approve in each stage's `rule`".into()),
            );
            return None;
        }
        Some(Approval {
            mode: chosen?,
            expires_ms: expires?,
            approvals: approvals? as u32,
            stages: stages?,
        })
    }

    /// `stages: [{ name, approvers: [...], rule: any|all|{at_least: k},
    /// timeout: 2h, escalate_to: [...] }]`.
    fn stages(&mut self, node: &Yaml) -> Option<Vec<ApprovalStage>> {
        let items = self.d.list(node, "`approval.stages`")?;
        if items.is_empty() {
            self.d.report(
                node,
                "`approval.stages` is empty",
                Some("leave `stages` out for one stage of any approver".into()),
            );
            return None;
        }
        let mut names: Vec<String> = Vec::new();
        let mut stages = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            let context = format!("approval stage {}", index + 1);
            let stage = self.stage(item, &context);
            if let Some(stage) = &stage {
                if names.contains(&stage.name) {
                    self.d.report(
                        item,
                        format!("two approval stages are named `{}`", stage.name),
                        None,
                    );
                }
                names.push(stage.name.clone());
            }
            stages.push(stage);
        }
        stages.into_iter().collect()
    }

    fn stage(&mut self, node: &Yaml, context: &str) -> Option<ApprovalStage> {
        let fields = self.d.fields(
            node,
            context,
            &["name", "approvers", "rule", "timeout", "escalate_to"],
        )?;
        let name = self
            .d
            .required(&fields, "name")
            .and_then(|node| self.identifier(node, &fields.what("name"), "stage name"));
        let approvers = self
            .d
            .required(&fields, "approvers")
            .and_then(|node| self.references(node, &fields.what("approvers")));
        let escalate_to = fields.get("escalate_to").map_or(Some(Vec::new()), |node| {
            self.references(node, &fields.what("escalate_to"))
        });
        let rule = fields.get("rule").map_or(Some(StageRule::Any), |node| {
            self.stage_rule(node, &fields.what("rule"))
        });
        let timeout = fields.get("timeout").map_or(Some(None), |node| {
            self.d.duration(node, &fields.what("timeout")).map(Some)
        });
        let (approvers, rule) = (approvers?, rule?);
        if approvers.is_empty() {
            self.d
                .report(node, format!("{context} names no approvers"), None);
            return None;
        }
        Some(ApprovalStage {
            name: name?,
            approvers,
            rule,
            timeout_ms: timeout?,
            escalate_to: escalate_to?,
        })
    }

    /// `any`, `all`, or `{at_least: k}`.
    fn stage_rule(&mut self, node: &Yaml, what: &str) -> Option<StageRule> {
        if let Node::Map(_) = node.value {
            let fields = self.d.fields(node, what, &["at_least"])?;
            let count = self
                .d
                .required(&fields, "at_least")
                .and_then(|node| self.d.integer(node, &fields.what("at_least"), 1, 10))?;
            return Some(StageRule::AtLeast(count as u32));
        }
        self.d
            .choice(node, what, &["any", "all"])
            .map(|rule| match rule.as_str() {
                "any" => StageRule::Any,
                _ => StageRule::All,
            })
    }

    /// A list of approver references, each in one of the forms the
    /// directory resolves (it resolves them when the stage opens).
    fn references(&mut self, node: &Yaml, what: &str) -> Option<Vec<String>> {
        let items = self.d.list(node, what)?;
        let mut references = Vec::with_capacity(items.len());
        let mut valid = true;
        for item in items {
            let Some(text) = self.d.string(item, what) else {
                valid = false;
                continue;
            };
            if !crate::is_approver_reference(&text) {
                self.d.report(
                    item,
                    format!("`{text}` in {what} is not an approver reference"),
                    Some(crate::APPROVER_REFERENCE_FORMS.into()),
                );
                valid = false;
            }
            references.push(text);
        }
        valid.then_some(references)
    }

    /// `allowed_hosts: [endpoint.example, "*.corp.example"]`: host names,
    /// or `*.` and a domain for the hosts below it.
    fn allowed_hosts(&mut self, node: &Yaml) -> Option<Vec<String>> {
        let items = self.d.list(node, "`allowed_hosts`")?;
        if items.is_empty() {
            self.d.report(
                node,
                "`allowed_hosts` is empty, so no call could be made",
                Some("name the hosts the runbook calls, or leave `allowed_hosts` out".into()),
            );
            return None;
        }
        let mut hosts = Vec::with_capacity(items.len());
        let mut valid = true;
        for (index, item) in items.iter().enumerate() {
            let Some(host) = self
                .d
                .string(item, &format!("`allowed_hosts`, item {}", index + 1))
            else {
                valid = false;
                continue;
            };
            if !domain::is_host_pattern(&host) {
                self.d.report(
                    item,
                    format!("`{host}` in `allowed_hosts` is not a host name or `*.domain`"),
                    Some("write the host alone, without scheme, port or path: `endpoint.example`, or `\"*.corp.example\"` for the hosts below a domain".into()),
                );
                valid = false;
            }
            hosts.push(host);
        }
        valid.then_some(hosts)
    }

    // -- verify, on_failure, writeback ---------------------------------------

    fn precheck(&mut self, node: &Yaml) -> Option<Precheck> {
        let fields = self.d.fields(node, "`precheck`", &["probe", "expect"])?;
        let probe = self.d.required(&fields, "probe").and_then(|node| {
            let probe = self.d.fields(node, "`precheck.probe`", CALL_KEYS)?;
            self.call(&probe, "`precheck.probe`", "precheck.probe with")
        });
        let expect = self.d.required(&fields, "expect").and_then(|node| {
            self.response_expression(node, &fields.what("expect"), "`precheck.expect`")
        });
        Some(Precheck {
            probe: probe?,
            expect: expect?,
        })
    }

    /// An expression over `response` (a probe's expectation), checked.
    fn response_expression(&mut self, node: &Yaml, what: &str, place: &str) -> Option<String> {
        let expect = self.d.string(node, what)?;
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
                format!("{} in {place}", problem.message),
                problem.hint,
            );
        }
        valid.then_some(expect)
    }

    fn verify(&mut self, node: &Yaml) -> Option<Verify> {
        let fields = self
            .d
            .fields(node, "`verify`", &["probe", "expect", "within", "every"])?;
        let probe = self.d.required(&fields, "probe").and_then(|node| {
            let probe = self.d.fields(node, "`verify.probe`", CALL_KEYS)?;
            self.call(&probe, "`verify.probe`", "verify.probe with")
        });
        let expect = self.d.required(&fields, "expect").and_then(|node| {
            self.response_expression(node, &fields.what("expect"), "`verify.expect`")
        });
        let within_ms = fields
            .get("within")
            .map_or(Some(DEFAULT_WITHIN_MS), |node| {
                self.d.duration(node, &fields.what("within"))
            });
        let every_ms = fields.get("every").map_or(Some(DEFAULT_EVERY_MS), |node| {
            self.d.duration(node, &fields.what("every"))
        });
        if let (Some(within), Some(every)) = (within_ms, every_ms)
            && every > within
        {
            self.d.report(
                fields.get("every").or(fields.get("within")).unwrap_or(node),
                "`every` in `verify` is longer than `within`",
                Some("the probe must get at least one chance before the deadline".into()),
            );
            return None;
        }
        Some(Verify {
            probe: probe?,
            expect: expect?,
            within_ms: within_ms?,
            every_ms: every_ms?,
        })
    }

    fn time_bound(&mut self, node: &Yaml) -> Option<TimeBound> {
        let fields = self.d.fields(node, "`time_bound`", &["until", "at_most"])?;
        let until = self.d.required(&fields, "until").and_then(|node| {
            let until = self.d.string(node, &fields.what("until"))?;
            self.check_templates(node, CALL_ROOTS, "time_bound.until")
                .then_some(until)
        });
        let at_most_ms = optional(fields.get("at_most"), |node| {
            self.d.duration(node, &fields.what("at_most"))
        });
        Some(TimeBound {
            until: until?,
            at_most_ms: at_most_ms?,
        })
    }

    fn on_failure(&mut self, node: &Yaml) -> Option<OnFailure> {
        let fields = self
            .d
            .fields(node, "`on_failure`", &["escalate_to", "ticket_state"])?;
        let escalate_to = optional(fields.get("escalate_to"), |node| {
            let text = self.d.string(node, &fields.what("escalate_to"))?;
            if text.strip_prefix("group:").is_none_or(str::is_empty) {
                self.d.report(
                    node,
                    format!("`{text}` in {} is not a group", fields.what("escalate_to")),
                    Some("write the resolver group as `group:NAME`".into()),
                );
                return None;
            }
            Some(text)
        });
        let ticket_state = optional(fields.get("ticket_state"), |node| {
            let text = self.d.string(node, &fields.what("ticket_state"))?;
            let state_number = !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit());
            if !state_number && !crate::TICKET_STATES.contains(&text.as_str()) {
                self.d.report(
                    node,
                    format!(
                        "`{text}` in {} is not a ticket state",
                        fields.what("ticket_state")
                    ),
                    Some(format!(
                        "one of {}, or the state's number in the ticket system",
                        crate::TICKET_STATES.join(", ")
                    )),
                );
                return None;
            }
            Some(text)
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
