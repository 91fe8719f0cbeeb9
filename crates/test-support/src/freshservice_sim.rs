//! A local Freshservice: tickets, their notes and conversations, agent
//! groups and requesters, behind Freshservice's API v2 and its API key.
//!
//! It speaks the wire format of API v2 — answers wrapped in their resource
//! (`{"ticket": …}`, `{"conversations": […]}`), numeric statuses (2 Open,
//! 3 Pending, 4 Resolved, 5 Closed) and priorities (1 Low … 4 Urgent),
//! timestamps as `YYYY-MM-DDTHH:MM:SSZ`, blank fields as `null`, pages of
//! `page`/`per_page` (30 by default, 100 at most) with a `Link: <…>;
//! rel="next"` header while a next page exists, and the
//! `{"description": "Validation failed", "errors": [{"field", "message",
//! "code"}]}` envelope — so that a client which passes its contract tests
//! here passes them against a service desk. The unhappy paths played
//! faithfully:
//!
//! - HTTP Basic with the API key as user name and any password; anything
//!   else is a 401 `invalid_credentials`.
//! - An update names only fields Freshservice takes: an unknown one (a
//!   typo, a read-only `id`) is a 400 `invalid_field`; a status or
//!   priority outside its list, or a `group_id` no group has, is a 400
//!   `invalid_value`; a number sent as text is `datatype_mismatch`; `{}` is
//!   `missing_params`. Every error of a request is listed, not the first.
//! - A ticket read without `include=tags` has no `tags` (Freshservice only
//!   embeds them on request, at one more API credit); an update answers
//!   them. A tag list replaces the ticket's tags.
//! - A missing ticket, group or requester is a 404 with an empty body, so a
//!   client that parses every answer as JSON fails here as it would there.
//! - A body that is not JSON is a 400 `invalid_json`; a `Content-Type`
//!   other than JSON is a 415; an `Accept` without JSON is a 406.
//! - Every metered answer carries `X-Ratelimit-Total`,
//!   `X-Ratelimit-Remaining` and `X-Ratelimit-Used-CurrentRequest`; the
//!   requests of a minute beyond [`FreshserviceSim::rate_limit_per_minute`]
//!   (500, an Enterprise plan, by default) are answered 429 with
//!   `Retry-After` and no rate-limit headers, as are those
//!   [`FreshserviceSim::fail_next`] says; [`FreshserviceSim::down`]
//!   answers everything 503 with a proxy's HTML page. A refused connection
//!   needs no simulator: point the client at a port nothing listens on.
//!
//! Checked against Freshservice's API reference (api.freshservice.com, as
//! captured in 2025): the paths, the ticket, conversation, group and
//! requester fields, statuses and priorities, the validation envelope and
//! its codes, what 401, 404, 405, 406, 415 and 429 mean, pagination and `Link`, the
//! rate-limit header names and `Retry-After`, `include` and its credits,
//! notes being private unless said otherwise. The reference shows no
//! bodies for 401, 404, 415, 429 or invalid JSON, nor most messages; those
//! are Freshdesk API v2's, whose envelope and codes Freshservice's are, and
//! are marked as assumed where they are written below.
//!
//! Pages are full but the last, as Freshservice fills them, so there is no
//! switch for short pages: the `Link` header, not a short page, says
//! whether there is more, and a client that reads only the first page of
//! more than 30 conversations misses the rest here too.
//!
//! Where it is simpler or stricter than Freshservice, it says so: one
//! workspace; the fixed statuses and no custom ones; no agents, so a
//! `responder_id` is taken as given; custom fields are the ones tickets
//! were seeded with and their values are not checked against choices; an
//! update may set only the fields this simulator models (those of
//! [`NewTicket`] plus `description`, `requester_id`, `responder_id`,
//! `category`, `sub_category`, `item_category`, `urgency`, `impact`,
//! `source`) and any other is refused as unknown; `include` takes only
//! `conversations`, `requester` and `tags`; attachments (multipart) are not
//! served (415); credentials are checked before the body is parsed, so a
//! bad body with bad credentials is a 401 here (Freshservice parses first);
//! a method a path does not take is a bare 405 (Freshservice's has a JSON
//! body).
//! Each write moves a ticket's `updated_at` at least one second on, so a
//! test can see the bump within a second. A note's `body_text` is its HTML
//! without tags, `<br>` as a line break and entities decoded.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use crate::{base_url, json_answer};

/// A ticket to seed.
#[derive(Debug, Clone)]
pub struct NewTicket {
    pub subject: String,
    /// Plain text; the HTML `description` is made from it.
    pub description_text: String,
    /// 2 Open, 3 Pending, 4 Resolved, 5 Closed.
    pub status: u64,
    /// 1 Low, 2 Medium, 3 High, 4 Urgent.
    pub priority: u64,
    /// A group from [`FreshserviceSim::add_group`].
    pub group_id: Option<u64>,
    /// A requester from [`FreshserviceSim::add_requester`]; when `None`, a
    /// default requester (Kim Lee) is created once and used.
    pub requester_id: Option<u64>,
    /// `"Incident"` or `"Service Request"` (the wire's `type`).
    pub ticket_type: String,
    /// The account's custom fields are the names seeded here; the others a
    /// ticket shows as `null`.
    pub custom_fields: Map<String, Value>,
    pub tags: Vec<String>,
}

impl NewTicket {
    /// An open incident of medium priority, in no group.
    pub fn incident(subject: &str) -> NewTicket {
        NewTicket {
            subject: subject.into(),
            description_text: format!("{subject}\nReported through the service portal."),
            status: 2,
            priority: 2,
            group_id: None,
            requester_id: None,
            ticket_type: "Incident".into(),
            custom_fields: Map::new(),
            tags: Vec::new(),
        }
    }
}

/// A note (a conversation) as the service desk stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    pub id: u64,
    /// The HTML as sent.
    pub body: String,
    /// The text a reader (or a client looking for a marker) sees.
    pub body_text: String,
    /// Hidden from the requester; notes are private unless sent otherwise.
    pub private: bool,
    pub incoming: bool,
    /// The agent who added it: [`INTEGRATION_AGENT_ID`] through the API,
    /// [`DESK_AGENT_ID`] when seeded.
    pub user_id: u64,
    pub created_at: String,
}

/// How the next requests fail.
#[derive(Debug, Clone, Copy)]
pub enum Failure {
    /// 429 with `Retry-After`, as when the account's limit is spent.
    RateLimited { retry_after_seconds: u64 },
    /// 503 with a proxy's HTML page.
    Unavailable,
}

/// The agent whose API key the client uses: the author of its notes.
pub const INTEGRATION_AGENT_ID: u64 = 8_000_001;

/// The agent who works tickets by hand: the author of seeded notes.
pub const DESK_AGENT_ID: u64 = 8_000_002;

/// The simulated account, shared with its server. Cheap to clone.
#[derive(Debug, Clone)]
pub struct FreshserviceSim {
    account: Arc<Mutex<Account>>,
}

#[derive(Debug)]
struct Account {
    api_key: String,
    tickets: BTreeMap<u64, Ticket>,
    groups: BTreeMap<u64, Group>,
    requesters: BTreeMap<u64, Requester>,
    custom_field_names: BTreeSet<String>,
    default_requester: Option<u64>,
    next_ticket_id: u64,
    next_group_id: u64,
    next_requester_id: u64,
    next_conversation_id: u64,
    failing: Option<(u32, Failure)>,
    down: bool,
    window: RateWindow,
    /// Every request, as "METHOD path?query".
    calls: Vec<String>,
}

#[derive(Debug, Clone)]
struct Ticket {
    id: u64,
    subject: String,
    description: String,
    description_text: String,
    status: u64,
    priority: u64,
    ticket_type: String,
    group_id: Option<u64>,
    requester_id: u64,
    responder_id: Option<u64>,
    category: Option<String>,
    sub_category: Option<String>,
    item_category: Option<String>,
    urgency: u64,
    impact: u64,
    source: u64,
    custom_fields: Map<String, Value>,
    tags: Vec<String>,
    created_at: i64,
    updated_at: i64,
    conversations: Vec<Conversation>,
}

