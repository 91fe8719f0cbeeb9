//! Planning: a runbook and an event → a fully rendered [`domain::Plan`].
//!
//! The order is fixed because each stage feeds the next: inputs (rendered
//! from the event, coerced to the schema's types, defaulted, validated),
//! then targets (which may read inputs), then every call (which may read
//! both). Everything a run will send is rendered here, before any approval,
//! so that the approver sees — and the plan hash binds — the exact requests.
//!
//! URLs are rendered apart from the rest of a call (`url_template.rs`): each
//! value is encoded for where it lands, the result is checked against the
//! path the runbook names and its `allowed_hosts`, and the plan holds the URL
//! exactly as it will be sent.

use std::collections::BTreeSet;

use domain::{
    Event, Kind, Plan, PlannedCall, PlannedStep, Precheck, Rollout, TargetPlan, Verification,
};
use jiff::Timestamp;
use serde_json::{Map, Value, json};

use crate::matching::event_json;
use crate::model::{CallTemplate, Runbook, TimeBound};
use crate::template::{self, TemplateEnv};
use crate::url_template;
use crate::{Error, Result};

/// Where a proposer's inputs stand against the event's (`from_event`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Supplied {
    /// They fill what the event leaves out, and may not contradict it.
    Filling,
    /// They come first (the event is the proposal itself).
    First,
}

impl Runbook {
    /// Resolves inputs from the event, computes the targets, and renders
    /// every step, rollback and the verify probe into a [`Plan`] whose
    /// `plan_hash` is set.
    pub fn plan(&self, event: &Event, env: &TemplateEnv) -> Result<Plan> {
        self.plan_with_inputs(event, env, &Map::new())
    }

    /// As [`Runbook::plan`] for a proposal: the proposer's inputs come
    /// first, and `from_event` fills only those it left out. The event is
    /// the proposal itself, so there is nothing for the inputs to
    /// contradict; the schema still judges every value.
    pub fn plan_proposed(
        &self,
        event: &Event,
        env: &TemplateEnv,
        proposed: &Map<String, Value>,
    ) -> Result<Plan> {
        self.plan_from(event, env, proposed, Supplied::First)
    }

    /// As [`Runbook::plan`], with inputs a proposer supplied (an agent or a
    /// person asking for a run). They fill inputs the event does not: a
    /// supplied value for an input that `from_event` sets is refused, so a
    /// proposer cannot contradict what the event says.
    pub fn plan_with_inputs(
        &self,
        event: &Event,
        env: &TemplateEnv,
        supplied: &Map<String, Value>,
    ) -> Result<Plan> {
        self.plan_from(event, env, supplied, Supplied::Filling)
    }

