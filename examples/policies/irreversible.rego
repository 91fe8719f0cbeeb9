# Irreversible actions need two distinct approvers: nothing undoes a
# mistake, so no one person decides it alone.
#
# The approvers come from on-call and the change advisory board; the stage
# needs two different people of them.
package opsgate.irreversible

irreversible if input.runbook.risk == "irreversible"

require_approval contains "the action is irreversible: two distinct people approve" if irreversible

stages contains {
	"name": "two-people",
	"order": 40,
	"approvers": ["group:on-call", "group:cab"],
	"rule": {"at_least": 2},
	"timeout": "8h",
} if irreversible
