//! Jira as an event source: its issue webhook (`jira:issue_created`,
//! `jira:issue_updated`) → one event. The server has checked the signature
//! Jira sends with it (`X-Hub-Signature`, `signature.rs`) and the body's
//! `timestamp` against its replay window before this reads the rest.
//!
//! The issue is the event: its key is the subject and, as `jira:<KEY>`, the
//! dedup key, so every webhook about one issue lands on the same open run.
//! Whether it fires or resolves is read from where the issue *is*, not
//! from what changed: an issue whose status is in the done category
//! (`fields.status.statusCategory.key == "done"`) is resolved — which
//! withdraws a run still waiting for approval and never starts one — and
//! any other issue fires. So an update that moves an issue to Done
//! resolves it, and a label edited on a closed issue cannot start a run.
//!
//! An update that changed no field (its `changelog` has no items: a
//! comment added, edited or deleted, a work log) is no event at all. This
//! matters beyond noise: opsgate's own write-back comments come back as
//! such updates, and must not count as the problem recurring. opsgate's
//! own transitions (to Done, to In Progress) do change a field: the
//! webhook's `user` — who made the change — is compared with the account
//! opsgate writes as (the section's `account_id`, or its `email` when the
//! webhook shows one), and an update of its own is marked
//! `changed_by_opsgate`, which never starts a run.
//!
//! The reporter is kept as Jira names them (account id, display name,
//! email when the site shows it), and is deliberately *not* made
//! `requested_by`: that field names a person of opsgate's directory, which
//! the separation-of-duties check and `manager_of(requester)` trust, and a
//! Jira account is not one until something maps it: the reporter whose
//! email the directory knows becomes `requested_by`.
//!

use domain::{EventStatus, NewEvent};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::seam::{
    Answer, BoxFuture, CHANGED_BY_OPSGATE, EventSource, Heard, People, SourceError, Verification,
    parse_json,
};

/// Jira's issue webhook, heard.
pub(crate) struct Source {
    /// The secret the webhook was registered with.
    pub(crate) webhook_secret: crate::Secret,
    pub(crate) writes_as: WritesAs,
}

/// The account opsgate writes as, as far as the config names it.
#[derive(Debug, Clone, Default)]
pub(crate) struct WritesAs {
    /// Jira Cloud's account id, or a Data Center user name.
    pub(crate) account_id: Option<String>,
    pub(crate) email: Option<String>,
}

impl WritesAs {
    /// Whether `user` is this account.
    fn is(&self, user: &User) -> bool {
        let same = |ours: &Option<String>, theirs: &Option<String>| matches!((ours, theirs), (Some(ours), Some(theirs)) if ours == theirs);
        let same_email = matches!(
            (&self.email, &user.email_address),
            (Some(ours), Some(theirs)) if ours.eq_ignore_ascii_case(theirs)
        );
        same(&self.account_id, &user.account_id) || same(&self.account_id, &user.name) || same_email
    }
}

