//! Refused requests, counted so that they cannot flood the audit log.
//!
//! Every refusal is auditable, but a refusal costs its sender nothing: two
//! thousand anonymous requests would otherwise be two thousand audit
//! records, and the hash-chained log is never pruned. So refusals are
//! grouped by kind — method, route, status, actor and reason — and within a
//! window (a minute by default) the first of a kind is audited in full as
//! `api.refused`, as it happens; the later ones are only counted here and
//! written as one `api.refused.repeated` record (the count, the first and
//! last time) when the window closes or the server stops. Nothing is lost
//! from the totals: the full records and the counts add up to every refusal.
//!
//! The ledger holds a bounded number of kinds. An attacker can vary the
//! reason (an unknown source's name is part of it), so once the ledger is
//! full, refusals of a kind it does not hold are counted in one overflow
//! tally, written like the others with `*` for what differs. A process
//! killed without a shutdown loses the counts of its open windows, never
//! the first refusal of a kind.
//!
//! The ledger is plain data with the clock as an argument; `auth.rs` keeps
//! it behind a lock and writes what it returns.

use std::collections::HashMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// What makes two refusals the same kind. `reason` is what the refusal
/// says, or, for a sender who is nobody in particular (`anonymous`), only
/// the class of what was wrong: such a sender writes the rest of the text
/// themselves (a made-up source name), and must not decide how many kinds
/// there are.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct RefusalKind {
    /// The record the first refusal of the kind is audited as:
    /// `api.refused`, or `approval.link_refused` on the approval page.
    pub(crate) record: domain::RecordKind,
    /// The run the refusal concerns, when it is known.
    pub(crate) run_id: Option<String>,
    pub(crate) method: String,
    pub(crate) route: String,
    pub(crate) status: u16,
    pub(crate) actor: String,
    pub(crate) reason: String,
}

/// An audit record the ledger asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RefusalRecord {
    /// The first refusal of its kind in a window, with what it said:
    /// audit it in full.
    Refused { kind: RefusalKind, said: String },
    /// Later refusals of a kind within one window, counted; `kind` is
    /// `None` for the overflow tally (kinds beyond the ledger's bound).
    Repeated {
        kind: Option<RefusalKind>,
        count: u64,
        first_at: Timestamp,
        last_at: Timestamp,
    },
}

/// One kind's open window.
#[derive(Debug, Clone)]
struct Tally {
    window_ends: Timestamp,
    /// Refusals after the first, and when the first and last of them came.
    repeated: Option<(u64, Timestamp, Timestamp)>,
}

impl Tally {
    fn opened(now: Timestamp, window: Duration) -> Tally {
        let window = SignedDuration::try_from(window).unwrap_or(SignedDuration::MAX);
        Tally {
            window_ends: now.saturating_add(window).unwrap_or(Timestamp::MAX),
            repeated: None,
        }
    }

    fn count(&mut self, now: Timestamp) {
        self.repeated = Some(match self.repeated {
            None => (1, now, now),
            Some((count, first, _)) => (count + 1, first, now),
        });
    }

    fn summary(&self, kind: Option<RefusalKind>) -> Option<RefusalRecord> {
        self.repeated
            .map(|(count, first_at, last_at)| RefusalRecord::Repeated {
                kind,
                count,
                first_at,
                last_at,
            })
    }
}

/// Refusal windows per kind, at most `max_kinds` of them.
#[derive(Debug)]
pub(crate) struct RefusalLedger {
    window: Duration,
    max_kinds: usize,
    open: HashMap<RefusalKind, Tally>,
    overflow: Option<Tally>,
}

impl RefusalLedger {
    pub(crate) fn new(window: Duration, max_kinds: usize) -> RefusalLedger {
        RefusalLedger {
            window,
            max_kinds,
            open: HashMap::new(),
            overflow: None,
        }
    }

    /// Notes a refusal of `kind` that said `said`, at `now`; returns what
    /// to audit now (nothing, its full record, and the summary of its
    /// kind's window that just closed).
    pub(crate) fn note(
        &mut self,
        kind: RefusalKind,
        said: &str,
        now: Timestamp,
    ) -> Vec<RefusalRecord> {
        let mut records = Vec::new();
        if let Some(tally) = self.open.get_mut(&kind) {
            if now < tally.window_ends {
                tally.count(now);
                return records;
            }
            records.extend(tally.summary(Some(kind.clone())));
            *tally = Tally::opened(now, self.window);
            records.push(RefusalRecord::Refused {
                kind,
                said: said.to_owned(),
            });
            return records;
        }
        if self.open.len() >= self.max_kinds {
            records.extend(self.close_due(now));
        }
        if self.open.len() < self.max_kinds {
            self.open
                .insert(kind.clone(), Tally::opened(now, self.window));
            records.push(RefusalRecord::Refused {
                kind,
                said: said.to_owned(),
            });
            return records;
        }
        let window = self.window;
        self.overflow
            .get_or_insert_with(|| Tally::opened(now, window))
            .count(now);
        records
    }

    /// Closes the windows that ended by `now`: their summaries.
    pub(crate) fn close_due(&mut self, now: Timestamp) -> Vec<RefusalRecord> {
        let mut records = Vec::new();
        self.open.retain(|kind, tally| {
            let open = now < tally.window_ends;
            if !open {
                records.extend(tally.summary(Some(kind.clone())));
            }
            open
        });
        if let Some(overflow) = self
            .overflow
            .take_if(|overflow| now >= overflow.window_ends)
        {
            records.extend(overflow.summary(None));
        }
        records
    }

