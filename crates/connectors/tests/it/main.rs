//! Integration tests of the connectors, against loopback servers from
//! `test-support` that speak the vendors' wire formats.

mod ansible;
mod awx;
mod chat_completions;
mod freshservice;
mod graph;
mod http_auth;
mod http_redirects;
mod jenkins;
mod jira;
mod servicenow;
mod slack;
mod teams;

use std::time::Duration;

use connectors::WriteError;

/// How a call to a peer should fail: for good, or worth retrying (after
/// the peer's `Retry-After`, if it gave one); each message names `says`.
#[derive(Debug)]
pub enum Expect {
    Permanent(&'static [&'static str]),
    Retryable {
        retry_after: Option<Duration>,
        says: &'static [&'static str],
    },
}

/// Checks that `result` failed as `expect` says, and returns the error and
/// its message for checks of what must not be in it.
#[track_caller]
pub fn failed_as<T: std::fmt::Debug>(
    result: Result<T, WriteError>,
    expect: Expect,
) -> (WriteError, String) {
    let error = result.expect_err("the call should fail");
    let (message, says) = match (&error, &expect) {
        (WriteError::Permanent { message }, Expect::Permanent(says)) => (message.clone(), *says),
        (
            WriteError::Retryable {
                message,
                retry_after,
            },
            Expect::Retryable {
                retry_after: expected,
                says,
            },
        ) => {
            assert_eq!(retry_after, expected, "retry_after of `{message}`");
            (message.clone(), *says)
        }
        _ => panic!("expected {expect:?}, got {error:?}"),
    };
    for part in says {
        assert!(
            message.contains(part),
            "`{message}` should contain `{part}`"
        );
    }
    (error, message)
}
