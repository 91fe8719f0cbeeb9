//! The API's OpenAPI document on the real server, and schemathesis — the
//! property-based API tester, from PyPI — run against the live server
//! with it: every operation, with generated requests, must answer no 5xx
//! and nothing its documented schema does not allow.

use std::process::Command;

use serde_json::Value;

use crate::harness::{Workspace, client_with_token, http_runbook, skip, which};

#[tokio::test]
async fn the_document_is_served_and_says_how_to_authenticate() {
    let workspace = Workspace::new();
    workspace.add_runbook(
        "r.yaml",
        &http_runbook("disk", "DiskFull", &[("act", "POST", "/act", "")], ""),
    );
    let viewer = workspace.create_token("vic", "viewer");
    let server = workspace.start(&[("TARGET", "http://127.0.0.1:9")]);

    let anonymous = reqwest::get(format!("{}/openapi.json", server.base))
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401, "the document is read with a token");
    let document: Value = client_with_token(&viewer)
        .get(format!("{}/openapi.json", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        document["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        document["openapi"]
    );
    assert_eq!(
        document["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(document["security"], serde_json::json!([{"bearer": []}]));
    let paths = document["paths"].as_object().unwrap();
    for path in [
        "/v1/events",
        "/v1/hooks/{source}",
        "/v1/runs/{id}/approve",
        "/approve/{token}",
    ] {
        assert!(paths.contains_key(path), "{path} in {:?}", paths.keys());
    }
    assert_eq!(
        document["components"]["schemas"]["ErrorBody"]["required"],
        serde_json::json!(["error"])
    );
}

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_schema() {
    let test = "openapi::schemathesis_finds_no_server_error_and_no_answer_outside_the_schema";
    let Some(schemathesis) = which("st") else {
        skip(test, "schemathesis (`st`, PyPI) is not installed");
        return;
    };
    let workspace = Workspace::new();
    workspace.add_runbook(
        "r.yaml",
        &http_runbook("disk", "DiskFull", &[("act", "POST", "/act", "")], ""),
    );
    let admin = workspace.create_token("ada", "admin");
    let approver = workspace.create_token("alice", "approver");
    let agent = workspace.create_token("triage-bot", "agent");
    let server = workspace.start(&[("TARGET", "http://127.0.0.1:9")]);
    let document = client_with_token(&admin)
        .get(format!("{}/openapi.json", server.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let schema = workspace.dir.path().join("openapi.json");
    std::fs::write(&schema, document).unwrap();

    // As an admin (who may do most things), as an approver (the only one
    // who may decide, so the approve, deny and link routes are reached
    // past their permission check), and as an agent (the only one who may
    // propose).
    for token in [&admin, &approver, &agent] {
        let output = Command::new(&schemathesis)
            .arg("run")
            .arg(&schema)
            .args(["--url", &server.base])
            .args(["--header", &format!("Authorization: Bearer {token}")])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
                "--max-examples",
                "25",
                "--request-timeout",
                "21",
                "--generation-deterministic",
            ])
            .env("NO_COLOR", "1")
            // Its cache of earlier failures stays in this test's scratch
            // directory: each run starts from nothing, and nothing is left
            // in the source tree.
            .current_dir(workspace.dir.path())
            .output()
            .expect("run schemathesis");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "schemathesis found problems:\n{stdout}\n{stderr}"
        );
        // It did call every operation.
        assert!(stdout.contains("25 selected / 25 total"), "{stdout}");
        eprintln!("{stdout}");
    }
}
