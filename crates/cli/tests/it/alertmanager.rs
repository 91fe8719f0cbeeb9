//! A real Prometheus Alertmanager (Debian's `prometheus-alertmanager`)
//! sends its webhooks to opsgate; `amtool` injects the alerts.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;
use test_support::scripted::{Reply, Scripted};

use crate::harness::{Workspace, cli, eventually, skip, which};

const RUNBOOK: &str = r#"
id: restart-vpn-agent-from-alert
title: Restart the VPN agent when Alertmanager says it stopped
owner: tests
risk: reversible
approval: auto
match:
  source: alertmanager
  kind: VpnClientServiceStopped
targets:
  from: "[event.subject]"
steps:
  - id: restart
    action: http.request
    with: { method: POST, url: "{{ env.TARGET }}/devices/{{ event.subject }}/restart" }
    idempotent: true
"#;

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn amtool(url: &str, args: &[&str]) {
    let output = Command::new("amtool")
        .args(["alert", "add"])
        .args(args)
        .arg(format!("--alertmanager.url={url}"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "amtool failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The audit's `event.received` records (read from the database, as an auditor would).
fn received_events(workspace: &Workspace) -> Vec<serde_json::Value> {
    let (code, stdout, stderr) = cli(&["audit", "export", "--database", &workspace.database_url()]);
    assert_eq!(code, 0, "{stderr}");
    stdout
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|record| record["kind"] == "event.received")
        .collect()
}

#[tokio::test]
async fn alertmanager_firing_then_resolved() {
    let Some(alertmanager) = which("prometheus-alertmanager").or_else(|| which("alertmanager"))
    else {
        return skip(
            "alertmanager_firing_then_resolved",
            "prometheus-alertmanager is not installed",
        );
    };
    if which("amtool").is_none() {
        return skip(
            "alertmanager_firing_then_resolved",
            "amtool is not installed",
        );
    }
    let target = Scripted::default();
    target.on(
        "POST /devices/LAPTOP-0042/restart",
        vec![Reply::json(200, json!({"status": "running"}))],
    );
    let target_server = target.start().await.unwrap();
    let workspace = Workspace::new();
    workspace.add_runbook("r.yaml", RUNBOOK);
    let server = workspace.start(&[("TARGET", &target_server.url)]);

    let port = free_port();
    let am_url = format!("http://127.0.0.1:{port}");
    let config = workspace.dir.path().join("alertmanager.yml");
    std::fs::write(
        &config,
        format!(
            "route:\n  receiver: opsgate\n  group_by: [alertname, device]\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1h\n\
             receivers:\n  - name: opsgate\n    webhook_configs:\n      - url: {}/v1/hooks/alertmanager\n        send_resolved: true\n        http_config:\n\
             \x20         authorization:\n            credentials: {}\n",
            server.base, server.tokens.alertmanager
        ),
    )
    .unwrap();
    let storage = workspace.dir.path().join("am-data");
    let _alertmanager = KillOnDrop(
        Command::new(alertmanager)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", storage.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!("--web.external-url={am_url}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    connectors::install_crypto_provider();
    let http = reqwest::Client::new();
    let ready = async {
        for _ in 0..200 {
            if let Ok(response) = http.get(format!("{am_url}/-/ready")).send().await
                && response.status().is_success()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    };
    assert!(ready.await, "alertmanager did not become ready");

    let labels = [
        "alertname=VpnClientServiceStopped",
        "device=LAPTOP-0042",
        "environment=workstation",
    ];
    amtool(&am_url, &labels);
    assert!(
        eventually(Duration::from_secs(20), || target
            .calls("POST /devices/LAPTOP-0042/restart")
            == 1)
        .await,
        "the firing alert reached opsgate and the runbook ran"
    );
    let runs = server.get("/v1/runs").await;
    let run_id = runs["runs"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(server.wait(&run_id).await["state"], "succeeded");

    // Resolve it: an alert whose end time has passed.
    let ended = jiff::Timestamp::now().to_string();
    let end_flag = format!("--end={ended}");
    let mut resolve_args = labels.to_vec();
    resolve_args.push(&end_flag);
    amtool(&am_url, &resolve_args);
    let mut seen = Vec::new();
    let resolved_arrived = async {
        for _ in 0..200 {
            seen = received_events(&workspace);
            if seen
                .iter()
                .any(|record| record["detail"]["status"] == "resolved")
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    assert!(
        resolved_arrived.await,
        "no resolved webhook arrived: {seen:#?}"
    );
    let firing = seen
        .iter()
        .find(|record| record["detail"]["status"] == "firing")
        .unwrap();
    let resolved = seen
        .iter()
        .find(|record| record["detail"]["status"] == "resolved")
        .unwrap();
    assert_eq!(
        firing["detail"]["dedup_key"], resolved["detail"]["dedup_key"],
        "the fingerprint is the dedup key"
    );
    assert_eq!(resolved["detail"]["subject"], "LAPTOP-0042");
    assert_eq!(
        server.get("/v1/runs").await["runs"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "the resolved alert started nothing"
    );
    assert_eq!(target.calls("POST /devices/LAPTOP-0042/restart"), 1);
}