#[derive(Debug, Clone)]
struct Conversation {
    id: u64,
    body: String,
    body_text: String,
    private: bool,
    incoming: bool,
    user_id: u64,
    ticket_id: u64,
    notify_emails: Vec<String>,
    created_at: i64,
}

#[derive(Debug, Clone)]
struct Group {
    id: u64,
    name: String,
    created_at: i64,
}

#[derive(Debug, Clone)]
struct Requester {
    id: u64,
    first_name: String,
    primary_email: String,
    created_at: i64,
}

/// Freshservice's minute-level limit: a count of requests since the
/// window's first one, reset a minute later.
#[derive(Debug)]
struct RateWindow {
    per_minute: u32,
    started: Option<Instant>,
    used: u32,
}

const WINDOW: Duration = Duration::from_secs(60);

impl RateWindow {
    /// Spends one credit, or says how many seconds remain of a spent
    /// window.
    fn spend(&mut self, now: Instant) -> Result<(), u64> {
        if self
            .started
            .is_none_or(|started| now.duration_since(started) >= WINDOW)
        {
            self.started = Some(now);
            self.used = 0;
        }
        if self.used >= self.per_minute {
            let elapsed = self
                .started
                .map_or(Duration::ZERO, |started| now.duration_since(started));
            let left = WINDOW.saturating_sub(elapsed).as_secs_f64().ceil() as u64;
            return Err(left.max(1));
        }
        self.used += 1;
        Ok(())
    }

    /// Adds the credits an answer cost beyond the first; the total and
    /// what remains.
    fn settle(&mut self, extra: u32) -> (u32, u32) {
        self.used = self.used.saturating_add(extra);
        (self.per_minute, self.per_minute.saturating_sub(self.used))
    }
}

/// Credits an answer costs beyond its first (one per `include`), left on
/// the response for the gate to count.
#[derive(Debug, Clone, Copy)]
struct ExtraCredits(u32);

/// The Content-Type of Freshservice's JSON answers.
const JSON: &str = "application/json; charset=utf-8";

const VALIDATION_FAILED: &str = "Validation failed";
const INVALID_FIELD: &str = "Unexpected/invalid field in request";
const STATUSES: &[u64] = &[2, 3, 4, 5];
const PRIORITIES: &[u64] = &[1, 2, 3, 4];
const URGENCIES_AND_IMPACTS: &[u64] = &[1, 2, 3];
const SOURCES: &[u64] = &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 18];
const TICKET_TYPES: &[&str] = &["Incident", "Service Request"];
const INCLUDES: &[&str] = &["conversations", "requester", "tags"];
/// The primary workspace of an account, where everything here lives.
const WORKSPACE_ID: u64 = 2;
const SOURCE_PORTAL: u64 = 2;
const CONVERSATION_SOURCE_NOTE: u64 = 2;
const DEFAULT_PER_PAGE: usize = 30;
const MAX_PER_PAGE: usize = 100;
/// How many conversations `include=conversations` embeds.
const EMBEDDED_CONVERSATIONS: usize = 10;

impl FreshserviceSim {
    /// An account whose integration agent authenticates with `api_key`.
    pub fn new(api_key: &str) -> FreshserviceSim {
        FreshserviceSim {
            account: Arc::new(Mutex::new(Account {
                api_key: api_key.to_owned(),
                tickets: BTreeMap::new(),
                groups: BTreeMap::new(),
                requesters: BTreeMap::new(),
                custom_field_names: BTreeSet::new(),
                default_requester: None,
                // Each kind of id starts far from the others, so a client
                // that sends a group id where a ticket id belongs gets a
                // 404 rather than another record.
                next_ticket_id: 1_001,
                next_group_id: 7_000_001,
                next_requester_id: 9_000_001,
                next_conversation_id: 4_000_001,
                failing: None,
                down: false,
                window: RateWindow {
                    per_minute: 500,
                    started: None,
                    used: 0,
                },
                calls: Vec::new(),
            })),
        }
    }

