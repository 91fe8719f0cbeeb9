//! `command.run`: a local program, judged by its exit code.
//!
//! The request is `{program, args, env, cwd, stdin, expect_exit}`. The
//! program runs directly (no shell, so arguments are never re-parsed), with
//! `kill_on_drop`, so the caller's timeout also ends the process.

use std::process::Stdio;

use domain::{ActionShape, AttemptOutcome, FailureCause, Key, Kind, Literal};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::failed;
use crate::text::truncate;

/// What `command.run` takes in a runbook's `with:`.
pub(crate) const SHAPE: ActionShape = ActionShape {
    name: "command.run",
    keys: &[
        Key::required("program", Kind::Text),
        Key::optional("args", Kind::StringList),
        Key::optional("env", Kind::StringMap),
        Key::optional("cwd", Kind::Text),
        Key::optional("stdin", Kind::Text),
        Key::optional(
            "expect_exit",
            Kind::IntegerList {
                min: i32::MIN as i64,
                max: i32::MAX as i64,
            },
        ),
    ],
    exclusive: &[],
    default: Some(("expect_exit", Literal::Integers(&[0]))),
    address: None,
};

pub(crate) async fn run(request: &Value, output_limit: usize) -> AttemptOutcome {
    let Some(program) = request["program"].as_str() else {
        return failed(
            FailureCause::Other,
            "the request has no `program`".to_owned(),
        );
    };
    let mut command = tokio::process::Command::new(program);
    if let Some(args) = request["args"].as_array() {
        command.args(args.iter().map(|arg| {
            arg.as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| arg.to_string())
        }));
    }
    if let Some(env) = request["env"].as_object() {
        for (name, value) in env {
            command.env(
                name,
                value
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| value.to_string()),
            );
        }
    }
    if let Some(cwd) = request["cwd"].as_str() {
        command.current_dir(cwd);
    }
    let stdin = request["stdin"].as_str();
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            return failed(
                FailureCause::Other,
                format!("could not start `{program}`: {error}"),
            );
        }
    };
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take())
        && let Err(error) = pipe.write_all(text.as_bytes()).await
    {
        return failed(
            FailureCause::Other,
            format!("could not write to `{program}`'s stdin: {error}"),
        );
    }
    let output = match child.wait_with_output().await {
        Ok(output) => output,
        Err(error) => return failed(FailureCause::Other, format!("`{program}` failed: {error}")),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let mut summary = json!({
        "exit_code": output.status.code(),
        "stdout": truncate(&stdout, output_limit),
        "stderr": truncate(&stderr, output_limit),
    });
    if let Ok(parsed) = serde_json::from_str::<Value>(stdout.trim()) {
        summary["json"] = parsed;
    }
    let Some(code) = output.status.code() else {
        return AttemptOutcome::Failed {
            cause: FailureCause::Other,
            error: format!("`{program}` was killed by a signal"),
            response: Some(summary),
            retry_after_ms: None,
        };
    };
    let expected = match request["expect_exit"].as_array() {
        Some(codes) => codes
            .iter()
            .any(|wanted| wanted.as_i64() == Some(code as i64)),
        None => code == 0,
    };
    if expected {
        AttemptOutcome::Succeeded { response: summary }
    } else {
        AttemptOutcome::Failed {
            cause: FailureCause::ExitCode(code),
            error: format!(
                "`{program}` exited with {code}: {}",
                truncate(stderr.trim(), 200)
            ),
            response: Some(summary),
            retry_after_ms: None,
        }
    }
}
