package opsgate.irreversible_test

import data.opsgate.irreversible

risk(risk) := {"runbook": {"risk": risk}}

test_irreversible_needs_two_people if {
	irreversible.require_approval == {"the action is irreversible: two distinct people approve"} with input as risk("irreversible")
	some stage in irreversible.stages with input as risk("irreversible")
	stage.rule == {"at_least": 2}
}

test_reversible_needs_nothing if {
	count(irreversible.require_approval) == 0 with input as risk("reversible")
	count(irreversible.stages) == 0 with input as risk("reversible")
}
