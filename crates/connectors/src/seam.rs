//! The integration seam: what an outside system can be to opsgate, in
//! words that name no vendor.
//!
//! - An [`EventSource`] turns a request it sent (verified by the server,
//!   as its [`Verification`] says, before the source sees it) into events.
//! - A [`TicketSystem`] says which events are about its tickets and writes
//!   a run's story to a ticket: notes, and an [`Outcome`] — resolved, or
//!   handed to a person with a state and a group — which it translates into
//!   its own states, tables and fields.
//! - A [`ChatChannel`] asks people to approve a run and tells its progress;
//!   a [`ButtonSource`] reads the clicks on its messages' buttons.
//! - A [`StepAction`] is what a runbook step's `action:` names: the call
//!   it makes, one attempt at a time.
//! - A [`Classifier`] reads a ticket no runbook's rules took and suggests
//!   which runbook, if any, would fix it ([`Suggestion`]), or says why it
//!   could not ([`ClassifyFailure`]): a proposer like any agent, never an
//!   executor.
//!
//! The runtime holds the first three and the classifier behind
//! [`Integrations`], built from the config by [`crate::registry`], and
//! decides *when* each is told *what*; only the integration knows *how*.
//! The step actions are built once by [`crate::Connectors::new`], which
//! dispatches each planned call to the action it names.
//!
//! The traits are object safe (the registry holds `Arc<dyn …>`), so their
//! async methods return a [`BoxFuture`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use domain::{Event, NewEvent, RunState};

use crate::WriteError;

/// A future an integration's method returns; `Send`, for the runtime's tasks.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A system that sends opsgate signals: its requests arrive at
/// `/v1/hooks/<name>`, where the server has verified them as
/// [`EventSource::verification`] says before [`EventSource::heard`] reads
/// the body.
pub trait EventSource: Send + Sync {
    /// The `<name>` of its route, and the sender its requests must come
    /// from (a source token or signed source of that name).
    fn name(&self) -> &'static str;

    /// How its requests are verified before [`EventSource::heard`] reads
    /// them: by default a source token or opsgate's signature of a sender
    /// named like the source.
    fn verification(&self) -> Verification {
        Verification::Sender
    }

    /// The events `body` tells of — read back from the system when the
    /// body only names what changed — and how the sender is answered.
    fn heard<'a>(
        &'a self,
        body: &'a [u8],
        people: &'a dyn People,
    ) -> BoxFuture<'a, Result<Heard, SourceError>>;

    /// The one event `body` tells of, if any: [`EventSource::heard`] for a
    /// source that sends one at a time.
    fn event<'a>(
        &'a self,
        body: &'a [u8],
        people: &'a dyn People,
    ) -> BoxFuture<'a, Result<Option<NewEvent>, SourceError>> {
        Box::pin(async move {
            let heard = self.heard(body, people).await?;
            Ok(heard.events.into_iter().next())
        })
    }
}

/// How a source's requests are verified. Either way the server applies
/// one replay rule (a signature is used once, across instances) and
/// audits a refusal the same way.
#[derive(Debug, Clone)]
pub enum Verification {
    /// A source token, or opsgate's own signature (`X-Opsgate-Signature`
    /// over the timestamp and the body), of a sender named like the source:
    /// checked by the server's authentication.
    Sender,
    /// The sender's own signature over the raw request, checked by the
    /// integration that knows the scheme.
    Signed(Arc<dyn Signature>),
}

/// A sender's own signature scheme (an HMAC over the body and, often, a
/// timestamp), checked on the raw bytes in constant time.
pub trait Signature: Send + Sync + std::fmt::Debug {
    /// The scheme's name (`x-hub-signature`): a signature is used once per
    /// scheme, whichever sender presents it, so two senders sharing a
    /// secret cannot each take the other's request.
    fn scheme(&self) -> &'static str;

