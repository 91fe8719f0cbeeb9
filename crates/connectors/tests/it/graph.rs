//! `graph.group_membership` against the simulated tenant: what it changes,
//! how it authenticates, and how each failure is classified.

use connectors::{Config, Connectors, GraphConfig, Secret};
use domain::{AttemptOutcome, FailureCause, PlannedCall, RetryOn};
use serde_json::{Value, json};
use test_support::Running;
use test_support::graph_sim::{Credentials, GraphSim};

/// What a retry policy without `retry_on` retries on.
const DEFAULT_RETRY_ON: &[RetryOn] = &[
    RetryOn::Connect,
    RetryOn::Timeout,
    RetryOn::Status(429),
    RetryOn::Status(502),
    RetryOn::Status(503),
    RetryOn::Status(504),
];

struct Tenant {
    sim: GraphSim,
    credentials: Credentials,
    server: Running,
    group: String,
    alice: String,
    connectors: Connectors,
}

const ALICE: &str = "alice@contoso.com";

async fn tenant() -> Tenant {
    let credentials = Credentials::default();
    let sim = GraphSim::new(credentials.clone());
    let server = sim.start().await.expect("the simulator starts");
    let group = sim.add_group();
    let alice = sim.add_user(ALICE);
    let connectors = connectors_for(&server.url, &credentials, &credentials.client_secret);
    Tenant {
        sim,
        credentials,
        server,
        group,
        alice,
        connectors,
    }
}

fn connectors_for(url: &str, credentials: &Credentials, client_secret: &str) -> Connectors {
    let mut connectors = Connectors::new(Config::default()).expect("connectors");
    let action = connectors::group_membership(&GraphConfig {
        tenant_id: credentials.tenant_id.clone(),
        client_id: credentials.client_id.clone(),
        client_secret: Secret::new(client_secret),
        authority_url: url.to_owned(),
        graph_url: url.to_owned(),
    })
    .expect("the Graph action");
    connectors.plug(&[action]);
    connectors
}

impl Tenant {
    async fn ensure(&self, user_id: &str, ensure: &str) -> AttemptOutcome {
        call(
            &self.connectors,
            json!({"group_id": self.group, "user_id": user_id, "ensure": ensure}),
        )
        .await
    }

    /// Every secret the tenant knows or handed out.
    fn secrets(&self) -> Vec<String> {
        let mut secrets = vec![self.credentials.client_secret.clone()];
        secrets.extend(self.sim.issued_tokens());
        secrets
    }

    fn assert_no_secret_in(&self, outcome: &AttemptOutcome) {
        let text = serde_json::to_string(outcome).expect("an outcome serialises");
        for secret in self.secrets() {
            assert!(!text.contains(&secret), "a secret leaked into {text}");
        }
    }

    /// The Graph requests made so far, token requests left out.
    fn graph_calls(&self) -> Vec<String> {
        self.sim
            .calls()
            .into_iter()
            .filter(|call| call.contains(" /v1.0/"))
            .collect()
    }
}

async fn call(connectors: &Connectors, request: Value) -> AttemptOutcome {
    connectors
        .call(&PlannedCall {
            action: "graph.group_membership".into(),
            request,
            timeout_ms: 10_000,
        })
        .await
}

/// `changed` of a success; panics on anything else.
#[track_caller]
fn changed(outcome: &AttemptOutcome) -> bool {
    match outcome {
        AttemptOutcome::Succeeded { response } => response["changed"]
            .as_bool()
            .expect("a success says whether it changed anything"),
        other => panic!("expected a success, got {other:?}"),
    }
}

