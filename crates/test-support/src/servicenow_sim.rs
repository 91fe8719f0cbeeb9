//! A local ServiceNow instance: the Table API on `incident` and
//! `sys_journal_field`, Basic and OAuth authentication, and the unhappy
//! paths a write-back has to survive.
//!
//! It speaks the wire format of a real instance — `{"result": …}` answers,
//! `X-Total-Count` and `Link` on lists, reference fields as `{link, value}`,
//! `sysparm_display_value=false|true|all`, the `{"error": {"message",
//! "detail"}, "status": "failure"}` envelope — so that a client which passes
//! its contract tests here passes them against an instance. Records are
//! string maps checked against a small schema per table, which keeps one
//! query engine and one renderer for every table.
//!
//! Where it is stricter than a real instance, it says so: an encoded query
//! it cannot evaluate (`^OR`, `ORDERBY`, dot-walking) gets a 400 naming the
//! part, and an unknown `state` value is refused with a 400 (an instance
//! would store it), so a typo fails a test instead of passing silently.
//!
//! `down(true)` answers every request, the token endpoint included, with a
//! 503 and an HTML page, as an instance does behind its load balancer during
//! an outage or an upgrade: the connection works but the answer is not
//! ServiceNow's JSON. A refused connection needs no simulator: point the
//! client at a port nothing listens on.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use crate::{base_url, json_answer};

/// Who the records a test seeds (or changes with `set_field`) were last
/// updated by: the instance's administrator, as on a fresh instance.
pub const SEEDED_BY: &str = "admin";

/// A record: field name → database value, as ServiceNow stores it.
pub type Record = BTreeMap<String, String>;

/// The integration account and the OAuth client registered on the instance.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    pub client_id: String,
    pub client_secret: String,
}

impl Default for Credentials {
    fn default() -> Self {
        Credentials {
            username: "opsgate.integration".into(),
            password: "integration-password-7Q2x".into(),
            client_id: "3f6c1b0e9a7d4c2b8e5f1a0d7c6b5a49".into(),
            client_secret: "client-secret-Vw9k".into(),
        }
    }
}

/// An incident to seed. References are given by name (`"Network"`); the
/// referenced record is created on first use.
#[derive(Debug, Clone, Default)]
pub struct NewIncident {
    /// The next in sequence (`INC0010001`, …) when `None`.
    pub number: Option<String>,
    pub short_description: String,
    /// `"1"` (New) when empty.
    pub state: String,
    pub assignment_group: Option<String>,
    pub cmdb_ci: Option<String>,
    pub caller_id: Option<String>,
}

/// A seeded incident.
#[derive(Debug, Clone)]
pub struct Seeded {
    pub sys_id: String,
    pub number: String,
}

/// The simulated instance, shared with its server.
#[derive(Debug, Clone)]
pub struct ServiceNowSim {
    instance: Arc<Mutex<Instance>>,
}

/// How long an access token lives, as an instance's default application
/// registry entry sets it (30 minutes, answered as 1799 seconds).
const ACCESS_TOKEN_LIFESPAN_SECS: u64 = 1799;

#[derive(Debug)]
struct Instance {
    credentials: Credentials,
    tables: BTreeMap<&'static str, Vec<Record>>,
    access_tokens: Vec<AccessToken>,
    refresh_tokens: Vec<RefreshToken>,
    /// The `grant_type` of every token request, in order.
    token_grants: Vec<String>,
    down: bool,
    /// Tokens issued while set are refused at once.
    issue_expired_tokens: bool,
    rate_limited_requests: u32,
    retry_after_secs: u64,
    /// Every request, as "METHOD path".
    calls: Vec<String>,
    minted: u64,
    incidents_numbered: u32,
}

#[derive(Debug)]
struct AccessToken {
    token: String,
    refresh_token: String,
    expired: bool,
}

#[derive(Debug)]
struct RefreshToken {
    token: String,
    revoked: bool,
}

/// The authenticated user of an API request.
#[derive(Debug, Clone)]
struct User(String);

impl ServiceNowSim {
    pub fn new(credentials: Credentials) -> ServiceNowSim {
        let tables = TABLES.iter().map(|(name, _)| (*name, Vec::new())).collect();
        ServiceNowSim {
            instance: Arc::new(Mutex::new(Instance {
                credentials,
                tables,
                access_tokens: Vec::new(),
                refresh_tokens: Vec::new(),
                token_grants: Vec::new(),
                down: false,
                issue_expired_tokens: false,
                rate_limited_requests: 0,
                retry_after_secs: 0,
                calls: Vec::new(),
                minted: 0,
                incidents_numbered: 10_000,
            })),
        }
    }

