//! The API's OpenAPI 3.1 document, generated from the handlers' own
//! annotations and types (utoipa) and served at `/openapi.json`, so that
//! it cannot drift from the routes: a route registered without a path in
//! [`ApiDoc`] fails `every_route_is_in_the_document`.
//!
//! Every operation but `/healthz` and `/readyz` names its security: a bearer API token
//! (`bearer`), or — for the senders that sign their own way — none here,
//! their signature being described on the operation. Every refusal answers
//! [`ErrorBody`].

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::{ErrorBody, ErrorDetail};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "opsgate",
        description = "The governed execution layer: events in, runbooks matched, planned, \
                       decided and run, with every step audited."
    ),
    paths(
        crate::routes::healthz,
        crate::routes::readyz,
        crate::routes::openapi_json,
        crate::routes::post_event,
        crate::routes::post_hook,
        crate::buttons::interactions,
        crate::routes::post_plan,
        crate::routes::list_runs,
        crate::routes::show_run,
        crate::routes::wait_run,
        crate::routes::approve_run,
        crate::routes::deny_run,
        crate::routes::cancel_run,
        crate::links::issue,
        crate::links::page,
        crate::links::decide,
        crate::routes::list_runbooks,
        crate::freezes::issue,
        crate::freezes::list,
        crate::freezes::lift,
        crate::freezes::status,
        crate::reports::shadow,
        crate::proposals::propose,
        crate::proposals::plan,
        crate::proposals::withdraw,
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&BearerTokens),
    security(("bearer" = [])),
)]
pub(crate) struct ApiDoc;

/// The bearer API tokens (`opsgate token create`) every authenticated
/// operation takes.
struct BearerTokens;

impl Modify for BearerTokens {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API token, `og_<id>_<secret>` (opsgate token create).",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document, as served.
pub(crate) fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

#[cfg(test)]
mod tests {
    use axum::http::Method;

