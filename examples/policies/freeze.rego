# Nothing runs in a change freeze.
#
# The organisation's freezes are listed here: UTC, `from` included, `to`
# excluded, written as `input.facts.now` is (`2026-12-21T00:00:00Z`), so
# that they compare as strings. A runbook's own `guardrails.freezes` are
# judged by the gate itself; this policy covers every runbook at once.
package opsgate.freeze

freezes := [{
	"from": "2026-12-21T00:00:00Z",
	"to": "2027-01-04T00:00:00Z",
	"reason": "year-end change freeze",
}]

deny contains sprintf("%s from %s until %s: nothing runs", [freeze.reason, freeze.from, freeze.to]) if {
	some freeze in freezes
	freeze.from <= input.facts.now
	input.facts.now < freeze.to
}