/// The cause, message and `Retry-After` of a failure; panics on anything else.
#[track_caller]
fn failure(outcome: &AttemptOutcome) -> (FailureCause, &str, Option<u64>) {
    match outcome {
        AttemptOutcome::Failed {
            cause,
            error,
            retry_after_ms,
            ..
        } => (*cause, error.as_str(), *retry_after_ms),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test]
async fn adding_and_removing_are_idempotent() {
    let tenant = tenant().await;
    let steps = [
        ("present", true, vec![tenant.alice.clone()]),
        ("present", false, vec![tenant.alice.clone()]),
        ("absent", true, vec![]),
        ("absent", false, vec![]),
    ];
    for (ensure, expect_changed, expect_members) in steps {
        let outcome = tenant.ensure(&tenant.alice, ensure).await;
        assert_eq!(
            changed(&outcome),
            expect_changed,
            "ensure {ensure}: {outcome:?}"
        );
        assert_eq!(tenant.sim.members(&tenant.group), expect_members);
        tenant.assert_no_secret_in(&outcome);
    }
    assert_eq!(
        tenant.sim.token_requests(),
        1,
        "the token is reused until it nears its expiry"
    );
    let group = &tenant.group;
    let alice = &tenant.alice;
    assert_eq!(
        tenant.graph_calls(),
        [
            format!("POST /v1.0/groups/{group}/members/$ref"),
            format!("POST /v1.0/groups/{group}/members/$ref"),
            format!("DELETE /v1.0/groups/{group}/members/{alice}/$ref"),
            format!("DELETE /v1.0/groups/{group}/members/{alice}/$ref"),
            // A 404 on removal counts as "not a member" once the group is
            // known to exist.
            format!("GET /v1.0/groups/{group}?$select=id"),
        ]
    );
}

#[tokio::test]
async fn a_success_reports_what_it_did() {
    let tenant = tenant().await;
    let outcome = tenant.ensure(ALICE, "present").await;
    assert_eq!(
        outcome,
        AttemptOutcome::Succeeded {
            response: json!({
                "changed": true,
                "ensure": "present",
                "group_id": tenant.group,
                "user_id": ALICE,
                "member_id": tenant.alice,
                "status": 204,
            })
        }
    );
}

#[tokio::test]
async fn a_user_principal_name_is_resolved_to_an_object_id_first() {
    let tenant = tenant().await;
    assert!(changed(
        &tenant.ensure("Alice@Contoso.com", "present").await
    ));
    assert_eq!(
        tenant.sim.members(&tenant.group),
        std::slice::from_ref(&tenant.alice)
    );
    assert!(changed(&tenant.ensure(ALICE, "absent").await));
    assert_eq!(
        tenant.graph_calls()[..2],
        [
            "GET /v1.0/users/Alice@Contoso.com?$select=id".to_owned(),
            format!("POST /v1.0/groups/{}/members/$ref", tenant.group),
        ]
    );

    let outcome = tenant.ensure("bob@contoso.com", "present").await;
    let (cause, error, _) = failure(&outcome);
    assert_eq!(cause, FailureCause::Status(404));
    assert!(
        error.contains("GET /v1.0/users/bob@contoso.com?$select=id answered 404 Not Found: Request_ResourceNotFound: Resource 'bob@contoso.com' does not exist"),
        "{error}"
    );
}

#[tokio::test]
async fn a_group_that_does_not_exist_is_a_failure_either_way() {
    let tenant = tenant().await;
    let missing = "00000000-0000-4000-8000-000000000000";
    for ensure in ["present", "absent"] {
        let outcome = call(
            &tenant.connectors,
            json!({"group_id": missing, "user_id": tenant.alice, "ensure": ensure}),
        )
        .await;
        let (cause, error, _) = failure(&outcome);
        assert_eq!(cause, FailureCause::Status(404), "{ensure}");
        assert!(
            error.contains(&format!("Request_ResourceNotFound: Resource '{missing}'")),
            "{error}"
        );
    }
}

#[tokio::test]
async fn throttling_is_a_retryable_failure_with_its_retry_after() {
    let tenant = tenant().await;
    tenant.sim.throttle_next(1, 7);
    let outcome = tenant.ensure(&tenant.alice, "present").await;
    let (cause, error, retry_after_ms) = failure(&outcome);
    assert_eq!(cause, FailureCause::Status(429));
    assert!(cause.is_covered_by(DEFAULT_RETRY_ON));
    assert_eq!(retry_after_ms, Some(7_000));
    assert!(
        error.contains("answered 429 Too Many Requests: TooManyRequests"),
        "{error}"
    );
    assert!(tenant.sim.members(&tenant.group).is_empty());

    // The engine's next attempt goes through.
    assert!(changed(&tenant.ensure(&tenant.alice, "present").await));
}

#[tokio::test]
async fn a_refused_token_is_replaced_once_and_the_call_repeated_once() {
    let tenant = tenant().await;
    assert!(changed(&tenant.ensure(&tenant.alice, "present").await));
    tenant.sim.expire_tokens();
    assert!(changed(&tenant.ensure(&tenant.alice, "absent").await));
    assert_eq!(tenant.sim.token_requests(), 2);
    assert!(tenant.sim.members(&tenant.group).is_empty());

    // A token refused even when new: one refresh, then the 401 stands.
    tenant.sim.issue_expired_tokens(true);
    tenant.sim.expire_tokens();
    let before = tenant.graph_calls().len();
    let outcome = tenant.ensure(&tenant.alice, "present").await;
    let (cause, error, _) = failure(&outcome);
    assert_eq!(cause, FailureCause::Status(401));
    assert!(!cause.is_covered_by(DEFAULT_RETRY_ON));
    assert!(
        error.contains("answered 401 Unauthorized: InvalidAuthenticationToken: Lifetime validation failed, the token is expired."),
        "{error}"
    );
    assert_eq!(tenant.sim.token_requests(), 3);
    assert_eq!(tenant.graph_calls().len() - before, 2);
    tenant.assert_no_secret_in(&outcome);
}

#[tokio::test]
async fn missing_permissions_are_not_retried() {
    let tenant = tenant().await;
    tenant.sim.deny_writes(true);
    let outcome = tenant.ensure(&tenant.alice, "present").await;
    let (cause, error, retry_after_ms) = failure(&outcome);
    assert_eq!(cause, FailureCause::Status(403));
    assert!(!cause.is_covered_by(DEFAULT_RETRY_ON));
    assert_eq!(retry_after_ms, None);
    assert_eq!(
        error,
        format!(
            "Microsoft Graph POST /v1.0/groups/{}/members/$ref answered 403 Forbidden: Authorization_RequestDenied: Insufficient privileges to complete the operation.",
            tenant.group
        )
    );
    let AttemptOutcome::Failed {
        response: Some(response),
        ..
    } = &outcome
    else {
        panic!("a refusal keeps Graph's answer")
    };
    assert_eq!(response["code"], "Authorization_RequestDenied");
    assert!(response["request_id"].is_string(), "{response}");
    assert_eq!(tenant.graph_calls().len(), 1, "the connector never retries");
}

#[tokio::test]
async fn the_token_endpoints_refusal_is_quoted_by_its_first_line() {
    let tenant = tenant().await;
    let wrong_secret = "Qx8~not-the-secret-at-all";
    let connectors = connectors_for(&tenant.server.url, &tenant.credentials, wrong_secret);
    let outcome = call(
        &connectors,
        json!({"group_id": tenant.group, "user_id": tenant.alice, "ensure": "present"}),
    )
    .await;
    let (cause, error, _) = failure(&outcome);
    assert_eq!(cause, FailureCause::Status(401));
    assert!(
        error.ends_with(&format!(
            "refused the token request with 401 Unauthorized: AADSTS7000215: Invalid client secret provided. \
             Ensure the secret being sent in the request is the client secret value, not the client secret ID, \
             for a secret added to app '{}'.",
            tenant.credentials.client_id
        )),
        "{error}"
    );
    assert!(!error.contains("Trace ID"), "{error}");
    let text = serde_json::to_string(&outcome).unwrap();
    assert!(!text.contains(wrong_secret), "{text}");
    tenant.assert_no_secret_in(&outcome);
    assert!(tenant.graph_calls().is_empty());
}

#[tokio::test]
async fn the_secret_stays_out_of_debug_output() {
    let tenant = tenant().await;
    let debug = format!("{:?}", tenant.connectors);
    assert!(
        !debug.contains(&tenant.credentials.client_secret),
        "{debug}"
    );
    assert!(debug.contains(&tenant.credentials.client_id), "{debug}");
}

#[tokio::test]
async fn bad_requests_and_a_missing_tenant_fail_before_any_call() {
    let tenant = tenant().await;
    let outcome = call(
        &tenant.connectors,
        json!({"group_id": "Sales", "user_id": ALICE, "ensure": "present"}),
    )
    .await;
    assert_eq!(
        failure(&outcome),
        (
            FailureCause::Other,
            "`group_id` `Sales` is not a group's object id (a GUID)",
            None
        )
    );
    assert!(tenant.sim.calls().is_empty());

    let unconfigured = Connectors::new(Config::default()).expect("connectors");
    let outcome = call(
        &unconfigured,
        json!({"group_id": tenant.group, "user_id": ALICE, "ensure": "present"}),
    )
    .await;
    let (cause, error, _) = failure(&outcome);
    assert_eq!(cause, FailureCause::Other);
    assert!(error.contains("none is configured"), "{error}");
}

/// The `graph:` config section plugs in the action that acts in its
/// tenant; its secret is read by reference, and a mistyped key or a
/// secret written in place is refused naming where.
#[tokio::test]
async fn the_graph_section_plugs_in_the_action_for_its_tenant() {
    let credentials = Credentials::default();
    let sim = GraphSim::new(credentials.clone());
    let server = sim.start().await.expect("the simulator starts");
    let group = sim.add_group();
    sim.add_user(ALICE);
    let secret_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        secret_file.path(),
        format!("{}\n", credentials.client_secret),
    )
    .unwrap();
    let section = |extra: Value| {
        let mut section = json!({
            "tenant_id": credentials.tenant_id,
            "client_id": credentials.client_id,
            "client_secret": format!("file:{}", secret_file.path().display()),
            "authority_url": server.url,
            "graph_url": server.url,
        });
        section
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        std::collections::BTreeMap::from([("graph".to_owned(), section)])
    };
    let integrations = connectors::registry::build(&section(json!({}))).expect("built");
    let mut connectors = Connectors::new(Config::default()).unwrap();
    let request = json!({"group_id": group, "user_id": ALICE, "ensure": "present"});
    let unconfigured = call(&connectors, request.clone()).await;
    assert!(
        matches!(unconfigured, AttemptOutcome::Failed { .. }),
        "{unconfigured:?}"
    );
    connectors.plug(&integrations.actions);
    let outcome = call(&connectors, request).await;
    assert!(changed(&outcome), "{outcome:?}");

    let refused = |extra: Value| match connectors::registry::build(&section(extra)) {
        Ok(_) => panic!("refused"),
        Err(error) => error.to_string(),
    };
    let message = refused(json!({"tenantid": "x"}));
    assert!(
        message.starts_with("graph") && message.contains("unknown field `tenantid`"),
        "{message}"
    );
    let message = refused(json!({"client_secret": credentials.client_secret}));
    assert!(
        message.contains("graph.client_secret: a secret is given by reference"),
        "{message}"
    );
    assert!(!message.contains(&credentials.client_secret), "{message}");
}
