//! Back-pressure under load: wrk (Debian's, the real load generator) posts
//! events at rising concurrency to a server that stores at most 8 at once.
//! What it cannot take it refuses at once — 503 with `Retry-After` —
//! instead of queueing; nothing else fails, every acknowledged event is
//! stored, and memory stays bounded.

use std::collections::BTreeMap;
use std::process::Command;

use sqlx::Connection;

use crate::harness::{Workspace, skip, which};

/// wrk's script: a unique dedup key per request, and a count of the
/// answers by status (and of 503s without `Retry-After`), printed at the
/// end as `status CODE COUNT` lines.
const SCRIPT: &str = r#"
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer TOKEN"
local threads = {}
function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end
function init(args)
  counter = 0
  statuses = {}
end
function request()
  counter = counter + 1
  local body = string.format(
    '{"source":"load","kind":"burst","dedup_key":"LEVEL-%d-%d","subject":"HOST-1","status":"firing","fields":{}}',
    id, counter)
  return wrk.format(nil, nil, nil, body)
end
function response(status, headers, body)
  local key = tostring(status)
  if status == 503 and headers["retry-after"] == nil and headers["Retry-After"] == nil then
    key = "503-without-retry-after"
  end
  statuses[key] = (statuses[key] or 0) + 1
end
function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for key, count in pairs(thread:get("statuses")) do
      total[key] = (total[key] or 0) + count
    end
  end
  for key, count in pairs(total) do
    io.write(string.format("status %s %d\n", key, count))
  end
end
"#;

fn resident_mb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kb: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb / 1024
}

#[tokio::test]
async fn under_rising_load_intake_refuses_what_it_cannot_take_and_stores_all_it_acknowledged() {
    let test =
        "under_rising_load_intake_refuses_what_it_cannot_take_and_stores_all_it_acknowledged";
    let Some(wrk) = which("wrk") else {
        skip(test, "wrk is not installed (Debian package `wrk`)");
        return;
    };
    let mut workspace = Workspace::new();
    workspace
        .env
        .push(("OPSGATE_MAX_INTAKE_IN_FLIGHT".to_owned(), "8".to_owned()));
    let server = workspace.start(&[]);
    let script = workspace.dir.path().join("load.lua");
    std::fs::write(
        &script,
        SCRIPT
            .replace("LEVEL", "{level}")
            .replace("TOKEN", &workspace.tokens().operator),
    )
    .unwrap();
    let mut acknowledged = 0;
    let mut connections_total = 0;
    for (level, connections) in [4, 32, 128].into_iter().enumerate() {
        let text = std::fs::read_to_string(&script)
            .unwrap()
            .replace("{level}", &level.to_string());
        let level_script = workspace.dir.path().join(format!("load-{level}.lua"));
        std::fs::write(&level_script, text).unwrap();
        let output = Command::new(&wrk)
            .args(["-t", "2", "-c", &connections.to_string(), "-d", "2s"])
            .arg("-s")
            .arg(&level_script)
            .arg(format!("{}/v1/events", server.base))
            .output()
            .expect("run wrk");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "wrk failed: {stdout}");
        let statuses: BTreeMap<String, u64> = stdout
            .lines()
            .filter_map(|line| line.strip_prefix("status "))
            .map(|line| {
                let (code, count) = line.split_once(' ').unwrap();
                (code.to_owned(), count.parse().unwrap())
            })
            .collect();
        eprintln!("{connections} connections: {statuses:?}");
        for code in statuses.keys() {
            assert!(
                code == "202" || code == "503",
                "{connections} connections: an answer other than 202 or a 503 with Retry-After: {statuses:?}\n{stdout}"
            );
        }
        assert!(
            statuses.get("202").copied().unwrap_or(0) > 0,
            "{statuses:?}"
        );
        if connections == 128 {
            assert!(
                statuses.get("503").copied().unwrap_or(0) > 0,
                "128 senders against a limit of 8: some were refused: {statuses:?}"
            );
        }
        acknowledged += statuses.get("202").copied().unwrap_or(0);
        connections_total += connections as u64;
        let resident = resident_mb(server.pid());
        assert!(
            resident < 200,
            "{connections} connections: {resident} MB resident"
        );
    }
    let mut database = sqlx::SqliteConnection::connect(&workspace.database_url())
        .await
        .unwrap();
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE source = 'load'")
        .fetch_one(&mut database)
        .await
        .unwrap();
    let stored = stored as u64;
    // wrk stops with requests still open: the server may have stored and
    // answered those after wrk stopped listening, at most one per
    // connection.
    assert!(
        stored >= acknowledged && stored <= acknowledged + connections_total,
        "{acknowledged} acknowledged, {stored} stored"
    );
}
