# Low-risk, reversible actions on non-production systems or on a single
# endpoint run without approval.
#
# This policy only says why such a plan may run; it cannot loosen anything.
# A plan it allows still needs what any other policy, or the runbook,
# asks for (deny beats require_approval beats allow).
package opsgate.low_risk

low_risk if input.runbook.risk in {"read_only", "reversible"}

# An unknown environment is not taken for a non-production one.
non_production if {
	environment := input.facts.environment
	is_string(environment)
	environment != "production"
}

single_target if input.facts.blast_radius == 1

allow contains sprintf("%s action in `%s`: no approval needed", [input.runbook.risk, input.facts.environment]) if {
	low_risk
	non_production
}

allow contains sprintf("%s action on a single target: no approval needed", [input.runbook.risk]) if {
	low_risk
	not non_production
	single_target
}