    fn instance(&self) -> std::sync::MutexGuard<'_, Instance> {
        self.instance.lock().expect("ServiceNow simulator lock")
    }

    pub fn router(&self) -> axum::Router {
        axum::Router::new()
            .route("/oauth_token.do", post(issue_token))
            .route("/api/now/table/{table}", get(list_records))
            .route(
                "/api/now/table/{table}/{sys_id}",
                get(show_record).patch(update_record).put(update_record),
            )
            .fallback(no_such_resource)
            .layer(axum::middleware::from_fn_with_state(self.clone(), gate))
            .with_state(self.clone())
    }

    /// Starts the simulator on a free loopback port.
    pub async fn start(&self) -> std::io::Result<crate::Running> {
        crate::serve(self.router()).await
    }

    /// Adds an incident; its references, given by name, are created on
    /// first use.
    pub fn seed_incident(&self, incident: NewIncident) -> Seeded {
        let (number, references) = {
            let mut instance = self.instance();
            instance.incidents_numbered += 1;
            let number = incident
                .number
                .unwrap_or_else(|| format!("INC{:07}", instance.incidents_numbered));
            let references: Vec<(&str, String)> = [
                (
                    "assignment_group",
                    "sys_user_group",
                    incident.assignment_group,
                ),
                ("cmdb_ci", "cmdb_ci", incident.cmdb_ci),
                ("caller_id", "sys_user", incident.caller_id),
            ]
            .into_iter()
            .filter_map(|(field, table, name)| {
                name.map(|name| (field, instance.named_record(table, &name)))
            })
            .collect();
            (number, references)
        };
        let state = if incident.state.is_empty() {
            "1"
        } else {
            &incident.state
        };
        let mut fields = vec![
            ("number", number.as_str()),
            ("short_description", &incident.short_description),
            ("state", state),
        ];
        fields.extend(
            references
                .iter()
                .map(|(field, sys_id)| (*field, sys_id.as_str())),
        );
        let sys_id = self.seed_record("incident", &fields);
        Seeded { sys_id, number }
    }

    /// Adds a record to `table` with `fields` (database values: a reference
    /// is a sys_id) and returns its sys_id. Fields the table does not have
    /// are refused, as a typo in a test should be.
    pub fn seed_record(&self, table: &str, fields: &[(&str, &str)]) -> String {
        let schema = schema(table).unwrap_or_else(|| panic!("the simulator has no table {table}"));
        let mut instance = self.instance();
        let sys_id = instance.mint();
        let now = now();
        let mut record = Record::new();
        for (field, kind) in schema {
            if !matches!(kind, Kind::Journal) {
                record.insert(field.to_string(), String::new());
            }
        }
        for (field, value) in [
            ("sys_id", sys_id.as_str()),
            ("sys_created_on", &now),
            ("sys_updated_on", &now),
            ("sys_updated_by", SEEDED_BY),
            ("sys_mod_count", "0"),
        ] {
            if record.contains_key(field) {
                record.insert(field.to_owned(), value.to_owned());
            }
        }
        for (field, value) in fields {
            assert!(
                record.contains_key(*field),
                "{table} has no field {field} in the simulator"
            );
            record.insert((*field).to_owned(), (*value).to_owned());
        }
        let table = TABLES
            .iter()
            .map(|(name, _)| *name)
            .find(|name| *name == table)
            .expect("the schema was found above");
        instance.table_mut(table).push(record);
        sys_id
    }

    /// Sets a field of a record, as a person on the instance would.
    pub fn set_field(&self, table: &str, sys_id: &str, field: &str, value: &str) {
        self.set_field_as(SEEDED_BY, table, sys_id, field, value);
    }

    /// Sets a field of a record as `user` (a user name): the record's
    /// `sys_updated_by` names them, as a business rule reads it.
    pub fn set_field_as(&self, user: &str, table: &str, sys_id: &str, field: &str, value: &str) {
        let mut instance = self.instance();
        let record = instance
            .tables
            .get_mut(table)
            .and_then(|records| records.iter_mut().find(|record| record["sys_id"] == sys_id))
            .unwrap_or_else(|| panic!("no {table} {sys_id} in the simulator"));
        assert!(record.contains_key(field), "{table} has no field {field}");
        record.insert(field.to_owned(), value.to_owned());
        if record.contains_key("sys_updated_by") {
            record.insert("sys_updated_by".to_owned(), user.to_owned());
        }
    }

    /// A record of `table` by its sys_id, with its database values.
    pub fn record(&self, table: &str, sys_id: &str) -> Option<Record> {
        self.instance().find(table, sys_id).cloned()
    }

    /// The journal entries of `element` (`work_notes`, `comments`) on the
    /// record `sys_id`, oldest first.
    pub fn journal_of(&self, sys_id: &str, element: &str) -> Vec<String> {
        self.instance()
            .table("sys_journal_field")
            .iter()
            .filter(|row| row["element_id"] == sys_id && row["element"] == element)
            .map(|row| row["value"].clone())
            .collect()
    }

    /// The incident's database values (`work_notes` is not among them: it
    /// lives in the journal).
    pub fn incident(&self, sys_id: &str) -> Option<Record> {
        self.record("incident", sys_id)
    }

    /// The `sys_journal_field` rows, oldest first.
    pub fn journal(&self) -> Vec<Record> {
        self.instance().table("sys_journal_field").to_vec()
    }

    /// The text of the incident's work notes, oldest first.
    pub fn work_notes(&self, incident_sys_id: &str) -> Vec<String> {
        self.journal_of(incident_sys_id, "work_notes")
    }

    /// Every request so far, as "METHOD path".
    pub fn calls(&self) -> Vec<String> {
        self.instance().calls.clone()
    }

    /// The `grant_type` of every token request so far, refused ones included.
    pub fn token_grants(&self) -> Vec<String> {
        self.instance().token_grants.clone()
    }

    /// While down, every request gets a 503 with an HTML page.
    pub fn down(&self, down: bool) {
        self.instance().down = down;
    }

    /// The next `requests` authenticated API requests get a 429 with
    /// `Retry-After: retry_after_secs`.
    pub fn rate_limit_next(&self, requests: u32, retry_after_secs: u64) {
        let mut instance = self.instance();
        instance.rate_limited_requests = requests;
        instance.retry_after_secs = retry_after_secs;
    }

    /// Every access token issued so far stops working (refresh tokens still do).
    pub fn expire_access_tokens(&self) {
        for token in &mut self.instance().access_tokens {
            token.expired = true;
        }
    }

    /// While set, every access token issued is refused at once, as when the
    /// instance revokes it between the token request and the call (the
    /// integration user was locked out, say).
    pub fn issue_expired_tokens(&self, expired: bool) {
        self.instance().issue_expired_tokens = expired;
    }

    /// Every access and refresh token issued so far, to prove none leaks.
    pub fn issued_tokens(&self) -> Vec<String> {
        let instance = self.instance();
        let access = instance
            .access_tokens
            .iter()
            .map(|issued| issued.token.clone());
        let refresh = instance
            .refresh_tokens
            .iter()
            .map(|issued| issued.token.clone());
        access.chain(refresh).collect()
    }

    /// Every refresh token issued so far is refused from now on.
    pub fn revoke_refresh_tokens(&self) {
        for token in &mut self.instance().refresh_tokens {
            token.revoked = true;
        }
    }
}

