//! Templates: strict minijinja, checked when a runbook is loaded and
//! rendered when it is planned.
//!
//! Two promises shape this module. First, an undefined variable is always an
//! error — statically, when a template names a root or an input the runbook
//! does not declare, and at plan time, when the event lacks a field
//! (`UndefinedBehavior::Strict`) — never an empty string sent to a
//! production system. Second, a value that is exactly one `{{ expression }}`
//! keeps its JSON type (`"{{ inputs.port }}"` renders to the number `8443`,
//! `"{{ targets }}"` to a list), so `with:` trees can carry structured data;
//! anything else renders to a string.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;

use minijinja::value::{Serde, ValueKind};
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde_json::Value;

use crate::diagnostic::suggestion;
use crate::{Error, Result};

/// The keys of an event's JSON form, as templates and conditions see it.
pub(crate) const EVENT_FIELDS: [&str; 8] = [
    "id",
    "source",
    "kind",
    "dedup_key",
    "subject",
    "fields",
    "status",
    "received_at",
];

/// Non-secret configuration exposed to templates as `env` (base URLs,
/// environment names). Whatever a template reads from here ends up in the
/// plan and the audit log, so it must never hold a secret.
#[derive(Clone, Default)]
pub struct TemplateEnv {
    pub vars: BTreeMap<String, String>,
}

impl TemplateEnv {
    /// The prefix that opts a process environment variable into templates.
    pub const PROCESS_PREFIX: &'static str = "OPSGATE_VAR_";

    /// The process environment variables named `OPSGATE_VAR_<NAME>`, as
    /// `env.<NAME>`. Only opted-in variables are visible: whatever a template
    /// reads ends up in plans and the audit log, so the rest of the
    /// environment (where credentials often live) must stay out of reach.
    pub fn from_process() -> Self {
        let vars = std::env::vars_os()
            .filter_map(|(name, value)| {
                let name = name
                    .into_string()
                    .ok()?
                    .strip_prefix(Self::PROCESS_PREFIX)?
                    .to_owned();
                Some((name, value.into_string().ok()?))
            })
            .filter(|(name, _)| !name.is_empty())
            .collect();
        TemplateEnv { vars }
    }

    /// The variables as templates see them: `env.NAME`.
    pub(crate) fn to_json(&self) -> Value {
        Value::Object(
            self.vars
                .iter()
                .map(|(name, value)| (name.clone(), Value::String(value.clone())))
                .collect(),
        )
    }
}

/// Lists names only: values may be sensitive even when they should not be,
/// and `Debug` output ends up in logs.
impl fmt::Debug for TemplateEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TemplateEnv")
            .field("vars", &self.vars.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The one environment every template is compiled in: strict undefined, no
/// HTML escaping (requests are not HTML), trailing newlines kept.
fn environment() -> &'static Environment<'static> {
    static ENVIRONMENT: OnceLock<Environment<'static>> = OnceLock::new();
    ENVIRONMENT.get_or_init(|| {
        let mut environment = Environment::new();
        environment.set_undefined_behavior(UndefinedBehavior::Strict);
        environment.set_auto_escape_callback(|_| AutoEscape::None);
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .build()
            .expect("the default delimiters are valid");
        environment.set_syntax(syntax);
        environment
    })
}

/// True when `text` contains template syntax and must be rendered.
pub(crate) fn is_template(text: &str) -> bool {
    text.contains("{{") || text.contains("{%") || text.contains("{#")
}

/// The expression inside `text` when `text` is exactly one `{{ … }}`.
fn single_expression(text: &str) -> Option<&str> {
    let inner = text.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    if ["{{", "}}", "{%", "%}", "{#", "#}"]
        .iter()
        .any(|marker| inner.contains(marker))
    {
        return None;
    }
    let inner = inner.strip_prefix(['-', '+']).unwrap_or(inner);
    let inner = inner.strip_suffix(['-', '+']).unwrap_or(inner);
    Some(inner.trim())
}

fn describe_error(error: &minijinja::Error) -> String {
    match error.detail() {
        Some(detail) => format!("{}: {detail}", error.kind()),
        None => error.kind().to_string(),
    }
}

// ---------------------------------------------------------------------------
// Static checks, at load time.

/// What a template may refer to where it is written.
pub(crate) struct Scope<'a> {
    /// The allowed root variables (`event`, `inputs`, `env`, `targets`, `response`).
    pub roots: &'a [&'a str],
    /// The properties of the inputs schema: what `inputs.NAME` may name.
    pub inputs: &'a [String],
}

/// A problem a static check found; the caller knows where it is.
#[derive(Debug)]
pub(crate) struct Problem {
    pub message: String,
    pub hint: Option<String>,
}

