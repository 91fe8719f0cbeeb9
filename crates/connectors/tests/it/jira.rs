//! The Jira client against the simulated site: the calls it makes, Cloud
//! and Data Center, and how each failure is classified.

use std::time::Duration;

use connectors::jira::{Issue, Transitioned};
use connectors::{Jira, JiraAuth, JiraConfig, Secret, WriteError};
use serde_json::json;
use test_support::Running;
use test_support::jira_sim::{Failure, JiraSim, NewIssue, Site, Workflow};
use test_support::scripted::{Reply, Scripted};

use crate::{Expect, failed_as};

struct JiraSite {
    sim: JiraSim,
    site: Site,
    server: Running,
}

/// A site with two service projects whose workflows number their
/// transitions differently: `OPS` from 11, `ITSM` from 711.
async fn start(site: Site) -> JiraSite {
    start_with(site, Workflow::incident(11)).await
}

/// The same, with `ops` as the workflow of `OPS`.
async fn start_with(site: Site, ops: Workflow) -> JiraSite {
    let sim = JiraSim::new(site.clone());
    sim.add_project("OPS", "IT Operations", ops);
    sim.add_project("ITSM", "Service Desk", Workflow::incident(711));
    let server = sim.start().await.expect("the simulator starts");
    JiraSite { sim, site, server }
}

async fn cloud() -> JiraSite {
    start(Site::cloud()).await
}

impl JiraSite {
    /// A client with the site's own credential.
    fn client(&self) -> Jira {
        let auth = match &self.site {
            Site::Cloud { email, api_token } => JiraAuth::Basic {
                email: email.clone(),
                api_token: Secret::new(api_token),
            },
            Site::DataCenter {
                personal_access_token,
            } => JiraAuth::Bearer {
                token: Secret::new(personal_access_token),
            },
        };
        client_at(&self.server.url, auth)
    }

    fn seed(&self, project: &str) -> String {
        self.sim.seed_issue(NewIssue {
            labels: vec!["vpn".into(), "lyon".into()],
            ..NewIssue::incident(project, "VPN tunnel down for the Lyon office")
        })
    }

    fn seed_in(&self, project: &str, status: &str) -> String {
        self.sim.seed_issue(NewIssue {
            status: Some(status.into()),
            ..NewIssue::incident(project, "Mailbox over quota")
        })
    }
}

fn client_at(url: &str, auth: JiraAuth) -> Jira {
    Jira::new(JiraConfig {
        base_url: url.to_owned(),
        auth,
        timeout: Duration::from_secs(5),
    })
    .expect("the client builds")
}

fn check<T: std::fmt::Debug>(result: Result<T, WriteError>, expect: Expect, secrets: &[&str]) {
    let (_, message) = failed_as(result, expect);
    for secret in secrets {
        assert!(!message.contains(secret), "`{message}` leaks a secret");
    }
}

/// A paragraph of text, as Jira's editor writes one.
fn paragraph(text: &str) -> serde_json::Value {
    json!({"type": "doc", "version": 1, "content": [
        {"type": "paragraph", "content": [{"type": "text", "text": text}]},
    ]})
}

// The write-back's markers look like this: `#` must survive the URL and the
// text search.
const MARKER: &str = "[opsgate 01J9Z3K8QW #4-7]";

#[tokio::test]
async fn gets_an_issue_with_its_fields() {
    let site = cloud().await;
    let key = site.seed("OPS");

    let issue: Issue = site.client().get_issue(&key).await.unwrap();

    assert_eq!(issue.key, "OPS-1");
    assert_eq!(issue.id, "10001");
    assert_eq!(issue.summary, "VPN tunnel down for the Lyon office");
    assert_eq!(issue.status, "Open");
    assert_eq!(issue.fields["status"]["statusCategory"]["key"], "new");
    assert_eq!(issue.fields["priority"]["name"], "High");
    assert_eq!(issue.fields["labels"], json!(["vpn", "lyon"]));
    assert_eq!(issue.fields["project"]["key"], "OPS");
    assert_eq!(site.sim.calls(), ["GET /rest/api/3/issue/OPS-1"]);
}

