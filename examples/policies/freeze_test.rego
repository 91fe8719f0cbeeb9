package opsgate.freeze_test

import data.opsgate.freeze

at(now) := {"facts": {"now": now}}

test_inside_the_freeze_nothing_runs if {
	freeze.deny == {"year-end change freeze from 2026-12-21T00:00:00Z until 2027-01-04T00:00:00Z: nothing runs"} with input as at("2026-12-24T10:00:00Z")
}

test_the_freeze_starts_at_its_from if {
	count(freeze.deny) == 1 with input as at("2026-12-21T00:00:00Z")
	count(freeze.deny) == 0 with input as at("2026-12-20T23:59:59Z")
}

test_the_freeze_ends_before_its_to if {
	count(freeze.deny) == 1 with input as at("2027-01-03T23:59:59Z")
	count(freeze.deny) == 0 with input as at("2027-01-04T00:00:00Z")
}
