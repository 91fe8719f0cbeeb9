//! `opsgate eval triage FILE`: how well triage would have done on
//! labelled tickets, before anyone trusts it with real ones.
//!
//! Each line of the file is a ticket a careful engineer has labelled:
//! `{"text", "fields", "expected"}` (the runbook that fixes it, or `null`),
//! optionally `id`, `source` (default `servicenow`), `kind` (default
//! `incident`) and `subject`. A line becomes the event its source would
//! send: the text goes where that source's tickets carry theirs
//! (ServiceNow's `short_description` and `description`, Jira's `summary`,
//! Freshservice's `subject` and `description_text`), unless `fields`
//! already holds it. Then triage runs as intake would: the runbooks'
//! rules first (the first matching runbook in id order, as intake takes
//! it; a recurrence is not counted — each ticket is judged alone), then,
//! for a ticket no rule took, the configured model, through the same
//! [`runtime::triage::triage`] the runtime uses. `--with rules` or
//! `--with model` scores one of them alone.
//!
//! What triage names for a ticket — a rule's runbook, or the model's
//! suggestion at whatever confidence — is scored against the label:
//! precision, recall, F1 and support per runbook and for "none", micro and
//! macro averages over the runbooks, and the confusion table. "Acted on"
//! counts what would have started a run: a rule's match, or a suggestion
//! at or above its threshold (a suggestion below it is only a note).
//!
//! The evaluation writes nothing and stores nothing. Model calls go one at
//! a time; one the client turns away for its own rate bound, or after a
//! 429, is asked again once the wait it names is over (at most a few
//! times), so a long file measures the model rather than the bound.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use connectors::{Classifier, ClassifyFailureKind};
use domain::{Event, EventStatus};
use runtime::triage::TriageOutcome;
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::config::DEFAULT_RUNBOOKS;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Scores triage (the runbooks' rules, the model, or both) against
    /// labelled tickets (JSON Lines: `text`, `fields`, `expected`).
    Triage(TriageArgs),
}

#[derive(Debug, clap::Args)]
pub struct TriageArgs {
    /// The labelled tickets: one JSON object per line with `text`,
    /// `fields` (an object), `expected` (a runbook id or null), and
    /// optionally `id`, `source`, `kind` and `subject`.
    pub file: PathBuf,
    #[arg(long, env = "OPSGATE_RUNBOOKS", default_value = DEFAULT_RUNBOOKS)]
    pub runbooks: PathBuf,
    /// A config file: its `chat_completions:` section configures the
    /// model (the other sections are not read).
    #[arg(long, env = "OPSGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// What triages: `rules`, `model`, or `both` (rules first, the model
    /// for what they do not take). Default: `both` when a model is
    /// configured, else `rules`.
    #[arg(long = "with", value_enum)]
    pub with: Option<With>,
    /// Print the scores, the confusion table and every ticket as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum With {
    Rules,
    Model,
    Both,
}

impl With {
    fn as_str(self) -> &'static str {
        match self {
            With::Rules => "rules",
            With::Model => "the model",
            With::Both => "rules, then the model",
        }
    }
}

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Triage(args) => triage(args).await,
    }
}

/// The name "no runbook" goes by in the tables.
const NONE: &str = "(none)";

/// How often a call turned away for a rate limit is asked again.
const RATE_LIMITED_TRIES: usize = 5;

