//! `guardrails`: every key parsed into the model, and every mistake in one
//! reported at its line with a hint.

use std::path::Path;

use jiff::civil::{Time, Weekday, date, time};
use runbook::{Outside, RateLimit};

use crate::{MINIMAL, parse};

/// `MINIMAL` with `guardrails:` and `lines` appended: `guardrails:` is line
/// 25, so the first of `lines` is line 26.
fn with_guardrails(lines: &str) -> String {
    assert_eq!(MINIMAL.lines().count(), 24);
    format!("{MINIMAL}guardrails:\n{lines}")
}

/// Diagnostics as `line:column: message [hint: ...]`, one per entry.
#[track_caller]
fn check(lines: &str, expected: &[&str]) {
    let diagnostics = match runbook::parse_runbook(
        Path::new("runbook.yaml"),
        &with_guardrails(lines),
        connectors::STEP_ACTIONS,
    ) {
        Ok(_) => Vec::new(),
        Err(diagnostics) => diagnostics,
    };
    let actual: Vec<String> = diagnostics
        .iter()
        .map(|d| match &d.hint {
            Some(hint) => format!("{}:{}: {} [hint: {hint}]", d.line, d.column, d.message),
            None => format!("{}:{}: {}", d.line, d.column, d.message),
        })
        .collect();
    assert_eq!(actual.join("\n"), expected.join("\n"));
}

/// The example of the guardrails section in docs/runbooks.md.
fn documented_example() -> String {
    let docs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/runbooks.md"
    ))
    .expect("docs/runbooks.md exists");
    let section = &docs[docs.find("## `guardrails`").expect("a guardrails section")..];
    let start = section
        .find("```yaml\nguardrails:\n")
        .expect("a yaml example")
        + "```yaml\nguardrails:\n".len();
    let end = start + section[start..].find("```").expect("the example ends");
    section[start..end].to_owned()
}

#[test]
fn the_documented_example_parses_into_the_model() {
    let guardrails = parse(&with_guardrails(&documented_example())).guardrails;
    assert_eq!(guardrails.environments, ["production"]);

    let [night, weekend] = guardrails.change_windows.as_slice() else {
        panic!("two change windows: {:?}", guardrails.change_windows)
    };
    assert_eq!(
        night.days,
        [
            Weekday::Monday,
            Weekday::Tuesday,
            Weekday::Wednesday,
            Weekday::Thursday,
            Weekday::Friday
        ]
    );
    assert_eq!(
        (night.from, night.to),
        (time(22, 0, 0, 0), time(2, 0, 0, 0))
    );
    assert_eq!(night.time_zone.iana_name(), Some("Europe/Berlin"));
    assert_eq!(weekend.days, [Weekday::Saturday, Weekday::Sunday]);
    assert_eq!(
        (weekend.from, weekend.to),
        (Time::midnight(), Time::midnight()),
        "no from and to: whole days"
    );

    let [freeze] = guardrails.freezes.as_slice() else {
        panic!("one freeze")
    };
    assert_eq!(freeze.from, date(2026, 12, 20).at(0, 0, 0, 0));
    assert_eq!(freeze.to, date(2027, 1, 4).at(0, 0, 0, 0));
    assert_eq!(freeze.reason.as_deref(), Some("year-end freeze"));
    assert_eq!(freeze.starts_at().to_string(), "2026-12-20T05:00:00Z");
    assert_eq!(freeze.ends_at().to_string(), "2027-01-04T05:00:00Z");

    let business_hours = guardrails.business_hours.as_ref().expect("business hours");
    assert_eq!(business_hours.outside, Outside::RequireApproval);
    assert_eq!(
        business_hours.hours.time_zone.iana_name(),
        Some("Europe/London")
    );
    assert_eq!(
        (business_hours.hours.from, business_hours.hours.to),
        (time(8, 0, 0, 0), time(18, 0, 0, 0))
    );

    let cooldown = guardrails.cooldown.as_ref().expect("cooldown");
    assert_eq!((cooldown.runs, cooldown.window_ms), (3, 3_600_000));
    assert_eq!(
        guardrails.rate_limit,
        Some(RateLimit {
            runs: 10,
            window_ms: 3_600_000
        })
    );
    assert_eq!(guardrails.max_concurrent, Some(2));
    assert_eq!(guardrails.sensitive_targets, ["db-prod-*", "ceo-laptop"]);
    assert_eq!(guardrails.min_confidence, Some(0.8));
}

#[test]
fn absent_guardrails_limit_nothing() {
    let guardrails = parse(MINIMAL).guardrails;
    assert!(guardrails.environments.is_empty());
    assert!(guardrails.change_windows.is_empty());
    assert!(guardrails.freezes.is_empty());
    assert!(guardrails.business_hours.is_none());
    assert!(guardrails.cooldown.is_none());
    assert!(guardrails.rate_limit.is_none());
    assert!(guardrails.max_concurrent.is_none());
    assert!(guardrails.sensitive_targets.is_empty());
    assert!(guardrails.min_confidence.is_none());
}

