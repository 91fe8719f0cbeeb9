//! What a hostile user tried against the real server, kept as tests: links
//! minted for someone else, a requester spelling their name another way,
//! a forged `Host`, and malformed queries and methods. Each refusal is
//! checked where it matters: nothing ran, and the audit says who tried.

use serde_json::{Value, json};
use test_support::scripted::{Reply, Scripted};

use crate::harness::{Server, Workspace, count_of, event, http_runbook, timeline};

/// kim's manager is carol; security is erin; bob is on call; ivan is an
/// operator who also approves for the DBAs.
const DIRECTORY: &str = "time_zone: UTC
people:
  - { id: kim, name: Kim Kowalski, manager: carol }
  - { id: carol, name: Carol Chen }
  - { id: erin, name: Erin Evans }
  - { id: bob, name: Bob Byte }
  - { id: alice, name: Alice Admin }
  - { id: ivan, name: Ivan Ivanov }
groups:
  security: [erin]
";

/// A two-stage chain (kim's manager, then security) on a runbook whose
/// one step the target counts; links are built on a configured public URL.
fn two_stage_workspace() -> Workspace {
    let mut workspace = Workspace::new();
    let directory = workspace.dir.path().join("directory.yaml");
    std::fs::write(&directory, DIRECTORY).expect("write the directory");
    workspace.config_yaml = Some(format!(
        "directory: {}\napproval_links:\n  secret: env:TESTS_LINK_SECRET\n  public_url: https://opsgate.example\n",
        directory.display()
    ));
    workspace.env = vec![("TESTS_LINK_SECRET".into(), "hostile-tests-secret".into())];
    workspace.add_runbook(
        "r.yaml",
        &http_runbook("grant", "grant", &[("grant", "POST", "/grant", "")], "").replace(
            "approval: auto\n",
            "approval:\n  mode: required\n  stages:\n    - { name: manager, approvers: [\"manager_of(requester)\"] }\n    - { name: security, approvers: [\"group:security\"] }\n",
        ),
    );
    workspace
}