async fn triage(args: TriageArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let catalog = crate::config::load_catalog(&args.runbooks)?;
    let tickets = match read_tickets(&text, &catalog) {
        Ok(tickets) => tickets,
        Err(problems) => {
            for problem in problems {
                eprintln!("{}:{problem}", args.file.display());
            }
            return Ok(crate::invalid_input());
        }
    };
    let model = match &args.config {
        Some(path) => model(path)?,
        None => None,
    };
    let with = args.with.unwrap_or(if model.is_some() {
        With::Both
    } else {
        With::Rules
    });
    let classifier = match (with, &model) {
        (With::Rules, _) => None,
        (_, Some(model)) => Some(model.classifier.clone()),
        (_, None) => {
            eprintln!(
                "error: --with {} needs a model: give --config with a `{}:` section",
                if with == With::Model { "model" } else { "both" },
                connectors::chat_completions::NAME
            );
            return Ok(crate::invalid_input());
        }
    };
    let mut judged = Vec::with_capacity(tickets.len());
    for ticket in &tickets {
        judged.push(judge(ticket, with, &catalog, classifier.as_deref()).await);
    }
    let labels: Vec<String> = catalog
        .iter()
        .map(|runbook| runbook.id.clone())
        .chain([NONE.to_owned()])
        .collect();
    let report = Report::new(&args.file, with, model.as_ref(), labels, judged);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.json())?);
    } else {
        for line in report.lines() {
            println!("{line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The configured model: its classifier, and what to say of it.
struct Model {
    classifier: Arc<dyn Classifier>,
    name: String,
    prompt_version: String,
}

/// The model `path`'s config file configures, if it configures one. Only
/// its section is built, so no other integration's secret is read.
fn model(path: &Path) -> anyhow::Result<Option<Model>> {
    let file = crate::config::File::load(path)?;
    let name = connectors::chat_completions::NAME;
    let Some(section) = file.integrations.get(name) else {
        return Ok(None);
    };
    let sections = BTreeMap::from([(name.to_owned(), section.clone())]);
    let integrations = connectors::registry::build(&sections)
        .with_context(|| format!("config file {}", path.display()))?;
    let classifier = integrations
        .classifier()
        .context("the section plugged in no classifier")?
        .clone();
    Ok(Some(Model {
        classifier,
        name: section["model"].as_str().unwrap_or_default().to_owned(),
        prompt_version: section["prompt_version"]
            .as_str()
            .unwrap_or(connectors::chat_completions::CURRENT_PROMPT_VERSION)
            .to_owned(),
    }))
}

/// One labelled ticket, as its source would have sent it.
struct Ticket {
    id: String,
    expected: Option<String>,
    event: Event,
}

/// Every line of `text` read as a ticket, or every problem, each with its
/// line number: nothing is judged from a file with a mistake in it.
fn read_tickets(text: &str, catalog: &runbook::Catalog) -> Result<Vec<Ticket>, Vec<String>> {
    let mut tickets = Vec::new();
    let mut problems = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let number = index + 1;
        match ticket(line, number, catalog) {
            Ok(ticket) => tickets.push(ticket),
            Err(problem) => problems.push(format!("{number}: {problem}")),
        }
    }
    if tickets.is_empty() && problems.is_empty() {
        problems.push("1: the file holds no ticket".to_owned());
    }
    if problems.is_empty() {
        Ok(tickets)
    } else {
        Err(problems)
    }
}

/// The keys a line may have.
const KEYS: &[&str] = &[
    "id", "text", "fields", "expected", "source", "kind", "subject",
];

fn ticket(line: &str, number: usize, catalog: &runbook::Catalog) -> Result<Ticket, String> {
    let value: Value = serde_json::from_str(line).map_err(|error| {
        // The line is read alone: its position is the column, not serde's "line 1".
        let message = error.to_string();
        let message = message
            .rsplit_once(" at line ")
            .map_or(message.as_str(), |(message, _)| message);
        format!("not JSON at column {}: {message}", error.column())
    })?;
    let Value::Object(mut line) = value else {
        return Err("not a JSON object".to_owned());
    };
    if let Some(key) = line.keys().find(|key| !KEYS.contains(&key.as_str())) {
        return Err(format!(
            "unknown key `{key}` (a line has {})",
            KEYS.join(", ")
        ));
    }
    let mut text_of = |key: &str, required: bool| -> Result<Option<String>, String> {
        match line.remove(key) {
            Some(Value::String(text)) => Ok(Some(text)),
            None | Some(Value::Null) if !required => Ok(None),
            None => Err(format!("no `{key}`")),
            Some(other) => Err(format!("`{key}` is {other}: expected text")),
        }
    };
    let text = text_of("text", true)?.unwrap_or_default();
    let id = text_of("id", false)?.unwrap_or_else(|| format!("line-{number}"));
    let source = text_of("source", false)?.unwrap_or_else(|| "servicenow".to_owned());
    let kind = text_of("kind", false)?.unwrap_or_else(|| "incident".to_owned());
    let subject = text_of("subject", false)?;
    let expected = match line.remove("expected") {
        None => return Err("no `expected`: give a runbook id, or null for none".to_owned()),
        Some(Value::Null) => None,
        Some(Value::String(id)) if catalog.get(&id).is_some() => Some(id),
        Some(Value::String(id)) => {
            let known: Vec<&str> = catalog.iter().map(|runbook| runbook.id.as_str()).collect();
            return Err(format!(
                "`expected` names runbook `{id}`, which is not in the catalog (there are: {})",
                known.join(", ")
            ));
        }
        Some(other) => {
            return Err(format!(
                "`expected` is {other}: expected a runbook id or null"
            ));
        }
    };
    let mut fields = match line.remove("fields") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(fields)) => fields,
        Some(other) => return Err(format!("`fields` is {other}: expected an object")),
    };
    let (title_field, body_field) = text_fields(&source);
    let mut parts = text.trim().splitn(2, '\n');
    let title = parts.next().unwrap_or_default().trim();
    let body = parts.next().unwrap_or_default().trim();
    if !title.is_empty() && !fields.contains_key(title_field) {
        fields.insert(title_field.to_owned(), json!(title));
    }
    if !body.is_empty() && !fields.contains_key(body_field) {
        fields.insert(body_field.to_owned(), json!(body));
    }
    let subject = subject
        .or_else(|| {
            fields
                .get("ticket")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| id.clone());
    let event = Event {
        id: format!("eval-{number}"),
        source,
        kind,
        dedup_key: id.clone(),
        subject,
        fields: Value::Object(fields),
        status: EventStatus::Open,
        received_at: jiff::Timestamp::now(),
        occurred_at: None,
    };
    Ok(Ticket {
        id,
        expected,
        event,
    })
}

/// Where a source's tickets carry their title and their description.
fn text_fields(source: &str) -> (&'static str, &'static str) {
    match source {
        "jira" => ("summary", "description"),
        "freshservice" => ("subject", "description_text"),
        _ => ("short_description", "description"),
    }
}

/// Who named a ticket's runbook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum By {
    Rules,
    Model,
    /// Nobody: no rule matched and the model suggested none, or failed.
    Nobody,
}