    /// The signature's bytes when `request` carries a valid one made within
    /// `window_seconds` of `now` (what the replay rule remembers); why not,
    /// when it does not.
    fn verify(
        &self,
        request: &SignedRequest<'_>,
        now: jiff::Timestamp,
        window_seconds: i64,
    ) -> Result<Vec<u8>, SignatureRefused>;
}

/// A request as a signature sees it: its headers, by name, and its raw body.
pub struct SignedRequest<'a> {
    /// The value of a header (names are matched ignoring case), if present
    /// and text.
    pub header: &'a dyn Fn(&str) -> Option<&'a str>,
    pub body: &'a [u8],
}

/// Why a signed request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureRefused {
    pub message: String,
    /// Whether the signature itself held (the request is the sender's, but
    /// stale): its refusal is then the source's, not an anonymous caller's.
    pub authentic: bool,
}

impl SignatureRefused {
    /// A request whose signature does not hold: anyone's.
    pub fn forged(message: impl Into<String>) -> SignatureRefused {
        SignatureRefused {
            message: message.into(),
            authentic: false,
        }
    }

    /// The sender's request, refused for its time.
    pub fn stale(message: impl Into<String>) -> SignatureRefused {
        SignatureRefused {
            message: message.into(),
            authentic: true,
        }
    }
}

/// A chat channel whose messages carry Approve and Deny buttons: the
/// clicks arrive at `/v1/hooks/<name>/interactions`, signed as
/// [`ButtonSource::signature`] says, and become decisions by the person
/// the directory knows by their id on that platform.
pub trait ButtonSource: Send + Sync {
    /// The `<name>` of its route, and the chat platform its people's ids
    /// belong to.
    fn name(&self) -> &'static str;

    fn signature(&self) -> Arc<dyn Signature>;

    /// What a verified request asks.
    fn read(&self, body: &[u8]) -> Result<Pressed, String>;

    /// The body of the answer to a click, telling the person `text`.
    fn answer(&self, reply: Reply, text: &str) -> serde_json::Value;

    /// Tells the message a click came from what became of it, through the
    /// address the click gave (`reply_to`), which must lie where the
    /// platform's answers go.
    fn follow_up<'a>(
        &'a self,
        reply_to: &'a str,
        reply: Reply,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), WriteError>>;
}

/// What a click asks of opsgate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pressed {
    /// Not a button of opsgate's (a shortcut, a modal): the person is told.
    NotOurs,
    /// A button that decides nothing (the link to the approval page): an
    /// empty answer.
    Nothing,
    /// Approve (`approving`) or Deny, on the message of a run's stage.
    Decision {
        run: String,
        stage: String,
        approving: bool,
        /// The person's id on the chat platform (`U0123ABCD`).
        user_id: String,
        /// Where later answers to this click go, if anywhere.
        reply_to: Option<String>,
    },
}

/// Who sees an answer to a click, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// The person who clicked, alone.
    ToThePerson,
    /// Everyone in the channel, as a new line.
    InChannel,
    /// Everyone, in place of the message (its buttons gone).
    ReplaceMessage,
}

/// What a source heard in one request.
#[derive(Debug, Clone)]
pub struct Heard {
    /// In the order the request told them; each is taken in on its own.
    pub events: Vec<NewEvent>,
    pub answer: Answer,
}

impl Heard {
    /// One event, or none, answered `{"report": …}`.
    pub fn one(event: Option<NewEvent>) -> Heard {
        Heard {
            events: event.into_iter().collect(),
            answer: Answer::One { message: None },
        }
    }
}

/// How the sender is answered, with the intake reports of its events.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// `{"report": …}`: the one event's report, or `null` — with
    /// `message` saying why, when there is one.
    One { message: Option<String> },
    /// `{"events": […]}`: a report per event, in order.
    Each,
    /// The fields the sender's own API answers with (PagerDuty's
    /// `status`, `message`, `dedup_key`), and `report` beside them.
    Fields(serde_json::Map<String, serde_json::Value>),
}