/// Checks a templated string: syntax, then every variable it reads.
pub(crate) fn check_template(text: &str, scope: &Scope) -> Vec<Problem> {
    match environment().template_from_str(text) {
        Ok(template) => check_variables(template.undeclared_variables(true), scope),
        Err(error) => vec![syntax_problem(&error, "template")],
    }
}

/// Checks a bare expression (`targets.from`, `verify.expect`).
pub(crate) fn check_expression(text: &str, scope: &Scope) -> Vec<Problem> {
    match environment().compile_expression(text) {
        Ok(expression) => check_variables(expression.undeclared_variables(true), scope),
        Err(error) => {
            let mut problem = syntax_problem(&error, "expression");
            if let Some(inner) = single_expression(text) {
                problem.hint = Some(format!(
                    "this is an expression, not a template: write `{inner}` without the braces"
                ));
            }
            vec![problem]
        }
    }
}

/// The root variables an expression reads (`env` for `env.API`), or
/// `None` when it does not compile.
pub(crate) fn expression_roots(text: &str) -> Option<Vec<String>> {
    let expression = environment().compile_expression(text).ok()?;
    let mut roots: Vec<String> = expression.undeclared_variables(false).into_iter().collect();
    roots.sort();
    Some(roots)
}

fn syntax_problem(error: &minijinja::Error, what: &str) -> Problem {
    let at = match error.line() {
        Some(line) if line > 1 => format!(" (line {line} of the {what})"),
        _ => String::new(),
    };
    Problem {
        message: format!("invalid {what}: {}{at}", describe_error(error)),
        hint: None,
    }
}

fn check_variables(variables: impl IntoIterator<Item = String>, scope: &Scope) -> Vec<Problem> {
    let mut variables: Vec<String> = variables.into_iter().collect();
    variables.sort();
    let mut problems = Vec::new();
    for variable in variables {
        let mut segments = variable.split('.');
        let root = segments.next().unwrap_or_default();
        let member = segments.next();
        if !scope.roots.contains(&root) {
            // Global functions such as `range` are not variables of ours.
            if environment().globals().any(|(name, _)| name == root) {
                continue;
            }
            problems.push(Problem {
                message: format!("unknown template variable `{root}`"),
                hint: Some(suggestion(root, scope.roots, "variables available here")),
            });
            continue;
        }
        match (root, member) {
            ("inputs", Some(name)) if !scope.inputs.iter().any(|known| known == name) => {
                let known: Vec<&str> = scope.inputs.iter().map(String::as_str).collect();
                let hint = if known.is_empty() {
                    "the inputs schema declares no properties".to_owned()
                } else {
                    suggestion(name, &known, "known inputs")
                };
                problems.push(Problem {
                    message: format!("undefined template variable `inputs.{name}`"),
                    hint: Some(hint),
                });
            }
            ("event", Some(name)) if !EVENT_FIELDS.contains(&name) => problems.push(Problem {
                message: format!("undefined template variable `event.{name}`"),
                hint: Some(suggestion(name, &EVENT_FIELDS, "an event has")),
            }),
            _ => {}
        }
    }
    problems
}

// ---------------------------------------------------------------------------
// Rendering, at plan time.

/// The variables a template is rendered with.
pub(crate) fn context(variables: Value) -> minijinja::Value {
    minijinja::Value::from(Serde(variables))
}

/// Renders every string in `value` (recursively; keys are not rendered).
/// `location` names where `value` sits, for errors: "step `restart` with".
pub(crate) fn render_value(
    value: &Value,
    context: &minijinja::Value,
    location: &str,
) -> Result<Value> {
    match value {
        Value::String(text) => render_string(text, context, location),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(index, item)| render_value(item, context, &format!("{location}[{index}]")))
            .collect::<Result<Vec<_>>>()
            .map(Value::Array),
        Value::Object(map) => map
            .iter()
            .map(|(key, item)| {
                Ok((
                    key.clone(),
                    render_value(item, context, &format!("{location}.{key}"))?,
                ))
            })
            .collect::<Result<serde_json::Map<_, _>>>()
            .map(Value::Object),
        scalar => Ok(scalar.clone()),
    }
}

/// Renders one string: a single `{{ expression }}` keeps its type,
/// anything else becomes a string.
pub(crate) fn render_string(
    text: &str,
    context: &minijinja::Value,
    location: &str,
) -> Result<Value> {
    let template_error = |message: String| Error::Template {
        location: location.to_owned(),
        message,
    };
    if !is_template(text) {
        return Ok(Value::String(text.to_owned()));
    }
    if let Some(expression) = single_expression(text) {
        return evaluate(expression, context).map_err(template_error);
    }
    environment()
        .render_str(text, context.clone())
        .map(Value::String)
        .map_err(|error| template_error(describe_error(&error)))
}

