//! Verification: the probe is polled every `every` until the expectation
//! holds or `within` has passed; a failed verification compensates what ran
//! and hands the run to a person.

use crate::script::check;

#[test]
fn a_run_succeeds_when_the_first_probe_satisfies_the_expectation() {
    check(
        "step s1
         verify within=30s every=10s: response.json.ok",
        "@0 begin
         @1s ok
         @2s probe {\"ok\": true}",
        "start approved
         @0s approved --begin--> running [call step s1 #1] (run.state=running attempt.started)
         @1s running --ok--> verifying [call verify verify #1] (attempt.finished run.state=verifying attempt.started)
         @2s verifying --probe {\"ok\": true}--> succeeded [] (attempt.finished verify.satisfied run.state=succeeded)
         = succeeded
         completed: s1
         verify deadline: 31s",
    );
}

#[test]
fn the_probe_is_polled_until_the_expectation_holds() {
    check(
        "step s1
         verify within=30s every=10s: response.json.state == 'running'",
        "@0 begin
         @1s ok
         @2s probe {\"state\": \"starting\"}
         @11s wake
         @12s wake
         @13s probe {\"state\": \"running\"}",
        "start approved
         @0s approved --begin--> running [call step s1 #1] (run.state=running attempt.started)
         @1s running --ok--> verifying [call verify verify #1] (attempt.finished run.state=verifying attempt.started)
         @2s verifying --probe {\"state\": \"starting\"}--> verifying [wake @12s] (attempt.finished attempt.retry_scheduled(#2 in 10s))
         @11s verifying --wake--> verifying [wake @12s] ()
         @12s verifying --wake--> verifying [call verify verify #2] (attempt.started)
         @13s verifying --probe {\"state\": \"running\"}--> succeeded [] (attempt.finished verify.satisfied run.state=succeeded)
         = succeeded
         completed: s1
         verify deadline: 31s",
    );
}

#[test]
fn a_verification_that_never_holds_is_compensated_then_needs_a_human() {
    // Only `s1` has a rollback; the third probe would be due at 35s, past
    // the 32s deadline, so verification gives up after it.
    check(
        "step s1 rollback
         step s2
         verify within=30s every=10s: response.json.ok",
        "@0 begin
         @1s ok
         @2s ok
         @3s probe {\"ok\": false}
         @13s wake
         @14s probe {\"ok\": false}
         @24s wake
         @25s probe {\"ok\": false}
         @26s ok",
        "start approved
         @0s approved --begin--> running [call step s1 #1] (run.state=running attempt.started)
         @1s running --ok--> running [call step s2 #1] (attempt.finished attempt.started)
         @2s running --ok--> verifying [call verify verify #1] (attempt.finished run.state=verifying attempt.started)
         @3s verifying --probe {\"ok\": false}--> verifying [wake @13s] (attempt.finished attempt.retry_scheduled(#2 in 10s))
         @13s verifying --wake--> verifying [call verify verify #2] (attempt.started)
         @14s verifying --probe {\"ok\": false}--> verifying [wake @24s] (attempt.finished attempt.retry_scheduled(#3 in 10s))
         @24s verifying --wake--> verifying [call verify verify #3] (attempt.started)
         @25s verifying --probe {\"ok\": false}--> rolling_back [call rollback s1 #1] (attempt.finished verify.failed run.state=failed run.state=rolling_back attempt.started)
         @26s rolling_back --ok--> needs_human [] (attempt.finished run.state=needs_human)
         = needs_human
         reason: verification failed within 30s: `response.json.ok` was false
         completed: s1 s2
         verify deadline: 32s
         verification failed",
    );
}

#[test]
fn a_verification_failure_with_nothing_to_compensate_needs_a_human_at_once() {
    check(
        "step s1
         verify within=5s every=5s: response.json.ok",
        "@0 begin
         @1s ok
         @2s probe {\"ok\": false}",
        "start approved
         @0s approved --begin--> running [call step s1 #1] (run.state=running attempt.started)
         @1s running --ok--> verifying [call verify verify #1] (attempt.finished run.state=verifying attempt.started)
         @2s verifying --probe {\"ok\": false}--> needs_human [] (attempt.finished verify.failed run.state=failed run.state=rolling_back run.state=needs_human)
         = needs_human
         reason: verification failed within 5s: `response.json.ok` was false
         completed: s1
         verify deadline: 6s
         verification failed",
    );
}

#[test]
fn a_probe_may_start_exactly_at_the_deadline_but_not_after() {
    check(
        "verify within=10s every=5s: response.json.ok",
        "@0 begin
         @0 probe {\"ok\": false}
         @5s wake
         @5s probe {\"ok\": false}
         @10s wake
         @10s probe {\"ok\": false}",
        "start approved
         @0s approved --begin--> verifying [call verify verify #1] (run.state=running run.state=verifying attempt.started)
         @0s verifying --probe {\"ok\": false}--> verifying [wake @5s] (attempt.finished attempt.retry_scheduled(#2 in 5s))
         @5s verifying --wake--> verifying [call verify verify #2] (attempt.started)
         @5s verifying --probe {\"ok\": false}--> verifying [wake @10s] (attempt.finished attempt.retry_scheduled(#3 in 5s))
         @10s verifying --wake--> verifying [call verify verify #3] (attempt.started)
         @10s verifying --probe {\"ok\": false}--> needs_human [] (attempt.finished verify.failed run.state=failed run.state=rolling_back run.state=needs_human)
         = needs_human
         reason: verification failed within 10s: `response.json.ok` was false
         verify deadline: 10s
         verification failed",
    );
}

#[test]
fn an_expectation_that_cannot_be_evaluated_is_not_satisfied() {
    // A missing field is an error, recorded as the reason, not a quiet false;
    // the probe is polled again all the same.
    check(
        "step s1
         verify within=10s every=5s: response.json.ok",
        "@0 begin
         @0 ok
         @1s probe {\"status\": \"starting\"}
         @6s wake
         @7s probe {\"ok\": true}",
        "start approved
         @0s approved --begin--> running [call step s1 #1] (run.state=running attempt.started)
         @0s running --ok--> verifying [call verify verify #1] (attempt.finished run.state=verifying attempt.started)
         @1s verifying --probe {\"status\": \"starting\"}--> verifying [wake @6s] (attempt.finished attempt.retry_scheduled(#2 in 5s))
         @6s verifying --wake--> verifying [call verify verify #2] (attempt.started)
         @7s verifying --probe {\"ok\": true}--> succeeded [] (attempt.finished verify.satisfied run.state=succeeded)
         = succeeded
         completed: s1
         verify deadline: 10s",
    );
    check(
        "verify within=1s every=1s: response.json.ok",
        "@0 begin
         @0.5s probe {\"status\": \"starting\"}",
        "start approved
         @0s approved --begin--> verifying [call verify verify #1] (run.state=running run.state=verifying attempt.started)
         @0.5s verifying --probe {\"status\": \"starting\"}--> needs_human [] (attempt.finished verify.failed run.state=failed run.state=rolling_back run.state=needs_human)
         = needs_human
         reason: verification failed within 1s: cannot evaluate the expectation `response.json.ok`: undefined value: `response.json.ok` is undefined
         verify deadline: 1s
         verification failed",
    );
    check(
        "verify within=1s every=1s: response.json.count",
        "@0 begin
         @0.5s probe {\"count\": 3}",
        "start approved
         @0s approved --begin--> verifying [call verify verify #1] (run.state=running run.state=verifying attempt.started)
         @0.5s verifying --probe {\"count\": 3}--> needs_human [] (attempt.finished verify.failed run.state=failed run.state=rolling_back run.state=needs_human)
         = needs_human
         reason: verification failed within 1s: cannot evaluate the expectation `response.json.count`: expected true or false, got 3
         verify deadline: 1s
         verification failed",
    );
}

#[test]
fn a_failed_or_unknown_probe_is_not_satisfied() {
    check(
        "verify within=2s every=1s: response.json.ok",
        "@0 begin
         @0 fail 503
         @1s wake
         @1s unknown: probe timed out twice
         @2s wake
         @2s fail connect",
        "start approved
         @0s approved --begin--> verifying [call verify verify #1] (run.state=running run.state=verifying attempt.started)
         @0s verifying --fail 503--> verifying [wake @1s] (attempt.finished attempt.retry_scheduled(#2 in 1s))
         @1s verifying --wake--> verifying [call verify verify #2] (attempt.started)
         @1s verifying --unknown: probe timed out twice--> verifying [wake @2s] (attempt.finished attempt.retry_scheduled(#3 in 1s))
         @2s verifying --wake--> verifying [call verify verify #3] (attempt.started)
         @2s verifying --fail connect--> needs_human [] (attempt.finished verify.failed run.state=failed run.state=rolling_back run.state=needs_human)
         = needs_human
         reason: verification failed within 2s: probe failed: connection refused
         verify deadline: 2s
         verification failed",
    );
}