    fn account(&self) -> std::sync::MutexGuard<'_, Account> {
        self.account.lock().expect("Freshservice simulator lock")
    }

    pub fn router(&self) -> axum::Router {
        axum::Router::new()
            .route("/api/v2/tickets/{id}", get(show_ticket).put(update_ticket))
            .route("/api/v2/tickets/{id}/notes", post(add_note))
            .route(
                "/api/v2/tickets/{id}/conversations",
                get(list_conversations),
            )
            .route("/api/v2/groups", get(list_groups))
            .route("/api/v2/groups/{id}", get(show_group))
            .route("/api/v2/requesters/{id}", get(show_requester))
            .fallback(no_such_route)
            .layer(axum::middleware::from_fn_with_state(self.clone(), gate))
            .with_state(self.clone())
    }

    /// Starts the simulator on a free loopback port.
    pub async fn start(&self) -> std::io::Result<crate::Running> {
        crate::serve(self.router()).await
    }

    /// The API key the account accepts, to prove none leaks.
    pub fn api_key(&self) -> String {
        self.account().api_key.clone()
    }

    /// Adds an agent group and returns its id.
    pub fn add_group(&self, name: &str) -> u64 {
        let mut account = self.account();
        let id = account.next_group_id;
        account.next_group_id += 1;
        account.groups.insert(
            id,
            Group {
                id,
                name: name.to_owned(),
                created_at: now_second(),
            },
        );
        id
    }

    /// Adds a requester (an employee) and returns their id.
    pub fn add_requester(&self, first_name: &str, email: &str) -> u64 {
        self.account().add_requester(first_name, email)
    }

    /// Creates a ticket and returns its id (1001, 1002, …).
    pub fn seed_ticket(&self, new: NewTicket) -> u64 {
        let mut account = self.account();
        assert!(
            STATUSES.contains(&new.status),
            "{} is not a ticket status",
            new.status
        );
        assert!(
            PRIORITIES.contains(&new.priority),
            "{} is not a ticket priority",
            new.priority
        );
        assert!(
            TICKET_TYPES.contains(&new.ticket_type.as_str()),
            "{} is not a ticket type",
            new.ticket_type
        );
        if let Some(group) = new.group_id {
            assert!(account.groups.contains_key(&group), "no group {group}");
        }
        let requester_id = match new.requester_id {
            Some(requester) => {
                assert!(
                    account.requesters.contains_key(&requester),
                    "no requester {requester}"
                );
                requester
            }
            None => account.default_requester(),
        };
        account
            .custom_field_names
            .extend(new.custom_fields.keys().cloned());
        let id = account.next_ticket_id;
        account.next_ticket_id += 1;
        let now = now_second();
        account.tickets.insert(
            id,
            Ticket {
                id,
                subject: new.subject,
                description: text_html(&new.description_text),
                description_text: new.description_text,
                status: new.status,
                priority: new.priority,
                ticket_type: new.ticket_type,
                group_id: new.group_id,
                requester_id,
                responder_id: None,
                category: None,
                sub_category: None,
                item_category: None,
                urgency: 1,
                impact: 1,
                source: SOURCE_PORTAL,
                custom_fields: new.custom_fields,
                tags: new.tags,
                created_at: now,
                updated_at: now,
                conversations: Vec::new(),
            },
        );
        id
    }

    /// Adds a note by an agent at the desk ([`DESK_AGENT_ID`]) and returns
    /// its id.
    pub fn seed_note(&self, ticket: u64, body: &str, private: bool) -> u64 {
        let mut account = self.account();
        let id = account.next_conversation_id;
        account.next_conversation_id += 1;
        let ticket = account
            .tickets
            .get_mut(&ticket)
            .unwrap_or_else(|| panic!("no ticket {ticket}"));
        ticket.conversations.push(Conversation {
            id,
            body: body.to_owned(),
            body_text: html_text(body),
            private,
            incoming: false,
            user_id: DESK_AGENT_ID,
            ticket_id: ticket.id,
            notify_emails: Vec::new(),
            created_at: now_second(),
        });
        ticket.updated_at = later_than(ticket.updated_at);
        id
    }

    /// The ticket as `GET /api/v2/tickets/{id}?include=tags` shows it.
    pub fn ticket(&self, id: u64) -> Option<Value> {
        let account = self.account();
        account
            .tickets
            .get(&id)
            .map(|ticket| account.render_ticket(ticket, true))
    }

    /// The ticket's status, or `None` when there is no such ticket.
    pub fn status(&self, id: u64) -> Option<u64> {
        self.account().tickets.get(&id).map(|ticket| ticket.status)
    }

    /// The ticket's group, or `None` when it has none or there is no such
    /// ticket.
    pub fn group_id(&self, id: u64) -> Option<u64> {
        self.account()
            .tickets
            .get(&id)
            .and_then(|ticket| ticket.group_id)
    }

    /// The ticket's notes, oldest first.
    pub fn notes(&self, id: u64) -> Vec<Note> {
        self.account()
            .tickets
            .get(&id)
            .map(|ticket| {
                ticket
                    .conversations
                    .iter()
                    .map(|conversation| Note {
                        id: conversation.id,
                        body: conversation.body.clone(),
                        body_text: conversation.body_text.clone(),
                        private: conversation.private,
                        incoming: conversation.incoming,
                        user_id: conversation.user_id,
                        created_at: stamp(conversation.created_at),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every request so far, as "METHOD path" with "?query" when there was
    /// one.
    pub fn calls(&self) -> Vec<String> {
        self.account().calls.clone()
    }

    /// An agent changes the ticket's status by hand, behind the client's
    /// back.
    pub fn set_status(&self, id: u64, status: u64) {
        assert!(
            STATUSES.contains(&status),
            "{status} is not a ticket status"
        );
        let mut account = self.account();
        let ticket = account
            .tickets
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no ticket {id}"));
        ticket.status = status;
        ticket.updated_at = later_than(ticket.updated_at);
    }

    /// The next `requests` API requests fail as `failure` says, whatever
    /// their credentials.
    pub fn fail_next(&self, requests: u32, failure: Failure) {
        self.account().failing = Some((requests, failure));
    }

    /// While down, every request gets a 503 with a proxy's HTML page.
    pub fn down(&self, down: bool) {
        self.account().down = down;
    }

    /// The account's limit: requests beyond it in a minute are answered
    /// 429 until the minute is over. Starts a fresh minute.
    pub fn rate_limit_per_minute(&self, requests: u32) {
        let mut account = self.account();
        account.window = RateWindow {
            per_minute: requests,
            started: None,
            used: 0,
        };
    }
}

impl Account {
    fn add_requester(&mut self, first_name: &str, email: &str) -> u64 {
        let id = self.next_requester_id;
        self.next_requester_id += 1;
        self.requesters.insert(
            id,
            Requester {
                id,
                first_name: first_name.to_owned(),
                primary_email: email.to_owned(),
                created_at: now_second(),
            },
        );
        id
    }

    fn default_requester(&mut self) -> u64 {
        match self.default_requester {
            Some(id) => id,
            None => {
                let id = self.add_requester("Kim Lee", "kim.lee@example.com");
                self.default_requester = Some(id);
                id
            }
        }
    }

    fn authenticated(&self, headers: &HeaderMap) -> bool {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
            .and_then(|(_, credentials)| crate::decode_basic(credentials))
            .is_some_and(|(user, _password)| user == self.api_key)
    }

    fn take_failure(&mut self) -> Option<Failure> {
        match self.failing {
            Some((remaining, failure)) if remaining > 0 => {
                self.failing = Some((remaining - 1, failure));
                Some(failure)
            }
            _ => None,
        }
    }

    /// The ticket as a read shows it; `tags` only when asked for, as
    /// Freshservice embeds them only on request.
    fn render_ticket(&self, ticket: &Ticket, with_tags: bool) -> Value {
        let custom_fields: Map<String, Value> = self
            .custom_field_names
            .iter()
            .map(|name| {
                let value = ticket.custom_fields.get(name).cloned();
                (name.clone(), value.unwrap_or(Value::Null))
            })
            .collect();
        let mut rendered = json!({
            "id": ticket.id,
            "workspace_id": WORKSPACE_ID,
            "subject": ticket.subject,
            "description": ticket.description,
            "description_text": ticket.description_text,
            "status": ticket.status,
            "priority": ticket.priority,
            "type": ticket.ticket_type,
            "source": ticket.source,
            "group_id": ticket.group_id,
            "requester_id": ticket.requester_id,
            "requested_for_id": ticket.requester_id,
            "responder_id": ticket.responder_id,
            "department_id": null,
            "email_config_id": null,
            "sla_policy_id": null,
            "category": ticket.category,
            "sub_category": ticket.sub_category,
            "item_category": ticket.item_category,
            "urgency": ticket.urgency,
            "impact": ticket.impact,
            "custom_fields": custom_fields,
            "cc_emails": [],
            "fwd_emails": [],
            "reply_cc_emails": [],
            "to_emails": null,
            "spam": false,
            "deleted": false,
            "is_escalated": false,
            "fr_escalated": false,
            "due_by": stamp(ticket.created_at + 3 * 86_400),
            "fr_due_by": stamp(ticket.created_at + 86_400),
            "resolution_notes": null,
            "resolution_notes_html": null,
            "attachments": [],
            "created_at": stamp(ticket.created_at),
            "updated_at": stamp(ticket.updated_at),
        });
        if with_tags {
            rendered["tags"] = json!(ticket.tags);
        }
        rendered
    }
}

fn render_conversation(conversation: &Conversation, listed: bool) -> Value {
    let mut rendered = json!({
        "id": conversation.id,
        "body": conversation.body,
        "body_text": conversation.body_text,
        "incoming": conversation.incoming,
        "private": conversation.private,
        "user_id": conversation.user_id,
        "support_email": null,
        "ticket_id": conversation.ticket_id,
        "to_emails": conversation.notify_emails,
        "attachments": [],
        "created_at": stamp(conversation.created_at),
        "updated_at": stamp(conversation.created_at),
    });
    // The reference shows `source` and the mail fields on listed
    // conversations only, not on a note just created.
    if listed {
        rendered["source"] = json!(CONVERSATION_SOURCE_NOTE);
        rendered["from_email"] = Value::Null;
        rendered["cc_emails"] = json!([]);
        rendered["bcc_emails"] = Value::Null;
    }
    rendered
}

fn render_group(group: &Group) -> Value {
    json!({
        "id": group.id,
        "name": group.name,
        "description": format!("Agents who work {} tickets.", group.name),
        "escalate_to": null,
        "unassigned_for": "30m",
        "business_hours_id": null,
        "auto_ticket_assign": false,
        "restricted": false,
        "approval_required": false,
        "workspace_id": WORKSPACE_ID,
        "members": [],
        "observers": [],
        "leaders": [],
        "members_pending_approval": [],
        "leaders_pending_approval": [],
        "observers_pending_approval": [],
        "created_at": stamp(group.created_at),
        "updated_at": stamp(group.created_at),
    })
}

fn render_requester(requester: &Requester) -> Value {
    json!({
        "id": requester.id,
        "is_agent": false,
        "first_name": requester.first_name,
        "last_name": null,
        "job_title": null,
        "primary_email": requester.primary_email,
        "secondary_emails": [],
        "work_phone_number": null,
        "mobile_phone_number": null,
        "department_ids": [],
        "can_see_all_tickets_from_associated_departments": false,
        "reporting_manager_id": null,
        "address": null,
        "time_zone": "Eastern Time (US & Canada)",
        "time_format": "12h",
        "language": "en",
        "location_id": null,
        "background_information": null,
        "custom_fields": {},
        "active": true,
        "has_logged_in": false,
        "created_at": stamp(requester.created_at),
        "updated_at": stamp(requester.created_at),
    })
}

/// Logs the call, then plays the account's state in the order Freshservice
/// meets a request: its edge (down, a switched failure), the rate limiter,
/// the header checks, the credentials. Metered answers get the rate-limit
/// headers on the way out.
async fn gate(State(sim): State<FreshserviceSim>, request: Request, next: Next) -> Response {
    let refusal = {
        let mut account = sim.account();
        let uri = request.uri();
        let call = match uri.query() {
            Some(query) => format!("{} {}?{query}", request.method(), uri.path()),
            None => format!("{} {}", request.method(), uri.path()),
        };
        account.calls.push(call);
        if account.down {
            return unavailable_page();
        }
        if let Some(failure) = account.take_failure() {
            return failed(failure);
        }
        if let Err(retry_after_seconds) = account.window.spend(Instant::now()) {
            return rate_limited(retry_after_seconds);
        }
        // The reference lists these codes but shows no bodies; the wording
        // is Freshdesk API v2's (assumed).
        if !accepts_json(request.headers()) {
            Some(request_error(
                StatusCode::NOT_ACCEPTABLE,
                "invalid_accept_header",
                "Accept header should have application/json or */*",
            ))
        } else if sends_unsupported_body(request.method(), request.headers()) {
            Some(request_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_content_type",
                "Content-Type header should have application/json",
            ))
        } else if !account.authenticated(request.headers()) {
            Some(request_error(
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                "You have to be logged in to perform this action.",
            ))
        } else {
            None
        }
    };
    let mut response = match refusal {
        Some(response) => response,
        None => next.run(request).await,
    };
    let extra = response
        .extensions()
        .get::<ExtraCredits>()
        .map_or(0, |credits| credits.0);
    let (total, remaining) = sim.account().window.settle(extra);
    let headers = response.headers_mut();
    headers.insert("X-Ratelimit-Total", HeaderValue::from(total));
    headers.insert("X-Ratelimit-Remaining", HeaderValue::from(remaining));
    headers.insert(
        "X-Ratelimit-Used-CurrentRequest",
        HeaderValue::from(1 + extra),
    );
    // Freshservice leaves the version header off its 404s.
    if response.status() != StatusCode::NOT_FOUND {
        response.headers_mut().insert(
            "X-Freshservice-Api-Version",
            HeaderValue::from_static("latest=v2; requested=v2"),
        );
    }
    response
}

fn accepts_json(headers: &HeaderMap) -> bool {
    match headers.get(header::ACCEPT) {
        None => true,
        Some(accept) => accept
            .to_str()
            .is_ok_and(|accept| accept.contains("application/json") || accept.contains("*/*")),
    }
}

/// A write with a body that is not JSON. Freshservice also takes
/// multipart (attachments), which this simulator does not serve.
fn sends_unsupported_body(method: &Method, headers: &HeaderMap) -> bool {
    if method != Method::POST && method != Method::PUT {
        return false;
    }
    let has_body = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|length| length.to_str().ok())
        .and_then(|length| length.trim().parse::<u64>().ok())
        .is_some_and(|length| length > 0)
        || headers.contains_key(header::TRANSFER_ENCODING);
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|content_type| content_type.to_str().ok())
        .is_some_and(|content_type| content_type.contains("application/json"));
    has_body && !is_json
}

async fn show_ticket(
    State(sim): State<FreshserviceSim>,
    Path(id): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let mut errors = Vec::new();
    let mut includes: Vec<String> = Vec::new();
    for (name, value) in &params {
        if name == "include" {
            for include in value.split(',').map(str::trim) {
                if INCLUDES.contains(&include) {
                    includes.push(include.to_owned());
                } else {
                    errors.push(FieldError::not_included("include", &INCLUDES.join(",")));
                }
            }
        } else {
            errors.push(FieldError::invalid_field(name));
        }
    }
    let account = sim.account();
    let Some(ticket) = id.parse().ok().and_then(|id| account.tickets.get(&id)) else {
        return not_found();
    };
    if !errors.is_empty() {
        return validation_failed(errors);
    }
    let with = |include: &str| includes.iter().any(|wanted| wanted == include);
    let mut rendered = account.render_ticket(ticket, with("tags"));
    if with("conversations") {
        let embedded: Vec<Value> = ticket
            .conversations
            .iter()
            .take(EMBEDDED_CONVERSATIONS)
            .map(|conversation| render_conversation(conversation, true))
            .collect();
        rendered["conversations"] = json!(embedded);
    }
    if with("requester") {
        rendered["requester"] =
            account
                .requesters
                .get(&ticket.requester_id)
                .map_or(Value::Null, |requester| {
                    json!({
                        "id": requester.id,
                        "name": requester.first_name,
                        "email": requester.primary_email,
                        "mobile": null,
                        "phone": null,
                    })
                });
    }
    let mut response = answer(StatusCode::OK, json!({"ticket": rendered}));
    response
        .extensions_mut()
        .insert(ExtraCredits(includes.len() as u32));
    response
}

async fn update_ticket(
    State(sim): State<FreshserviceSim>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let request = match request_object(&body) {
        Ok(request) => request.unwrap_or_default(),
        Err(NotJson) => return invalid_json(),
    };
    let mut account = sim.account();
    let Some(mut ticket) = id
        .parse()
        .ok()
        .and_then(|id| account.tickets.get(&id))
        .cloned()
    else {
        return not_found();
    };
    if request.is_empty() {
        // Wording assumed from Freshdesk's API v2 (`missing_params`).
        return request_error(
            StatusCode::BAD_REQUEST,
            "missing_params",
            "Mandatory parameters missing",
        );
    }
    // Freshservice refuses unknown fields before it looks at any value, and
    // names only them.
    let unknown: Vec<FieldError> = request
        .iter()
        .flat_map(|(field, value)| account.unknown_fields(field, value))
        .collect();
    if !unknown.is_empty() {
        return validation_failed(unknown);
    }
    let errors: Vec<FieldError> = request
        .iter()
        .filter_map(|(field, value)| account.apply(&mut ticket, field, value).err())
        .collect();
    if !errors.is_empty() {
        return validation_failed(errors);
    }
    ticket.updated_at = later_than(ticket.updated_at);
    let rendered = account.render_ticket(&ticket, true);
    account.tickets.insert(ticket.id, ticket);
    answer(StatusCode::OK, json!({"ticket": rendered}))
}

/// The ticket fields an update may set here.
const UPDATABLE: &[&str] = &[
    "subject",
    "description",
    "status",
    "priority",
    "type",
    "source",
    "urgency",
    "impact",
    "group_id",
    "responder_id",
    "requester_id",
    "category",
    "sub_category",
    "item_category",
    "custom_fields",
    "tags",
];

impl Account {
    /// The fields of an update Freshservice does not know: `field` itself,
    /// or the custom fields it names that the account has not.
    fn unknown_fields(&self, field: &str, value: &Value) -> Vec<FieldError> {
        if !UPDATABLE.contains(&field) {
            return vec![FieldError::invalid_field(field)];
        }
        match (field, value) {
            // Wording assumed: Freshservice names the unknown custom field
            // itself.
            ("custom_fields", Value::Object(changes)) => changes
                .keys()
                .filter(|name| !self.custom_field_names.contains(*name))
                .map(|name| FieldError::invalid_field(name))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Sets one known field of an update on `ticket`, or says why
    /// Freshservice would refuse its value.
    fn apply(&self, ticket: &mut Ticket, field: &str, value: &Value) -> Result<(), FieldError> {
        match field {
            "status" => ticket.status = one_of(field, value, STATUSES)?,
            "priority" => ticket.priority = one_of(field, value, PRIORITIES)?,
            "urgency" => ticket.urgency = one_of(field, value, URGENCIES_AND_IMPACTS)?,
            "impact" => ticket.impact = one_of(field, value, URGENCIES_AND_IMPACTS)?,
            "source" => ticket.source = one_of(field, value, SOURCES)?,
            "type" => {
                let kind = value
                    .as_str()
                    .filter(|kind| TICKET_TYPES.contains(kind))
                    .ok_or_else(|| FieldError::not_included(field, &TICKET_TYPES.join(",")))?;
                ticket.ticket_type = kind.to_owned();
            }
            "group_id" => {
                ticket.group_id = match value {
                    Value::Null => None,
                    _ => {
                        let group = positive_integer(field, value)?;
                        if !self.groups.contains_key(&group) {
                            return Err(FieldError::absent("group", field));
                        }
                        Some(group)
                    }
                }
            }
            "responder_id" => {
                ticket.responder_id = match value {
                    Value::Null => None,
                    _ => Some(positive_integer(field, value)?),
                }
            }
            "requester_id" => {
                let requester = positive_integer(field, value)?;
                if !self.requesters.contains_key(&requester) {
                    return Err(FieldError::absent("requester", field));
                }
                ticket.requester_id = requester;
            }
            "subject" => ticket.subject = non_blank_string(field, value)?,
            "description" => {
                let description = non_blank_string(field, value)?;
                ticket.description_text = html_text(&description);
                ticket.description = description;
            }
            "category" => ticket.category = optional_string(field, value)?,
            "sub_category" => ticket.sub_category = optional_string(field, value)?,
            "item_category" => ticket.item_category = optional_string(field, value)?,
            "tags" => {
                let tags = value
                    .as_array()
                    .and_then(|tags| {
                        tags.iter()
                            .map(|tag| tag.as_str().map(str::to_owned))
                            .collect::<Option<Vec<String>>>()
                    })
                    .ok_or_else(|| FieldError::datatype_mismatch(field, "Array"))?;
                ticket.tags = tags;
            }
            "custom_fields" => {
                let Some(changes) = value.as_object() else {
                    return Err(FieldError::datatype_mismatch(field, "key/value pair"));
                };
                for (name, change) in changes {
                    ticket.custom_fields.insert(name.clone(), change.clone());
                }
            }
            _ => return Err(FieldError::invalid_field(field)),
        }
        Ok(())
    }
}

/// The fields a note takes as JSON (attachments come as multipart, which
/// this simulator does not serve).
const NOTE_FIELDS: &[&str] = &["body", "private", "incoming", "user_id", "notify_emails"];

async fn add_note(
    State(sim): State<FreshserviceSim>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = match request_object(&body) {
        Ok(request) => request.unwrap_or_default(),
        Err(NotJson) => return invalid_json(),
    };
    let mut account = sim.account();
    let Some(ticket_id) = id
        .parse::<u64>()
        .ok()
        .filter(|id| account.tickets.contains_key(id))
    else {
        return not_found();
    };
    let unknown: Vec<FieldError> = request
        .keys()
        .filter(|field| !NOTE_FIELDS.contains(&field.as_str()))
        .map(|field| FieldError::invalid_field(field))
        .collect();
    if !unknown.is_empty() {
        return validation_failed(unknown);
    }
    let mut errors = Vec::new();
    let mut note_body = None;
    let mut private = true;
    let mut incoming = false;
    let mut user_id = INTEGRATION_AGENT_ID;
    let mut notify_emails = Vec::new();
    match request.get("body") {
        // Wording assumed from Freshdesk's API v2 tests for notes.
        None => errors.push(FieldError::new(
            "body",
            "Mandatory attribute missing",
            "missing_field",
        )),
        Some(Value::String(text)) if text.trim().is_empty() => {
            errors.push(FieldError::blank("body"));
        }
        Some(Value::String(text)) => note_body = Some(text.clone()),
        Some(_) => errors.push(FieldError::datatype_mismatch("body", "String")),
    }
    for (field, value) in &request {
        match (field.as_str(), value) {
            ("body", _) => {}
            ("private", Value::Bool(flag)) => private = *flag,
            ("incoming", Value::Bool(flag)) => incoming = *flag,
            ("private" | "incoming", _) => {
                errors.push(FieldError::datatype_mismatch(field, "Boolean"));
            }
            ("user_id", _) => match positive_integer(field, value) {
                Ok(user) => user_id = user,
                Err(error) => errors.push(error),
            },
            ("notify_emails", _) => match value.as_array().and_then(|emails| {
                emails
                    .iter()
                    .map(|email| email.as_str().map(str::to_owned))
                    .collect::<Option<Vec<String>>>()
            }) {
                Some(emails) => notify_emails = emails,
                None => errors.push(FieldError::datatype_mismatch(field, "Array")),
            },
            _ => {}
        }
    }
    let Some(note_body) = note_body.filter(|_| errors.is_empty()) else {
        return validation_failed(errors);
    };
    let id = account.next_conversation_id;
    account.next_conversation_id += 1;
    let conversation = Conversation {
        id,
        body_text: html_text(&note_body),
        body: note_body,
        private,
        incoming,
        user_id,
        ticket_id,
        notify_emails,
        created_at: now_second(),
    };
    let rendered = render_conversation(&conversation, false);
    let ticket = account
        .tickets
        .get_mut(&ticket_id)
        .expect("the ticket was found above");
    ticket.conversations.push(conversation);
    ticket.updated_at = later_than(ticket.updated_at);
    let mut response = answer(StatusCode::CREATED, json!({"conversation": rendered}));
    let location = format!("{}/api/v2/conversations/{id}", base_url(&headers));
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

async fn list_conversations(
    State(sim): State<FreshserviceSim>,
    Path(id): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    let account = sim.account();
    let Some(ticket) = id.parse().ok().and_then(|id| account.tickets.get(&id)) else {
        return not_found();
    };
    let page = match Page::read(&params, &[]) {
        Ok(page) => page,
        Err(errors) => return validation_failed(errors),
    };
    let path = format!("/api/v2/tickets/{}/conversations", ticket.id);
    let rendered: Vec<Value> = ticket
        .conversations
        .iter()
        .map(|conversation| render_conversation(conversation, true))
        .collect();
    page.answer(
        "conversations",
        rendered,
        &base_url(&headers),
        &path,
        &params,
    )
}

async fn list_groups(
    State(sim): State<FreshserviceSim>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    // One workspace: `workspace_id` is taken and names it whatever it says.
    let page = match Page::read(&params, &["workspace_id"]) {
        Ok(page) => page,
        Err(errors) => return validation_failed(errors),
    };
    let rendered: Vec<Value> = sim.account().groups.values().map(render_group).collect();
    page.answer(
        "groups",
        rendered,
        &base_url(&headers),
        "/api/v2/groups",
        &params,
    )
}

async fn show_group(State(sim): State<FreshserviceSim>, Path(id): Path<String>) -> Response {
    let account = sim.account();
    match id.parse().ok().and_then(|id| account.groups.get(&id)) {
        Some(group) => answer(StatusCode::OK, json!({"group": render_group(group)})),
        None => not_found(),
    }
}

async fn show_requester(State(sim): State<FreshserviceSim>, Path(id): Path<String>) -> Response {
    let account = sim.account();
    match id.parse().ok().and_then(|id| account.requesters.get(&id)) {
        Some(requester) => answer(
            StatusCode::OK,
            json!({"requester": render_requester(requester)}),
        ),
        None => not_found(),
    }
}

async fn no_such_route() -> Response {
    not_found()
}

/// A page of a list, as `page` and `per_page` ask for it.
struct Page {
    number: usize,
    size: usize,
}

impl Page {
    /// Reads the pagination parameters; any other parameter but `allowed`
    /// is refused, as Freshservice refuses what a list does not filter by.
    fn read(params: &[(String, String)], allowed: &[&str]) -> Result<Page, Vec<FieldError>> {
        let mut page = Page {
            number: 1,
            size: DEFAULT_PER_PAGE,
        };
        let mut errors = Vec::new();
        for (name, value) in params {
            let number = value
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|number| *number > 0);
            match name.as_str() {
                // Wording of both assumed from Freshdesk's API v2.
                "page" => match number {
                    Some(number) => page.number = number,
                    None => errors.push(FieldError::new(
                        name,
                        "It should be a/an Positive Integer",
                        "invalid_value",
                    )),
                },
                "per_page" => match number.filter(|size| *size <= MAX_PER_PAGE) {
                    Some(size) => page.size = size,
                    None => errors.push(FieldError::new(
                        name,
                        "It should be a/an Positive Integer less than or equal to 100",
                        "invalid_value",
                    )),
                },
                other if allowed.contains(&other) => {}
                _ => errors.push(FieldError::invalid_field(name)),
            }
        }
        if errors.is_empty() {
            Ok(page)
        } else {
            Err(errors)
        }
    }

    /// The page's items under `key`, with a `Link` to the next page when
    /// there is one: the request's own query with the page moved on.
    fn answer(
        &self,
        key: &str,
        items: Vec<Value>,
        base: &str,
        path: &str,
        params: &[(String, String)],
    ) -> Response {
        let start = (self.number - 1).saturating_mul(self.size);
        let has_next = items.len() > start.saturating_add(self.size);
        let page: Vec<Value> = items.into_iter().skip(start).take(self.size).collect();
        let mut response = answer(StatusCode::OK, json!({ key: page }));
        if has_next {
            let next = (self.number + 1).to_string();
            let mut query: Vec<(String, String)> = params
                .iter()
                .map(|(name, value)| {
                    let value = if name == "page" { &next } else { value };
                    (name.clone(), value.clone())
                })
                .collect();
            if !query.iter().any(|(name, _)| name == "page") {
                query.push(("page".to_owned(), next));
            }
            let query = serde_urlencoded::to_string(&query).unwrap_or_default();
            let link = format!("<{base}{path}?{query}>; rel=\"next\"");
            if let Ok(link) = HeaderValue::from_str(&link) {
                response.headers_mut().insert(header::LINK, link);
            }
        }
        response
    }
}

/// One entry of the validation envelope's `errors`.
#[derive(Debug, Clone, PartialEq)]
struct FieldError {
    field: String,
    message: String,
    code: &'static str,
}

impl FieldError {
    fn new(field: &str, message: &str, code: &'static str) -> FieldError {
        FieldError {
            field: field.to_owned(),
            message: message.to_owned(),
            code,
        }
    }

    fn invalid_field(field: &str) -> FieldError {
        FieldError::new(field, INVALID_FIELD, "invalid_field")
    }

    fn not_included(field: &str, list: &str) -> FieldError {
        FieldError::new(
            field,
            &format!("It should be one of these values: '{list}'"),
            "invalid_value",
        )
    }

    /// Wording assumed from Freshdesk's API v2 (`absent_in_db`).
    fn absent(resource: &str, field: &str) -> FieldError {
        FieldError::new(
            field,
            &format!("There is no {resource} matching the given {field}"),
            "invalid_value",
        )
    }

    fn datatype_mismatch(field: &str, expected: &str) -> FieldError {
        FieldError::new(
            field,
            &format!("It should be a/an {expected}"),
            "datatype_mismatch",
        )
    }

    fn blank(field: &str) -> FieldError {
        FieldError::new(field, "It should not be blank", "invalid_value")
    }
}

fn one_of(field: &str, value: &Value, allowed: &[u64]) -> Result<u64, FieldError> {
    value
        .as_u64()
        .filter(|number| allowed.contains(number))
        .ok_or_else(|| {
            let list: Vec<String> = allowed.iter().map(u64::to_string).collect();
            FieldError::not_included(field, &list.join(","))
        })
}

fn positive_integer(field: &str, value: &Value) -> Result<u64, FieldError> {
    value
        .as_u64()
        .filter(|number| *number > 0)
        .ok_or_else(|| FieldError::datatype_mismatch(field, "Positive Integer"))
}

fn non_blank_string(field: &str, value: &Value) -> Result<String, FieldError> {
    match value {
        Value::String(text) if text.trim().is_empty() => Err(FieldError::blank(field)),
        Value::String(text) => Ok(text.clone()),
        _ => Err(FieldError::datatype_mismatch(field, "String")),
    }
}

fn optional_string(field: &str, value: &Value) -> Result<Option<String>, FieldError> {
    match value {
        Value::Null => Ok(None),
        Value::String(text) => Ok(Some(text.clone())),
        _ => Err(FieldError::datatype_mismatch(field, "String")),
    }
}

/// A body that is not a JSON object.
struct NotJson;

/// The request's JSON object, or `None` for an empty body.
fn request_object(body: &Bytes) -> Result<Option<Map<String, Value>>, NotJson> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => Ok(Some(object)),
        _ => Err(NotJson),
    }
}

/// Freshservice's refusal of a body that is not a JSON object. The wording
/// is Freshdesk's API v2's, whose codes Freshservice's reference lists.
fn invalid_json() -> Response {
    request_error(
        StatusCode::BAD_REQUEST,
        "invalid_json",
        "Request body has invalid json format",
    )
}

/// A JSON answer with Freshservice's Content-Type.
fn answer(status: StatusCode, body: Value) -> Response {
    let mut response = json_answer(status, body);
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    response
}

/// A refusal of the request as a whole: `{"code", "message"}`.
fn request_error(status: StatusCode, code: &str, message: &str) -> Response {
    answer(status, json!({"code": code, "message": message}))
}

fn validation_failed(errors: Vec<FieldError>) -> Response {
    let errors: Vec<Value> = errors
        .into_iter()
        .map(|error| json!({"field": error.field, "message": error.message, "code": error.code}))
        .collect();
    answer(
        StatusCode::BAD_REQUEST,
        json!({"description": VALIDATION_FAILED, "errors": errors}),
    )
}

/// Freshservice answers a missing record with a bare 404.
fn not_found() -> Response {
    let mut response = StatusCode::NOT_FOUND.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    response
}

fn failed(failure: Failure) -> Response {
    match failure {
        Failure::RateLimited {
            retry_after_seconds,
        } => rate_limited(retry_after_seconds),
        Failure::Unavailable => unavailable_page(),
    }
}

/// Freshservice's 429: `Retry-After` and a message, without the rate-limit
/// headers. The wording is Freshdesk's throttler's, for a minute-level
/// limit (assumed).
fn rate_limited(retry_after_seconds: u64) -> Response {
    Response::builder()
        .status(StatusCode::TOO_MANY_REQUESTS)
        .header(header::RETRY_AFTER, retry_after_seconds)
        .header(header::CONTENT_TYPE, JSON)
        .body(Body::from(
            json!({"message": "You have exceeded the limit of requests per minute"}).to_string(),
        ))
        .expect("a rate-limit response builds")
}

fn unavailable_page() -> Response {
    let page = "<html><head><title>503 Service Temporarily Unavailable</title></head><body>\
                <center><h1>503 Service Temporarily Unavailable</h1></center></body></html>";
    Response::builder()
        .status(StatusCode::SERVICE_UNAVAILABLE)
        .header(header::CONTENT_TYPE, "text/html")
        .body(Body::from(page))
        .expect("a static response builds")
}

/// HTML as the text a reader sees: tags dropped, `<br>` as a line break,
/// entities decoded, the ends trimmed.
fn html_text(html: &str) -> String {
    let mut text = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(open) = rest.find('<') {
        text.push_str(&rest[..open]);
        let tag = &rest[open + 1..];
        let Some(close) = tag.find('>') else {
            // A `<` that opens no tag is text.
            text.push_str(&rest[open..]);
            rest = "";
            break;
        };
        let name: String = tag[..close]
            .trim_start_matches('/')
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect();
        if name.eq_ignore_ascii_case("br") {
            text.push('\n');
        }
        rest = &tag[close + 1..];
    }
    text.push_str(rest);
    decode_entities(&text).trim().to_owned()
}

fn decode_entities(text: &str) -> String {
    let mut decoded = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(ampersand) = rest.find('&') {
        decoded.push_str(&rest[..ampersand]);
        let after = &rest[ampersand + 1..];
        let entity = after
            .find(';')
            .filter(|end| *end <= 10)
            .and_then(|end| entity_char(&after[..end]).map(|found| (found, end)));
        match entity {
            Some((found, end)) => {
                decoded.push(found);
                rest = &after[end + 1..];
            }
            None => {
                decoded.push('&');
                rest = after;
            }
        }
    }
    decoded.push_str(rest);
    decoded
}

fn entity_char(name: &str) -> Option<char> {
    match name {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        "nbsp" => Some(' '),
        _ => {
            let number = name.strip_prefix('#')?;
            let code = match number.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => number.parse().ok()?,
            };
            char::from_u32(code)
        }
    }
}