    fn plan_from(
        &self,
        event: &Event,
        env: &TemplateEnv,
        supplied: &Map<String, Value>,
        order: Supplied,
    ) -> Result<Plan> {
        let received_at = event.received_at;
        let event = event_json(event);
        let env = env.to_json();

        let inputs = self.resolve_inputs(&event, &env, supplied, order)?;
        let targets = self.resolve_targets(&event, &env, &inputs)?;

        let context = template::context(
            json!({ "event": event, "inputs": inputs, "env": env, "targets": targets }),
        );
        let precheck = self
            .precheck
            .as_ref()
            .map(|precheck| {
                Ok::<_, Error>(Precheck {
                    probe: self.render_call(&precheck.probe, &context, "precheck.probe with")?,
                    expect: precheck.expect.clone(),
                })
            })
            .transpose()?;
        // A rollout renders the steps and the probe once per target, each
        // with its `target`; the plan's own are the first target's.
        let rollout = self
            .rollout
            .as_ref()
            .map(|rollout| {
                let targets = targets
                    .iter()
                    .map(|target| {
                        let context = template::context(json!({
                            "event": event, "inputs": inputs, "env": env,
                            "targets": targets, "target": target,
                        }));
                        let place = format!(" (target `{target}`)");
                        Ok(TargetPlan {
                            target: target.clone(),
                            steps: self.render_steps(&context, &place)?,
                            verify: self.render_verify(&context, &place)?,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok::<_, Error>(Rollout {
                    batches: rollout.batches(targets.len()),
                    targets,
                    pause_ms: rollout.pause_ms,
                    stop_when: rollout.stop_when.clone(),
                    rollback: rollout.rollback,
                    approve_after_canary: rollout.approve_after_canary,
                    max_targets: self.targets.max_targets,
                })
            })
            .transpose()?;
        let (steps, verify) = match &rollout {
            Some(rollout) => (
                rollout.targets[0].steps.clone(),
                rollout.targets[0].verify.clone(),
            ),
            None => (
                self.render_steps(&context, "")?,
                self.render_verify(&context, "")?,
            ),
        };
        let ends_at = self
            .time_bound
            .as_ref()
            .map(|time_bound| end_of_term(time_bound, &context, received_at))
            .transpose()?;

        let mut plan = Plan {
            runbook_id: self.id.clone(),
            runbook_version: self.version.clone(),
            title: self.title.clone(),
            risk: self.risk,
            inputs,
            targets,
            precheck,
            steps,
            verify,
            rollout,
            ends_at,
            // Only a plan with a second remedy alerts on-call itself.
            on_call: self
                .steps
                .iter()
                .any(|step| step.if_unverified)
                .then(|| self.on_failure.escalate_to.clone())
                .flatten(),
            plan_hash: String::new(),
        };
        plan.plan_hash = plan.compute_hash();
        Ok(plan)
    }

    /// Every step and its rollback, rendered in `context`; `place` ends
    /// the location of an error (which target it was rendered for).
    fn render_steps(&self, context: &minijinja::Value, place: &str) -> Result<Vec<PlannedStep>> {
        self.steps
            .iter()
            .map(|step| {
                let step_place = format!("step `{}`", step.id);
                Ok(PlannedStep {
                    id: step.id.clone(),
                    call: self.render_call(
                        &step.call,
                        context,
                        &format!("{step_place} with{place}"),
                    )?,
                    retry: step.retry.clone(),
                    idempotent: step.idempotent,
                    rollback: step
                        .rollback
                        .as_ref()
                        .map(|rollback| {
                            self.render_call(
                                rollback,
                                context,
                                &format!("{step_place} rollback.with{place}"),
                            )
                        })
                        .transpose()?,
                    requires_approval: step.requires_approval,
                    if_unverified: step.if_unverified,
                })
            })
            .collect()
    }

    fn render_verify(
        &self,
        context: &minijinja::Value,
        place: &str,
    ) -> Result<Option<Verification>> {
        self.verify
            .as_ref()
            .map(|verify| {
                Ok(Verification {
                    probe: self.render_call(
                        &verify.probe,
                        context,
                        &format!("verify.probe with{place}"),
                    )?,
                    expect: verify.expect.clone(),
                    within_ms: verify.within_ms,
                    every_ms: verify.every_ms,
                })
            })
            .transpose()
    }

    fn resolve_inputs(
        &self,
        event: &Value,
        env: &Value,
        supplied: &Map<String, Value>,
        order: Supplied,
    ) -> Result<Value> {
        let schema = &self.inputs.schema;
        let context = template::context(json!({ "event": event, "env": env }));
        let mut inputs = Map::new();
        for (name, text) in &self.inputs.from_event {
            if order == Supplied::First && supplied.contains_key(name) {
                continue;
            }
            let rendered =
                template::render_string(text, &context, &format!("inputs.from_event.{name}"))?;
            inputs.insert(
                name.clone(),
                coerce(
                    rendered,
                    schema
                        .get("properties")
                        .and_then(|properties| properties.get(name)?.get("type")),
                ),
            );
        }
        for (name, value) in supplied {
            if inputs.contains_key(name) {
                return Err(Error::Input {
                    message: format!(
                        "`{name}` comes from the event (`from_event`) and cannot be supplied"
                    ),
                });
            }
            inputs.insert(name.clone(), value.clone());
        }
        if let Some(Value::Object(properties)) = schema.get("properties") {
            for (name, property) in properties {
                if let (false, Some(default)) = (inputs.contains_key(name), property.get("default"))
                {
                    inputs.insert(name.clone(), default.clone());
                }
            }
        }
        let inputs = Value::Object(inputs);

        let validator = jsonschema::validator_for(schema).map_err(|error| Error::Input {
            message: format!("the inputs schema is invalid: {error}"),
        })?;
        let violations: Vec<String> = validator
            .iter_errors(&inputs)
            .map(|error| {
                let pointer = error.instance_path().as_str();
                let pointer = if pointer.is_empty() { "/" } else { pointer };
                format!("{pointer}: {error}")
            })
            .collect();
        if !violations.is_empty() {
            return Err(Error::Input {
                message: violations.join("; "),
            });
        }
        Ok(inputs)
    }

    fn resolve_targets(&self, event: &Value, env: &Value, inputs: &Value) -> Result<Vec<String>> {
        let context = template::context(json!({ "event": event, "inputs": inputs, "env": env }));
        let expression = &self.targets.from;
        let targets_error = |message: String| Error::Targets { message };
        let value = template::evaluate(expression, &context)
            .map_err(|message| targets_error(format!("`{expression}`: {message}")))?;
        let targets: Vec<String> = match value {
            Value::String(target) => vec![target],
            Value::Array(items) => items
                .into_iter()
                .map(|item| match item {
                    Value::String(target) => Ok(target),
                    other => Err(targets_error(format!(
                        "`{expression}` yields {other}, which is not a string"
                    ))),
                })
                .collect::<Result<_>>()?,
            other => {
                return Err(targets_error(format!(
                    "`{expression}` yields {other}; expected a string or a list of strings"
                )));
            }
        };
        // A target named twice is still one target (and one lock).
        let mut seen = BTreeSet::new();
        let targets: Vec<String> = targets
            .into_iter()
            .filter(|target| seen.insert(target.clone()))
            .collect();
        if targets.is_empty() || targets.iter().any(|target| target.trim().is_empty()) {
            return Err(targets_error(format!(
                "`{expression}` yields no target, or an empty one"
            )));
        }
        let max = self.targets.max_targets as usize;
        if targets.len() > max {
            return Err(targets_error(format!(
                "{} targets, but the runbook allows at most {max} (`max_targets`)",
                targets.len()
            )));
        }
        Ok(targets)
    }

    /// Renders one call. A URL (`Kind::Url`) is rendered as a URL: each
    /// value encoded for where it lands, then checked. Every URL a call
    /// names must be on a host of `allowed_hosts`, and a path of names may
    /// not walk up.
    fn render_call(
        &self,
        call: &CallTemplate,
        context: &minijinja::Value,
        location: &str,
    ) -> Result<PlannedCall> {
        let mut with = call.with.clone();
        let mut urls = Vec::new();
        if let Value::Object(map) = &mut with {
            for key in call.action.keys {
                if matches!(key.kind, Kind::Url)
                    && let Some(Value::String(text)) = map.remove(key.name)
                {
                    urls.push((key.name, text));
                }
            }
        }
        let mut request = template::render_value(&with, context, location)?;
        for (key, text) in urls {
            let location = format!("{location}.{key}");
            let url =
                url_template::render(&text, |expression| template::evaluate(expression, context))
                    .map_err(|failure| match failure {
                    url_template::Failure::Evaluate(message) => Error::Template {
                        location: location.clone(),
                        message,
                    },
                    url_template::Failure::Refused(message) => Error::Url {
                        location: location.clone(),
                        message,
                    },
                })?;
            self.check_host(&url, &location)?;
            if let Value::Object(map) = &mut request {
                map.insert(key.to_owned(), Value::String(url.into()));
            }
        }
        for key in call.action.keys {
            let Some(text) = request[key.name].as_str() else {
                continue;
            };
            match key.kind {
                Kind::BaseUrl => {
                    if let Ok(url) = url::Url::parse(text.trim()) {
                        self.check_host(&url, &format!("{location}.{}", key.name))?;
                    }
                }
                Kind::PathOfNames(_) => {
                    if let Some(name) = text
                        .split('/')
                        .map(str::trim)
                        .find(|name| matches!(*name, "." | ".."))
                    {
                        return Err(Error::Url {
                            location: format!("{location}.{}", key.name),
                            message: format!(
                                "`{text}` names the folder `{name}`, which walks the path"
                            ),
                        });
                    }
                }
                _ => {}
            }
        }
        Ok(PlannedCall {
            action: call.action.name.to_owned(),
            request,
            timeout_ms: call.timeout_ms,
        })
    }

    /// Refuses a URL whose host is not one of `allowed_hosts` (when given).
    fn check_host(&self, url: &url::Url, location: &str) -> Result<()> {
        let host = url.host_str().unwrap_or_default();
        if self.allowed_hosts.is_empty()
            || self
                .allowed_hosts
                .iter()
                .any(|pattern| domain::host_matches(pattern, host))
        {
            return Ok(());
        }
        Err(Error::Url {
            location: location.to_owned(),
            message: format!(
                "`{url}` names the host `{host}`, which is not one of the runbook's `allowed_hosts` ({})",
                self.allowed_hosts.join(", ")
            ),
        })
    }
}

/// When a time-bound change ends: `until` rendered, read as an RFC 3339
/// timestamp or as a date (the change holds through that day, UTC), after
/// the event and no further from it than `at_most`.
fn end_of_term(
    time_bound: &TimeBound,
    context: &minijinja::Value,
    received_at: Timestamp,
) -> Result<Timestamp> {
    let error = |message: String| Error::TimeBound { message };
    let rendered = template::render_string(&time_bound.until, context, "time_bound.until")?;
    let text = match &rendered {
        Value::String(text) => text.trim(),
        other => {
            return Err(error(format!(
                "`time_bound.until` gave {other}, which is not a time"
            )));
        }
    };
    let end = match (text.parse::<Timestamp>(), text.parse::<jiff::civil::Date>()) {
        (Ok(end), _) => end,
        (_, Ok(date)) => date
            .tomorrow()
            .and_then(|next| next.to_zoned(jiff::tz::TimeZone::UTC))
            .map(|midnight| midnight.timestamp())
            .map_err(|problem| error(format!("`{text}`: {problem}")))?,
        (Err(_), Err(_)) => {
            return Err(error(format!(
                "`time_bound.until` gave `{text}`, which is neither an RFC 3339 timestamp \
                 with an offset (2026-12-01T17:00:00Z) nor a date (2026-12-01)"
            )));
        }
    };
    if end <= received_at {
        return Err(error(format!(
            "the end {end} is not after the event ({received_at})"
        )));
    }
    if let Some(at_most_ms) = time_bound.at_most_ms {
        let longest =
            jiff::SignedDuration::from_millis(i64::try_from(at_most_ms).unwrap_or(i64::MAX));
        if end.duration_since(received_at) > longest {
            return Err(error(format!(
                "the end {end} is more than {longest:#} after the event ({received_at}); \
                 the runbook allows at most that (`time_bound.at_most`)"
            )));
        }
    }
    Ok(end)
}

/// Events carry text where a schema wants numbers, and the reverse. When
/// the rendered value is not of a type the schema property allows, a string
/// that reads as a wanted type becomes it ("95" → 95 for `number`, "true" →
/// `true` for `boolean`), and a number or boolean becomes a string when only
/// a string will do. Anything else is left for schema validation to report.
fn coerce(value: Value, schema_type: Option<&Value>) -> Value {
    let wanted: Vec<&str> = match schema_type {
        Some(Value::String(kind)) => vec![kind.as_str()],
        Some(Value::Array(kinds)) => kinds.iter().filter_map(Value::as_str).collect(),
        _ => return value,
    };
    let allowed = match &value {
        Value::String(_) => wanted.contains(&"string"),
        Value::Number(number) => {
            wanted.contains(&"number") || (wanted.contains(&"integer") && number.is_i64())
        }
        Value::Bool(_) => wanted.contains(&"boolean"),
        _ => true,
    };
    if allowed {
        return value;
    }
    let text = match &value {
        Value::String(text) => text.trim(),
        Value::Number(_) | Value::Bool(_) if wanted.contains(&"string") => {
            return Value::String(value.to_string());
        }
        _ => return value,
    };
    let coerced = wanted.iter().find_map(|kind| match *kind {
        "integer" => text.parse::<i64>().ok().map(Value::from),
        "number" => text.parse::<i64>().ok().map(Value::from).or_else(|| {
            text.parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
        }),
        "boolean" => match text {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => None,
        },
        _ => None,
    });
    coerced.unwrap_or(value)
}