impl Instance {
    /// A new sys_id or token: 32 hex digits, distinct within the instance.
    fn mint(&mut self) -> String {
        self.minted += 1;
        let high = crate::splitmix64(self.minted);
        let low = crate::splitmix64(high ^ self.minted);
        format!("{high:016x}{low:016x}")
    }

    fn table(&self, table: &str) -> &[Record] {
        self.tables.get(table).map_or(&[], Vec::as_slice)
    }

    fn table_mut(&mut self, table: &'static str) -> &mut Vec<Record> {
        self.tables
            .get_mut(table)
            .expect("every schema table exists")
    }

    fn find(&self, table: &str, sys_id: &str) -> Option<&Record> {
        self.table(table)
            .iter()
            .find(|record| record["sys_id"] == sys_id)
    }

    /// The sys_id of the record of `table` named `name`, created if needed.
    fn named_record(&mut self, table: &'static str, name: &str) -> String {
        if let Some(found) = self
            .table(table)
            .iter()
            .find(|record| record["name"] == name)
        {
            return found["sys_id"].clone();
        }
        let sys_id = self.mint();
        let record = Record::from([
            ("sys_id".to_owned(), sys_id.clone()),
            ("name".to_owned(), name.to_owned()),
        ]);
        self.table_mut(table).push(record);
        sys_id
    }

    fn authenticate(&self, headers: &HeaderMap) -> Option<User> {
        let authorization = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, credentials) = authorization.split_once(' ')?;
        if scheme.eq_ignore_ascii_case("basic") {
            let (username, password) = crate::decode_basic(credentials)?;
            let known = &self.credentials;
            (username == known.username && password == known.password)
                .then(|| User(username.to_owned()))
        } else if scheme.eq_ignore_ascii_case("bearer") {
            self.access_tokens
                .iter()
                .any(|issued| issued.token == credentials.trim() && !issued.expired)
                .then(|| User(self.credentials.username.clone()))
        } else {
            None
        }
    }
}

