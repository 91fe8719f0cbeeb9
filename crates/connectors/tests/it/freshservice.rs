//! Freshservice through the seam, against the simulated service desk: the
//! client's calls and how each failure is classified, the ticket system a
//! run writes back through, and the event source the Workflow Automator
//! calls.

use std::collections::BTreeMap;
use std::time::Duration;

use connectors::freshservice::{Freshservice, FreshserviceConfig};
use connectors::{
    Integrations, NoPeople, Note, Outcome, People, Secret, SourceError, TicketUpdate, WriteError,
};
use serde_json::json;
use test_support::Running;
use test_support::freshservice_sim::{Failure, FreshserviceSim, NewTicket};

use crate::{Expect, failed_as};

const API_KEY: &str = "fs-api-key-5Wq9dLx2";

struct Desk {
    sim: FreshserviceSim,
    server: Running,
    /// Holds the API key file the section names.
    _key_file: tempfile::NamedTempFile,
    integrations: Integrations,
}

async fn desk() -> Desk {
    let sim = FreshserviceSim::new(API_KEY);
    let server = sim.start().await.expect("the simulator starts");
    let key_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(key_file.path(), format!("{API_KEY}\n")).unwrap();
    let sections = BTreeMap::from([(
        "freshservice".to_owned(),
        json!({
            "base_url": server.url,
            "api_key": format!("file:{}", key_file.path().display()),
            "timeout_seconds": 5,
        }),
    )]);
    let integrations = connectors::registry::build(&sections).expect("the section is valid");
    Desk {
        sim,
        server,
        _key_file: key_file,
        integrations,
    }
}

impl Desk {
    fn client(&self, key: &str) -> Freshservice {
        Freshservice::new(FreshserviceConfig {
            base_url: self.server.url.clone(),
            api_key: Secret::new(key),
            timeout: Duration::from_secs(5),
        })
        .unwrap()
    }

    async fn write(&self, ticket: &str, update: TicketUpdate) -> Result<(), WriteError> {
        let system = self.integrations.ticket_system("freshservice").unwrap();
        system.write(ticket, update).await
    }

    async fn event(
        &self,
        body: serde_json::Value,
    ) -> Result<Option<domain::NewEvent>, SourceError> {
        self.event_for(body, &NoPeople).await
    }

    async fn event_for(
        &self,
        body: serde_json::Value,
        people: &dyn People,
    ) -> Result<Option<domain::NewEvent>, SourceError> {
        let source = self.integrations.source("freshservice").unwrap();
        source.event(body.to_string().as_bytes(), people).await
    }
}

fn note(run: &str, lines: &str, records: &str) -> Note {
    let marker = format!("[opsgate {run} #{records}]");
    Note {
        text: format!("{lines}\n\n{marker}"),
        marker,
    }
}

fn update(note: Option<Note>, outcome: Option<Outcome>) -> TicketUpdate {
    TicketUpdate {
        run_id: "run-fs1".into(),
        note,
        outcome,
        decisions: Vec::new(),
    }
}

#[tokio::test]
async fn the_section_plugs_in_a_source_and_a_ticket_system() {
    let desk = desk().await;
    let sources: Vec<&str> = desk
        .integrations
        .sources
        .iter()
        .map(|source| source.name())
        .collect();
    // The monitoring systems' sources are always there; this one is new.
    assert_eq!(
        sources,
        ["alertmanager", "grafana", "pagerduty", "freshservice"]
    );
    assert_eq!(desk.integrations.tickets.len(), 1);
    assert!(desk.integrations.chats.is_empty());

    let refused = |section: serde_json::Value| {
        let sections = BTreeMap::from([("freshservice".to_owned(), section)]);
        match connectors::registry::build(&sections) {
            Ok(_) => panic!("refused"),
            Err(error) => error.to_string(),
        }
    };
    let message = refused(json!({"base_url": desk.server.url, "api_key": API_KEY}));
    assert!(
        message.contains("freshservice.api_key: a secret is given by reference"),
        "{message}"
    );
    assert!(!message.contains(API_KEY), "{message}");
    let message = refused(json!({"base_url": desk.server.url, "api_key": "env:X", "apikey": "y"}));
    assert!(
        message.starts_with("freshservice") && message.contains("unknown field `apikey`"),
        "{message}"
    );
    let message = refused(
        json!({"base_url": "https://user:pw@acme.freshservice.com", "api_key": "file:/dev/null"}),
    );
    assert!(message.contains("freshservice"), "{message}");
    let sections = BTreeMap::from([("freshdesk".to_owned(), json!({}))]);
    let message = connectors::registry::build(&sections)
        .err()
        .unwrap()
        .to_string();
    assert!(
        message.contains("freshdesk: no integration has this name")
            && message.contains("freshservice"),
        "{message}"
    );
}