#[tokio::test]
async fn comments_are_internal_adf_paragraphs_found_by_their_marker() {
    let site = cloud().await;
    let key = site.seed("OPS");
    let other = site.seed("OPS");
    let client = site.client();

    assert!(!client.has_comment(&key, MARKER).await.unwrap());
    let text =
        format!("Automation started: run 01J9Z3K8QW.\nRestarted vpnagent: tunnel up. {MARKER}");
    let id = client.add_comment(&key, &text).await.unwrap();

    let comments = site.sim.comments(&key);
    assert_eq!(comments.len(), 1);
    let comment = &comments[0];
    assert_eq!(comment.id, id);
    assert!(comment.internal, "a write-back is an internal note");
    assert_eq!(
        comment.body,
        json!({"type": "doc", "version": 1, "content": [
            {"type": "paragraph", "content": [{"type": "text", "text": "Automation started: run 01J9Z3K8QW."}]},
            {"type": "paragraph", "content": [{"type": "text", "text": format!("Restarted vpnagent: tunnel up. {MARKER}")}]},
        ]})
    );
    assert!(client.has_comment(&key, MARKER).await.unwrap());
    assert!(
        !client
            .has_comment(&key, "[opsgate 01J9Z3K8QW #8-9]")
            .await
            .unwrap()
    );
    assert!(!client.has_comment(&other, MARKER).await.unwrap());
    let comment_path = "/rest/api/3/issue/OPS-1/comment";
    assert_eq!(
        site.sim.calls()[..2],
        [
            format!("GET {comment_path}?startAt=0&maxResults=100&orderBy=-created"),
            format!("POST {comment_path}"),
        ]
    );
}

#[tokio::test]
async fn a_marker_split_by_formatting_is_found() {
    let site = cloud().await;
    let key = site.seed("OPS");
    // Someone edited the note by hand: the marker now spans three text
    // nodes with different marks.
    site.sim.seed_comment(
        &key,
        "Kim Lee",
        json!({"type": "doc", "version": 1, "content": [
            {"type": "paragraph", "content": [
                {"type": "text", "text": "Restarted vpnagent. "},
                {"type": "text", "text": "[opsgate ", "marks": [{"type": "strong"}]},
                {"type": "text", "text": "01J9Z3K8QW", "marks": [{"type": "code"}]},
                {"type": "text", "text": " #4-7]"},
            ]},
        ]}),
    );

    assert!(site.client().has_comment(&key, MARKER).await.unwrap());
}

#[tokio::test]
async fn has_comment_pages_through_every_comment() {
    let site = cloud().await;
    let key = site.seed("OPS");
    site.sim.seed_comment(
        &key,
        "opsgate integration",
        paragraph(&format!("Started. {MARKER}")),
    );
    for n in 1..250 {
        site.sim
            .seed_comment(&key, "Kim Lee", paragraph(&format!("Still down ({n}).")));
    }
    let client = site.client();

    // Newest first: the oldest comment is on the third page.
    assert!(client.has_comment(&key, MARKER).await.unwrap());
    let starts = |calls: Vec<String>| -> Vec<String> {
        calls
            .iter()
            .map(|call| {
                let query = call.split_once('?').expect("a page has a query").1;
                query.split('&').next().unwrap().to_owned()
            })
            .collect()
    };
    assert_eq!(
        starts(site.sim.calls()),
        ["startAt=0", "startAt=100", "startAt=200"]
    );

    // A marker nowhere: every page is read, then no more.
    assert!(
        !client
            .has_comment(&key, "[opsgate 01J9Z3K8QW #8-9]")
            .await
            .unwrap()
    );
    assert_eq!(site.sim.calls().len(), 6);
}