    /// The document and the routes say the same: every route and method
    /// served is documented, and nothing documented is not served.
    #[test]
    fn every_route_is_in_the_document() {
        let table = crate::routes::api_routes().table;
        let document = super::document();
        let documented = |route: &str, method: &Method| {
            document
                .paths
                .paths
                .get(route)
                .is_some_and(|item| match *method {
                    Method::GET => item.get.is_some(),
                    Method::POST => item.post.is_some(),
                    _ => false,
                })
        };
        let mut served: Vec<(String, String)> = table
            .declared()
            .map(|(route, method)| (route.to_owned(), method.to_string()))
            .collect();
        served.sort();
        let undocumented: Vec<&(String, String)> = served
            .iter()
            .filter(|(route, method)| {
                !documented(route, &Method::from_bytes(method.as_bytes()).unwrap())
            })
            .collect();
        assert!(
            undocumented.is_empty(),
            "served, not documented: {undocumented:?}"
        );
        let mut operations = 0;
        for (route, item) in &document.paths.paths {
            for (method, operation) in [("GET", &item.get), ("POST", &item.post)] {
                if operation.is_some() {
                    operations += 1;
                    assert!(
                        served.contains(&(route.clone(), method.to_owned())),
                        "documented, not served: {method} {route}"
                    );
                }
            }
        }
        assert_eq!(operations, served.len());
        // Every operation but the health check and the senders that sign
        // their own way takes a bearer token.
        let open: Vec<String> = document
            .paths
            .paths
            .iter()
            .flat_map(|(route, item)| {
                [("GET", &item.get), ("POST", &item.post)]
                    .into_iter()
                    .filter_map(|(method, operation)| {
                        let operation = operation.as_ref()?;
                        operation
                            .security
                            .as_ref()
                            .is_some_and(|security| {
                                serde_json::to_value(security).unwrap() == serde_json::json!([{}])
                            })
                            .then(|| format!("{method} {route}"))
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut open = open;
        open.sort();
        assert_eq!(
            open,
            [
                "GET /approve/{token}",
                "GET /healthz",
                "GET /readyz",
                "POST /approve/{token}",
                "POST /v1/hooks/{source}/interactions",
            ]
        );
    }

    /// The event schema says what `domain::NewEvent` reads: the same
    /// fields, the same required ones, the same statuses, no others.
    #[test]
    fn the_event_schema_is_the_domains_event() {
        let document = serde_json::to_value(<super::ApiDoc as utoipa::OpenApi>::openapi()).unwrap();
        let schema = &document["components"]["schemas"]["NewEvent"];
        let properties: std::collections::BTreeSet<&str> = schema["properties"]
            .as_object()
            .expect("properties")
            .keys()
            .map(String::as_str)
            .collect();
        let event = domain::NewEvent {
            source: "s".into(),
            kind: "k".into(),
            dedup_key: "d".into(),
            subject: "x".into(),
            fields: serde_json::json!({}),
            status: domain::EventStatus::Firing,
            occurred_at: Some("2026-12-05T08:00:00Z".parse().unwrap()),
        };
        let serialised = serde_json::to_value(&event).unwrap();
        let fields: std::collections::BTreeSet<&str> = serialised
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(properties, fields);
        assert_eq!(schema["additionalProperties"], false, "{schema:#}");
        // Everything but `fields` (an empty object by default) is required.
        let mut required: Vec<&str> = schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|name| name.as_str().unwrap())
            .collect();
        required.sort();
        assert_eq!(
            required,
            ["dedup_key", "kind", "source", "status", "subject"]
        );
        let without_fields = serde_json::json!({"source": "s", "kind": "k", "dedup_key": "d", "subject": "x", "status": "open"});
        serde_json::from_value::<domain::NewEvent>(without_fields).expect("fields is optional");
        let statuses = &document["components"]["schemas"]["EventStatus"]["enum"];
        for status in statuses.as_array().unwrap() {
            domain::EventStatus::parse(status.as_str().unwrap())
                .expect("a status the domain reads");
        }
        assert_eq!(
            statuses.as_array().unwrap().len(),
            domain::EventStatus::ALL.split(", ").count()
        );
    }

    /// The hook answer's schema admits each shape a source answers in —
    /// one report (with its reason), a report per event, the sender's own
    /// fields beside the report — and each shape serialises as it did
    /// when it was written by hand.
    #[test]
    fn the_hook_answer_schema_admits_every_shape() {
        use crate::api::HookAnswer;
        let document = serde_json::to_value(<super::ApiDoc as utoipa::OpenApi>::openapi()).unwrap();
        let schema = &document["components"]["schemas"]["HookAnswer"];
        let properties: Vec<&str> = schema["properties"]
            .as_object()
            .expect("properties")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(properties, ["events", "message", "report"], "{schema:#}");
        assert!(schema["required"].is_null(), "{schema:#}");
        assert_ne!(schema["additionalProperties"], false, "{schema:#}");
        let answer = |answer: runtime::Answer| {
            serde_json::to_value(HookAnswer::new(runtime::Taken {
                answer,
                reports: Vec::new(),
            }))
            .unwrap()
        };
        assert_eq!(
            answer(runtime::Answer::One {
                message: Some("nothing changed".into())
            }),
            serde_json::json!({"report": null, "message": "nothing changed"})
        );
        assert_eq!(
            answer(runtime::Answer::One { message: None }),
            serde_json::json!({"report": null})
        );
        assert_eq!(
            answer(runtime::Answer::Each),
            serde_json::json!({"events": []})
        );
        let mut fields = serde_json::Map::new();
        fields.insert("status".into(), "success".into());
        fields.insert("message".into(), "Event processed".into());
        assert_eq!(
            answer(runtime::Answer::Fields(fields)),
            serde_json::json!({"status": "success", "message": "Event processed", "report": null})
        );
    }

    /// A plan and a decision with every part filled in (each kind of
    /// retry condition and stage rule, a time-bound end) are valid against
    /// the schemas the document gives them.
    #[test]
    fn plans_and_decisions_are_valid_against_their_schemas() {
        use domain::{
            ApprovalStage, Decision, DecisionKind, Plan, PlannedCall, PlannedStep, RetryOn,
            RetryPolicy, RiskClass, StageRule, Verification,
        };
        let document = serde_json::to_value(<super::ApiDoc as utoipa::OpenApi>::openapi()).unwrap();
        let valid = |name: &str, value: serde_json::Value| {
            let schema = serde_json::json!({
                "$ref": format!("#/components/schemas/{name}"),
                "components": document["components"].clone(),
            });
            let validator = jsonschema::validator_for(&schema).expect("a schema");
            let errors: Vec<String> = validator
                .iter_errors(&value)
                .map(|error| format!("{error} at {}", error.instance_path()))
                .collect();
            assert!(errors.is_empty(), "{name}: {errors:?}\n{value:#}");
        };
        let call = PlannedCall {
            action: "http.request".into(),
            request: serde_json::json!({"method": "POST", "url": "https://api.example/restart"}),
            timeout_ms: 30_000,
        };
        let plan = Plan {
            precheck: None,
            runbook_id: "restart".into(),
            runbook_version: "abc".into(),
            title: "Restart".into(),
            risk: RiskClass::Reversible,
            inputs: serde_json::json!({"host": "web-1"}),
            targets: vec!["web-1".into()],
            steps: vec![PlannedStep {
                id: "restart".into(),
                call: call.clone(),
                retry: RetryPolicy {
                    retry_on: vec![
                        RetryOn::Connect,
                        RetryOn::Timeout,
                        RetryOn::Status(503),
                        RetryOn::ExitCode(2),
                    ],
                    ..RetryPolicy::none()
                },
                idempotent: true,
                rollback: Some(call.clone()),
                requires_approval: true,
                if_unverified: false,
            }],
            verify: Some(Verification {
                probe: call,
                expect: "response.status == 200".into(),
                within_ms: 60_000,
                every_ms: 5_000,
            }),
            ends_at: Some(jiff::Timestamp::from_second(1_800_000_000).unwrap()),
            on_call: None,
            rollout: None,
            plan_hash: "0123".into(),
        };
        valid("Plan", serde_json::to_value(&plan).unwrap());
        // And the schemas say something: a risk nobody knows is not a plan.
        let mut reckless = serde_json::to_value(&plan).unwrap();
        reckless["risk"] = "reckless".into();
        let result = std::panic::catch_unwind(|| valid("Plan", reckless));
        assert!(result.is_err(), "an unknown risk passed the schema");
        let decision = Decision {
            kind: DecisionKind::RequireApproval,
            reasons: vec!["risk is reversible".into()],
            expires_after_ms: Some(3_600_000),
            approvals_required: 2,
            stages: [StageRule::Any, StageRule::All, StageRule::AtLeast(2)]
                .into_iter()
                .map(|rule| ApprovalStage {
                    name: "approval".into(),
                    approvers: vec!["alice".into()],
                    rule,
                    timeout_ms: Some(60_000),
                    escalate_to: vec!["manager_of(requester)".into()],
                })
                .collect(),
            policy_version: Some("v1".into()),
        };
        valid("Decision", serde_json::to_value(&decision).unwrap());
    }
}
