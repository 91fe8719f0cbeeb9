package opsgate.low_risk_test

import data.opsgate.low_risk

plan(risk, environment, targets) := {
	"runbook": {"risk": risk},
	"facts": {"environment": environment, "blast_radius": count(targets)},
}

test_reversible_on_a_workstation_needs_no_approval if {
	low_risk.allow == {"reversible action in `workstation`: no approval needed"} with input as plan("reversible", "workstation", ["LAPTOP-0042"])
}

test_reversible_on_one_production_server_needs_no_approval_from_this_policy if {
	low_risk.allow == {"reversible action on a single target: no approval needed"} with input as plan("reversible", "production", ["WEB-01"])
}

test_reversible_on_several_production_servers_is_not_low_risk if {
	count(low_risk.allow) == 0 with input as plan("reversible", "production", ["WEB-01", "WEB-02"])
}

test_irreversible_is_never_low_risk if {
	count(low_risk.allow) == 0 with input as plan("irreversible", "staging", ["db-01"])
}

test_an_unknown_environment_is_not_non_production if {
	count(low_risk.allow) == 0 with input as plan("reversible", null, ["WEB-01", "WEB-02"])
}