/// Who is who in the organisation's directory, as a source needs it: the
/// person a ticket is for becomes the event's `requested_by`, whom
/// separation of duties keeps from approving.
pub trait People: Send + Sync {
    /// The directory id of the person with this email address.
    fn by_email(&self, email: &str) -> Option<String>;
}

/// Nobody: without a directory, no email names a person.
pub struct NoPeople;

impl People for NoPeople {
    fn by_email(&self, _email: &str) -> Option<String> {
        None
    }
}

/// Why a source's request became no event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceError {
    /// The request is wrong as it is (a 400): `code` is the API's error
    /// code, `message` says what and where.
    Invalid { code: &'static str, message: String },
    /// The system could not be read back now (a 503): the sender may try
    /// again, after `retry_after` when the system said so.
    Unavailable {
        message: String,
        retry_after: Option<Duration>,
    },
}

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceError::Invalid { message, .. } | SourceError::Unavailable { message, .. } => {
                f.write_str(message)
            }
        }
    }
}

impl SourceError {
    /// The error of a body that is not the JSON the source expects, saying
    /// where it went wrong.
    pub fn invalid_body(error: serde_path_to_error::Error<serde_json::Error>) -> SourceError {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let message = if path == "." || path.is_empty() {
            format!("invalid JSON body: {inner}")
        } else {
            format!("invalid JSON body at `{path}`: {inner}")
        };
        SourceError::Invalid {
            code: "invalid_body",
            message,
        }
    }

    /// The error of reading `what` back from `system` after `error`.
    pub fn unreadable(system: &str, what: &str, error: WriteError) -> SourceError {
        match error {
            WriteError::Retryable {
                message,
                retry_after,
            } => SourceError::Unavailable {
                message: format!("could not read {what} from {system}, try again: {message}"),
                retry_after,
            },
            WriteError::Permanent { message } => SourceError::Invalid {
                code: "unreadable_record",
                message: format!("could not read {what} from {system}: {message}"),
            },
        }
    }
}

/// Reads `body` as JSON of type `T`, with the path of the first mistake.
/// The body is one JSON value: anything after it but whitespace is refused
/// (`{…}{…}`, `{…} junk`), as any other reader of the same bytes — a proxy,
/// a log, the signature's sender — would refuse it, rather than read as
/// its first value alone.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, SourceError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value =
        serde_path_to_error::deserialize(&mut deserializer).map_err(SourceError::invalid_body)?;
    deserializer.end().map_err(|error| SourceError::Invalid {
        code: "invalid_body",
        message: format!("invalid JSON body: {error}"),
    })?;
    Ok(value)
}

/// A service desk whose tickets runs write their story back to.
pub trait TicketSystem: Send + Sync {
    /// The name its write-backs are stored under (its config section).
    fn name(&self) -> &'static str;

    /// The ticket `event` is about, as this system names it in its
    /// write-backs, when the event is about one of its tickets. Asked for
    /// the events of its own source, and — by [`Integrations::ticket_for`]
    /// — for events of sources that are no ticket system.
    fn ticket_of(&self, event: &Event) -> Option<String>;

    /// Writes `update` to `ticket`, at most once however often it is
    /// retried: a note already on the ticket (found by its marker) is not
    /// written again.
    fn write<'a>(
        &'a self,
        ticket: &'a str,
        update: TicketUpdate,
    ) -> BoxFuture<'a, Result<(), WriteError>>;

    /// Whether `ticket` is still open, read back from the system now: a
    /// run approved after a wait does not act on a ticket a person closed
    /// meanwhile.
    fn state_of<'a>(&'a self, ticket: &'a str) -> BoxFuture<'a, Result<TicketState, WriteError>>;
}

/// A ticket as its system shows it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TicketState {
    Open,
    /// Resolved, closed or cancelled; `state` as the system names it.
    Closed {
        state: String,
    },
}

