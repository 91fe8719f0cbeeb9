//! The ServiceNow client against the simulated instance: the calls it
//! makes, the way it authenticates, and how each failure is classified.

use std::time::Duration;

use connectors::{Secret, ServiceNow, ServiceNowAuth, ServiceNowConfig, WriteError};
use serde_json::json;
use test_support::Running;
use test_support::servicenow_sim::{Credentials, NewIncident, Seeded, ServiceNowSim};

use crate::{Expect, failed_as};

struct Instance {
    sim: ServiceNowSim,
    credentials: Credentials,
    server: Running,
}

async fn instance() -> Instance {
    let credentials = Credentials::default();
    let sim = ServiceNowSim::new(credentials.clone());
    let server = sim.start().await.expect("the simulator starts");
    Instance {
        sim,
        credentials,
        server,
    }
}

impl Instance {
    fn basic(&self) -> ServiceNow {
        self.client(ServiceNowAuth::Basic {
            username: self.credentials.username.clone(),
            password: Secret::new(&self.credentials.password),
        })
    }

    fn oauth(&self) -> ServiceNow {
        self.client(ServiceNowAuth::OAuth {
            client_id: self.credentials.client_id.clone(),
            client_secret: Secret::new(&self.credentials.client_secret),
            username: self.credentials.username.clone(),
            password: Secret::new(&self.credentials.password),
        })
    }

    fn client(&self, auth: ServiceNowAuth) -> ServiceNow {
        client_at(&self.server.url, auth)
    }

    fn seed(&self) -> Seeded {
        self.sim.seed_incident(NewIncident {
            short_description: "VPN tunnel down for the Lyon office".into(),
            state: "2".into(),
            assignment_group: Some("Network Operations".into()),
            cmdb_ci: Some("vpn-gw-lyon-01".into()),
            caller_id: Some("Jane Doe".into()),
            number: None,
        })
    }

    /// Every secret the instance knows, and the tokens it handed out.
    fn secrets(&self) -> Vec<String> {
        let mut secrets = vec![
            self.credentials.password.clone(),
            self.credentials.client_secret.clone(),
        ];
        secrets.extend(self.sim.issued_tokens());
        secrets
    }
}

fn client_at(url: &str, auth: ServiceNowAuth) -> ServiceNow {
    ServiceNow::new(ServiceNowConfig {
        instance_url: url.to_owned(),
        auth,
        timeout: Duration::from_secs(5),
    })
    .expect("the client builds")
}

fn check<T: std::fmt::Debug>(result: Result<T, WriteError>, expect: Expect, secrets: &[String]) {
    let (_, message) = failed_as(result, expect);
    for secret in secrets {
        assert!(
            !message.contains(secret.as_str()),
            "`{message}` leaks a secret"
        );
    }
}

#[tokio::test]
async fn finds_an_incident_by_number() {
    let instance = instance().await;
    let seeded = instance.seed();
    let client = instance.basic();

    let found = client
        .find_by_number("incident", &seeded.number)
        .await
        .unwrap()
        .expect("the incident is found");
    assert_eq!(found["sys_id"], json!(seeded.sys_id));
    assert_eq!(found["state"], json!("2"));

    let missing = client
        .find_by_number("incident", "INC9999999")
        .await
        .unwrap();
    assert_eq!(missing, None);
    assert_eq!(
        instance.sim.calls(),
        ["GET /api/now/table/incident", "GET /api/now/table/incident"]
    );
}

#[tokio::test]
async fn gets_a_record_with_values_and_display_values() {
    let instance = instance().await;
    let seeded = instance.seed();

    let record = instance
        .basic()
        .get("incident", &seeded.sys_id)
        .await
        .unwrap();

    assert_eq!(
        record["number"],
        json!({"display_value": seeded.number, "value": seeded.number})
    );
    assert_eq!(
        record["state"],
        json!({"display_value": "In Progress", "value": "2"})
    );
    let group = &record["assignment_group"];
    assert_eq!(group["display_value"], json!("Network Operations"));
    let group_id = group["value"].as_str().unwrap();
    assert_eq!(group_id.len(), 32);
    assert_eq!(
        group["link"],
        json!(format!(
            "{}/api/now/table/sys_user_group/{group_id}",
            instance.server.url
        ))
    );
    assert_eq!(record["caller_id"]["display_value"], json!("Jane Doe"));
    assert_eq!(
        record["close_code"],
        json!({"display_value": "", "value": ""})
    );
}