#[test]
fn days_take_ranges_in_any_order_and_default_to_every_day() {
    let days = |list: &str| {
        let text = with_guardrails(&format!(
            "  change_windows: [{{ days: {list}, from: \"01:00\", to: \"02:00\", time_zone: UTC }}]\n"
        ));
        parse(&text).guardrails.change_windows[0].days.clone()
    };
    use Weekday::*;
    assert_eq!(days("[fri, mon, fri]"), [Monday, Friday]);
    assert_eq!(days("[fri-mon]"), [Monday, Friday, Saturday, Sunday]);
    assert_eq!(days("[sun-sun, Tue]"), [Tuesday, Sunday]);
    assert_eq!(
        days("[mon-sun]"),
        [
            Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday
        ]
    );
    let every_day = parse(&with_guardrails(
        "  business_hours: { from: \"08:00\", to: \"18:00\", time_zone: UTC, outside: deny }\n",
    ))
    .guardrails
    .business_hours
    .expect("business hours");
    assert_eq!(every_day.hours.days.len(), 7);
    assert_eq!(every_day.outside, Outside::Deny);
}

#[test]
fn time_zone_names_are_checked_against_the_database() {
    check(
        "  change_windows:\n    - { from: \"22:00\", to: \"02:00\", time_zone: Europe/Berln }\n",
        &[
            "27:48: `time_zone` in change window 1: unknown time zone `Europe/Berln` [hint: did you mean `Europe/Berlin`?]",
        ],
    );
    check(
        "  business_hours: { from: \"08:00\", to: \"18:00\", time_zone: Mars/Olympus_Mons }\n",
        &[
            "26:60: `time_zone` in `guardrails.business_hours`: unknown time zone `Mars/Olympus_Mons` [hint: use an IANA time zone name such as `Europe/Berlin`, `America/New_York` or `UTC`]",
        ],
    );
    check(
        "  change_windows:\n    - { from: \"22:00\", to: \"02:00\" }\n",
        &["27:7: missing required key `time_zone` in change window 1"],
    );
}

#[test]
fn times_of_day_are_hh_mm_on_a_24_hour_clock() {
    let window = |from: &str, to: &str| {
        format!("  change_windows:\n    - {{ from: {from}, to: {to}, time_zone: UTC }}\n")
    };
    check(
        &window("\"25:00\"", "\"02:00\""),
        &[
            "27:15: `from` in change window 1: `25:00` is not a time of day [hint: write HH:MM on a 24-hour clock, from \"00:00\" to \"23:59\"]",
        ],
    );
    check(
        &window("\"08:00\"", "\"24:00\""),
        &[
            "27:28: `to` in change window 1: `24:00` is not a time of day [hint: a window that ends at midnight ends at \"00:00\"]",
        ],
    );
    check(
        &window("\"8:00\"", "\"12:60\""),
        &[
            "27:15: `from` in change window 1: `8:00` is not a time of day [hint: write HH:MM on a 24-hour clock, from \"00:00\" to \"23:59\"]",
            "27:27: `to` in change window 1: `12:60` is not a time of day [hint: write HH:MM on a 24-hour clock, from \"00:00\" to \"23:59\"]",
        ],
    );
    check(
        &window("800", "\"12:00\""),
        &[
            "27:15: `from` in change window 1: expected a time such as \"22:00\", found an integer [hint: write the time in quotes: \"HH:MM\"]",
        ],
    );
    check(&window("22:00", "06:00"), &[]);
}

#[test]
fn a_window_needs_an_end_that_differs_from_its_start() {
    check(
        "  change_windows:\n    - { from: \"22:00\", to: \"22:00\", time_zone: UTC }\n",
        &[
            "27:28: change window 1 starts and ends at 22:00 [hint: a window needs an end that differs from its start; leave out `from` and `to` for whole days]",
        ],
    );
    check(
        "  change_windows:\n    - { from: \"22:00\", time_zone: UTC }\n",
        &[
            "27:7: change window 1 has `from` but no `to` [hint: give both `from` and `to`, or neither for whole days]",
        ],
    );
    check(
        "  change_windows: []\n",
        &[
            "26:19: `guardrails.change_windows` is empty, so the runbook could never run [hint: list at least one window, or leave `change_windows` out to allow any time]",
        ],
    );
}

#[test]
fn unknown_days_get_a_hint() {
    check(
        "  change_windows:\n    - { days: [mnd, monday, mon-fr, weekdays], time_zone: UTC }\n",
        &[
            "27:16: `days` in change window 1: unknown day `mnd` [hint: did you mean `mon`?]",
            "27:21: `days` in change window 1: unknown day `monday` [hint: did you mean `mon`?]",
            "27:29: `days` in change window 1: unknown day `fr` [hint: did you mean `fri`?]",
            "27:37: `days` in change window 1: unknown day `weekdays` [hint: write three-letter days or ranges such as `mon-fri`: mon, tue, wed, thu, fri, sat, sun]",
        ],
    );
    check(
        "  change_windows:\n    - { days: [], time_zone: UTC }\n",
        &[
            "27:15: `days` in change window 1: the list is empty [hint: name at least one day, or leave `days` out for every day]",
        ],
    );
}