/// The field (`true`) a source sets on an event that reports a change
/// opsgate itself made — its own note, its own state change — when the
/// system says who made it: intake stores such an event as suppressed,
/// and it never starts a run. A source that cannot tell leaves it out.
pub const CHANGED_BY_OPSGATE: &str = "changed_by_opsgate";

/// The ticket an event of `source` names in `fields.ticket`, when the
/// event is of that source: how a ticket system that owns only its own
/// events answers [`TicketSystem::ticket_of`].
pub fn own_ticket(event: &Event, source: &str) -> Option<String> {
    if event.source != source {
        return None;
    }
    event.fields.get("ticket")?.as_str().map(str::to_owned)
}

/// What a ticket is told in one write-back.
#[derive(Debug, Clone)]
pub struct TicketUpdate {
    pub run_id: String,
    /// The records' story, or `None` when none of them is news on a ticket.
    pub note: Option<Note>,
    /// Where the ticket goes now, when the run got somewhere.
    pub outcome: Option<Outcome>,
    /// People's approvals and denials in this batch, for a system whose
    /// tickets carry approvals of their own (a catalog request's).
    pub decisions: Vec<ApprovalDecision>,
}

/// One note: its text, ending with the marker that names its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub text: String,
    pub marker: String,
}

impl Note {
    /// Adds `line` before the marker, which stays last.
    pub fn add_line(&mut self, line: &str) {
        let at = self.text.rfind("\n\n").unwrap_or(self.text.len());
        self.text.insert_str(at, &format!("\n{line}"));
    }
}

/// Where a run leaves its ticket, in words every desk understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The fix ran and was verified, and the runbook resolves its ticket.
    Resolved {
        /// The runbook's `writeback.close_code`.
        close_code: String,
        close_notes: String,
    },
    /// The run failed: a person takes over.
    NeedsPerson {
        /// The runbook's `on_failure.ticket_state`: `new`, `in_progress`,
        /// `needs_human`, `on_hold`, or a state in the system's own terms.
        state: Option<String>,
        /// The group the ticket is handed to (`on_failure.escalate_to`,
        /// without its `group:`).
        group: Option<String>,
    },
}

/// A person's approval or denial of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalDecision {
    /// Their directory id.
    pub person: String,
    pub email: Option<String>,
    pub approved: bool,
    pub comment: String,
}

/// A chat channel that is asked for approvals and told progress. Told at
/// least once: a message posted just before a crash may be posted again.
pub trait ChatChannel: Send + Sync {
    /// The name its write-backs are stored under (its config section).
    fn name(&self) -> &'static str;

    /// Where in it runs are told, as stored with the write-back.
    fn destination(&self) -> String;

    /// Whether an approval request carries a signed page per approver
    /// (a channel that cannot call opsgate back), rather than answering
    /// through the channel's own buttons.
    fn links_approvers(&self) -> bool;

    /// Asks for the approval of the open stage of a run.
    fn ask_approval<'a>(
        &'a self,
        request: &'a ApprovalRequest,
    ) -> BoxFuture<'a, Result<(), WriteError>>;

    /// Tells what happened to a run.
    fn tell_progress<'a>(&'a self, progress: &'a Progress)
    -> BoxFuture<'a, Result<(), WriteError>>;
}

/// An approval request, in words ready to show.
#[derive(Debug, Clone)]
pub struct ApprovalRequest {
    pub run_id: String,
    pub runbook_title: String,
    pub steps: Vec<RequestStep>,
    /// The hosts, services or tickets the run acts on.
    pub targets: Vec<String>,
    /// Why the policy asks for a person: one sentence each.
    pub reasons: Vec<String>,
    /// The stage's name, as the runbook or policy names it.
    pub stage: String,
    /// The stage as people say it: "owner (1 of 2)".
    pub stage_label: String,
    /// Who may approve this stage: people and groups.
    pub approvers: Vec<String>,
    /// A signed page per approver who holds the role, for a channel that
    /// [links approvers](ChatChannel::links_approvers).
    pub links: Vec<ApproverLink>,
}