#[tokio::test]
async fn resolves_an_incident() {
    let instance = instance().await;
    let seeded = instance.seed();
    let client = instance.basic();

    let resolution = json!({
        "state": "6",
        "close_code": "Solution provided",
        "close_notes": "VPN agent restarted; tunnel up.",
    });
    client
        .update("incident", &seeded.sys_id, &resolution)
        .await
        .unwrap();

    let incident = instance.sim.incident(&seeded.sys_id).unwrap();
    assert_eq!(incident["state"], "6");
    assert_eq!(incident["close_code"], "Solution provided");
    assert_eq!(incident["close_notes"], "VPN agent restarted; tunnel up.");
    assert_eq!(incident["sys_mod_count"], "1");
}

#[tokio::test]
async fn work_notes_land_in_the_journal_and_are_found_by_marker() {
    let instance = instance().await;
    let seeded = instance.seed();
    let other = instance.seed();
    let client = instance.basic();
    // The shape of the write-back's markers: `#` must survive the URL.
    let marker = "[opsgate 01J9Z3K8QW #4-7]";

    assert!(!client.has_work_note(&seeded.sys_id, marker).await.unwrap());
    let note = format!("Restarted the VPN agent on LAPTOP-0042: tunnel up. {marker}");
    client
        .update("incident", &seeded.sys_id, &json!({"work_notes": note}))
        .await
        .unwrap();

    assert_eq!(instance.sim.work_notes(&seeded.sys_id), [note]);
    let row = &instance.sim.journal()[0];
    assert_eq!(row["element"], "work_notes");
    assert_eq!(row["name"], "incident");
    assert_eq!(row["sys_created_by"], instance.credentials.username);
    assert!(client.has_work_note(&seeded.sys_id, marker).await.unwrap());
    assert!(
        !client
            .has_work_note(&seeded.sys_id, "[opsgate 01J9Z3K8QW #8-9]")
            .await
            .unwrap()
    );
    assert!(!client.has_work_note(&other.sys_id, marker).await.unwrap());
}

#[tokio::test]
async fn oauth_logs_in_once_then_refreshes_an_expired_token_once() {
    let instance = instance().await;
    let seeded = instance.seed();
    let client = instance.oauth();

    client.get("incident", &seeded.sys_id).await.unwrap();
    client.get("incident", &seeded.sys_id).await.unwrap();
    assert_eq!(instance.sim.token_grants(), ["password"]);

    instance.sim.expire_access_tokens();
    client
        .clone()
        .get("incident", &seeded.sys_id)
        .await
        .unwrap();

    assert_eq!(instance.sim.token_grants(), ["password", "refresh_token"]);
    let record_path = format!("GET /api/now/table/incident/{}", seeded.sys_id);
    assert_eq!(
        instance.sim.calls(),
        [
            "POST /oauth_token.do",
            &record_path,
            &record_path,
            // Refused with the expired token, refreshed, repeated.
            &record_path,
            "POST /oauth_token.do",
            &record_path,
        ]
    );
}

#[tokio::test]
async fn concurrent_calls_share_one_refresh() {
    let instance = instance().await;
    let seeded = instance.seed();
    let client = instance.oauth();
    client.get("incident", &seeded.sys_id).await.unwrap();
    instance.sim.expire_access_tokens();

    let calls = (0..4).map(|_| {
        let client = client.clone();
        let sys_id = seeded.sys_id.clone();
        tokio::spawn(async move { client.get("incident", &sys_id).await })
    });
    for call in calls {
        call.await.unwrap().unwrap();
    }

    assert_eq!(instance.sim.token_grants(), ["password", "refresh_token"]);
}

#[tokio::test]
async fn a_refused_refresh_token_falls_back_to_the_password_grant() {
    let instance = instance().await;
    let seeded = instance.seed();
    let client = instance.oauth();
    client.get("incident", &seeded.sys_id).await.unwrap();

    instance.sim.expire_access_tokens();
    instance.sim.revoke_refresh_tokens();
    client.get("incident", &seeded.sys_id).await.unwrap();

    assert_eq!(
        instance.sim.token_grants(),
        ["password", "refresh_token", "password"]
    );
}