/// What triage made of one ticket.
#[derive(Debug, Clone, Serialize)]
struct Judged {
    id: String,
    expected: Option<String>,
    predicted: Option<String>,
    by: By,
    /// Whether a run would have started.
    acted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    confidence: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    threshold: Option<f64>,
    /// How the model failed, when it gave no suggestion for that reason
    /// (`timeout`, `malformed`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    failure: Option<String>,
}

async fn judge(
    ticket: &Ticket,
    with: With,
    catalog: &runbook::Catalog,
    classifier: Option<&dyn Classifier>,
) -> Judged {
    let mut judged = Judged {
        id: ticket.id.clone(),
        expected: ticket.expected.clone(),
        predicted: None,
        by: By::Nobody,
        acted: false,
        confidence: None,
        threshold: None,
        failure: None,
    };
    if with != With::Model
        && let Some(runbook) = catalog.matching(&ticket.event).next()
    {
        judged.predicted = Some(runbook.id.clone());
        judged.by = By::Rules;
        judged.acted = true;
        return judged;
    }
    let Some(classifier) = classifier else {
        return judged;
    };
    let mut tries = 0;
    let outcome = loop {
        let outcome = runtime::triage::triage(classifier, catalog, &ticket.event)
            .await
            .outcome;
        tries += 1;
        match outcome {
            TriageOutcome::Failed(ClassifyFailureKind::RateLimited { retry_after, .. })
                if tries < RATE_LIMITED_TRIES =>
            {
                eprintln!(
                    "{}: rate limited, asking again in {} ms",
                    ticket.id,
                    retry_after.as_millis()
                );
                tokio::time::sleep(retry_after).await;
            }
            outcome => break outcome,
        }
    };
    match outcome {
        TriageOutcome::Propose(suggested) => {
            judged.predicted = Some(suggested.runbook);
            judged.by = By::Model;
            judged.acted = true;
            judged.confidence = Some(suggested.confidence);
            judged.threshold = Some(suggested.threshold);
        }
        TriageOutcome::Note { suggested, .. } => {
            judged.predicted = Some(suggested.runbook);
            judged.by = By::Model;
            judged.confidence = Some(suggested.confidence);
            judged.threshold = Some(suggested.threshold);
        }
        TriageOutcome::NoneFits { confidence, .. } => judged.confidence = Some(confidence),
        TriageOutcome::Failed(kind) => judged.failure = Some(kind.as_str().to_owned()),
    }
    judged
}