/// One step of the plan.
#[derive(Debug, Clone)]
pub struct RequestStep {
    pub name: String,
    /// `http.request`, `command.run`, …
    pub action: String,
    /// The rendered request on one line: `POST https://…/restart`.
    pub request: String,
}

/// One approver's signed page.
#[derive(Debug, Clone)]
pub struct ApproverLink {
    pub approver: String,
    pub url: String,
}

/// What happened to a run since it was last told.
#[derive(Debug, Clone)]
pub struct Progress {
    pub run_id: String,
    pub runbook_id: String,
    pub runbook_title: String,
    pub state: RunState,
    pub targets: Vec<String>,
    /// One sentence per thing that happened.
    pub lines: Vec<String>,
}

/// A step's action: one attempt of a planned call. It never retries (the
/// engine decides, from the step's policy and the [`domain::FailureCause`]
/// it reports) and never panics on a peer's answer.
pub trait StepAction: Send + Sync + std::fmt::Debug {
    /// What a runbook's `with:` may give it, checked when runbooks load;
    /// its name is what a runbook's `action:` gives (`http.request`).
    fn shape(&self) -> &'static domain::ActionShape;

    fn name(&self) -> &'static str {
        self.shape().name
    }

    /// The address a call goes to, when a credential's `hosts` must be
    /// checked against it (a URL, or a job server's `base_url`).
    fn address<'r>(&self, request: &'r serde_json::Value) -> Option<&'r str> {
        request[self.shape().address?].as_str()
    }

    /// One attempt; a job it starts that outlives the call is recorded in
    /// `launched`, so that a timeout is reported as an unknown outcome.
    fn call<'a>(
        &'a self,
        call: &'a domain::PlannedCall,
        launched: &'a crate::Launched,
    ) -> BoxFuture<'a, domain::AttemptOutcome>;
}

/// The parts the configured integrations plugged in. Cheap to clone.
#[derive(Clone, Default)]
pub struct Integrations {
    pub sources: Vec<Arc<dyn EventSource>>,
    pub tickets: Vec<Arc<dyn TicketSystem>>,
    pub chats: Vec<Arc<dyn ChatChannel>>,
    pub buttons: Vec<Arc<dyn ButtonSource>>,
    /// Step actions configured by a section, each replacing the built-in
    /// one of its name (see [`crate::Connectors::plug`]).
    pub actions: Vec<Arc<dyn StepAction>>,
    /// Classifiers of tickets no runbook's rules took; the first is asked.
    pub classifiers: Vec<Arc<dyn Classifier>>,
}

impl Integrations {
    /// Adds what one integration's `build()` returned.
    pub fn plug(&mut self, parts: Parts) {
        self.sources.extend(parts.source);
        self.tickets.extend(parts.ticket_system);
        self.chats.extend(parts.chat);
        self.buttons.extend(parts.buttons);
        self.actions.extend(parts.action);
        self.classifiers.extend(parts.classifier);
    }

    /// The classifier that triages tickets no runbook's rules took, when
    /// one is configured.
    pub fn classifier(&self) -> Option<&Arc<dyn Classifier>> {
        self.classifiers.first()
    }

    /// Whether anything is written back to.
    pub fn writes_back(&self) -> bool {
        !self.tickets.is_empty() || !self.chats.is_empty()
    }

    /// The ticket system `event` is about, and the ticket. An event from a
    /// ticket system's own source is that system's only (when it is not
    /// configured, nobody's); an event from any other source (an alert, a
    /// generic event naming a ticket) belongs to the first configured
    /// system that claims it.
    pub fn ticket_for(&self, event: &Event) -> Option<(Arc<dyn TicketSystem>, String)> {
        let own_source = crate::registry::is_ticket_system(&event.source);
        self.tickets
            .iter()
            .filter(|system| !own_source || system.name() == event.source)
            .find_map(|system| Some((system.clone(), system.ticket_of(event)?)))
    }