#[tokio::test]
async fn wrong_basic_credentials_are_permanent_with_servicenows_message() {
    let instance = instance().await;
    let seeded = instance.seed();
    let client = instance.client(ServiceNowAuth::Basic {
        username: instance.credentials.username.clone(),
        password: Secret::new("not-the-password-3Fz"),
    });

    let mut secrets = instance.secrets();
    secrets.push("not-the-password-3Fz".into());
    check(
        client.get("incident", &seeded.sys_id).await,
        Expect::Permanent(&[
            "GET",
            "/api/now/table/incident/",
            "401",
            "User Not Authenticated",
            "Required to provide Auth information",
        ]),
        &secrets,
    );
}

#[tokio::test]
async fn wrong_oauth_client_secret_is_permanent() {
    let instance = instance().await;
    let seeded = instance.seed();
    let client = instance.client(ServiceNowAuth::OAuth {
        client_id: instance.credentials.client_id.clone(),
        client_secret: Secret::new("not-the-client-secret-8Hq"),
        username: instance.credentials.username.clone(),
        password: Secret::new(&instance.credentials.password),
    });

    let mut secrets = instance.secrets();
    secrets.push("not-the-client-secret-8Hq".into());
    check(
        client.get("incident", &seeded.sys_id).await,
        Expect::Permanent(&[
            "/oauth_token.do",
            "grant_type=password",
            "401",
            "access_denied",
        ]),
        &secrets,
    );
    assert_eq!(instance.sim.calls(), ["POST /oauth_token.do"]);
}

#[tokio::test]
async fn a_401_after_a_refresh_is_permanent() {
    let instance = instance().await;
    let seeded = instance.seed();
    let client = instance.oauth();
    client.get("incident", &seeded.sys_id).await.unwrap();
    // The refreshed token is refused too, as when the integration user is
    // locked out between the token request and the call.
    instance.sim.issue_expired_tokens(true);
    instance.sim.expire_access_tokens();

    check(
        client.get("incident", &seeded.sys_id).await,
        Expect::Permanent(&["401", "User Not Authenticated"]),
        &instance.secrets(),
    );
    assert_eq!(instance.sim.token_grants(), ["password", "refresh_token"]);
}

#[tokio::test]
async fn failures_are_classified() {
    let instance = instance().await;
    let seeded = instance.seed();
    let secrets = instance.secrets();
    let client = instance.basic();
    let resolve_without_notes = json!({"state": "6"});

    instance.sim.rate_limit_next(1, 7);
    check(
        client.get("incident", &seeded.sys_id).await,
        Expect::Retryable {
            retry_after: Some(Duration::from_secs(7)),
            says: &["429", "Rate limit exceeded"],
        },
        &secrets,
    );

    instance.sim.down(true);
    check(
        client
            .update("incident", &seeded.sys_id, &json!({"work_notes": "x"}))
            .await,
        Expect::Retryable {
            retry_after: None,
            says: &["PATCH", "503", "text/html"],
        },
        &secrets,
    );
    instance.sim.down(false);

    check(
        client
            .get("incident", "0123456789abcdef0123456789abcdef")
            .await,
        Expect::Permanent(&[
            "404",
            "No Record found",
            "Record doesn't exist or ACL restricts the record retrieval",
        ]),
        &secrets,
    );
    check(
        client
            .update("incident", &seeded.sys_id, &resolve_without_notes)
            .await,
        Expect::Permanent(&[
            "403",
            "Operation Failed",
            "Resolution code, Resolution notes",
        ]),
        &secrets,
    );
    check(
        client
            .update("incident", &seeded.sys_id, &json!({"state": "resolved"}))
            .await,
        Expect::Permanent(&["400", "not a choice of incident.state"]),
        &secrets,
    );
    check(
        client.get("no_such_table", &seeded.sys_id).await,
        Expect::Permanent(&["400", "Invalid table no_such_table"]),
        &secrets,
    );
    // The failed writes changed nothing.
    assert_eq!(instance.sim.incident(&seeded.sys_id).unwrap()["state"], "2");
    assert!(instance.sim.journal().is_empty());
}