/// Evaluates an expression to JSON; an undefined result (or part of one)
/// is an error, as strictness promises.
pub(crate) fn evaluate(expression: &str, context: &minijinja::Value) -> Result<Value, String> {
    let compiled = environment()
        .compile_expression(expression)
        .map_err(|error| describe_error(&error))?;
    let value = compiled
        .eval(context.clone())
        .map_err(|error| describe_error(&error))?;
    if value.is_undefined() {
        return Err(format!("undefined value: `{expression}` is undefined"));
    }
    if contains_undefined(&value) {
        return Err(format!(
            "undefined value: `{expression}` contains an undefined value"
        ));
    }
    serde_json::to_value(&value)
        .map_err(|error| format!("cannot convert the result to JSON: {error}"))
}

fn contains_undefined(value: &minijinja::Value) -> bool {
    match value.kind() {
        ValueKind::Undefined | ValueKind::Invalid => true,
        ValueKind::Seq => value
            .try_iter()
            .is_ok_and(|mut items| items.any(|item| contains_undefined(&item))),
        ValueKind::Map => value.try_iter().is_ok_and(|mut keys| {
            keys.any(|key| {
                value
                    .get_item(&key)
                    .map_or(true, |item| contains_undefined(&item))
            })
        }),
        _ => false,
    }
}

/// Evaluates a verify expectation with `response` bound to `response`.
///
/// Strict: reading a field the response lacks (`response.json.missing ==
/// 'x'`) is an [`Error::Expectation`], not `false`, so the caller can record
/// *why* verification did not pass; so is a result that is not a boolean.
/// Guard optional fields with `is defined` when absence is expected.
pub fn expectation_holds(expect: &str, response: &Value) -> Result<bool> {
    let error = |message: String| Error::Expectation {
        expect: expect.to_owned(),
        message,
    };
    let variables = context(serde_json::json!({ "response": response }));
    match evaluate(expect, &variables).map_err(error)? {
        Value::Bool(holds) => Ok(holds),
        other => Err(error(format!("expected true or false, got {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn single_expressions_are_recognised() {
        let check = |text: &str, expected: Option<&str>| {
            assert_eq!(single_expression(text), expected, "{text}")
        };
        check("{{ inputs.port }}", Some("inputs.port"));
        check("  {{- targets -}} ", Some("targets"));
        check("{{ a }}/{{ b }}", None);
        check("https://{{ a }}", None);
        check("{% if a %}x{% endif %}", None);
    }

    #[test]
    fn static_checks_name_unknown_roots_inputs_and_event_fields() {
        let inputs = vec!["device_id".to_owned(), "service".to_owned()];
        let scope = Scope {
            roots: &["event", "inputs", "env", "targets"],
            inputs: &inputs,
        };
        let check = |text: &str, expected: &[&str]| {
            let problems: Vec<String> = check_template(text, &scope)
                .into_iter()
                .map(|p| p.message)
                .collect();
            assert_eq!(problems, expected, "{text}");
        };
        check(
            "{{ env.API }}/{{ inputs.device_id }}/{{ event.fields.x }}",
            &[],
        );
        check(
            "{% for t in targets %}{{ t }}{% endfor %}{{ range(2) }}",
            &[],
        );
        check(
            "{{ inputs.nme }}",
            &["undefined template variable `inputs.nme`"],
        );
        check("{{ evnt.subject }}", &["unknown template variable `evnt`"]);
        check(
            "{{ event.subjet }}",
            &["undefined template variable `event.subjet`"],
        );
        check(
            "{% if x %}",
            &["invalid template: syntax error: unexpected end of input, expected end of block"],
        );
    }

    #[test]
    fn expectations_hold_fail_or_explain() {
        let response = json!({"status": 200, "json": {"status": "running", "count": 3}});
        let check = |expect: &str, expected: std::result::Result<bool, &str>| {
            let actual = expectation_holds(expect, &response).map_err(|error| error.to_string());
            match (actual, expected) {
                (Ok(actual), Ok(expected)) => assert_eq!(actual, expected, "{expect}"),
                (Err(actual), Err(fragment)) => {
                    assert!(actual.contains(fragment), "{expect}: {actual}")
                }
                (actual, expected) => panic!("{expect}: got {actual:?}, expected {expected:?}"),
            }
        };
        check("response.json.status == 'running'", Ok(true));
        check("response.json.status == 'stopped'", Ok(false));
        check(
            "response.status == 200 and response.json.count >= 3",
            Ok(true),
        );
        check(
            "response.json.missing is defined and response.json.missing == 'x'",
            Ok(false),
        );
        check(
            "response.json.missing == 'x'",
            Err("`response.json.missing` is undefined"),
        );
        check("response.json.status", Err("expected true or false"));
        check("response.json.status ==", Err("syntax error"));
    }
}