/// The scores of one label.
#[derive(Debug, Clone, Serialize)]
struct Scores {
    label: String,
    /// `None` when nothing was predicted as (or labelled) it.
    precision: Option<f64>,
    recall: Option<f64>,
    f1: Option<f64>,
    /// How many tickets are labelled it.
    support: usize,
    /// How many tickets were predicted as it.
    predicted: usize,
}

fn scores(label: String, true_positives: usize, predicted: usize, support: usize) -> Scores {
    let ratio = |part: usize, whole: usize| (whole > 0).then(|| part as f64 / whole as f64);
    let precision = ratio(true_positives, predicted);
    let recall = ratio(true_positives, support);
    // The harmonic mean of the two, written so that it is 0, not
    // undefined, when either is undefined and nothing was right.
    let f1 = ratio(2 * true_positives, predicted + support);
    Scores {
        label,
        precision,
        recall,
        f1,
        support,
        predicted,
    }
}

/// Everything the evaluation found.
struct Report<'a> {
    file: &'a Path,
    with: With,
    model: Option<&'a Model>,
    /// The runbooks' ids, then [`NONE`]: the rows and columns.
    labels: Vec<String>,
    /// `confusion[expected][predicted]`, by index into `labels`.
    confusion: Vec<Vec<usize>>,
    per_label: Vec<Scores>,
    micro: Scores,
    macro_average: Scores,
    accuracy: f64,
    judged: Vec<Judged>,
}