#[tokio::test]
async fn pages_shorter_than_asked_are_followed_by_what_came() {
    let site = cloud().await;
    let key = site.seed("OPS");
    site.sim.seed_comment(
        &key,
        "opsgate integration",
        paragraph(&format!("Started. {MARKER}")),
    );
    for n in 1..100 {
        site.sim
            .seed_comment(&key, "Kim Lee", paragraph(&format!("Still down ({n}).")));
    }
    site.sim.cap_page_size(40);

    assert!(site.client().has_comment(&key, MARKER).await.unwrap());
    let starts: Vec<String> = site
        .sim
        .calls()
        .iter()
        .map(|call| call.split(['?', '&']).nth(1).unwrap().to_owned())
        .collect();
    assert_eq!(starts, ["startAt=0", "startAt=40", "startAt=80"]);
}

#[tokio::test]
async fn transitions_are_looked_up_per_issue_not_remembered() {
    let site = cloud().await;
    let ops = site.seed("OPS");
    let itsm = site.seed("ITSM");
    let client = site.client();

    let moved = client.transition_to(&ops, "Resolved").await.unwrap();
    assert_eq!(
        moved,
        Transitioned::Moved {
            transition_id: "41".into(),
            transition_name: "Resolve".into(),
            status: "Resolved".into(),
        }
    );
    let moved = client.transition_to(&itsm, "resolved").await.unwrap();
    assert_eq!(
        moved,
        Transitioned::Moved {
            transition_id: "741".into(),
            transition_name: "Resolve".into(),
            status: "Resolved".into(),
        }
    );
    assert_eq!(site.sim.status(&ops).as_deref(), Some("Resolved"));
    assert_eq!(site.sim.status(&itsm).as_deref(), Some("Resolved"));
    assert_eq!(
        site.sim.calls()[..3],
        [
            "GET /rest/api/3/issue/OPS-1?fields=status",
            "GET /rest/api/3/issue/OPS-1/transitions",
            "POST /rest/api/3/issue/OPS-1/transitions",
        ]
    );
}