/// What a field holds, which decides how it is rendered and written.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Text,
    Choice(&'static [(&'static str, &'static str)]),
    /// A sys_id of a record of the named table.
    Reference(&'static str),
    /// Write-only: a write appends a `sys_journal_field` row.
    Journal,
}

const INCIDENT_STATES: &[(&str, &str)] = &[
    ("1", "New"),
    ("2", "In Progress"),
    ("3", "On Hold"),
    ("6", "Resolved"),
    ("7", "Closed"),
    ("8", "Canceled"),
];

const NAMED: &[(&str, Kind)] = &[("sys_id", Kind::Text), ("name", Kind::Text)];

const REQUEST_ITEM_STATES: &[(&str, &str)] = &[
    ("1", "Open"),
    ("2", "Work in Progress"),
    ("3", "Closed Complete"),
    ("4", "Closed Incomplete"),
    ("7", "Closed Skipped"),
];

const APPROVALS: &[(&str, &str)] = &[
    ("not requested", "Not Yet Requested"),
    ("requested", "Requested"),
    ("approved", "Approved"),
    ("rejected", "Rejected"),
    ("cancelled", "Cancelled"),
    ("not_required", "No Longer Required"),
];

/// The tables the integration user may write to; others refuse as an ACL
/// would.
const WRITABLE: &[&str] = &["incident", "sc_req_item", "sysapproval_approver"];

const TABLES: &[(&str, &[(&str, Kind)])] = &[
    (
        "incident",
        &[
            ("sys_id", Kind::Text),
            ("number", Kind::Text),
            ("short_description", Kind::Text),
            ("state", Kind::Choice(INCIDENT_STATES)),
            ("close_code", Kind::Text),
            ("close_notes", Kind::Text),
            ("resolved_by", Kind::Reference("sys_user")),
            ("resolved_at", Kind::Text),
            ("description", Kind::Text),
            ("category", Kind::Text),
            ("priority", Kind::Text),
            ("assignment_group", Kind::Reference("sys_user_group")),
            ("assigned_to", Kind::Reference("sys_user")),
            ("cmdb_ci", Kind::Reference("cmdb_ci")),
            ("caller_id", Kind::Reference("sys_user")),
            ("work_notes", Kind::Journal),
            ("sys_created_on", Kind::Text),
            ("sys_updated_on", Kind::Text),
            ("sys_updated_by", Kind::Text),
            ("sys_mod_count", Kind::Text),
        ],
    ),
    (
        "sc_req_item",
        &[
            ("sys_id", Kind::Text),
            ("number", Kind::Text),
            ("short_description", Kind::Text),
            ("state", Kind::Choice(REQUEST_ITEM_STATES)),
            ("approval", Kind::Choice(APPROVALS)),
            ("requested_for", Kind::Reference("sys_user")),
            ("assignment_group", Kind::Reference("sys_user_group")),
            ("cmdb_ci", Kind::Reference("cmdb_ci")),
            ("close_notes", Kind::Text),
            ("work_notes", Kind::Journal),
            ("sys_created_on", Kind::Text),
            ("sys_updated_on", Kind::Text),
            ("sys_updated_by", Kind::Text),
            ("sys_mod_count", Kind::Text),
        ],
    ),
    (
        "sysapproval_approver",
        &[
            ("sys_id", Kind::Text),
            ("approver", Kind::Reference("sys_user")),
            ("sysapproval", Kind::Reference("sc_req_item")),
            ("state", Kind::Choice(APPROVALS)),
            ("comments", Kind::Journal),
            ("sys_created_on", Kind::Text),
            ("sys_updated_on", Kind::Text),
            ("sys_mod_count", Kind::Text),
        ],
    ),
    (
        "sys_journal_field",
        &[
            ("sys_id", Kind::Text),
            ("element_id", Kind::Text),
            ("element", Kind::Text),
            ("name", Kind::Text),
            ("value", Kind::Text),
            ("sys_created_on", Kind::Text),
            ("sys_created_by", Kind::Text),
        ],
    ),
    ("sys_user_group", NAMED),
    (
        "sys_user",
        &[
            ("sys_id", Kind::Text),
            ("name", Kind::Text),
            ("user_name", Kind::Text),
            ("email", Kind::Text),
        ],
    ),
    (
        "cmdb_ci",
        &[
            ("sys_id", Kind::Text),
            ("name", Kind::Text),
            ("fqdn", Kind::Text),
            ("ip_address", Kind::Text),
            ("sys_class_name", Kind::Text),
        ],
    ),
];

fn schema(table: &str) -> Option<&'static [(&'static str, Kind)]> {
    TABLES
        .iter()
        .find(|(name, _)| *name == table)
        .map(|(_, fields)| *fields)
}

/// Fields that are written only by the platform: a write to them is ignored.
fn is_system_field(field: &str) -> bool {
    field.starts_with("sys_") || field == "number"
}

/// Logs the call, then plays the instance's state: down, unauthenticated,
/// rate limited. Only `/api/` requests are authenticated and rate limited;
/// the token endpoint checks its own form.
async fn gate(State(sim): State<ServiceNowSim>, mut request: Request, next: Next) -> Response {
    let is_api = request.uri().path().starts_with("/api/");
    let refusal = {
        let mut instance = sim.instance();
        instance
            .calls
            .push(format!("{} {}", request.method(), request.uri().path()));
        if instance.down {
            Err(unavailable_page())
        } else if !is_api {
            Ok(None)
        } else if let Some(user) = instance.authenticate(request.headers()) {
            if instance.rate_limited_requests > 0 {
                instance.rate_limited_requests -= 1;
                Err(rate_limited(instance.retry_after_secs))
            } else {
                Ok(Some(user))
            }
        } else {
            Err(not_authenticated())
        }
    };
    match refusal {
        Err(response) => response,
        Ok(user) => {
            if let Some(user) = user {
                request.extensions_mut().insert(user);
            }
            next.run(request).await
        }
    }
}

async fn issue_token(
    State(sim): State<ServiceNowSim>,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return oauth_refusal(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the token request must be application/x-www-form-urlencoded",
        );
    };
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    let mut instance = sim.instance();
    instance.token_grants.push(field("grant_type").to_owned());
    let known = instance.credentials.clone();
    if field("client_id") != known.client_id || field("client_secret") != known.client_secret {
        return access_denied();
    }
    let refresh_token = match field("grant_type") {
        "password" => {
            if field("username") != known.username || field("password") != known.password {
                return access_denied();
            }
            // "Access requests made within the expiration time of the access
            // token always return the current access token."
            if let Some(current) = instance.access_tokens.iter().find(|issued| !issued.expired) {
                return token_answer(&current.token, &current.refresh_token);
            }
            let refresh_token = instance.mint();
            instance.refresh_tokens.push(RefreshToken {
                token: refresh_token.clone(),
                revoked: false,
            });
            refresh_token
        }
        "refresh_token" => {
            let presented = field("refresh_token");
            let valid = instance
                .refresh_tokens
                .iter()
                .any(|issued| issued.token == presented && !issued.revoked);
            if !valid {
                return access_denied();
            }
            presented.to_owned()
        }
        _ => {
            return oauth_refusal(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "grant_type must be password or refresh_token",
            );
        }
    };
    let access_token = format!("{}{}", instance.mint(), instance.mint());
    let expired = instance.issue_expired_tokens;
    instance.access_tokens.push(AccessToken {
        token: access_token.clone(),
        refresh_token: refresh_token.clone(),
        expired,
    });
    token_answer(&access_token, &refresh_token)
}

