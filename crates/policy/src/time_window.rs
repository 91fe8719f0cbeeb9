//! Weekly windows read on a time zone's wall clock: is an instant inside,
//! and when does the next one open?
//!
//! A window such as "mon-fri 22:00-02:00 Europe/Berlin" is a statement about
//! the clocks on the wall in Berlin, so membership is decided on the civil
//! date and time of the instant in that zone, never on a fixed UTC offset.
//! Daylight-saving changes then fall out naturally: on the spring-forward
//! night the skipped hour is simply never shown, and on the fall-back night
//! the repeated hour is shown, and judged, twice.
//!
//! The next opening is harder, because a window may open at a moment no
//! clock shows (`from` inside the skipped hour) or twice. Rather than
//! special-case each, it considers every instant at which membership can
//! change — each resolution of each day's `from`, and every transition of
//! the zone — and takes the earliest one that is inside.

use jiff::civil::Date;
use jiff::{Timestamp, ToSpan};
use runbook::WeeklyWindow;

/// How far ahead to look for an opening: a week, plus a week in case the
/// only opening of this week falls into a skipped hour.
const LOOKAHEAD_DAYS: i64 = 15;

/// Whether `at` lies inside `window` (`from` inclusive, `to` exclusive).
pub(crate) fn contains(window: &WeeklyWindow, at: Timestamp) -> bool {
    let local = at.to_zoned(window.time_zone.clone()).datetime();
    let (date, time) = (local.date(), local.time());
    let opens_on = |date: Date| window.days.contains(&date.weekday());
    if window.from < window.to {
        opens_on(date) && window.from <= time && time < window.to
    } else {
        // The window ends on the next day; `from == to` is 24 hours.
        (opens_on(date) && time >= window.from)
            || (time < window.to && date.yesterday().is_ok_and(opens_on))
    }
}

/// The first instant after `after` at which `at` is inside `window`, when
/// `after` itself is outside it; within the next two weeks.
pub(crate) fn next_opening(window: &WeeklyWindow, after: Timestamp) -> Option<Timestamp> {
    let time_zone = &window.time_zone;
    let today = after.to_zoned(time_zone.clone()).date();
    let horizon = after.checked_add((LOOKAHEAD_DAYS * 24).hours()).ok()?;
    let starts = (-1..=LOOKAHEAD_DAYS)
        .filter_map(|offset| today.checked_add(offset.days()).ok())
        .filter(|date| window.days.contains(&date.weekday()))
        .flat_map(|date| {
            let ambiguous = time_zone.to_ambiguous_timestamp(date.to_datetime(window.from));
            // Both readings of a repeated time, and both sides of a skipped one.
            [ambiguous.earlier().ok(), ambiguous.later().ok()]
        })
        .flatten();
    let transitions = time_zone
        .following(after)
        .map(|transition| transition.timestamp())
        .take_while(|instant| *instant <= horizon);
    starts
        .chain(transitions)
        .filter(|candidate| *candidate > after && *candidate <= horizon)
        .filter(|candidate| contains(window, *candidate))
        .min()
}

/// "mon-fri 22:00-02:00 Europe/Berlin": how reasons name a window.
pub(crate) fn describe(window: &WeeklyWindow) -> String {
    let time_zone = window.time_zone.iana_name().unwrap_or("UTC");
    let hours = if window.from == window.to && window.from == jiff::civil::Time::midnight() {
        "all day".to_owned()
    } else {
        format!(
            "{}-{}",
            window.from.strftime("%H:%M"),
            window.to.strftime("%H:%M")
        )
    };
    format!("{} {hours} {time_zone}", describe_days(window))
}

/// Runs of consecutive days as ranges: `mon-fri`, `sat-sun`, `mon, wed`.
fn describe_days(window: &WeeklyWindow) -> String {
    if window.days.len() == 7 {
        return "every day".to_owned();
    }
    let index = |day: jiff::civil::Weekday| day.to_monday_zero_offset() as usize;
    const NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for day in window.days.iter().map(|day| index(*day)) {
        match runs.last_mut() {
            Some((_, last)) if *last + 1 == day => *last = day,
            _ => runs.push((day, day)),
        }
    }
    runs.iter()
        .map(|&(first, last)| match last - first {
            0 => NAMES[first].to_owned(),
            1 => format!("{}, {}", NAMES[first], NAMES[last]),
            _ => format!("{}-{}", NAMES[first], NAMES[last]),
        })
        .collect::<Vec<_>>()
        .join(", ")
}