#[tokio::test]
async fn a_run_resolves_its_ticket_with_one_private_note_however_often_it_is_retried() {
    let desk = desk().await;
    let ticket = desk
        .sim
        .seed_ticket(NewTicket::incident("VPN client stopped on LT-0042"));
    let resolved = update(
        Some(note("run-fs1", "Step restart succeeded.", "1-4")),
        Some(Outcome::Resolved {
            close_code: "Solved (Permanently)".into(),
            close_notes: "Resolved by opsgate run run-fs1: the fix ran and was verified.".into(),
        }),
    );
    desk.write(&ticket.to_string(), resolved.clone())
        .await
        .unwrap();
    // A retry (the cursor was not moved before a crash) adds no second note.
    desk.write(&ticket.to_string(), resolved).await.unwrap();

    let notes = desk.sim.notes(ticket);
    assert_eq!(notes.len(), 1, "{notes:#?}");
    assert!(notes[0].private);
    assert_eq!(
        notes[0].body_text,
        "Step restart succeeded.\nResolved by opsgate run run-fs1: the fix ran and was verified.\n\n[opsgate run-fs1 #1-4]"
    );
    assert_eq!(desk.sim.status(ticket), Some(4), "Resolved");
}

#[tokio::test]
async fn a_failed_run_hands_its_ticket_to_a_group_by_name() {
    let desk = desk().await;
    let l2 = desk.sim.add_group("Endpoint L2");
    let ticket = desk.sim.seed_ticket(NewTicket::incident("Spooler stopped"));
    let failed = |records: &str, group: &str| {
        update(
            Some(note("run-fs2", "Step restart failed.", records)),
            Some(Outcome::NeedsPerson {
                state: Some("on_hold".into()),
                group: Some(group.into()),
            }),
        )
    };
    desk.write(&ticket.to_string(), failed("1-3", "endpoint l2"))
        .await
        .unwrap();
    assert_eq!(desk.sim.status(ticket), Some(3), "Pending");
    assert_eq!(desk.sim.group_id(ticket), Some(l2));

    // A group the desk does not have is said in the note, not guessed.
    desk.write(&ticket.to_string(), failed("4-5", "Nobody"))
        .await
        .unwrap();
    let notes = desk.sim.notes(ticket);
    assert!(
        notes[0]
            .body_text
            .contains("Handed to the group endpoint l2.")
    );
    assert!(
        notes[1].body_text.contains(
            "Could not hand the ticket to Nobody: Freshservice has no group of that name."
        ),
        "{notes:#?}"
    );
    assert_eq!(desk.sim.group_id(ticket), Some(l2), "left where it was");
}

#[tokio::test]
async fn a_marker_on_a_later_page_of_conversations_is_found() {
    let desk = desk().await;
    let ticket = desk.sim.seed_ticket(NewTicket::incident("Busy ticket"));
    for n in 0..130 {
        desk.sim
            .seed_note(ticket, &format!("Customer reply {n}"), false);
    }
    let written = note("run-fs3", "Step check succeeded.", "1-2");
    desk.sim
        .seed_note(ticket, &written.text.replace('\n', "<br>"), true);
    desk.write(&ticket.to_string(), update(Some(written), None))
        .await
        .unwrap();
    assert_eq!(desk.sim.notes(ticket).len(), 131, "no second note");
    let pages = desk
        .sim
        .calls()
        .iter()
        .filter(|call| call.contains("/conversations"))
        .count();
    assert_eq!(pages, 2, "{:#?}", desk.sim.calls());
}