fn token_answer(access_token: &str, refresh_token: &str) -> Response {
    json_answer(
        StatusCode::OK,
        json!({
            "access_token": access_token,
            "refresh_token": refresh_token,
            "scope": "useraccount",
            "token_type": "Bearer",
            "expires_in": ACCESS_TOKEN_LIFESPAN_SECS,
        }),
    )
}

/// The query parameters of a Table API read or write.
struct Params(HashMap<String, String>);

#[derive(Debug, Clone, Copy, PartialEq)]
enum DisplayValue {
    Database,
    Display,
    Both,
}

impl Params {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|value| !value.is_empty())
    }

    fn display_value(&self) -> DisplayValue {
        match self.get("sysparm_display_value") {
            Some("true") => DisplayValue::Display,
            Some("all") => DisplayValue::Both,
            _ => DisplayValue::Database,
        }
    }

    fn number(&self, name: &str, default: usize) -> usize {
        self.get(name)
            .and_then(|value| value.parse().ok())
            .unwrap_or(default)
    }
}

async fn list_records(
    State(sim): State<ServiceNowSim>,
    Path(table): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let params = Params(params);
    let Some(fields) = schema(&table) else {
        return invalid_table(&table);
    };
    let conditions = match parse_query(fields, params.get("sysparm_query").unwrap_or_default()) {
        Ok(conditions) => conditions,
        Err(unsupported) => {
            return error(
                StatusCode::BAD_REQUEST,
                "Unsupported query",
                Some(&unsupported),
            );
        }
    };
    let base = base_url(&headers);
    let instance = sim.instance();
    let matching: Vec<&Record> = instance
        .table(&table)
        .iter()
        .filter(|record| conditions.iter().all(|condition| condition.matches(record)))
        .collect();
    let total = matching.len();
    let offset = params.number("sysparm_offset", 0);
    let limit = params.number("sysparm_limit", 10_000).max(1);
    let page: Vec<Value> = matching
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|record| render(&instance, &table, record, &params, &base))
        .collect();
    let mut response = json_answer(StatusCode::OK, json!({ "result": page }));
    let headers = response.headers_mut();
    headers.insert("X-Total-Count", HeaderValue::from(total));
    let link = link_header(&base, &table, &params, offset, limit, total);
    headers.insert(
        header::LINK,
        HeaderValue::from_str(&link).expect("links are ASCII"),
    );
    response
}