    pub fn ticket_system(&self, name: &str) -> Option<&Arc<dyn TicketSystem>> {
        self.tickets.iter().find(|system| system.name() == name)
    }

    pub fn chat(&self, name: &str) -> Option<&Arc<dyn ChatChannel>> {
        self.chats.iter().find(|chat| chat.name() == name)
    }

    pub fn source(&self, name: &str) -> Option<&Arc<dyn EventSource>> {
        self.sources.iter().find(|source| source.name() == name)
    }

    pub fn buttons(&self, name: &str) -> Option<&Arc<dyn ButtonSource>> {
        self.buttons.iter().find(|buttons| buttons.name() == name)
    }
}

/// What one integration plugs in: any of the kinds of part.
#[derive(Default)]
pub struct Parts {
    pub source: Option<Arc<dyn EventSource>>,
    pub ticket_system: Option<Arc<dyn TicketSystem>>,
    pub chat: Option<Arc<dyn ChatChannel>>,
    /// The buttons of its chat messages, when people can click them.
    pub buttons: Option<Arc<dyn ButtonSource>>,
    /// A step action it configures, in place of the built-in one of the
    /// same name (which refuses to act without its settings).
    pub action: Option<Arc<dyn StepAction>>,
    /// A classifier that suggests a runbook for a ticket.
    pub classifier: Option<Arc<dyn Classifier>>,
}

/// Reads a ticket that no runbook's rules took and suggests the runbook
/// that would fix it, or none. It proposes and never executes: what it
/// suggests goes through the same match, plan, policy and approval as any
/// agent's proposal, and below [`Classifier::min_confidence`] it is only
/// written to the ticket.
///
/// One call is one request at most, never retried: a slow, refusing,
/// rate-limited or nonsensical answer is a [`ClassifyFailure`] at once,
/// and a classifier told to back off answers every call with
/// [`ClassifyFailureKind::RateLimited`] until then, without sending.
pub trait Classifier: Send + Sync {
    /// The name its records go by (its config section).
    fn name(&self) -> &'static str;

    /// The confidence (0–1) a suggestion needs to be proposed; below it,
    /// it is only written to the ticket.
    fn min_confidence(&self) -> f64;

    /// Its suggestion for the ticket `request` describes.
    fn classify<'a>(
        &'a self,
        request: &'a TriageRequest,
    ) -> BoxFuture<'a, Result<Suggestion, ClassifyFailure>>;
}

/// A ticket to triage, and the runbooks it may be given.
#[derive(Debug, Clone, PartialEq)]
pub struct TriageRequest {
    /// What the person wrote: the ticket's title and description.
    pub text: String,
    /// The ticket's other fields as its source read them (category,
    /// priority, the CI, the caller).
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// The runbooks to choose from; the answer names one of them or none.
    pub candidates: Vec<Candidate>,
}

/// A runbook, as a classifier is told of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub id: String,
    pub title: String,
    /// `read_only`, `reversible` or `irreversible`.
    pub risk: String,
    /// What it is for and what its rules take, in a sentence or two.
    pub description: String,
    /// The JSON Schema of its inputs.
    pub inputs_schema: serde_json::Value,
}

/// A classifier's answer: a runbook (or none), its inputs, how sure it is
/// and why, and the exchange it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Suggestion {
    /// One of the candidates' ids; `None` when no runbook fits.
    pub runbook: Option<String>,
    /// The inputs it read from the ticket, by the runbook's input names;
    /// empty when no runbook fits.
    pub inputs: serde_json::Map<String, serde_json::Value>,
    /// From 0 to 1.
    pub confidence: f64,
    pub rationale: String,
    pub exchange: Exchange,
}

/// What a classifier asked and was answered, kept for the audit. No
/// credential is ever part of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Exchange {
    /// The model asked, as configured.
    pub model: String,
    /// The version of the prompt the request was built with.
    pub prompt_version: String,
    /// The request body as sent; `None` when nothing was sent.
    pub request: Option<serde_json::Value>,
    /// The answer's body as received (its start, when it was long);
    /// `None` when no answer came.
    pub answer: Option<String>,
}

