//! `guardrails`: where, when, how often and on what a runbook may act.
//!
//! Times are the subtle part. Every window and freeze names its IANA time
//! zone, resolved here through jiff's time zone database, so that a typo
//! (`Europe/Berln`) fails when the runbook is loaded rather than quietly
//! meaning UTC at three in the morning. Times of day are `HH:MM` on a
//! 24-hour clock and freezes are civil date-times with no offset: the zone
//! says what they mean, daylight-saving changes included, and `policy`
//! evaluates them on the zone's wall clock.

use jiff::civil::{DateTime, Time, Weekday};
use jiff::tz::TimeZone;

use super::{Validator, optional};
use crate::decode::Fields;
use crate::diagnostic::{closest, suggestion};
use crate::model::{BusinessHours, Cooldown, Freeze, Guardrails, Outside, RateLimit, WeeklyWindow};
use crate::yaml::{Node, Yaml};

const GUARDRAIL_KEYS: &[&str] = &[
    "environments",
    "change_windows",
    "freeze",
    "business_hours",
    "cooldown",
    "rate_limit",
    "max_concurrent",
    "sensitive_targets",
    "min_confidence",
];
const WINDOW_KEYS: &[&str] = &["days", "from", "to", "time_zone"];
const DAY_NAMES: &[&str] = &["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const WEEKDAYS: [Weekday; 7] = [
    Weekday::Monday,
    Weekday::Tuesday,
    Weekday::Wednesday,
    Weekday::Thursday,
    Weekday::Friday,
    Weekday::Saturday,
    Weekday::Sunday,
];