async fn show_record(
    State(sim): State<ServiceNowSim>,
    Path((table, sys_id)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if schema(&table).is_none() {
        return invalid_table(&table);
    }
    let instance = sim.instance();
    match instance.find(&table, &sys_id) {
        Some(record) => {
            let rendered = render(
                &instance,
                &table,
                record,
                &Params(params),
                &base_url(&headers),
            );
            json_answer(StatusCode::OK, json!({ "result": rendered }))
        }
        None => no_record(),
    }
}

/// PATCH (and PUT, which a Table API treats the same way): only incidents
/// are writable by the integration user; other tables refuse as an ACL would.
async fn update_record(
    State(sim): State<ServiceNowSim>,
    Path((table, sys_id)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
    Extension(User(user)): Extension<User>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(fields) = schema(&table) else {
        return invalid_table(&table);
    };
    let mut instance = sim.instance();
    let Some(mut record) = instance.find(&table, &sys_id).cloned() else {
        return no_record();
    };
    if !WRITABLE.contains(&table.as_str()) {
        return error(
            StatusCode::FORBIDDEN,
            "Operation Failed",
            Some("ACL Exception Update Failed due to security constraints"),
        );
    }
    let Ok(Value::Object(changes)) = serde_json::from_slice::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "Exception while reading request",
            Some("The payload is not valid JSON."),
        );
    };
    let mut journal_entries = Vec::new();
    for (field, value) in changes {
        // Unknown and system fields are ignored, as an instance ignores them.
        let Some((_, kind)) = fields.iter().find(|(name, _)| *name == field) else {
            continue;
        };
        if is_system_field(&field) {
            continue;
        }
        let value = match value {
            Value::String(text) => text,
            Value::Null => String::new(),
            other => other.to_string(),
        };
        match kind {
            Kind::Journal => {
                if !value.trim().is_empty() {
                    journal_entries.push((field, value));
                }
            }
            Kind::Choice(choices) if !choices.iter().any(|(choice, _)| *choice == value) => {
                let detail = format!("`{value}` is not a choice of {table}.{field}");
                return error(
                    StatusCode::BAD_REQUEST,
                    "Invalid choice value",
                    Some(&detail),
                );
            }
            Kind::Text | Kind::Choice(_) | Kind::Reference(_) => {
                record.insert(field, value);
            }
        }
    }
    // The data policy of a stock instance: a resolved or closed incident
    // needs its resolution code and notes.
    if table == "incident" && matches!(record["state"].as_str(), "6" | "7") {
        let missing: Vec<&str> = [
            ("close_code", "Resolution code"),
            ("close_notes", "Resolution notes"),
        ]
        .into_iter()
        .filter(|(field, _)| record[*field].trim().is_empty())
        .map(|(_, label)| label)
        .collect();
        if !missing.is_empty() {
            let detail = format!(
                "Data Policy Exception: \n\tThe following fields are mandatory: {}\n",
                missing.join(", ")
            );
            return error(StatusCode::FORBIDDEN, "Operation Failed", Some(&detail));
        }
    }
    let now = now();
    let modifications: u64 = record["sys_mod_count"].parse().unwrap_or(0);
    record.insert("sys_mod_count".into(), (modifications + 1).to_string());
    record.insert("sys_updated_on".into(), now.clone());
    record.insert("sys_updated_by".into(), user.clone());
    for (element, value) in journal_entries {
        let row_id = instance.mint();
        let row = Record::from([
            ("sys_id".to_owned(), row_id),
            ("element_id".to_owned(), sys_id.clone()),
            ("element".to_owned(), element),
            ("name".to_owned(), table.clone()),
            ("value".to_owned(), value),
            ("sys_created_on".to_owned(), now.clone()),
            ("sys_created_by".to_owned(), user.clone()),
        ]);
        instance.table_mut("sys_journal_field").push(row);
    }
    let stored = instance
        .tables
        .get_mut(table.as_str())
        .and_then(|records| records.iter_mut().find(|stored| stored["sys_id"] == sys_id))
        .expect("the record was found above");
    *stored = record.clone();
    let rendered = render(
        &instance,
        &table,
        &record,
        &Params(params),
        &base_url(&headers),
    );
    json_answer(StatusCode::OK, json!({ "result": rendered }))
}

async fn no_such_resource() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "Requested URI does not represent any resource",
        None,
    )
}

/// One condition of an encoded query: `<field><operator><value>`.
struct Condition {
    field: String,
    operator: Operator,
    value: String,
}

#[derive(Clone, Copy)]
enum Operator {
    Equals,
    NotEquals,
    /// Contains, ignoring case as an instance's database collation does.
    Like,
    StartsWith,
}

/// Longest first, so that `!=` is not read as a field ending in `!`.
const OPERATORS: &[(&str, Operator)] = &[
    ("STARTSWITH", Operator::StartsWith),
    ("LIKE", Operator::Like),
    ("!=", Operator::NotEquals),
    ("=", Operator::Equals),
];

impl Condition {
    fn matches(&self, record: &Record) -> bool {
        let actual = record
            .get(&self.field)
            .map(String::as_str)
            .unwrap_or_default();
        match self.operator {
            Operator::Equals => actual == self.value,
            Operator::NotEquals => actual != self.value,
            Operator::Like => actual.to_lowercase().contains(&self.value.to_lowercase()),
            Operator::StartsWith => actual.starts_with(&self.value),
        }
    }
}

/// Parses `field=value^field2LIKEtext`. A condition on a field the table
/// does not have is dropped, as an instance drops it by default
/// (`glide.invalid_query.returns_no_rows` is false).
fn parse_query(fields: &[(&str, Kind)], query: &str) -> Result<Vec<Condition>, String> {
    let unsupported = |term: &str| format!("the simulator does not evaluate `{term}`");
    let mut conditions = Vec::new();
    for term in query.split('^').filter(|term| !term.is_empty()) {
        if term.starts_with("OR") || term.starts_with("NQ") || term.starts_with("ORDERBY") {
            return Err(unsupported(term));
        }
        let name_end = term
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.'))
            .unwrap_or(term.len());
        let (field, rest) = term.split_at(name_end);
        if field.contains('.') {
            return Err(format!("the simulator does not dot-walk `{field}`"));
        }
        let (operator, value) = OPERATORS
            .iter()
            .find_map(|(symbol, operator)| {
                rest.strip_prefix(symbol).map(|value| (*operator, value))
            })
            .ok_or_else(|| unsupported(term))?;
        let known = fields
            .iter()
            .any(|(name, kind)| *name == field && !matches!(kind, Kind::Journal));
        if known {
            conditions.push(Condition {
                field: field.to_owned(),
                operator,
                value: value.to_owned(),
            });
        }
    }
    Ok(conditions)
}