impl EventSource for Source {
    fn name(&self) -> &'static str {
        super::NAME
    }

    fn verification(&self) -> Verification {
        Verification::Signed(std::sync::Arc::new(super::signature::HubSignature {
            secret: self.webhook_secret.clone(),
        }))
    }

    fn heard<'a>(
        &'a self,
        body: &'a [u8],
        people: &'a dyn People,
    ) -> BoxFuture<'a, Result<Heard, SourceError>> {
        Box::pin(async move {
            let webhook: Webhook = parse_json(body)?;
            let by_opsgate = webhook
                .user
                .as_ref()
                .is_some_and(|user| self.writes_as.is(user));
            let Some(mut event) = to_event(webhook).map_err(|message| SourceError::Invalid {
                code: "invalid_webhook",
                message,
            })?
            else {
                // opsgate's own comments come back as such updates.
                return Ok(Heard {
                    events: Vec::new(),
                    answer: Answer::One {
                        message: Some("no field changed: not an event".to_owned()),
                    },
                });
            };
            if let Some(person) = event.fields["reporter"]["email"]
                .as_str()
                .and_then(|email| people.by_email(email))
            {
                event.fields["requested_by"] = json!(person);
            }
            if by_opsgate {
                event.fields[CHANGED_BY_OPSGATE] = json!(true);
            }
            Ok(Heard::one(Some(event)))
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Webhook {
    /// Milliseconds since the epoch.
    #[serde(default)]
    timestamp: Option<i64>,
    #[serde(default)]
    webhook_event: Option<String>,
    /// `issue_created`, `issue_generic` (a transition), `issue_commented`, …
    #[serde(default, rename = "issue_event_type_name")]
    issue_event_type_name: Option<String>,
    /// Who made the change.
    #[serde(default)]
    user: Option<User>,
    #[serde(default)]
    issue: Option<Issue>,
    #[serde(default)]
    changelog: Option<Changelog>,
}

#[derive(Debug, Deserialize)]
struct Issue {
    #[serde(default)]
    id: Option<String>,
    #[serde(default, rename = "self")]
    self_url: Option<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    fields: Option<Fields>,
}

#[derive(Debug, Deserialize)]
struct Fields {
    #[serde(default)]
    summary: Option<String>,
    #[serde(default)]
    status: Option<Status>,
    #[serde(default)]
    priority: Option<Named>,
    #[serde(default)]
    issuetype: Option<Named>,
    #[serde(default)]
    project: Option<Project>,
    #[serde(default)]
    labels: Option<Vec<String>>,
    #[serde(default)]
    components: Option<Vec<Named>>,
    #[serde(default)]
    reporter: Option<User>,
    /// Set when the issue is resolved: `Done`, `Won't Do`, `Duplicate`…
    #[serde(default)]
    resolution: Option<Named>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    status_category: Option<StatusCategory>,
}

#[derive(Debug, Deserialize)]
struct StatusCategory {
    #[serde(default)]
    key: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Named {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Project {
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

/// A Jira user: Cloud names them by `accountId`, Data Center by `name`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct User {
    #[serde(default)]
    account_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    email_address: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Changelog {
    #[serde(default)]
    items: Vec<Change>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Change {
    field: String,
    #[serde(default)]
    from_string: Option<String>,
    #[serde(default, rename = "toString")]
    to_text: Option<String>,
}

/// The event a webhook stands for; `None` for an update that changed no
/// field. Or what is wrong, named by its JSON path.
fn to_event(webhook: Webhook) -> Result<Option<NewEvent>, String> {
    let webhook_event = required(webhook.webhook_event.as_deref(), "webhookEvent")?;
    let changes = webhook
        .changelog
        .map(|changelog| changelog.items)
        .unwrap_or_default();
    match webhook_event {
        "jira:issue_created" => {}
        "jira:issue_updated" if changes.is_empty() => return Ok(None),
        "jira:issue_updated" => {}
        other => {
            return Err(format!(
                "webhookEvent is `{other}`: expected jira:issue_created or jira:issue_updated"
            ));
        }
    }
    let issue = webhook.issue.ok_or("issue is missing")?;
    let key = required(issue.key.as_deref(), "issue.key")?;
    if !super::is_issue_key(key) {
        return Err(format!(
            "issue.key is `{key}`: expected a key such as OPS-154"
        ));
    }
    let fields = issue.fields.ok_or("issue.fields is missing")?;
    let summary = required(fields.summary.as_deref(), "issue.fields.summary")?;
    let status = fields.status.ok_or("issue.fields.status is missing")?;
    let status_name = required(status.name.as_deref(), "issue.fields.status.name")?;
    let category = required(
        status
            .status_category
            .and_then(|category| category.key)
            .as_deref(),
        "issue.fields.status.statusCategory.key",
    )?
    .to_owned();
    let project = fields.project.ok_or("issue.fields.project is missing")?;
    let project_key = required(project.key.as_deref(), "issue.fields.project.key")?;
    let occurred_at = webhook
        .timestamp
        .map(|milliseconds| {
            jiff::Timestamp::from_millisecond(milliseconds)
                .map_err(|_| format!("timestamp `{milliseconds}` is not a time"))
        })
        .transpose()?;
    let timestamp = occurred_at.map(|at| at.to_string());
    let issue_type = fields.issuetype.and_then(|named| named.name);
    let changes: Vec<Value> = changes
        .into_iter()
        .map(|change| json!({"field": change.field, "from": change.from_string, "to": change.to_text}))
        .collect();
    // How a person resolved it (Jira's resolution is its close code): what
    // shadow mode compares with what opsgate would have done.
    let close_code = fields.resolution.and_then(|named| named.name);
    let resolved_by = close_code.as_ref().and_then(|_| {
        webhook
            .user
            .as_ref()
            .and_then(|user| user.display_name.clone().or_else(|| user.name.clone()))
    });
    let mut event_fields = json!({
        "ticket": key,
        "issue_id": issue.id,
        "summary": summary,
        "status": status_name,
        "status_category": category,
        "priority": fields.priority.and_then(|named| named.name),
        "issue_type": issue_type,
        "project": project_key,
        "project_name": project.name,
        "labels": fields.labels.unwrap_or_default(),
        "components": fields
            .components
            .unwrap_or_default()
            .into_iter()
            .filter_map(|component| component.name)
            .collect::<Vec<_>>(),
        "reporter": fields.reporter.as_ref().map(person),
        "changed_by": webhook.user.as_ref().map(person),
        "webhook_event": webhook_event,
        "issue_event": webhook.issue_event_type_name,
        "changes": changes,
        "timestamp": timestamp,
        "url": issue.self_url.as_deref().and_then(|self_url| browse_url(self_url, key)),
    });
    if let Some(close_code) = close_code {
        event_fields["close_code"] = json!(close_code);
        event_fields["resolved_by"] = json!(resolved_by);
    }
    let status = if category == "done" {
        EventStatus::Resolved
    } else {
        EventStatus::Firing
    };
    Ok(Some(NewEvent {
        source: super::NAME.to_owned(),
        kind: issue_type
            .as_deref()
            .map_or_else(|| "issue".to_owned(), kind_of),
        dedup_key: format!("jira:{key}"),
        subject: key.to_owned(),
        fields: event_fields,
        status,
        occurred_at,
    }))
}

fn required<'a>(value: Option<&'a str>, path: &str) -> Result<&'a str, String> {
    match value {
        None => Err(format!("{path} is missing")),
        Some(text) if text.trim().is_empty() => Err(format!("{path} is empty")),
        Some(text) => Ok(text),
    }
}

/// The event kind for an issue type: `Incident` → `incident`, `Service
/// Request` → `service_request`, `[System] Incident` → `system_incident`.
fn kind_of(issue_type: &str) -> String {
    issue_type
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join("_")
}

fn person(user: &User) -> Value {
    let mut person = serde_json::Map::new();
    for (name, value) in [
        ("account_id", &user.account_id),
        ("name", &user.name),
        ("display_name", &user.display_name),
        ("email", &user.email_address),
    ] {
        if let Some(value) = value {
            person.insert(name.to_owned(), json!(value));
        }
    }
    Value::Object(person)
}

/// The page people open for the issue, from its REST address:
/// `https://acme.atlassian.net/rest/api/2/issue/10002` →
/// `https://acme.atlassian.net/browse/OPS-154` (a Data Center's context
/// path kept).
fn browse_url(self_url: &str, key: &str) -> Option<String> {
    let (site, _) = self_url.split_once("/rest/api/")?;
    (site.starts_with("https://") || site.starts_with("http://"))
        .then(|| format!("{site}/browse/{key}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `jira:issue_updated` webhook as a Jira Service Management site
    /// sends it when an agent moves an incident on, shaped after the
    /// examples in Atlassian's webhook documentation (custom fields and
    /// avatars left out).
    fn issue_updated() -> Value {
        json!({
            "timestamp": 1732096800123_i64,
            "webhookEvent": "jira:issue_updated",
            "issue_event_type_name": "issue_generic",
            "user": {
                "self": "https://acme.atlassian.net/rest/api/2/user?accountId=557058%3Af58131cb-b67d-43c7-b30d-6b58d40bd077",
                "accountId": "557058:f58131cb-b67d-43c7-b30d-6b58d40bd077",
                "displayName": "Priya Singh",
                "active": true,
                "timeZone": "Europe/Paris",
                "accountType": "atlassian"
            },
            "issue": {
                "id": "10154",
                "self": "https://acme.atlassian.net/rest/api/2/10154",
                "key": "OPS-154",
                "fields": {
                    "statuscategorychangedate": "2024-11-20T10:00:00.123+0100",
                    "issuetype": {
                        "self": "https://acme.atlassian.net/rest/api/2/issuetype/10004",
                        "id": "10004",
                        "name": "[System] Incident",
                        "subtask": false
                    },
                    "project": {
                        "self": "https://acme.atlassian.net/rest/api/2/project/10000",
                        "id": "10000",
                        "key": "OPS",
                        "name": "IT Operations",
                        "projectTypeKey": "service_desk"
                    },
                    "resolution": null,
                    "priority": {
                        "self": "https://acme.atlassian.net/rest/api/2/priority/2",
                        "iconUrl": "https://acme.atlassian.net/images/icons/priorities/high.svg",
                        "name": "High",
                        "id": "2"
                    },
                    "labels": ["lyon", "vpn"],
                    "components": [
                        {"self": "https://acme.atlassian.net/rest/api/2/component/10001", "id": "10001", "name": "VPN"}
                    ],
                    "reporter": {
                        "accountId": "5b10a2844c20165700ede21g",
                        "displayName": "Kim Lee",
                        "emailAddress": "kim.lee@example.com",
                        "active": true
                    },
                    "summary": "VPN tunnel down for the Lyon office",
                    "status": {
                        "self": "https://acme.atlassian.net/rest/api/2/status/10001",
                        "description": "",
                        "iconUrl": "https://acme.atlassian.net/",
                        "name": "Work in progress",
                        "id": "10001",
                        "statusCategory": {
                            "self": "https://acme.atlassian.net/rest/api/2/statuscategory/4",
                            "id": 4,
                            "key": "indeterminate",
                            "colorName": "yellow",
                            "name": "In Progress"
                        }
                    },
                    "created": "2024-11-20T09:58:02.000+0100",
                    "updated": "2024-11-20T10:00:00.123+0100"
                }
            },
            "changelog": {
                "id": "10124",
                "items": [
                    {
                        "field": "status",
                        "fieldtype": "jira",
                        "fieldId": "status",
                        "from": "1",
                        "fromString": "Open",
                        "to": "10001",
                        "toString": "Work in progress"
                    }
                ]
            }
        })
    }

    fn parse(body: Value) -> Result<Option<NewEvent>, String> {
        to_event(serde_json::from_value(body).expect("the webhook deserialises"))
    }

    #[test]
    fn an_update_fires_with_the_issue_as_subject() {
        let event = parse(issue_updated()).unwrap().expect("an event");
        assert_eq!(event.source, "jira");
        assert_eq!(event.kind, "system_incident");
        assert_eq!(event.dedup_key, "jira:OPS-154");
        assert_eq!(event.subject, "OPS-154");
        assert_eq!(event.status, EventStatus::Firing);
        assert_eq!(
            event.fields,
            json!({
                "ticket": "OPS-154",
                "issue_id": "10154",
                "summary": "VPN tunnel down for the Lyon office",
                "status": "Work in progress",
                "status_category": "indeterminate",
                "priority": "High",
                "issue_type": "[System] Incident",
                "project": "OPS",
                "project_name": "IT Operations",
                "labels": ["lyon", "vpn"],
                "components": ["VPN"],
                "reporter": {
                    "account_id": "5b10a2844c20165700ede21g",
                    "display_name": "Kim Lee",
                    "email": "kim.lee@example.com"
                },
                "changed_by": {
                    "account_id": "557058:f58131cb-b67d-43c7-b30d-6b58d40bd077",
                    "display_name": "Priya Singh"
                },
                "webhook_event": "jira:issue_updated",
                "issue_event": "issue_generic",
                "changes": [{"field": "status", "from": "Open", "to": "Work in progress"}],
                "timestamp": "2024-11-20T10:00:00.123Z",
                "url": "https://acme.atlassian.net/browse/OPS-154"
            })
        );
        assert!(event.fields.get("requested_by").is_none());
    }

    #[test]
    fn a_created_issue_fires_and_minimal_fields_are_enough() {
        let body = json!({
            "webhookEvent": "jira:issue_created",
            "issue_event_type_name": "issue_created",
            "issue": {
                "key": "ITSM-7",
                "fields": {
                    "summary": "Printer on floor 3 offline",
                    "status": {"name": "Open", "statusCategory": {"key": "new"}},
                    "project": {"key": "ITSM"},
                    "priority": null,
                    "reporter": null
                }
            }
        });
        let event = parse(body).unwrap().expect("an event");
        assert_eq!(event.status, EventStatus::Firing);
        assert_eq!(event.kind, "issue");
        assert_eq!(event.dedup_key, "jira:ITSM-7");
        let fields = &event.fields;
        assert_eq!(fields["ticket"], "ITSM-7");
        assert_eq!(fields["labels"], json!([]));
        assert_eq!(fields["components"], json!([]));
        for absent in [
            "priority",
            "reporter",
            "changed_by",
            "timestamp",
            "url",
            "issue_type",
        ] {
            assert_eq!(fields[absent], Value::Null, "{absent}");
        }
        assert_eq!(fields["changes"], json!([]));
    }

    #[test]
    fn moving_to_a_done_status_resolves() {
        let mut body = issue_updated();
        body["issue"]["fields"]["status"] = json!({
            "name": "Resolved", "id": "5",
            "statusCategory": {"id": 3, "key": "done", "colorName": "green", "name": "Done"}
        });
        body["issue"]["fields"]["resolution"] = json!({"self": "https://acme.atlassian.net/rest/api/2/resolution/10000", "id": "10000", "name": "Done"});
        body["changelog"]["items"] = json!([
            {"field": "resolution", "fieldtype": "jira", "fieldId": "resolution",
             "from": null, "fromString": null, "to": "10000", "toString": "Done"},
            {"field": "status", "fieldtype": "jira", "fieldId": "status",
             "from": "10001", "fromString": "Work in progress", "to": "5", "toString": "Resolved"}
        ]);
        let event = parse(body).unwrap().expect("an event");
        assert_eq!(event.status, EventStatus::Resolved);
        assert_eq!(event.dedup_key, "jira:OPS-154");
        assert_eq!(
            event.fields["changes"],
            json!([
                {"field": "resolution", "from": null, "to": "Done"},
                {"field": "status", "from": "Work in progress", "to": "Resolved"}
            ])
        );
        // How the person resolved it, for shadow mode's comparison.
        assert_eq!(event.fields["close_code"], "Done");
        assert_eq!(event.fields["resolved_by"], "Priya Singh");
    }

    #[test]
    fn any_change_to_a_done_issue_stays_resolved() {
        let mut body = issue_updated();
        body["issue"]["fields"]["status"] =
            json!({"name": "Closed", "statusCategory": {"key": "done"}});
        body["changelog"]["items"] = json!([
            {"field": "labels", "fieldtype": "jira", "fromString": "vpn", "toString": "vpn lyon"}
        ]);
        assert_eq!(
            parse(body).unwrap().expect("an event").status,
            EventStatus::Resolved
        );
    }

    #[test]
    fn an_update_that_changed_no_field_is_no_event() {
        // A comment — opsgate's own write-back among them — arrives as an
        // update with the comment and no changelog.
        let mut commented = issue_updated();
        commented["issue_event_type_name"] = json!("issue_commented");
        commented.as_object_mut().unwrap().remove("changelog");
        commented["comment"] = json!({
            "id": "10102",
            "author": {"accountId": "557058:opsgate", "displayName": "opsgate integration"},
            "body": "Automation started: run 01J9Z3K8QW. [opsgate 01J9Z3K8QW #1-2]",
            "created": "2024-11-20T10:01:00.000+0100"
        });
        assert_eq!(parse(commented), Ok(None));

        let mut empty_changelog = issue_updated();
        empty_changelog["changelog"]["items"] = json!([]);
        assert_eq!(parse(empty_changelog), Ok(None));
    }

    #[test]
    fn data_center_users_are_named_by_name() {
        let mut body = issue_updated();
        body["user"] =
            json!({"name": "priya", "key": "JIRAUSER10100", "displayName": "Priya Singh"});
        body["issue"]["self"] = json!("https://jira.example.com/jira/rest/api/2/issue/10154");
        let event = parse(body).unwrap().expect("an event");
        assert_eq!(
            event.fields["changed_by"],
            json!({"name": "priya", "display_name": "Priya Singh"})
        );
        assert_eq!(
            event.fields["url"],
            json!("https://jira.example.com/jira/browse/OPS-154")
        );
    }

    #[test]
    fn opsgate_knows_its_own_account() {
        let user = |json: Value| serde_json::from_value::<User>(json).unwrap();
        let cloud = WritesAs {
            account_id: Some("557058:opsgate".into()),
            email: Some("opsgate@acme.example".into()),
        };
        let cases = [
            (&cloud, json!({"accountId": "557058:opsgate"}), true),
            (&cloud, json!({"accountId": "557058:priya"}), false),
            (
                &cloud,
                json!({"emailAddress": "OpsGate@acme.example"}),
                true,
            ),
            (&cloud, json!({"displayName": "opsgate"}), false),
            (&cloud, json!({}), false),
            (
                &WritesAs::default(),
                json!({"accountId": "557058:opsgate"}),
                false,
            ),
            (
                &WritesAs {
                    account_id: Some("opsgate-bot".into()),
                    email: None,
                },
                json!({"name": "opsgate-bot", "key": "JIRAUSER10200"}),
                true,
            ),
        ];
        for (writes_as, who, expected) in cases {
            assert_eq!(
                writes_as.is(&user(who.clone())),
                expected,
                "{writes_as:?} {who}"
            );
        }
    }

    #[test]
    fn kinds_from_issue_types() {
        for (issue_type, kind) in [
            ("Incident", "incident"),
            ("Service Request", "service_request"),
            (
                "[System] Service request with approvals",
                "system_service_request_with_approvals",
            ),
            ("Änderung", "änderung"),
        ] {
            assert_eq!(kind_of(issue_type), kind, "{issue_type}");
        }
    }

    #[test]
    fn what_is_wrong_is_named_by_its_path() {
        let without = |path: &[&str]| {
            let mut body = issue_updated();
            let (last, parents) = path.split_last().unwrap();
            let mut node = &mut body;
            for parent in parents {
                node = &mut node[*parent];
            }
            node.as_object_mut().unwrap().remove(*last);
            body
        };
        let with = |path: &[&str], value: Value| {
            let mut body = issue_updated();
            let mut node = &mut body;
            for segment in path {
                node = &mut node[*segment];
            }
            *node = value;
            body
        };
        let cases = [
            (without(&["webhookEvent"]), "webhookEvent is missing"),
            (
                with(&["webhookEvent"], json!("jira:issue_deleted")),
                "webhookEvent is `jira:issue_deleted`: expected jira:issue_created or jira:issue_updated",
            ),
            (without(&["issue"]), "issue is missing"),
            (without(&["issue", "key"]), "issue.key is missing"),
            (with(&["issue", "key"], json!(" ")), "issue.key is empty"),
            (
                with(&["issue", "key"], json!("OPS 154")),
                "issue.key is `OPS 154`: expected a key such as OPS-154",
            ),
            (without(&["issue", "fields"]), "issue.fields is missing"),
            (
                without(&["issue", "fields", "summary"]),
                "issue.fields.summary is missing",
            ),
            (
                without(&["issue", "fields", "status"]),
                "issue.fields.status is missing",
            ),
            (
                without(&["issue", "fields", "status", "name"]),
                "issue.fields.status.name is missing",
            ),
            (
                without(&["issue", "fields", "status", "statusCategory"]),
                "issue.fields.status.statusCategory.key is missing",
            ),
            (
                without(&["issue", "fields", "project", "key"]),
                "issue.fields.project.key is missing",
            ),
            (
                with(&["timestamp"], json!(i64::MAX)),
                "timestamp `9223372036854775807` is not a time",
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(parse(body), Err(expected.to_owned()));
        }
    }

    #[test]
    fn a_field_of_the_wrong_type_is_named_by_its_path_when_read() {
        // The source reads bodies with `seam::parse_json`, which reports
        // the path of a value of the wrong type.
        let body = serde_json::to_vec(&{
            let mut body = issue_updated();
            body["issue"]["fields"]["labels"] = json!("vpn");
            body
        })
        .unwrap();
        let mut deserializer = serde_json::Deserializer::from_slice(&body);
        let error = serde_path_to_error::deserialize::<_, Webhook>(&mut deserializer).unwrap_err();
        assert_eq!(error.path().to_string(), "issue.fields.labels");
    }
}