/// Why a classifier gave no suggestion, with what was sent and received.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassifyFailure {
    pub kind: ClassifyFailureKind,
    pub exchange: Exchange,
}

/// The kinds of "no suggestion".
#[derive(Debug, Clone, PartialEq)]
pub enum ClassifyFailureKind {
    /// No answer within the timeout (or no free slot to ask in).
    Timeout { after: Duration },
    /// The endpoint said to slow down (`sent`: this call's request got a
    /// 429), or the classifier is still backing off from an earlier one
    /// or at its own rate bound (nothing sent). Ask again after
    /// `retry_after`.
    RateLimited {
        retry_after: Duration,
        sent: bool,
        message: String,
    },
    /// The model declined to answer; `text` is what it said.
    Refused { text: String },
    /// An answer that is not one: not JSON, a field missing, a runbook
    /// that is no candidate, a confidence outside 0–1. `problem` says what.
    Malformed { problem: String },
    /// The endpoint could not be asked or refused the request: `status`
    /// is its HTTP status, `None` when no answer came at all.
    Unavailable {
        status: Option<u16>,
        message: String,
    },
}

impl ClassifyFailureKind {
    /// Its name in records: `timeout`, `rate_limited`, `refused`,
    /// `malformed`, `unavailable`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ClassifyFailureKind::Timeout { .. } => "timeout",
            ClassifyFailureKind::RateLimited { .. } => "rate_limited",
            ClassifyFailureKind::Refused { .. } => "refused",
            ClassifyFailureKind::Malformed { .. } => "malformed",
            ClassifyFailureKind::Unavailable { .. } => "unavailable",
        }
    }
}

impl std::fmt::Display for ClassifyFailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClassifyFailureKind::Timeout { after } => {
                write!(f, "no answer within {} ms", after.as_millis())
            }
            ClassifyFailureKind::RateLimited {
                retry_after,
                message,
                ..
            } => write!(
                f,
                "{message}; not asked again for {} s",
                retry_after.as_secs_f64().ceil()
            ),
            ClassifyFailureKind::Refused { text } => write!(f, "the model declined: {text}"),
            ClassifyFailureKind::Malformed { problem } => {
                write!(f, "the answer makes no sense: {problem}")
            }
            ClassifyFailureKind::Unavailable { message, .. } => f.write_str(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_one_json_value_and_a_mistake_says_where() {
        #[derive(Debug, serde::Deserialize)]
        struct Body {
            #[allow(dead_code, reason = "read to be checked")]
            name: String,
        }
        let check = |body: &str, expected: Result<(), &str>| {
            let read = parse_json::<Body>(body.as_bytes())
                .map(drop)
                .map_err(|error| error.to_string());
            assert_eq!(read, expected.map_err(str::to_owned), "{body:?}");
        };
        check(r#"{"name": "a"}"#, Ok(()));
        check(" {\"name\": \"a\"}\r\n\t ", Ok(()));
        check(
            r#"{"name": 1}"#,
            Err(
                "invalid JSON body at `name`: invalid type: integer `1`, expected a string at line 1 column 10",
            ),
        );
        check(
            "",
            Err("invalid JSON body: EOF while parsing a value at line 1 column 0"),
        );
        // Found by the `pagerduty` fuzz target: a body went on after its
        // value, and was read as that value alone.
        check(
            r#"{"name": "a"}}"#,
            Err("invalid JSON body: trailing characters at line 1 column 14"),
        );
        check(
            r#"{"name": "a"}{"name": "b"}"#,
            Err("invalid JSON body: trailing characters at line 1 column 14"),
        );
        check(
            r#"{"name": "a"} junk"#,
            Err("invalid JSON body: trailing characters at line 1 column 15"),
        );
    }
}