/// Text as the HTML a ticket's description holds.
fn text_html(text: &str) -> String {
    let escaped = text
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\n', "<br>");
    format!("<div>{escaped}</div>")
}

fn now_second() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// The time of a write that follows one at `previous`: now, or a second
/// later when now is still that second.
fn later_than(previous: i64) -> i64 {
    now_second().max(previous + 1)
}

/// Timestamps as Freshservice shows them: `2026-11-20T10:00:00Z`.
fn stamp(second: i64) -> String {
    jiff::Timestamp::from_second(second)
        .expect("a timestamp within range")
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const KEY: &str = "Kf93hQ2xLm0pR7vT1zYa";

    struct Answer {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Answer {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(found, _)| found.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.as_str())
        }

        fn json(&self) -> Value {
            serde_json::from_str(&self.body)
                .unwrap_or_else(|error| panic!("not JSON ({error}): {:?}", self.body))
        }
    }

    fn basic(user: &str) -> String {
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:X"));
        format!("Basic {encoded}")
    }

    /// One HTTP/1.1 exchange over a fresh connection, so the tests need no
    /// HTTP client crate.
    async fn exchange(
        url: &str,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Answer {
        let address = url.strip_prefix("http://").expect("an http URL");
        let mut stream = tokio::net::TcpStream::connect(address)
            .await
            .expect("the simulator listens");
        let mut request =
            format!("{method} {target} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(body) = body {
            request.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        request.push_str("\r\n");
        request.push_str(body.unwrap_or_default());
        stream
            .write_all(request.as_bytes())
            .await
            .expect("the request is sent");
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .await
            .expect("the answer is read");
        let raw = String::from_utf8(raw).expect("a UTF-8 answer");
        let (head, body) = raw.split_once("\r\n\r\n").expect("a head and a body");
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .and_then(|code| code.parse().ok())
            .expect("a status line");
        let headers = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
            .collect();
        Answer {
            status,
            headers,
            body: body.to_owned(),
        }
    }

    async fn get(url: &str, target: &str) -> Answer {
        let auth = basic(KEY);
        exchange(url, "GET", target, &[("Authorization", &auth)], None).await
    }

    async fn send(url: &str, method: &str, target: &str, body: &str) -> Answer {
        let auth = basic(KEY);
        let headers = [
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
        ];
        exchange(url, method, target, &headers, Some(body)).await
    }

    #[tokio::test]
    async fn credentials_are_the_api_key_as_user_name() {
        let sim = FreshserviceSim::new(KEY);
        let ticket = sim.seed_ticket(NewTicket::incident("VPN down"));
        let running = sim.start().await.unwrap();
        let target = format!("/api/v2/tickets/{ticket}");
        let refused = json!({
            "code": "invalid_credentials",
            "message": "You have to be logged in to perform this action.",
        });

        let missing = exchange(&running.url, "GET", &target, &[], None).await;
        assert_eq!(missing.status, 401);
        assert_eq!(missing.json(), refused);
        let wrong = basic("not-the-key");
        let wrong = exchange(
            &running.url,
            "GET",
            &target,
            &[("Authorization", &wrong)],
            None,
        )
        .await;
        assert_eq!(wrong.status, 401);
        assert_eq!(wrong.json(), refused);

        let fine = get(&running.url, &target).await;
        assert_eq!(fine.status, 200);
        assert_eq!(fine.header("content-type"), Some(JSON));
        assert_eq!(fine.header("x-ratelimit-total"), Some("500"));
        assert_eq!(fine.header("x-ratelimit-remaining"), Some("497"));
        assert_eq!(fine.header("x-ratelimit-used-currentrequest"), Some("1"));
    }

    #[tokio::test]
    async fn a_ticket_reads_as_freshservice_shows_it() {
        let sim = FreshserviceSim::new(KEY);
        let network = sim.add_group("Network");
        let requester = sim.add_requester("Ana", "ana@example.com");
        let mut new = NewTicket::incident("VPN down");
        new.group_id = Some(network);
        new.requester_id = Some(requester);
        new.tags = vec!["vpn".into()];
        new.custom_fields
            .insert("runbook".into(), json!("vpn-restart"));
        let ticket = sim.seed_ticket(new);
        let other = sim.seed_ticket(NewTicket::incident("Printer jam"));
        let running = sim.start().await.unwrap();

        assert_eq!((ticket, network, requester), (1001, 7_000_001, 9_000_001));
        let read = get(&running.url, &format!("/api/v2/tickets/{ticket}")).await;
        assert_eq!(read.status, 200);
        let shown = &read.json()["ticket"];
        assert_eq!(shown["id"], 1001);
        assert_eq!(shown["status"], 2);
        assert_eq!(shown["priority"], 2);
        assert_eq!(shown["type"], "Incident");
        assert_eq!(shown["group_id"], network);
        assert_eq!(shown["requester_id"], requester);
        assert_eq!(shown["responder_id"], Value::Null);
        assert_eq!(
            shown["description_text"],
            "VPN down\nReported through the service portal."
        );
        assert_eq!(shown["custom_fields"], json!({"runbook": "vpn-restart"}));
        assert!(shown.get("tags").is_none(), "tags only on request: {shown}");
        let created = shown["created_at"].as_str().unwrap();
        assert!(created.len() == 20 && created.ends_with('Z'), "{created}");
        // Another ticket shows the account's custom field, blank.
        let other = get(&running.url, &format!("/api/v2/tickets/{other}")).await;
        assert_eq!(
            other.json()["ticket"]["custom_fields"],
            json!({"runbook": null})
        );

        let included = get(
            &running.url,
            &format!("/api/v2/tickets/{ticket}?include=tags,requester"),
        )
        .await;
        assert_eq!(included.json()["ticket"]["tags"], json!(["vpn"]));
        assert_eq!(
            included.json()["ticket"]["requester"]["email"],
            "ana@example.com"
        );
        assert_eq!(
            included.header("x-ratelimit-used-currentrequest"),
            Some("3")
        );

        let missing = get(&running.url, "/api/v2/tickets/7000001").await;
        assert_eq!(missing.status, 404);
        assert_eq!(missing.body, "");
        let group = get(&running.url, &format!("/api/v2/groups/{network}")).await;
        assert_eq!(group.json()["group"]["name"], "Network");
        let person = get(&running.url, &format!("/api/v2/requesters/{requester}")).await;
        assert_eq!(
            person.json()["requester"]["primary_email"],
            "ana@example.com"
        );
        assert_eq!(
            get(&running.url, &format!("/api/v2/requesters/{ticket}"))
                .await
                .status,
            404
        );
    }

    #[tokio::test]
    async fn updates_are_validated_as_freshservice_validates_them() {
        let sim = FreshserviceSim::new(KEY);
        let network = sim.add_group("Network");
        let mut new = NewTicket::incident("VPN down");
        new.custom_fields.insert("runbook".into(), Value::Null);
        let ticket = sim.seed_ticket(new);
        let running = sim.start().await.unwrap();
        let target = format!("/api/v2/tickets/{ticket}");

        // Unknown fields are named alone, before any value is looked at.
        let typo = send(
            &running.url,
            "PUT",
            &target,
            r#"{"stauts": 4, "status": 9, "custom_fields": {"runbok": "vpn"}}"#,
        )
        .await;
        assert_eq!(typo.status, 400);
        let unknown = |field: &str| {
            json!({
                "field": field,
                "message": "Unexpected/invalid field in request",
                "code": "invalid_field",
            })
        };
        assert_eq!(
            typo.json(),
            json!({"description": "Validation failed", "errors": [unknown("runbok"), unknown("stauts")]})
        );
        let values = send(
            &running.url,
            "PUT",
            &target,
            r#"{"status": 9, "priority": "4", "group_id": 1001}"#,
        )
        .await;
        assert_eq!(values.status, 400);
        assert_eq!(
            values.json()["errors"],
            json!([
                {"field": "group_id", "message": "There is no group matching the given group_id", "code": "invalid_value"},
                {"field": "priority", "message": "It should be one of these values: '1,2,3,4'", "code": "invalid_value"},
                {"field": "status", "message": "It should be one of these values: '2,3,4,5'", "code": "invalid_value"},
            ])
        );
        let garbled = send(&running.url, "PUT", &target, "status=4").await;
        assert_eq!(garbled.status, 400);
        assert_eq!(garbled.json()["code"], "invalid_json");
        let empty = send(&running.url, "PUT", &target, "{}").await;
        assert_eq!(empty.json()["code"], "missing_params");
        let auth = basic(KEY);
        let form = exchange(
            &running.url,
            "PUT",
            &target,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            Some("status=4"),
        )
        .await;
        assert_eq!(form.status, 415);
        assert_eq!(
            sim.status(ticket),
            Some(2),
            "a refused update changes nothing"
        );
        let before = sim.ticket(ticket).unwrap()["updated_at"].clone();

        let done = send(
            &running.url,
            "PUT",
            &target,
            &format!(
                r#"{{"status": 4, "group_id": {network}, "tags": ["opsgate"], "custom_fields": {{"runbook": "vpn"}}}}"#
            ),
        )
        .await;
        assert_eq!(done.status, 200);
        let shown = &done.json()["ticket"];
        assert_eq!(
            (shown["status"].clone(), shown["group_id"].clone()),
            (json!(4), json!(network))
        );
        assert_eq!(shown["tags"], json!(["opsgate"]));
        assert_eq!(shown["custom_fields"], json!({"runbook": "vpn"}));
        assert_ne!(shown["updated_at"], before);
        assert_eq!(
            (sim.status(ticket), sim.group_id(ticket)),
            (Some(4), Some(network))
        );
        let missing = send(&running.url, "PUT", "/api/v2/tickets/1", r#"{"status": 4}"#).await;
        assert_eq!(missing.status, 404);
        assert!(
            sim.calls()
                .contains(&format!("PUT /api/v2/tickets/{ticket}"))
        );
    }

    #[tokio::test]
    async fn notes_and_pages_of_conversations() {
        let sim = FreshserviceSim::new(KEY);
        let ticket = sim.seed_ticket(NewTicket::incident("VPN down"));
        for n in 1..=4 {
            sim.seed_note(ticket, &format!("<p>check {n}</p>"), true);
        }
        let running = sim.start().await.unwrap();
        let notes = format!("/api/v2/tickets/{ticket}/notes");

        let body = r#"{"body": "<div>Restarted vpnagent<br/>[opsgate run 7] &amp; done</div>"}"#;
        let created = send(&running.url, "POST", &notes, body).await;
        assert_eq!(created.status, 201);
        let note = &created.json()["conversation"];
        assert_eq!(
            note["body_text"],
            "Restarted vpnagent\n[opsgate run 7] & done"
        );
        assert_eq!(note["private"], true);
        assert_eq!(note["incoming"], false);
        assert_eq!(note["user_id"], INTEGRATION_AGENT_ID);
        assert_eq!(note["ticket_id"], ticket);
        let stored = sim.notes(ticket).pop().unwrap();
        assert!(stored.body.starts_with("<div>Restarted") && stored.private);

        let missing = send(&running.url, "POST", &notes, r#"{"private": false}"#).await;
        assert_eq!(missing.status, 400);
        assert_eq!(
            missing.json()["errors"],
            json!([{"field": "body", "message": "Mandatory attribute missing", "code": "missing_field"}])
        );
        let blank = send(&running.url, "POST", &notes, r#"{"body": " "}"#).await;
        assert_eq!(blank.json()["errors"][0]["code"], "invalid_value");
        assert_eq!(sim.notes(ticket).len(), 5);

        let conversations = format!("/api/v2/tickets/{ticket}/conversations");
        let first = get(&running.url, &format!("{conversations}?per_page=2")).await;
        let texts = |answer: &Answer| -> Vec<String> {
            answer.json()["conversations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|conversation| conversation["body_text"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(texts(&first), ["check 1", "check 2"]);
        let next = format!(
            "<{}{conversations}?per_page=2&page=2>; rel=\"next\"",
            running.url
        );
        assert_eq!(first.header("link"), Some(next.as_str()));
        let last = get(&running.url, &format!("{conversations}?per_page=2&page=3")).await;
        assert_eq!(texts(&last), ["Restarted vpnagent\n[opsgate run 7] & done"]);
        assert_eq!(last.header("link"), None);
        let too_big = get(&running.url, &format!("{conversations}?per_page=101")).await;
        assert_eq!(too_big.status, 400);
        assert_eq!(too_big.json()["errors"][0]["field"], "per_page");
    }

    #[tokio::test]
    async fn groups_come_in_pages() {
        let sim = FreshserviceSim::new(KEY);
        for name in ["Network", "Desktop", "Identity"] {
            sim.add_group(name);
        }
        let running = sim.start().await.unwrap();
        let first = get(&running.url, "/api/v2/groups?page=1&per_page=2").await;
        assert_eq!(first.json()["groups"][1]["name"], "Desktop");
        let next = format!(
            "<{}/api/v2/groups?page=2&per_page=2>; rel=\"next\"",
            running.url
        );
        assert_eq!(first.header("link"), Some(next.as_str()));
        let second = get(&running.url, "/api/v2/groups?page=2&per_page=2").await;
        assert_eq!(
            second.json()["groups"],
            json!([render_group(&sim.account().groups[&7_000_003])])
        );
        assert_eq!(second.header("link"), None);
    }

    #[tokio::test]
    async fn rate_limits_and_outages() {
        let sim = FreshserviceSim::new(KEY);
        let ticket = sim.seed_ticket(NewTicket::incident("VPN down"));
        let running = sim.start().await.unwrap();
        let target = format!("/api/v2/tickets/{ticket}");

        sim.fail_next(
            1,
            Failure::RateLimited {
                retry_after_seconds: 17,
            },
        );
        let limited = get(&running.url, &target).await;
        assert_eq!(limited.status, 429);
        assert_eq!(limited.header("retry-after"), Some("17"));
        assert_eq!(limited.header("x-ratelimit-remaining"), None);
        assert_eq!(
            limited.json(),
            json!({"message": "You have exceeded the limit of requests per minute"})
        );
        assert_eq!(get(&running.url, &target).await.status, 200);

        sim.fail_next(1, Failure::Unavailable);
        let unavailable = get(&running.url, &target).await;
        assert_eq!(unavailable.status, 503);
        assert!(
            unavailable
                .body
                .contains("503 Service Temporarily Unavailable")
        );
        sim.down(true);
        assert_eq!(get(&running.url, &target).await.status, 503);
        sim.down(false);

        sim.rate_limit_per_minute(2);
        assert_eq!(
            get(&running.url, &target)
                .await
                .header("x-ratelimit-remaining"),
            Some("1")
        );
        assert_eq!(
            get(&running.url, &target)
                .await
                .header("x-ratelimit-remaining"),
            Some("0")
        );
        let spent = get(&running.url, &target).await;
        assert_eq!(spent.status, 429);
        let wait: u64 = spent.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&wait), "{wait}");
        assert_eq!(sim.calls().len(), 7);
    }

    #[test]
    fn html_as_the_text_a_reader_sees() {
        assert_eq!(html_text("<p>a<br>b<BR />c</p>"), "a\nb\nc");
        assert_eq!(
            html_text("x &lt;b&gt; &amp;amp; &#39;y&#x27; &bogus; 1 < 2"),
            "x <b> &amp; 'y' &bogus; 1 < 2"
        );
        assert_eq!(html_text(&text_html("a <b>\nc")), "a <b>\nc");
    }
}