impl Validator<'_> {
    pub(super) fn guardrails(&mut self, node: &Yaml) -> Option<Guardrails> {
        let fields = self.d.fields(node, "`guardrails`", GUARDRAIL_KEYS)?;
        let environments = fields.get("environments").map_or(Some(Vec::new()), |node| {
            self.d.string_list(node, &fields.what("environments"))
        });
        let change_windows = fields
            .get("change_windows")
            .map_or(Some(Vec::new()), |node| self.change_windows(node));
        let freezes = fields
            .get("freeze")
            .map_or(Some(Vec::new()), |node| self.freezes(node));
        let business_hours = optional(fields.get("business_hours"), |node| {
            self.business_hours(node)
        });
        let cooldown = optional(fields.get("cooldown"), |node| self.cooldown(node));
        let rate_limit = optional(fields.get("rate_limit"), |node| self.rate_limit(node));
        let max_concurrent = optional(fields.get("max_concurrent"), |node| {
            self.d
                .integer(node, &fields.what("max_concurrent"), 1, u32::MAX.into())
                .map(|runs| runs as u32)
        });
        let sensitive_targets = fields
            .get("sensitive_targets")
            .map_or(Some(Vec::new()), |node| {
                self.d.string_list(node, &fields.what("sensitive_targets"))
            });
        let min_confidence = optional(fields.get("min_confidence"), |node| {
            self.min_confidence(node, &fields.what("min_confidence"))
        });
        Some(Guardrails {
            environments: environments?,
            change_windows: change_windows?,
            freezes: freezes?,
            business_hours: business_hours?,
            cooldown: cooldown?,
            rate_limit: rate_limit?,
            max_concurrent: max_concurrent?,
            sensitive_targets: sensitive_targets?,
            min_confidence: min_confidence?,
        })
    }

    fn cooldown(&mut self, node: &Yaml) -> Option<Cooldown> {
        let fields = self
            .d
            .fields(node, "`guardrails.cooldown`", &["per", "runs", "window"])?;
        // `per: target` is the only scope so far; the key exists so that
        // others (per runbook, per owner) can be added without a new shape.
        let per = optional(fields.get("per"), |node| {
            self.d.choice(node, &fields.what("per"), &["target"])
        });
        let limit = self.run_limit(&fields);
        let _per_target = per?;
        let (runs, window_ms) = limit?;
        Some(Cooldown { runs, window_ms })
    }

    fn rate_limit(&mut self, node: &Yaml) -> Option<RateLimit> {
        let fields = self
            .d
            .fields(node, "`guardrails.rate_limit`", &["runs", "window"])?;
        let (runs, window_ms) = self.run_limit(&fields)?;
        Some(RateLimit { runs, window_ms })
    }

    /// `runs` (default 1) and `window`, as cooldowns and rate limits write them.
    fn run_limit(&mut self, fields: &Fields) -> Option<(u32, u64)> {
        let runs = fields.get("runs").map_or(Some(1), |node| {
            self.d
                .integer(node, &fields.what("runs"), 1, u32::MAX.into())
        });
        let window = self
            .d
            .required(fields, "window")
            .and_then(|node| self.d.duration(node, &fields.what("window")));
        Some((runs? as u32, window?))
    }

    fn min_confidence(&mut self, node: &Yaml, what: &str) -> Option<f64> {
        let value = self.d.number(node, what)?;
        if !(0.0..=1.0).contains(&value) {
            self.d.report(
                node,
                format!("{what}: {value} is out of range; it must be between 0 and 1"),
                Some("a confidence is a fraction: 0.8 means 80 %".into()),
            );
            return None;
        }
        Some(value)
    }

    // -- weekly windows ------------------------------------------------------

    fn change_windows(&mut self, node: &Yaml) -> Option<Vec<WeeklyWindow>> {
        let items = self.d.list(node, "`guardrails.change_windows`")?;
        if items.is_empty() {
            self.d.report(
                node,
                "`guardrails.change_windows` is empty, so the runbook could never run",
                Some(
                    "list at least one window, or leave `change_windows` out to allow any time"
                        .into(),
                ),
            );
            return None;
        }
        let windows: Vec<Option<WeeklyWindow>> = items
            .iter()
            .enumerate()
            .map(|(index, item)| {
                let context = format!("change window {}", index + 1);
                let fields = self.d.fields(item, &context, WINDOW_KEYS)?;
                self.weekly_window(&fields)
            })
            .collect();
        windows.into_iter().collect()
    }

    fn business_hours(&mut self, node: &Yaml) -> Option<BusinessHours> {
        let keys = [WINDOW_KEYS, &["outside"]].concat();
        let fields = self.d.fields(node, "`guardrails.business_hours`", &keys)?;
        let hours = self.weekly_window(&fields);
        let outside = fields
            .get("outside")
            .map_or(Some(Outside::RequireApproval), |node| {
                self.d
                    .choice(node, &fields.what("outside"), &["require_approval", "deny"])
                    .map(|verdict| match verdict.as_str() {
                        "deny" => Outside::Deny,
                        _ => Outside::RequireApproval,
                    })
            });
        Some(BusinessHours {
            hours: hours?,
            outside: outside?,
        })
    }

    /// `days` (default every day), `from` and `to` (both or neither: neither
    /// is the whole day) and `time_zone` (required).
    fn weekly_window(&mut self, fields: &Fields) -> Option<WeeklyWindow> {
        let days = fields.get("days").map_or(Some(WEEKDAYS.to_vec()), |node| {
            self.days(node, &fields.what("days"))
        });
        let from = optional(fields.get("from"), |node| {
            self.time_of_day(node, &fields.what("from"))
        });
        let to = optional(fields.get("to"), |node| {
            self.time_of_day(node, &fields.what("to"))
        });
        let time_zone = self
            .d
            .required(fields, "time_zone")
            .and_then(|node| self.time_zone(node, &fields.what("time_zone")));
        let (from, to) = match (from?, to?) {
            (None, None) => (Time::midnight(), Time::midnight()),
            (Some(from), Some(to)) if from == to => {
                self.d.report(
                    fields.get("to").unwrap_or(fields.node),
                    format!(
                        "{} starts and ends at {}",
                        fields.context,
                        from.strftime("%H:%M")
                    ),
                    Some("a window needs an end that differs from its start; leave out `from` and `to` for whole days".into()),
                );
                return None;
            }
            (Some(from), Some(to)) => (from, to),
            (Some(_), None) | (None, Some(_)) => {
                let (given, missing) = if fields.get("from").is_some() {
                    ("from", "to")
                } else {
                    ("to", "from")
                };
                self.d.report(
                    fields.node,
                    format!("{} has `{given}` but no `{missing}`", fields.context),
                    Some("give both `from` and `to`, or neither for whole days".into()),
                );
                return None;
            }
        };
        Some(WeeklyWindow {
            days: days?,
            from,
            to,
            time_zone: time_zone?,
        })
    }

    /// `[mon, tue]`, ranges such as `mon-fri` (and `fri-mon`, across the
    /// weekend), in any order; the result is Monday first, each day once.
    fn days(&mut self, node: &Yaml, what: &str) -> Option<Vec<Weekday>> {
        let items = self.d.list(node, what)?;
        if items.is_empty() {
            self.d.report(
                node,
                format!("{what}: the list is empty"),
                Some("name at least one day, or leave `days` out for every day".into()),
            );
            return None;
        }
        let mut chosen = [false; 7];
        let mut valid = true;
        for item in items {
            let Some(text) = self.d.string(item, what) else {
                valid = false;
                continue;
            };
            let (first, last) = match text.split_once('-') {
                Some((first, last)) => (
                    self.day_index(item, what, first.trim()),
                    self.day_index(item, what, last.trim()),
                ),
                None => {
                    let day = self.day_index(item, what, text.trim());
                    (day, day)
                }
            };
            let (Some(first), Some(last)) = (first, last) else {
                valid = false;
                continue;
            };
            let mut day = first;
            chosen[day] = true;
            while day != last {
                day = (day + 1) % 7;
                chosen[day] = true;
            }
        }
        valid.then(|| {
            WEEKDAYS
                .into_iter()
                .zip(chosen)
                .filter_map(|(day, chosen)| chosen.then_some(day))
                .collect()
        })
    }

    fn day_index(&mut self, node: &Yaml, what: &str, name: &str) -> Option<usize> {
        let lower = name.to_ascii_lowercase();
        let index = DAY_NAMES.iter().position(|day| *day == lower);
        if index.is_none() {
            self.d.report(
                node,
                format!("{what}: unknown day `{name}`"),
                Some(suggestion(
                    &lower,
                    DAY_NAMES,
                    "write three-letter days or ranges such as `mon-fri`",
                )),
            );
        }
        index
    }

    /// `HH:MM` on a 24-hour clock.
    fn time_of_day(&mut self, node: &Yaml, what: &str) -> Option<Time> {
        let Node::Str(text) = &node.value else {
            self.d.report(
                node,
                format!(
                    "{what}: expected a time such as \"22:00\", found {}",
                    node.value.describe()
                ),
                Some("write the time in quotes: \"HH:MM\"".into()),
            );
            return None;
        };
        let well_formed = text.len() == 5
            && text.as_bytes()[2] == b':'
            && text
                .bytes()
                .enumerate()
                .all(|(index, byte)| index == 2 || byte.is_ascii_digit());
        let parsed = well_formed
            .then(|| {
                let hour: i8 = text[..2].parse().ok()?;
                let minute: i8 = text[3..].parse().ok()?;
                Time::new(hour, minute, 0, 0).ok()
            })
            .flatten();
        if parsed.is_none() {
            let hint = if text == "24:00" {
                "a window that ends at midnight ends at \"00:00\""
            } else {
                "write HH:MM on a 24-hour clock, from \"00:00\" to \"23:59\""
            };
            self.d.report(
                node,
                format!("{what}: `{text}` is not a time of day"),
                Some(hint.into()),
            );
        }
        parsed
    }

    fn time_zone(&mut self, node: &Yaml, what: &str) -> Option<TimeZone> {
        let name = self.d.string(node, what)?;
        match TimeZone::get(&name) {
            Ok(time_zone) => Some(time_zone),
            Err(_) => {
                let database = jiff::tz::db();
                let hint = if database.is_definitively_empty() {
                    "no time zone database was found on this machine: install the tzdata package, or point TZDIR at one".to_owned()
                } else {
                    let names: Vec<String> =
                        database.available().map(|name| name.to_string()).collect();
                    match closest(&name, names.iter().map(String::as_str)) {
                        Some(candidate) => format!("did you mean `{candidate}`?"),
                        None => "use an IANA time zone name such as `Europe/Berlin`, `America/New_York` or `UTC`".to_owned(),
                    }
                };
                self.d.report(
                    node,
                    format!("{what}: unknown time zone `{name}`"),
                    Some(hint),
                );
                None
            }
        }
    }

    // -- freezes -------------------------------------------------------------

    fn freezes(&mut self, node: &Yaml) -> Option<Vec<Freeze>> {
        let items = self.d.list(node, "`guardrails.freeze`")?;
        let freezes: Vec<Option<Freeze>> = items
            .iter()
            .enumerate()
            .map(|(index, item)| self.freeze(item, &format!("freeze {}", index + 1)))
            .collect();
        freezes.into_iter().collect()
    }

    fn freeze(&mut self, node: &Yaml, context: &str) -> Option<Freeze> {
        let fields = self
            .d
            .fields(node, context, &["from", "to", "time_zone", "reason"])?;
        let from = self
            .d
            .required(&fields, "from")
            .and_then(|node| self.civil_date_time(node, &fields.what("from")));
        let to = self
            .d
            .required(&fields, "to")
            .and_then(|node| self.civil_date_time(node, &fields.what("to")));
        let time_zone = self
            .d
            .required(&fields, "time_zone")
            .and_then(|node| self.time_zone(node, &fields.what("time_zone")));
        let reason = optional(fields.get("reason"), |node| {
            self.d.string(node, &fields.what("reason"))
        });
        let freeze = Freeze {
            from: from?,
            to: to?,
            time_zone: time_zone?,
            reason: reason?,
        };
        let resolves =
            |civil: DateTime| freeze.time_zone.to_ambiguous_timestamp(civil).compatible();
        let (Ok(starts), Ok(ends)) = (resolves(freeze.from), resolves(freeze.to)) else {
            self.d.report(
                fields.node,
                format!("{context} lies outside the range of supported dates"),
                None,
            );
            return None;
        };
        if ends <= starts {
            self.d.report(
                fields.get("to").unwrap_or(fields.node),
                format!(
                    "{context} ends ({}) {} it starts ({})",
                    freeze.to,
                    if ends == starts { "when" } else { "before" },
                    freeze.from
                ),
                Some(
                    "`from` is the first frozen moment and `to` the first one after the freeze"
                        .into(),
                ),
            );
            return None;
        }
        Some(freeze)
    }

    /// `2026-12-20T00:00` (seconds allowed): a civil date-time, read in the
    /// freeze's zone. A bare date is refused: as an end it would leave open
    /// whether that day is frozen.
    fn civil_date_time(&mut self, node: &Yaml, what: &str) -> Option<DateTime> {
        let Node::Str(text) = &node.value else {
            self.d.report(
                node,
                format!(
                    "{what}: expected a date and time such as \"2026-12-20T00:00\", found {}",
                    node.value.describe()
                ),
                None,
            );
            return None;
        };
        let has_time = text.len() > 10 && matches!(text.as_bytes()[10], b'T' | b't' | b' ');
        let has_offset = text.ends_with(['Z', 'z'])
            || text.contains('[')
            || text.get(16..).is_some_and(|rest| rest.contains(['+', '-']));
        let problem = if !has_time {
            Some(format!(
                "write a time too, e.g. \"{}T00:00\"; `to` is the first moment after the freeze",
                text.get(..10).unwrap_or(text)
            ))
        } else if has_offset {
            Some(
                "leave out the offset: `time_zone` says which clock the time is read on".to_owned(),
            )
        } else {
            None
        };
        let parsed = match problem {
            Some(_) => None,
            None => text.parse::<DateTime>().ok(),
        };
        if parsed.is_none() {
            self.d.report(
                node,
                format!("{what}: `{text}` is not a date and time"),
                problem.or(Some(
                    "write YYYY-MM-DDTHH:MM, e.g. \"2026-12-20T00:00\"".into(),
                )),
            );
        }
        parsed
    }
}