impl<'a> Report<'a> {
    fn new(
        file: &'a Path,
        with: With,
        model: Option<&'a Model>,
        labels: Vec<String>,
        judged: Vec<Judged>,
    ) -> Report<'a> {
        let index = |label: &Option<String>| {
            let name = label.as_deref().unwrap_or(NONE);
            labels
                .iter()
                .position(|known| known == name)
                .expect("every label is a runbook of the catalog or none")
        };
        let mut confusion = vec![vec![0; labels.len()]; labels.len()];
        for ticket in &judged {
            confusion[index(&ticket.expected)][index(&ticket.predicted)] += 1;
        }
        let per_label: Vec<Scores> = labels
            .iter()
            .enumerate()
            .map(|(at, label)| {
                let support = confusion[at].iter().sum();
                let predicted = confusion.iter().map(|row| row[at]).sum();
                scores(label.clone(), confusion[at][at], predicted, support)
            })
            .collect();
        // The averages are over the runbooks that were labelled or
        // predicted; "none" is scored, but is no runbook.
        let runbooks: Vec<&Scores> = per_label
            .iter()
            .filter(|scores| scores.label != NONE && scores.support + scores.predicted > 0)
            .collect();
        let sum =
            |of: fn(&Scores) -> usize| runbooks.iter().map(|scores| of(scores)).sum::<usize>();
        let true_positives: usize = labels
            .iter()
            .enumerate()
            .filter(|(_, label)| label.as_str() != NONE)
            .map(|(at, _)| confusion[at][at])
            .sum();
        let micro = scores(
            "micro average (runbooks)".to_owned(),
            true_positives,
            sum(|scores| scores.predicted),
            sum(|scores| scores.support),
        );
        let mean = |of: fn(&Scores) -> Option<f64>| {
            (!runbooks.is_empty()).then(|| {
                runbooks
                    .iter()
                    .map(|scores| of(scores).unwrap_or(0.0))
                    .sum::<f64>()
                    / runbooks.len() as f64
            })
        };
        let macro_average = Scores {
            label: "macro average (runbooks)".to_owned(),
            precision: mean(|scores| scores.precision),
            recall: mean(|scores| scores.recall),
            f1: mean(|scores| scores.f1),
            support: sum(|scores| scores.support),
            predicted: sum(|scores| scores.predicted),
        };
        let correct = (0..labels.len()).map(|at| confusion[at][at]).sum::<usize>();
        let accuracy = if judged.is_empty() {
            0.0
        } else {
            correct as f64 / judged.len() as f64
        };
        Report {
            file,
            with,
            model,
            labels,
            confusion,
            per_label,
            micro,
            macro_average,
            accuracy,
            judged,
        }
    }

    /// Tickets acted on, and how many of them wrongly, by whom.
    fn acted(&self, by: Option<By>) -> (usize, usize) {
        let acted = self
            .judged
            .iter()
            .filter(|ticket| ticket.acted && by.is_none_or(|by| ticket.by == by));
        let wrong = acted
            .clone()
            .filter(|ticket| ticket.predicted != ticket.expected)
            .count();
        (acted.count(), wrong)
    }

    fn failures(&self) -> BTreeMap<String, usize> {
        let mut failures = BTreeMap::new();
        for kind in self
            .judged
            .iter()
            .filter_map(|ticket| ticket.failure.as_ref())
        {
            *failures.entry(kind.clone()).or_insert(0) += 1;
        }
        failures
    }

    fn lines(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "triage of {} ticket(s) from {}, by {}",
            self.judged.len(),
            self.file.display(),
            self.with.as_str()
        )];
        if let Some(model) = self.model.filter(|_| self.with != With::Rules) {
            lines.push(format!(
                "model {} (prompt {}), proposing at confidence {} or more (or a runbook's own min_confidence when higher)",
                model.name,
                model.prompt_version,
                model.classifier.min_confidence()
            ));
        }
        lines.push(String::new());
        let width = self
            .labels
            .iter()
            .map(String::len)
            .chain([self.macro_average.label.len()])
            .max()
            .unwrap_or(0);
        lines.push(format!(
            "{:<width$}  {:>9}  {:>6}  {:>5}  {:>7}  {:>9}",
            "runbook", "precision", "recall", "f1", "support", "predicted"
        ));
        let row = |scores: &Scores| {
            let number = |value: Option<f64>| value.map_or("-".to_owned(), |v| format!("{v:.2}"));
            format!(
                "{:<width$}  {:>9}  {:>6}  {:>5}  {:>7}  {:>9}",
                scores.label,
                number(scores.precision),
                number(scores.recall),
                number(scores.f1),
                scores.support,
                scores.predicted
            )
        };
        lines.extend(self.per_label.iter().map(row));
        lines.push(row(&self.micro));
        lines.push(row(&self.macro_average));
        lines.push(format!(
            "accuracy {:.2} ({} of {} tickets named as labelled)",
            self.accuracy,
            (0..self.labels.len())
                .map(|at| self.confusion[at][at])
                .sum::<usize>(),
            self.judged.len()
        ));
        lines.push(String::new());
        lines.push(
            "confusion (rows: expected; columns: predicted, numbered as the rows)".to_owned(),
        );
        let number_width = self.labels.len().to_string().len() + 1;
        let cell = self
            .confusion
            .iter()
            .flatten()
            .map(|count| count.to_string().len())
            .max()
            .unwrap_or(1)
            .max(number_width + 1);
        let mut header = format!("{:<w$}", "", w = number_width + 1 + width);
        for at in 1..=self.labels.len() {
            header.push_str(&format!(" {:>cell$}", format!("{at}")));
        }
        lines.push(header);
        for (at, label) in self.labels.iter().enumerate() {
            let mut line = format!("{:>number_width$} {label:<width$}", at + 1);
            for count in &self.confusion[at] {
                let shown = if *count == 0 {
                    ".".to_owned()
                } else {
                    count.to_string()
                };
                line.push_str(&format!(" {shown:>cell$}"));
            }
            lines.push(line);
        }
        lines.push(String::new());
        let (acted, wrong) = self.acted(None);
        lines.push(format!(
            "would have acted on {acted} of {} tickets at the configured thresholds ({wrong} of them wrongly)",
            self.judged.len()
        ));
        if self.with != With::Rules {
            let (by_rules, rules_wrong) = self.acted(Some(By::Rules));
            let (by_model, model_wrong) = self.acted(Some(By::Model));
            let noted = self
                .judged
                .iter()
                .filter(|ticket| ticket.by == By::Model && !ticket.acted)
                .count();
            lines.push(format!(
                "  by rules {by_rules} ({rules_wrong} wrongly), by the model {by_model} ({model_wrong} wrongly); {noted} suggestion(s) below the threshold only noted"
            ));
            let failures = self.failures();
            if !failures.is_empty() {
                let kinds: Vec<String> = failures
                    .iter()
                    .map(|(kind, count)| format!("{count} {kind}"))
                    .collect();
                lines.push(format!(
                    "  the model gave no suggestion for {} ticket(s): {}",
                    failures.values().sum::<usize>(),
                    kinds.join(", ")
                ));
            }
        }
        let wrongly: Vec<&Judged> = self
            .judged
            .iter()
            .filter(|ticket| ticket.acted && ticket.predicted != ticket.expected)
            .collect();
        if !wrongly.is_empty() {
            lines.push("acted on wrongly:".to_owned());
            for ticket in wrongly {
                lines.push(format!(
                    "  {}: expected {}, {} ran {}",
                    ticket.id,
                    ticket.expected.as_deref().unwrap_or(NONE),
                    match ticket.by {
                        By::Rules => "a rule",
                        _ => "the model",
                    },
                    ticket.predicted.as_deref().unwrap_or(NONE)
                ));
            }
        }
        lines
    }

    fn json(&self) -> Value {
        let (acted, wrong) = self.acted(None);
        let (by_rules, rules_wrong) = self.acted(Some(By::Rules));
        let (by_model, model_wrong) = self.acted(Some(By::Model));
        json!({
            "file": self.file.display().to_string(),
            "with": self.with,
            "model": self.model.filter(|_| self.with != With::Rules).map(|model| json!({
                "model": model.name,
                "prompt_version": model.prompt_version,
                "min_confidence": model.classifier.min_confidence(),
            })),
            "tickets": self.judged.len(),
            "scores": self.per_label,
            "micro": self.micro,
            "macro": self.macro_average,
            "accuracy": self.accuracy,
            "confusion": {"labels": self.labels, "rows": self.confusion},
            "acted": {
                "total": acted, "wrong": wrong,
                "by_rules": by_rules, "by_rules_wrong": rules_wrong,
                "by_model": by_model, "by_model_wrong": model_wrong,
            },
            "model_failures": self.failures(),
            "judged": self.judged,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_of_a_label() {
        let check = |tp, predicted, support, expect: (Option<f64>, Option<f64>, Option<f64>)| {
            let scores = scores("x".to_owned(), tp, predicted, support);
            assert_eq!(
                (scores.precision, scores.recall, scores.f1),
                expect,
                "{tp} {predicted} {support}"
            );
        };
        check(2, 4, 2, (Some(0.5), Some(1.0), Some(2.0 / 3.0)));
        check(0, 0, 3, (None, Some(0.0), Some(0.0)));
        check(0, 2, 0, (Some(0.0), None, Some(0.0)));
        check(0, 0, 0, (None, None, None));
        check(0, 1, 1, (Some(0.0), Some(0.0), Some(0.0)));
    }
}