#[tokio::test]
async fn another_projects_transition_id_is_refused_by_jira() {
    // Why the client never remembers an id: the simulator refuses OPS's
    // "Resolve" (41) on an ITSM issue as Jira does.
    let site = cloud().await;
    let itsm = site.seed("ITSM");
    let Site::Cloud { email, api_token } = &site.site else {
        unreachable!("a Cloud site")
    };
    let answer = reqwest::Client::new()
        .post(format!(
            "{}/rest/api/3/issue/{itsm}/transitions",
            site.server.url
        ))
        .basic_auth(email, Some(api_token))
        .json(&json!({"transition": {"id": "41"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    assert_eq!(
        answer.json::<serde_json::Value>().await.unwrap(),
        json!({"errorMessages": ["Transition id '41' is not valid for this issue."], "errors": {}})
    );
    assert_eq!(site.sim.status(&itsm).as_deref(), Some("Open"));
}

#[tokio::test]
async fn a_transition_may_be_named_instead_of_its_status() {
    let site = cloud().await;
    let key = site.seed("OPS");
    let client = site.client();

    let moved = client.transition_to(&key, "start WORK").await.unwrap();
    assert_eq!(
        moved,
        Transitioned::Moved {
            transition_id: "11".into(),
            transition_name: "Start work".into(),
            status: "Work in progress".into(),
        }
    );
    let moved = client.transition_to(&key, "pending").await.unwrap();
    assert!(
        matches!(&moved, Transitioned::Moved { status, .. } if status == "Pending"),
        "{moved:?}"
    );
}

#[tokio::test]
async fn an_issue_in_the_status_already_is_left_alone() {
    let site = cloud().await;
    let key = site.seed_in("OPS", "Resolved");

    let outcome = site.client().transition_to(&key, "RESOLVED").await.unwrap();

    assert_eq!(outcome, Transitioned::AlreadyThere);
    assert_eq!(
        site.sim.calls(),
        ["GET /rest/api/3/issue/OPS-1?fields=status"]
    );
}

#[tokio::test]
async fn no_transition_to_the_target_is_permanent_and_names_the_ones_there_are() {
    let site = cloud().await;
    let key = site.seed("OPS");

    check(
        site.client().transition_to(&key, "Closed").await,
        Expect::Permanent(&[
            "OPS-1 is `Open`",
            "no transition to `Closed`",
            "`Start work` → Work in progress",
            "`Resolve` → Resolved",
        ]),
        &[],
    );
    assert!(!site.sim.calls().iter().any(|call| call.starts_with("POST")));
    assert_eq!(site.sim.status(&key).as_deref(), Some("Open"));
}

#[tokio::test]
async fn a_transition_whose_screen_requires_a_field_is_permanent_naming_it() {
    let site = start_with(
        Site::cloud(),
        Workflow::incident(11).requiring("Resolve", "resolution"),
    )
    .await;
    let key = site.seed("OPS");

    check(
        site.client().transition_to(&key, "Resolved").await,
        Expect::Permanent(&["POST", "400", "resolution: Resolution is required."]),
        &[site.site.secret()],
    );
    assert_eq!(site.sim.status(&key).as_deref(), Some("Open"));
}

#[tokio::test]
async fn data_center_is_called_through_v2_with_a_personal_access_token() {
    let site = start(Site::data_center()).await;
    let key = site.seed("OPS");
    let client = site.client();

    assert_eq!(client.get_issue(&key).await.unwrap().status, "Open");
    assert!(!client.has_comment(&key, MARKER).await.unwrap());
    client
        .add_comment(
            &key,
            &format!("Automation started.\nRestarted vpnagent. {MARKER}"),
        )
        .await
        .unwrap();
    assert!(client.has_comment(&key, MARKER).await.unwrap());
    client.transition_to(&key, "Resolved").await.unwrap();

    assert_eq!(
        site.sim.comment_texts(&key),
        [format!(
            "Automation started.\nRestarted vpnagent. {MARKER}\n"
        )]
    );
    assert!(site.sim.comments(&key)[0].internal);
    assert_eq!(site.sim.status(&key).as_deref(), Some("Resolved"));
    let calls = site.sim.calls();
    assert!(
        calls
            .iter()
            .all(|call| call.contains(" /rest/api/2/issue/")),
        "{calls:?}"
    );
}

#[tokio::test]
async fn a_data_center_has_no_v3() {
    // Why a personal access token means v2: the same call through v3 meets
    // Jira's page for a path it does not serve.
    let site = start(Site::data_center()).await;
    let key = site.seed("OPS");
    connectors::install_crypto_provider();
    let answer = reqwest::Client::new()
        .get(format!("{}/rest/api/3/issue/{key}", site.server.url))
        .bearer_auth(site.site.secret())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 404);
    assert!(
        answer
            .text()
            .await
            .unwrap()
            .contains("you've found a dead link")
    );
}

#[tokio::test]
async fn wrong_credentials_are_permanent_with_jiras_words() {
    for (site, auth, says) in [
        (
            cloud().await,
            JiraAuth::Basic {
                email: "opsgate@example.com".into(),
                api_token: Secret::new("not-the-token-3Fz"),
            },
            "Client must be authenticated to access this resource.",
        ),
        (
            start(Site::data_center()).await,
            JiraAuth::Bearer {
                token: Secret::new("not-the-token-3Fz"),
            },
            "You are not authenticated. Authentication required to perform this operation.",
        ),
    ] {
        let key = site.seed("OPS");
        let client = client_at(&site.server.url, auth);
        let (_, message) = failed_as(
            client.add_comment(&key, "x").await,
            Expect::Permanent(&["POST", "/issue/OPS-1/comment", "401"]),
        );
        assert!(message.contains(says), "`{message}` should quote Jira");
        for secret in [site.site.secret(), "not-the-token-3Fz"] {
            assert!(!message.contains(secret), "`{message}` leaks a secret");
        }
        assert!(site.sim.comments(&key).is_empty());
    }
}

#[tokio::test]
async fn a_missing_issue_is_permanent_with_jiras_message() {
    let site = cloud().await;
    let client = site.client();
    let says: &[&str] = &[
        "OPS-999",
        "404",
        "Issue does not exist or you do not have permission to see it.",
    ];

    check(
        client.get_issue("OPS-999").await,
        Expect::Permanent(says),
        &[],
    );
    check(
        client.has_comment("OPS-999", MARKER).await,
        Expect::Permanent(says),
        &[],
    );
    check(
        client.add_comment("OPS-999", "x").await,
        Expect::Permanent(says),
        &[],
    );
    check(
        client.transition_to("OPS-999", "Resolved").await,
        Expect::Permanent(says),
        &[],
    );
}

#[tokio::test]
async fn failures_are_classified() {
    let site = cloud().await;
    let key = site.seed("OPS");
    let client = site.client();
    let secret = site.site.secret();

    site.sim.fail_next(
        1,
        Failure::RateLimited {
            retry_after_secs: 7,
        },
    );
    check(
        client.add_comment(&key, "x").await,
        Expect::Retryable {
            retry_after: Some(Duration::from_secs(7)),
            says: &["POST", "429", "RateLimit-Reason: jira-burst-based"],
        },
        &[secret],
    );

    site.sim.fail_next(
        1,
        Failure::Unavailable {
            retry_after_secs: Some(30),
        },
    );
    check(
        client.get_issue(&key).await,
        Expect::Retryable {
            retry_after: Some(Duration::from_secs(30)),
            says: &["GET", "503"],
        },
        &[secret],
    );
    site.sim.fail_next(
        1,
        Failure::Unavailable {
            retry_after_secs: None,
        },
    );
    check(
        client.has_comment(&key, MARKER).await,
        Expect::Retryable {
            retry_after: None,
            says: &["503"],
        },
        &[secret],
    );

    site.sim.down(true);
    check(
        client.transition_to(&key, "Resolved").await,
        Expect::Retryable {
            retry_after: None,
            says: &["GET", "503", "text/html"],
        },
        &[secret],
    );
    site.sim.down(false);

    check(
        client.add_comment(&key, " \n\n ").await,
        Expect::Permanent(&["400", "comment: Comment body can not be empty!"]),
        &[secret],
    );
    check(
        client.add_comment(&key, &"x".repeat(32_768)).await,
        Expect::Permanent(&["400", "exceeds the allowed limit of 32,767 characters"]),
        &[secret],
    );
    // The failed calls changed nothing.
    assert!(site.sim.comments(&key).is_empty());
    assert_eq!(site.sim.status(&key).as_deref(), Some("Open"));
}

#[tokio::test]
async fn a_403_is_permanent_with_jiras_words() {
    let scripted = Scripted::default();
    scripted.on(
        "GET /rest/api/3/issue/OPS-1",
        vec![Reply::json(
            403,
            json!({"errorMessages": ["You do not have the permission to see the specified issue."], "errors": {}}),
        )],
    );
    let server = scripted.start().await.unwrap();
    let client = client_at(
        &server.url,
        JiraAuth::Basic {
            email: "opsgate@example.com".into(),
            api_token: Secret::new("token-7Q2x"),
        },
    );

    check(
        client.get_issue("OPS-1").await,
        Expect::Permanent(&[
            "403",
            "You do not have the permission to see the specified issue.",
        ]),
        &["token-7Q2x"],
    );
}

#[tokio::test]
async fn a_slow_site_is_retryable() {
    let scripted = Scripted::default();
    scripted.on(
        "GET /rest/api/2/issue/OPS-1",
        vec![Reply::json(200, json!({})).delayed(Duration::from_secs(2))],
    );
    let server = scripted.start().await.unwrap();
    let client = Jira::new(JiraConfig {
        base_url: server.url.clone(),
        auth: JiraAuth::Bearer {
            token: Secret::new("token-7Q2x"),
        },
        timeout: Duration::from_millis(200),
    })
    .unwrap();

    check(
        client.get_issue("OPS-1").await,
        Expect::Retryable {
            retry_after: None,
            says: &["GET", "/rest/api/2/issue/OPS-1", "failed"],
        },
        &["token-7Q2x"],
    );
}

#[tokio::test]
async fn an_answer_that_is_not_jiras_is_permanent() {
    let scripted = Scripted::default();
    scripted.on(
        "GET /rest/api/3/issue/OPS-1",
        vec![Reply::json(
            200,
            json!({"id": "10001", "key": "OPS-1", "fields": {}}),
        )],
    );
    let server = scripted.start().await.unwrap();
    let client = client_at(
        &server.url,
        JiraAuth::Basic {
            email: "opsgate@example.com".into(),
            api_token: Secret::new("token-7Q2x"),
        },
    );

    check(
        client.get_issue("OPS-1").await,
        Expect::Permanent(&["malformed answer", "fields.summary"]),
        &[],
    );
}

#[tokio::test]
async fn values_that_would_change_the_request_are_refused_before_sending() {
    let site = cloud().await;
    let key = site.seed("OPS");
    let client = site.client();

    check(
        client.get_issue("../../myself").await,
        Expect::Permanent(&["`../../myself` is not an issue key"]),
        &[],
    );
    check(
        client.add_comment("OPS-1/../OPS-2", "x").await,
        Expect::Permanent(&["is not an issue key"]),
        &[],
    );
    check(
        client.has_comment(&key, "").await,
        Expect::Permanent(&["marker", "empty"]),
        &[],
    );
    check(
        client.transition_to(&key, "  ").await,
        Expect::Permanent(&["status to move to is empty"]),
        &[],
    );
    assert!(site.sim.calls().is_empty());
}

#[tokio::test]
async fn an_unreachable_site_is_retryable() {
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let client = client_at(
        &format!("http://127.0.0.1:{closed_port}"),
        JiraAuth::Basic {
            email: "opsgate@example.com".into(),
            api_token: Secret::new("token-7Q2x"),
        },
    );

    check(
        client.has_comment("OPS-1", MARKER).await,
        Expect::Retryable {
            retry_after: None,
            says: &["GET", "/rest/api/3/issue/OPS-1/comment", "failed"],
        },
        &["token-7Q2x"],
    );
}

#[test]
fn secrets_stay_out_of_debug_output() {
    for auth in [
        JiraAuth::Basic {
            email: "opsgate@example.com".into(),
            api_token: Secret::new("token-7Q2x"),
        },
        JiraAuth::Bearer {
            token: Secret::new("token-7Q2x"),
        },
    ] {
        let config = JiraConfig {
            base_url: "https://acme.atlassian.net".into(),
            auth,
            timeout: Duration::from_secs(5),
        };
        let printed = format!("{config:?} {:?}", Jira::new(config.clone()).unwrap());
        assert!(!printed.contains("token-7Q2x"), "{printed}");
        assert!(printed.contains("***"), "{printed}");
    }
}

#[test]
fn a_base_url_with_credentials_is_refused_without_repeating_them() {
    let error = Jira::new(JiraConfig {
        base_url: "https://opsgate:hunter2-Pw@acme.atlassian.net".into(),
        auth: JiraAuth::Bearer {
            token: Secret::new("hunter2-Pw"),
        },
        timeout: Duration::from_secs(5),
    })
    .unwrap_err()
    .to_string();
    assert!(error.contains("Jira base URL"), "{error}");
    assert!(error.contains("carries credentials"), "{error}");
    assert!(!error.contains("hunter2-Pw"), "{error}");
}