    /// Closes every window (the server stops): their summaries.
    pub(crate) fn close_all(&mut self) -> Vec<RefusalRecord> {
        self.close_due(Timestamp::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What each refusal in these tests said.
    const SAID: &str = "what the refusal said";

    fn refused(kind: RefusalKind) -> RefusalRecord {
        RefusalRecord::Refused {
            kind,
            said: SAID.to_owned(),
        }
    }

    fn kind(route: &str, reason: &str) -> RefusalKind {
        RefusalKind {
            record: domain::RecordKind::ApiRefused,
            run_id: None,
            method: "POST".to_owned(),
            route: route.to_owned(),
            status: 401,
            actor: "anonymous".to_owned(),
            reason: reason.to_owned(),
        }
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_750_000_000 + seconds).unwrap()
    }

    fn ledger() -> RefusalLedger {
        RefusalLedger::new(Duration::from_secs(60), 3)
    }

    /// How many refusals `records` stand for.
    fn total(records: &[RefusalRecord]) -> u64 {
        records
            .iter()
            .map(|record| match record {
                RefusalRecord::Refused { .. } => 1,
                RefusalRecord::Repeated { count, .. } => *count,
            })
            .sum()
    }

    #[test]
    fn the_first_of_a_kind_is_audited_and_the_rest_are_summed_when_the_window_closes() {
        let mut ledger = ledger();
        let unknown = kind("/v1/events", "unknown token");
        assert_eq!(
            ledger.note(unknown.clone(), SAID, at(0)),
            [refused(unknown.clone())]
        );
        for second in 1..=59 {
            assert_eq!(ledger.note(unknown.clone(), SAID, at(second)), []);
        }
        assert_eq!(ledger.close_due(at(59)), [], "the window is still open");
        assert_eq!(
            ledger.close_due(at(60)),
            [RefusalRecord::Repeated {
                kind: Some(unknown.clone()),
                count: 59,
                first_at: at(1),
                last_at: at(59),
            }]
        );
        assert_eq!(ledger.close_due(at(61)), [], "summed once");
        // A new window opens with a full record again.
        assert_eq!(
            ledger.note(unknown.clone(), SAID, at(70)),
            [refused(unknown)]
        );
    }

    #[test]
    fn a_refusal_after_its_window_closes_it_and_opens_the_next() {
        let mut ledger = ledger();
        let unknown = kind("/v1/events", "unknown token");
        ledger.note(unknown.clone(), SAID, at(0));
        ledger.note(unknown.clone(), SAID, at(5));
        assert_eq!(
            ledger.note(unknown.clone(), SAID, at(60)),
            [
                RefusalRecord::Repeated {
                    kind: Some(unknown.clone()),
                    count: 1,
                    first_at: at(5),
                    last_at: at(5),
                },
                refused(unknown.clone()),
            ]
        );
    }

    #[test]
    fn kinds_differ_by_route_reason_actor_method_and_status() {
        let mut ledger = RefusalLedger::new(Duration::from_secs(60), 100);
        let base = kind("/v1/events", "unknown token");
        let variants = [
            base.clone(),
            kind("/v1/plan", "unknown token"),
            kind("/v1/events", "malformed token"),
            RefusalKind {
                actor: "user:vera".to_owned(),
                ..base.clone()
            },
            RefusalKind {
                method: "GET".to_owned(),
                ..base.clone()
            },
            RefusalKind {
                status: 403,
                ..base.clone()
            },
        ];
        for variant in variants {
            assert_eq!(
                ledger.note(variant.clone(), SAID, at(1)),
                [refused(variant)]
            );
        }
        assert_eq!(ledger.note(base, SAID, at(2)), []);
    }

    #[test]
    fn kinds_beyond_the_bound_are_counted_in_one_overflow_tally() {
        let mut ledger = ledger();
        let mut records = Vec::new();
        for index in 0..1000 {
            let kind = kind("/v1/events", &format!("unknown source `s{index}`"));
            records.extend(ledger.note(kind, SAID, at(index % 50)));
        }
        let full = records
            .iter()
            .filter(|record| matches!(record, RefusalRecord::Refused { .. }))
            .count();
        assert_eq!(full, 3, "only as many kinds as the ledger holds");
        assert_eq!(ledger.open.len(), 3);
        records.extend(ledger.close_all());
        assert_eq!(total(&records), 1000, "every refusal is accounted for");
        assert!(records.contains(&RefusalRecord::Repeated {
            kind: None,
            count: 997,
            first_at: at(3),
            last_at: at(49),
        }));
        assert_eq!(ledger.close_all(), []);
    }

    #[test]
    fn a_full_ledger_makes_room_from_windows_that_ended() {
        let mut ledger = ledger();
        for index in 0..3 {
            ledger.note(kind("/v1/events", &format!("reason {index}")), SAID, at(0));
        }
        ledger.note(kind("/v1/events", "reason 0"), SAID, at(1));
        let late = kind("/v1/events", "reason 3");
        assert_eq!(
            ledger.note(late.clone(), SAID, at(60)),
            [
                RefusalRecord::Repeated {
                    kind: Some(kind("/v1/events", "reason 0")),
                    count: 1,
                    first_at: at(1),
                    last_at: at(1),
                },
                refused(late),
            ]
        );
        assert!(ledger.overflow.is_none());
    }

    #[test]
    fn totals_are_exact_under_any_interleaving() {
        let mut ledger = RefusalLedger::new(Duration::from_secs(10), 4);
        let mut records = Vec::new();
        let mut sent = 0;
        for second in 0..200 {
            for reason in 0..(second % 7) {
                records.extend(ledger.note(kind("/r", &format!("{reason}")), SAID, at(second)));
                sent += 1;
            }
            if second % 13 == 0 {
                records.extend(ledger.close_due(at(second)));
            }
        }
        records.extend(ledger.close_all());
        assert_eq!(total(&records), sent);
    }
}