#[tokio::test]
async fn values_that_would_change_the_request_are_refused_before_sending() {
    let instance = instance().await;
    let seeded = instance.seed();
    let client = instance.basic();

    check(
        client
            .has_work_note(&seeded.sys_id, "marker^element=comments")
            .await,
        Expect::Permanent(&["marker"]),
        &[],
    );
    check(
        client
            .get("incident", "../sys_user/6816f79cc0a8016401c5a33be04be441")
            .await,
        Expect::Permanent(&["is not a sys_id"]),
        &[],
    );
    check(
        client.find_by_number("incident/..", "INC0010001").await,
        Expect::Permanent(&["is not a table name"]),
        &[],
    );
    check(
        client
            .update("incident", &seeded.sys_id, &json!(["state", "6"]))
            .await,
        Expect::Permanent(&["JSON object"]),
        &[],
    );
    assert!(instance.sim.calls().is_empty());
}

#[tokio::test]
async fn an_unreachable_instance_is_retryable() {
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let credentials = Credentials::default();
    let client = client_at(
        &format!("http://127.0.0.1:{closed_port}"),
        ServiceNowAuth::Basic {
            username: credentials.username,
            password: Secret::new(&credentials.password),
        },
    );

    check(
        client.find_by_number("incident", "INC0010001").await,
        Expect::Retryable {
            retry_after: None,
            says: &["GET", "/api/now/table/incident", "failed"],
        },
        &[credentials.password],
    );
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let config = ServiceNowConfig {
        instance_url: "https://acme.service-now.com".into(),
        auth: ServiceNowAuth::OAuth {
            client_id: "3f6c1b0e9a7d4c2b8e5f1a0d7c6b5a49".into(),
            client_secret: Secret::new("client-secret-Vw9k"),
            username: "opsgate.integration".into(),
            password: Secret::new("integration-password-7Q2x"),
        },
        timeout: Duration::from_secs(5),
    };
    let printed = format!("{config:?} {:?}", ServiceNow::new(config.clone()).unwrap());
    assert!(!printed.contains("client-secret-Vw9k"), "{printed}");
    assert!(!printed.contains("integration-password-7Q2x"), "{printed}");
    assert!(printed.contains("***"), "{printed}");
}

#[test]
fn an_instance_url_with_credentials_is_refused_without_repeating_them() {
    let error = ServiceNow::new(ServiceNowConfig {
        instance_url: "https://admin:hunter2-Pw@acme.service-now.com".into(),
        auth: ServiceNowAuth::Basic {
            username: "admin".into(),
            password: Secret::new("hunter2-Pw"),
        },
        timeout: Duration::from_secs(5),
    })
    .unwrap_err()
    .to_string();
    assert!(error.contains("carries credentials"), "{error}");
    assert!(!error.contains("hunter2-Pw"), "{error}");
}

#[tokio::test]
async fn another_sources_event_names_a_ticket_only_in_a_table_opsgate_works() {
    let instance = instance().await;
    let password = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(password.path(), &instance.credentials.password).unwrap();
    let sections = std::collections::BTreeMap::from([(
        "servicenow".to_owned(),
        json!({
            "instance_url": instance.server.url,
            "basic": {
                "username": instance.credentials.username,
                "password": format!("file:{}", password.path().display()),
            },
        }),
    )]);
    let integrations = connectors::registry::build(&sections).expect("the section is valid");
    let event = |fields: serde_json::Value| {
        domain::Event::from_new(
            "evt-1".to_owned(),
            domain::NewEvent {
                source: "agent".to_owned(),
                kind: "proposal".to_owned(),
                dedup_key: "k".to_owned(),
                subject: "s".to_owned(),
                fields,
                status: domain::EventStatus::Open,
                occurred_at: None,
            },
            jiff::Timestamp::now(),
        )
    };
    let ticket = |fields| {
        integrations
            .ticket_for(&event(fields))
            .map(|(system, ticket)| (system.name(), ticket))
    };
    assert_eq!(
        ticket(json!({"ticket": "INC0010001"})),
        Some(("servicenow", "INC0010001".to_owned()))
    );
    assert_eq!(
        ticket(json!({"ticket": "RITM0010001", "ticket_table": "sc_req_item"})),
        Some(("servicenow", "sc_req_item/RITM0010001".to_owned()))
    );
    // A sender cannot point opsgate's notes and states at another kind of
    // record.
    for table in [
        "change_request",
        "sys_user",
        "problem",
        "incident/../sys_user",
    ] {
        assert_eq!(
            ticket(json!({"ticket": "CHG0000001", "ticket_table": table})),
            None,
            "{table}"
        );
    }
}