#[tokio::test]
async fn each_failure_is_classified_and_never_shows_the_key() {
    let desk = desk().await;
    let ticket = desk.sim.seed_ticket(NewTicket::incident("Quota"));
    let client = desk.client(API_KEY);

    desk.sim.fail_next(
        1,
        Failure::RateLimited {
            retry_after_seconds: 7,
        },
    );
    failed_as(
        client.ticket(ticket).await,
        Expect::Retryable {
            retry_after: Some(Duration::from_secs(7)),
            says: &["Freshservice GET", "429", "limit of requests per minute"],
        },
    );
    desk.sim.fail_next(1, Failure::Unavailable);
    failed_as(
        client.ticket(ticket).await,
        Expect::Retryable {
            retry_after: None,
            says: &["503"],
        },
    );
    failed_as(
        client.update_ticket(ticket, &json!({"status": 9})).await,
        Expect::Permanent(&[
            "Validation failed",
            "status: It should be one of these values: '2,3,4,5' (invalid_value)",
        ]),
    );
    failed_as(
        client.ticket(999_999).await,
        Expect::Permanent(&["/api/v2/tickets/999999", "404"]),
    );
    let (_, message) = failed_as(
        desk.client("not-the-key").ticket(ticket).await,
        Expect::Permanent(&["401", "You have to be logged in"]),
    );
    assert!(!message.contains("not-the-key") && !message.contains(API_KEY));
    desk.sim.down(true);
    failed_as(
        desk.write(
            &ticket.to_string(),
            update(Some(note("run-fs4", "x", "1-1")), None),
        )
        .await,
        Expect::Retryable {
            retry_after: None,
            says: &["503"],
        },
    );
    desk.sim.down(false);
    // Nothing that is not a ticket number reaches a URL.
    failed_as(
        desk.write(
            "1001/../groups",
            update(Some(note("run-fs4", "x", "1-1")), None),
        )
        .await,
        Expect::Permanent(&["is not a Freshservice ticket number"]),
    );
}

struct Directory;

impl People for Directory {
    fn by_email(&self, email: &str) -> Option<String> {
        (email == "kim.lee@example.com").then(|| "kim".to_owned())
    }
}

#[tokio::test]
async fn the_automator_names_a_ticket_and_opsgate_reads_it_back() {
    let desk = desk().await;
    let group = desk.sim.add_group("Service Desk");
    let kim = desk.sim.add_requester("Kim", "kim.lee@example.com");
    let mut new = NewTicket::incident("VPN client stopped");
    new.group_id = Some(group);
    new.requester_id = Some(kim);
    new.custom_fields.insert("device".into(), json!("LT-0042"));
    let ticket = desk.sim.seed_ticket(new);

    let event = desk
        .event_for(
            json!({"ticket_id": format!("#INC-{ticket}"), "event": "created"}),
            &Directory,
        )
        .await
        .unwrap()
        .expect("an event");
    assert_eq!(event.source, "freshservice");
    assert_eq!(event.kind, "incident");
    assert_eq!(event.dedup_key, format!("freshservice:{ticket}"));
    assert_eq!(event.subject, format!("#INC-{ticket}"));
    assert_eq!(event.status, domain::EventStatus::Firing);
    let fields = &event.fields;
    assert_eq!(fields["ticket"], ticket.to_string());
    assert_eq!(fields["subject"], "VPN client stopped");
    assert_eq!(fields["custom_fields"]["device"], "LT-0042");
    assert_eq!(fields["group_id"], group);
    assert_eq!(fields["status"], "Open");
    assert_eq!(fields["requester_email"], "kim.lee@example.com");
    assert_eq!(fields["requested_by"], "kim", "the requester, by directory");
    assert_eq!(fields["event"], "created");

    // A resolved ticket resolves its event; a number works as well.
    desk.sim.set_status(ticket, 4);
    let event = desk
        .event(json!({"ticket_id": ticket}))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event.status, domain::EventStatus::Resolved);
    assert!(event.fields.get("requested_by").is_none(), "no directory");
}

#[tokio::test]
async fn a_notification_that_cannot_be_read_back_says_why() {
    let desk = desk().await;
    let ticket = desk.sim.seed_ticket(NewTicket::incident("x"));
    let invalid = |error: SourceError| match error {
        SourceError::Invalid { code, message } => format!("{code}: {message}"),
        other => panic!("expected invalid, got {other:?}"),
    };
    for (body, says) in [
        (
            json!({"ticket_id": "1001/../../groups"}),
            "invalid_notification: ticket_id is `\"1001/../../groups\"`",
        ),
        (json!({"ticket_id": -3}), "invalid_notification"),
        (json!({"ticket_id": true}), "invalid_notification"),
        (
            json!({"ticket": 3}),
            "invalid_body: invalid JSON body at `ticket`: unknown field `ticket`",
        ),
        (
            json!({"ticket_id": 1, "event": "x\u{7}"}),
            "event must be a short word",
        ),
        (
            json!({"ticket_id": 999_999}),
            "unreadable_record: could not read ticket 999999 from Freshservice",
        ),
    ] {
        let message = invalid(desk.event(body.clone()).await.unwrap_err());
        assert!(message.contains(says), "{body}: `{message}`");
    }
    desk.sim.fail_next(
        1,
        Failure::RateLimited {
            retry_after_seconds: 3,
        },
    );
    match desk.event(json!({"ticket_id": ticket})).await.unwrap_err() {
        SourceError::Unavailable {
            message,
            retry_after,
        } => {
            assert_eq!(retry_after, Some(Duration::from_secs(3)));
            assert!(message.contains("try again"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}