/// A record as the Table API shows it, honouring `sysparm_fields`,
/// `sysparm_display_value` and `sysparm_exclude_reference_link`.
fn render(instance: &Instance, table: &str, record: &Record, params: &Params, base: &str) -> Value {
    let fields = schema(table).expect("only known tables are rendered");
    let wanted: Option<Vec<&str>> = params
        .get("sysparm_fields")
        .map(|list| list.split(',').map(str::trim).collect());
    let mode = params.display_value();
    let with_links = params.get("sysparm_exclude_reference_link") != Some("true");
    let mut rendered = Map::new();
    for (field, kind) in fields {
        if wanted
            .as_ref()
            .is_some_and(|wanted| !wanted.contains(field))
        {
            continue;
        }
        let value = record.get(*field).map(String::as_str).unwrap_or_default();
        let shown = match kind {
            Kind::Text => both_or_one(mode, value, value),
            Kind::Choice(choices) => {
                let label = choices
                    .iter()
                    .find(|(choice, _)| *choice == value)
                    .map_or(value, |(_, label)| label);
                both_or_one(mode, label, value)
            }
            Kind::Journal => both_or_one(mode, &journal_text(instance, record, field), ""),
            Kind::Reference(_) if value.is_empty() => both_or_one(mode, "", ""),
            Kind::Reference(referenced) => {
                let name = instance
                    .find(referenced, value)
                    .and_then(|found| found.get("name").or_else(|| found.get("number")))
                    .map(String::as_str)
                    .unwrap_or_default();
                let mut reference = Map::new();
                if mode != DisplayValue::Database {
                    reference.insert("display_value".into(), json!(name));
                }
                if with_links {
                    let link = format!("{base}/api/now/table/{referenced}/{value}");
                    reference.insert("link".into(), json!(link));
                }
                if mode != DisplayValue::Display {
                    reference.insert("value".into(), json!(value));
                }
                Value::Object(reference)
            }
        };
        rendered.insert(field.to_string(), shown);
    }
    Value::Object(rendered)
}

fn both_or_one(mode: DisplayValue, display: &str, value: &str) -> Value {
    match mode {
        DisplayValue::Database => json!(value),
        DisplayValue::Display => json!(display),
        DisplayValue::Both => json!({ "display_value": display, "value": value }),
    }
}

/// A journal field's display value: its entries, newest first, each headed
/// by when and by whom.
fn journal_text(instance: &Instance, record: &Record, element: &str) -> String {
    let entries = instance
        .table("sys_journal_field")
        .iter()
        .rev()
        .filter(|row| row["element_id"] == record["sys_id"] && row["element"] == element);
    let mut text = String::new();
    for row in entries {
        let label = if element == "comments" {
            "Additional comments"
        } else {
            "Work notes"
        };
        text.push_str(&format!(
            "{} - {} ({label})\n{}\n\n",
            row["sys_created_on"], row["sys_created_by"], row["value"]
        ));
    }
    text
}

/// `Link: <…>;rel="first",<…>;rel="prev",<…>;rel="next",<…>;rel="last"`.
fn link_header(
    base: &str,
    table: &str,
    params: &Params,
    offset: usize,
    limit: usize,
    total: usize,
) -> String {
    let page_at = |page_offset: usize| {
        let mut query: Vec<String> = params
            .0
            .iter()
            .filter(|(name, _)| *name != "sysparm_offset" && *name != "sysparm_limit")
            .map(|(name, value)| format!("{}={}", percent_encode(name), percent_encode(value)))
            .collect();
        query.sort();
        query.push(format!("sysparm_limit={limit}"));
        query.push(format!("sysparm_offset={page_offset}"));
        format!("<{base}/api/now/table/{table}?{}>", query.join("&"))
    };
    let last = total.saturating_sub(1) / limit * limit;
    let mut links = vec![format!("{};rel=\"first\"", page_at(0))];
    if offset > 0 {
        links.push(format!(
            "{};rel=\"prev\"",
            page_at(offset.saturating_sub(limit))
        ));
    }
    if offset + limit < total {
        links.push(format!("{};rel=\"next\"", page_at(offset + limit)));
    }
    links.push(format!("{};rel=\"last\"", page_at(last)));
    links.join(",")
}

fn percent_encode(text: &str) -> String {
    let mut encoded = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// The Table API's error envelope.
fn error(status: StatusCode, message: &str, detail: Option<&str>) -> Response {
    json_answer(
        status,
        json!({"error": {"message": message, "detail": detail}, "status": "failure"}),
    )
}

fn no_record() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "No Record found",
        Some("Record doesn't exist or ACL restricts the record retrieval"),
    )
}

fn invalid_table(table: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        &format!("Invalid table {table}"),
        None,
    )
}

fn not_authenticated() -> Response {
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        "User Not Authenticated",
        Some("Required to provide Auth information"),
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("BASIC realm=\"Service-now\""),
    );
    response
}

fn rate_limited(retry_after_secs: u64) -> Response {
    let mut response = error(
        StatusCode::TOO_MANY_REQUESTS,
        "Rate limit exceeded",
        Some("Too many requests for this user within the hour allowed by the rate limit rule"),
    );
    let reset = jiff::Timestamp::now().as_second() + retry_after_secs as i64;
    let headers = response.headers_mut();
    headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    headers.insert("X-RateLimit-Limit", HeaderValue::from(100));
    headers.insert("X-RateLimit-Reset", HeaderValue::from(reset));
    headers.insert(
        "X-RateLimit-Rule",
        HeaderValue::from_static("5e9f4a3c1b2d47e8a6c0f1d2e3b4a596"),
    );
    response
}

fn oauth_refusal(status: StatusCode, error: &str, description: &str) -> Response {
    json_answer(
        status,
        json!({"error_description": description, "error": error}),
    )
}

