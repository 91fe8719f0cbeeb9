//! `RetryPolicy::delay_ms`: exponential backoff with equal jitter, capped,
//! and overridden by a longer `Retry-After`.

use domain::RetryPolicy;

use crate::script::millis;

/// A policy from `initial max multiplier [nojitter]`, e.g. `1s 30s 2`.
fn policy(spec: &str) -> RetryPolicy {
    let words: Vec<&str> = spec.split_whitespace().collect();
    RetryPolicy {
        attempts: 10,
        initial_ms: millis(words[0]),
        max_delay_ms: millis(words[1]),
        multiplier: words[2].parse().expect("a multiplier"),
        jitter: words.get(3) != Some(&"nojitter"),
        retry_on: Vec::new(),
    }
}

#[test]
fn delays_follow_the_policy() {
    #[track_caller]
    fn check(
        spec: &str,
        next_attempt: u32,
        unit_random: f64,
        retry_after_ms: Option<u64>,
        expect: u64,
    ) {
        let actual = policy(spec).delay_ms(next_attempt, unit_random, retry_after_ms);
        assert_eq!(
            actual, expect,
            "`{spec}` before attempt {next_attempt}, random {unit_random}, retry-after {retry_after_ms:?}"
        );
    }
    // Exponential, capped at the maximum.
    check("1s 30s 2 nojitter", 2, 0.5, None, 1_000);
    check("1s 30s 2 nojitter", 3, 0.5, None, 2_000);
    check("1s 30s 2 nojitter", 4, 0.5, None, 4_000);
    check("1s 30s 2 nojitter", 6, 0.5, None, 16_000);
    check("1s 30s 2 nojitter", 7, 0.5, None, 30_000);
    check("1s 30s 2 nojitter", 1_000, 0.5, None, 30_000);
    check("1s 30s 2 nojitter", u32::MAX, 0.5, None, 30_000);
    // Before the second attempt (or nonsense earlier ones): the initial delay.
    check("1s 30s 2 nojitter", 1, 0.5, None, 1_000);
    check("1s 30s 2 nojitter", 0, 0.5, None, 1_000);
    // A fixed backoff, a gentler one, and an initial delay above the maximum.
    check("2s 30s 1 nojitter", 5, 0.5, None, 2_000);
    check("1s 30s 1.5 nojitter", 4, 0.5, None, 2_250);
    check("5s 2s 2 nojitter", 2, 0.5, None, 2_000);
    // Equal jitter: half fixed, half scaled by the random number.
    check("1s 30s 2", 2, 0.0, None, 500);
    check("1s 30s 2", 2, 0.5, None, 750);
    check("1s 30s 2", 2, 0.999, None, 999);
    check("1s 30s 2", 3, 0.25, None, 1_250);
    check("1s 30s 2", 9, 0.0, None, 15_000);
    check("1s 30s 2", 9, 0.5, None, 22_500);
    // A random number outside [0, 1) is clamped.
    check("1s 30s 2", 2, -3.0, None, 500);
    check("1s 30s 2", 2, 1.0, None, 1_000);
    check("1s 30s 2", 2, 7.0, None, 1_000);
    // Retry-After wins when it is longer, even past the maximum.
    check("1s 30s 2", 2, 0.5, Some(5_000), 5_000);
    check("1s 30s 2", 2, 0.5, Some(100), 750);
    check("1s 30s 2 nojitter", 7, 0.5, Some(120_000), 120_000);
    check("1s 30s 2 nojitter", 2, 0.5, Some(0), 1_000);
}

/// For every policy, attempt and random number: the delay is between half
/// the ceiling and the ceiling, never zero, grows with the random number,
/// and a Retry-After only ever lengthens it.
#[test]
fn jittered_delays_stay_between_half_and_all_of_the_ceiling() {
    let policies = [
        "1s 30s 2",
        "100ms 10s 3",
        "250ms 250ms 2",
        "7ms 1s 1.7",
        "2s 60s 1",
    ];
    for spec in policies {
        let policy = policy(spec);
        for next_attempt in 2..=20 {
            let exponent = (next_attempt - 2) as i32;
            let ceiling = (policy.initial_ms as f64 * policy.multiplier.powi(exponent))
                .min(policy.max_delay_ms as f64);
            let mut previous = 0;
            for step in 0..1_000 {
                let unit_random = f64::from(step) / 1_000.0;
                let delay = policy.delay_ms(next_attempt, unit_random, None);
                let context = format!("`{spec}`, attempt {next_attempt}, random {unit_random}");
                assert!(
                    delay as f64 >= (ceiling / 2.0).floor(),
                    "{context}: {delay}ms"
                );
                assert!(delay as f64 <= ceiling, "{context}: {delay}ms");
                assert!(delay > 0, "{context}: a retry never fires at once");
                assert!(delay >= previous, "{context}: {delay}ms < {previous}ms");
                previous = delay;
                for retry_after in [0, delay / 2, delay, delay + 1, 90_000] {
                    assert_eq!(
                        policy.delay_ms(next_attempt, unit_random, Some(retry_after)),
                        delay.max(retry_after),
                        "{context}, retry-after {retry_after}ms"
                    );
                }
            }
        }
    }
}