#[test]
fn freezes_are_civil_date_times_that_end_after_they_start() {
    let freeze = |from: &str, to: &str| {
        format!("  freeze:\n    - {{ from: {from}, to: {to}, time_zone: Europe/Berlin }}\n")
    };
    check(
        &freeze("\"2027-01-04T00:00\"", "\"2026-12-20T00:00\""),
        &[
            "27:39: freeze 1 ends (2026-12-20T00:00:00) before it starts (2027-01-04T00:00:00) [hint: `from` is the first frozen moment and `to` the first one after the freeze]",
        ],
    );
    check(
        &freeze("\"2026-12-20T00:00\"", "\"2026-12-20T00:00\""),
        &[
            "27:39: freeze 1 ends (2026-12-20T00:00:00) when it starts (2026-12-20T00:00:00) [hint: `from` is the first frozen moment and `to` the first one after the freeze]",
        ],
    );
    check(
        &freeze("2026-12-20", "\"2027-01-04T00:00\""),
        &[
            "27:15: `from` in freeze 1: `2026-12-20` is not a date and time [hint: write a time too, e.g. \"2026-12-20T00:00\"; `to` is the first moment after the freeze]",
        ],
    );
    check(
        &freeze("\"2026-12-20T00:00Z\"", "\"2027-01-04T00:00+01:00\""),
        &[
            "27:15: `from` in freeze 1: `2026-12-20T00:00Z` is not a date and time [hint: leave out the offset: `time_zone` says which clock the time is read on]",
            "27:40: `to` in freeze 1: `2027-01-04T00:00+01:00` is not a date and time [hint: leave out the offset: `time_zone` says which clock the time is read on]",
        ],
    );
    check(
        &freeze("\"2026-13-20T00:00\"", "\"2027-01-04T00:00\""),
        &[
            "27:15: `from` in freeze 1: `2026-13-20T00:00` is not a date and time [hint: write YYYY-MM-DDTHH:MM, e.g. \"2026-12-20T00:00\"]",
        ],
    );
    check(
        "  freeze:\n    - { from: \"2026-12-20T00:00\", to: \"2027-01-04T00:00\", reason: \"\" }\n",
        &[
            "27:7: missing required key `time_zone` in freeze 1",
            "27:67: `reason` in freeze 1: must not be empty",
        ],
    );
}

#[test]
fn limits_and_thresholds_are_range_checked() {
    check(
        "  min_confidence: 1.5\n",
        &[
            "26:19: `min_confidence` in `guardrails`: 1.5 is out of range; it must be between 0 and 1 [hint: a confidence is a fraction: 0.8 means 80 %]",
        ],
    );
    check(
        "  min_confidence: high\n",
        &["26:19: `min_confidence` in `guardrails`: expected a number, found a string"],
    );
    check(
        "  rate_limit: { runs: 0 }\n",
        &[
            "26:15: missing required key `window` in `guardrails.rate_limit`",
            "26:23: `runs` in `guardrails.rate_limit`: 0 is out of range; it must be at least 1",
        ],
    );
    check(
        "  max_concurrent: 0\n",
        &["26:19: `max_concurrent` in `guardrails`: 0 is out of range; it must be at least 1"],
    );
    check(
        "  max_concurrent: many\n",
        &["26:19: `max_concurrent` in `guardrails`: expected an integer, found a string"],
    );
    check(
        "  cooldown: { per: runbook, window: 1h }\n",
        &[
            "26:20: `per` in `guardrails.cooldown`: unknown value `runbook` [hint: expected one of: target]",
        ],
    );
    check(
        "  business_hours: { time_zone: UTC, outside: maybe }\n",
        &[
            "26:46: `outside` in `guardrails.business_hours`: unknown value `maybe` [hint: expected one of: require_approval, deny]",
        ],
    );
    check(
        "  sensitive_targets: db-prod-*\n",
        &["26:22: `sensitive_targets` in `guardrails`: expected a list, found a string"],
    );
    check(
        "  change_window: []\n",
        &[
            "26:3: unknown key `change_window` in `guardrails` [hint: did you mean `change_windows`?]",
        ],
    );
}

#[test]
fn freeze_boundaries_in_a_daylight_saving_change_resolve_like_a_calendar() {
    let freeze = |from: &str, to: &str| {
        let text = with_guardrails(&format!(
            "  freeze:\n    - {{ from: \"{from}\", to: \"{to}\", time_zone: Europe/Berlin }}\n"
        ));
        let freeze = parse(&text).guardrails.freezes[0].clone();
        (freeze.starts_at().to_string(), freeze.ends_at().to_string())
    };
    // 02:30 does not exist on 29 March 2026 in Berlin: it is read as 03:30 CEST.
    // 02:30 happens twice on 25 October 2026: the first (CEST) is meant.
    assert_eq!(
        freeze("2026-03-29T02:30", "2026-10-25T02:30"),
        (
            "2026-03-29T01:30:00Z".to_owned(),
            "2026-10-25T00:30:00Z".to_owned()
        )
    );
}