/// What `/oauth_token.do` answers to any wrong credential.
fn access_denied() -> Response {
    oauth_refusal(StatusCode::UNAUTHORIZED, "server_error", "access_denied")
}

fn unavailable_page() -> Response {
    let page = "<html><head><title>Service Unavailable</title></head><body>\
                <h1>Service Unavailable</h1><p>The instance is temporarily unavailable. \
                Please try again later.</p></body></html>";
    Response::builder()
        .status(StatusCode::SERVICE_UNAVAILABLE)
        .header(header::CONTENT_TYPE, "text/html;charset=UTF-8")
        .body(Body::from(page))
        .expect("a static response builds")
}

/// `YYYY-MM-DD HH:MM:SS` in UTC, as the Table API shows dates.
fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_queries() {
        let rows: Vec<Record> = [
            ("a", "work_notes", "Restarted [run 7]"),
            ("b", "comments", "[run 7]"),
        ]
        .into_iter()
        .map(|(sys_id, element, value)| {
            Record::from([
                ("sys_id".to_owned(), sys_id.to_owned()),
                ("element".to_owned(), element.to_owned()),
                ("value".to_owned(), value.to_owned()),
            ])
        })
        .collect();
        let fields = schema("sys_journal_field").unwrap();
        let check = |query: &str, expect: Result<&[&str], &str>| {
            let matching = parse_query(fields, query).map(|conditions| {
                rows.iter()
                    .filter(|row| conditions.iter().all(|condition| condition.matches(row)))
                    .map(|row| row["sys_id"].as_str())
                    .collect::<Vec<_>>()
            });
            match (matching, expect) {
                (Ok(found), Ok(expected)) => assert_eq!(found, expected, "{query}"),
                (Err(error), Err(part)) => assert!(error.contains(part), "{query}: {error}"),
                (found, expected) => panic!("{query}: got {found:?}, expected {expected:?}"),
            }
        };
        check("", Ok(&["a", "b"]));
        check("element=work_notes", Ok(&["a"]));
        check("element!=work_notes", Ok(&["b"]));
        check("valueLIKE[RUN 7]", Ok(&["a", "b"]));
        check("element=work_notes^valueLIKErestarted", Ok(&["a"]));
        check("valueSTARTSWITH[run", Ok(&["b"]));
        // An unknown field is dropped, as an instance drops it.
        check("no_such_field=1^element=comments", Ok(&["b"]));
        check(
            "element=work_notes^ORelement=comments",
            Err("`ORelement=comments`"),
        );
        check("ORDERBYsys_created_on", Err("ORDERBY"));
        check("element_id.number=INC0010001", Err("dot-walk"));
        check("value>3", Err("value>3"));
    }

    #[test]
    fn references_and_choices_in_each_display_mode() {
        let sim = ServiceNowSim::new(Credentials::default());
        let seeded = sim.seed_incident(NewIncident {
            short_description: "VPN down".into(),
            state: "3".into(),
            assignment_group: Some("Network".into()),
            ..NewIncident::default()
        });
        let instance = sim.instance();
        let record = instance.find("incident", &seeded.sys_id).unwrap();
        let group = record["assignment_group"].clone();
        let link = format!("http://sn.test/api/now/table/sys_user_group/{group}");
        let check = |params: &[(&str, &str)], expect: Value| {
            let params = Params(
                params
                    .iter()
                    .map(|(name, value)| (name.to_string(), value.to_string()))
                    .chain([(
                        "sysparm_fields".into(),
                        "state,assignment_group,cmdb_ci".into(),
                    )])
                    .collect(),
            );
            let rendered = render(&instance, "incident", record, &params, "http://sn.test");
            assert_eq!(rendered, expect, "{:?}", params.0);
        };
        check(
            &[],
            json!({"state": "3", "assignment_group": {"link": link, "value": group}, "cmdb_ci": ""}),
        );
        check(
            &[("sysparm_display_value", "true")],
            json!({"state": "On Hold", "assignment_group": {"display_value": "Network", "link": link}, "cmdb_ci": ""}),
        );
        check(
            &[
                ("sysparm_display_value", "all"),
                ("sysparm_exclude_reference_link", "true"),
            ],
            json!({
                "state": {"display_value": "On Hold", "value": "3"},
                "assignment_group": {"display_value": "Network", "value": group},
                "cmdb_ci": {"display_value": "", "value": ""},
            }),
        );
    }

    #[test]
    fn list_links_page_through_the_matches() {
        let params = Params(HashMap::from([(
            "sysparm_query".into(),
            "state=1^active=true".into(),
        )]));
        let link = link_header("http://sn.test", "incident", &params, 10, 10, 25);
        let page = |offset: usize| {
            format!(
                "<http://sn.test/api/now/table/incident?sysparm_query=state%3D1%5Eactive%3Dtrue\
                 &sysparm_limit=10&sysparm_offset={offset}>"
            )
        };
        assert_eq!(
            link,
            format!(
                "{};rel=\"first\",{};rel=\"prev\",{};rel=\"next\",{};rel=\"last\"",
                page(0),
                page(0),
                page(20),
                page(20)
            )
        );
    }
}