/// Approves on the page behind `url` (a link on the public URL, opened on
/// the test server).
async fn approve_on_page(server: &Server, url: &str) -> u16 {
    let path = url
        .strip_prefix("https://opsgate.example")
        .unwrap_or_else(|| panic!("a link on the public URL: {url}"));
    reqwest::Client::new()
        .post(format!("{}{path}", server.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("decision=approve&comment=checked")
        .send()
        .await
        .expect("reach opsgate")
        .status()
        .as_u16()
}

#[tokio::test]
async fn nobody_is_handed_another_persons_link() {
    let target = Scripted::default();
    target.on("POST /grant", vec![Reply::json(200, json!({}))]);
    let target_server = target.start().await.unwrap();
    let workspace = two_stage_workspace();
    let ivan_operates = workspace.create_token("ivan", "operator");
    let ivan_approves = workspace.create_token("ivan", "approver");
    let bob = workspace.create_token("bob", "approver");
    let carol = workspace.create_token("carol", "approver");
    let erin = workspace.create_token("erin", "approver");
    let admin = workspace.create_token("root", "admin");
    let server = workspace.start(&[("TARGET", &target_server.url)]);

    // ivan posts kim's request: he is its requester.
    let mut request = event("grant", "HOSTILE-LINKS");
    request["fields"]["requested_by"] = json!("kim");
    let (status, report) = server
        .post_raw_as(&ivan_operates, "/v1/events", &request.to_string())
        .await;
    assert_eq!(status, 202, "{report}");
    assert_eq!(report["state"], "awaiting_approval", "{report}");
    let run_id = report["run_id"].as_str().unwrap().to_owned();

    // An operator or an admin asks for links for people, real or invented:
    // the role may not ask for links at all.
    for (token, approver) in [
        (&ivan_operates, "carol"),
        (&ivan_operates, "zed-nobody"),
        (&admin, "carol"),
    ] {
        let (status, body) = server
            .ask_for_link(token, &run_id, &json!({ "approver": approver }))
            .await;
        assert_eq!(status, 403, "{approver}: {body}");
        assert_eq!(body["error"]["code"], "forbidden");
        assert!(
            body.to_string()
                .contains("may not ask for an approval link"),
            "{body}"
        );
    }
    // An approver asks for someone else's: refused, and audited.
    for approver in ["carol", "zed-nobody", "erin"] {
        let (status, body) = server
            .ask_for_link(&bob, &run_id, &json!({ "approver": approver }))
            .await;
        assert_eq!(status, 403, "{approver}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("only for their own"), "{message}");
    }
    // ivan also holds the approver role; he asked for this run, so he gets
    // no link to it. bob is not who the manager stage waits for.
    for (token, why) in [
        (&ivan_approves, "separation of duties"),
        (&bob, "is not an approver of stage `manager`"),
    ] {
        let (status, body) = server.ask_for_link(token, &run_id, &json!({})).await;
        assert_eq!(status, 403, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(why), "{why}: {message}");
    }
    let run = server.get(&format!("/v1/runs/{run_id}")).await;
    assert_eq!(count_of(&run, "approval.link_issued"), 0, "{run:#}");
    assert_eq!(count_of(&run, "approval.link_refused"), 5, "{run:#}");
    assert_eq!(target.calls("POST /grant"), 0);

    // Carol and Erin each ask for their own, and decide with it.
    for (token, person) in [(&carol, "carol"), (&erin, "erin")] {
        // Spelling one's own name another way is still one's own link.
        let (status, issued) = server
            .ask_for_link(
                token,
                &run_id,
                &json!({ "approver": person.to_uppercase() }),
            )
            .await;
        assert_eq!(status, 200, "{issued}");
        assert_eq!(issued["approver"], person);
        let url = issued["url"].as_str().unwrap();
        assert_eq!(approve_on_page(&server, url).await, 200, "{person}");
    }
    let run = server.wait(&run_id).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    assert_eq!(target.calls("POST /grant"), 1);
    // The audit of each approval by link names who caused the link.
    let used: Vec<(String, Value)> = timeline(&run)
        .into_iter()
        .filter(|(kind, _, _)| kind == "approval.link_used")
        .map(|(_, actor, detail)| (actor, detail["issued_by"].clone()))
        .collect();
    assert_eq!(
        used,
        [
            ("user:carol".to_owned(), json!("user:carol")),
            ("user:erin".to_owned(), json!("user:erin")),
        ]
    );
}

#[tokio::test]
async fn a_link_is_built_on_the_servers_own_address_whatever_the_host_header_says() {
    // No public URL configured: links are built on the address opsgate
    // listens on, never on the Host a caller sends.
    let mut workspace = two_stage_workspace();
    let directory = workspace.dir.path().join("directory.yaml");
    workspace.config_yaml = Some(format!("directory: {}\n", directory.display()));
    let carol = workspace.create_token("carol", "approver");
    let server = workspace.start(&[("TARGET", "http://127.0.0.1:9")]);
    let mut request = event("grant", "HOSTILE-HOST");
    request["fields"]["requested_by"] = json!("kim");
    let report = server.event(&request).await;
    let run_id = report["run_id"].as_str().unwrap();
    let answer = reqwest::Client::new()
        .post(format!("{}/v1/runs/{run_id}/approval-links", server.base))
        .bearer_auth(&carol)
        .header("host", "evil.example")
        .header("x-forwarded-host", "evil.example")
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let answer: Value = answer.json().await.unwrap();
    let url = answer["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("{}/approve/", server.base)),
        "{url} is not on {}",
        server.base
    );
}

#[tokio::test]
async fn a_requester_is_known_however_the_event_spells_their_name() {
    let workspace = Workspace::new();
    workspace.add_runbook(
        "r.yaml",
        &http_runbook("gated", "gated", &[("act", "POST", "/act", "")], "")
            .replace("approval: auto", "approval: required"),
    );
    let server = workspace.start(&[("TARGET", "http://127.0.0.1:9")]);
    let bob = server.tokens.bob.clone();
    // Cases, prefixes, spaces, and characters that do not show or are
    // full-width forms of ASCII: all bob.
    let spellings = [
        "BOB",
        " bob",
        "user:bob",
        "User:Bob\t",
        "bob\u{200b}",
        "\u{feff}bob",
        "b\u{200d}ob",
        "bob\u{00a0}\u{200c}",
        "\u{ff42}\u{ff4f}\u{ff42}",
    ];
    for (index, spelling) in spellings.iter().enumerate() {
        let mut request = event("gated", &format!("SPELLED-{index}"));
        request["fields"]["requested_by"] = json!(spelling);
        let report = server.event(&request).await;
        let run_id = report["run_id"].as_str().unwrap();
        let (status, body) = server.decide_as(&bob, run_id, "approve").await;
        assert_eq!(status, 403, "{spelling:?}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("separation of duties"),
            "{spelling:?}: {message}"
        );
    }
    // A requester that names nobody would let anyone approve: refused, and
    // nothing is stored.
    let before = server.get("/v1/runs").await["runs"]
        .as_array()
        .unwrap()
        .len();
    for naming_nobody in [json!(["bob"]), json!(42), json!("  "), json!({"id": "bob"})] {
        let mut request = event("gated", "NAMES-NOBODY");
        request["fields"]["requested_by"] = naming_nobody.clone();
        let (status, body) = server.post("/v1/events", &request).await;
        assert_eq!(status, 400, "{naming_nobody}: {body}");
        assert_eq!(body["error"]["code"], "invalid_event");
        assert!(body.to_string().contains("requested_by"), "{body}");
    }
    let after = server.get("/v1/runs").await["runs"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(before, after);
}

#[tokio::test]
async fn bad_queries_wrong_methods_and_unknown_paths_answer_in_the_error_format() {
    let workspace = Workspace::new();
    let server = workspace.start(&[]);
    let operator = server.tokens.operator.clone();
    let client = crate::harness::client_with_token(&operator);
    let cases: [(reqwest::Method, &str, u16, &str); 7] = [
        (
            reqwest::Method::GET,
            "/v1/runs?limit=abc",
            400,
            "invalid_query",
        ),
        (
            reqwest::Method::GET,
            "/v1/runs?state=nope",
            400,
            "invalid_query",
        ),
        (
            reqwest::Method::GET,
            "/v1/runs?stat=failed",
            400,
            "invalid_query",
        ),
        (
            reqwest::Method::GET,
            "/v1/runs/x/wait?timeout_ms=-1",
            400,
            "invalid_query",
        ),
        (
            reqwest::Method::DELETE,
            "/v1/runs/x",
            405,
            "method_not_allowed",
        ),
        (
            reqwest::Method::GET,
            "/v1/events",
            405,
            "method_not_allowed",
        ),
        (reqwest::Method::GET, "/v1/nothing-here", 404, "not_found"),
    ];
    for (method, path, status, code) in cases {
        let answer = client
            .request(method.clone(), format!("{}{path}", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), status, "{method} {path}");
        let body: Value = answer
            .json()
            .await
            .unwrap_or_else(|error| panic!("{method} {path}: not JSON ({error})"));
        assert_eq!(body["error"]["code"], code, "{method} {path}: {body}");
        assert!(
            !body["error"]["message"].as_str().unwrap().is_empty(),
            "{body}"
        );
    }
    // A wrong method is refused before anyone is asked who they are: the
    // same answer without a token, and no handler runs.
    let answer = reqwest::Client::new()
        .delete(format!("{}/v1/runs/x", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 405);
    assert_eq!(answer.headers()["allow"], "GET, HEAD");
}

#[tokio::test]
async fn an_approval_and_a_denial_racing_settle_the_run_once() {
    let target = Scripted::default();
    target.on("POST /act", vec![Reply::json(200, json!({}))]);
    let target_server = target.start().await.unwrap();
    let workspace = Workspace::new();
    workspace.add_runbook(
        "r.yaml",
        &http_runbook("gated", "gated", &[("act", "POST", "/act", "")], "")
            .replace("approval: auto", "approval: required"),
    );
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    let (alice, bob) = (server.tokens.alice.clone(), server.tokens.bob.clone());
    let mut approved_rounds = 0;
    for round in 0..10 {
        let report = server
            .event(&event("gated", &format!("RACE-{round}")))
            .await;
        let run_id = report["run_id"].as_str().unwrap().to_owned();
        let ((approved, _), (denied, _)) = tokio::join!(
            server.decide_as(&alice, &run_id, "approve"),
            server.decide_as(&bob, &run_id, "deny"),
        );
        let winners = [approved, denied]
            .iter()
            .filter(|&&status| status == 200)
            .count();
        assert_eq!(
            winners, 1,
            "round {round}: approve {approved}, deny {denied}"
        );
        let run = server.wait(&run_id).await;
        let decided = count_of(&run, "approval.granted") + count_of(&run, "approval.denied");
        assert_eq!(decided, 1, "round {round}: {run:#}");
        let expected_state = if approved == 200 {
            "succeeded"
        } else {
            "denied"
        };
        assert_eq!(run["state"], expected_state, "round {round}");
        approved_rounds += usize::from(approved == 200);
    }
    // The step ran once for each run approved, never for a denied one.
    assert_eq!(target.calls("POST /act"), approved_rounds);
}
