package opsgate.production_test

import data.opsgate.production

on_call := {
	"name": "on-call",
	"order": 10,
	"approvers": ["group:on-call"],
	"rule": "any",
	"timeout": "30m",
}

plan(risk, environment, fields) := {
	"runbook": {"risk": risk},
	"event": {"fields": fields},
	"facts": {"environment": environment},
}

test_production_needs_on_call if {
	production.require_approval == {"production actions need on-call approval"} with input as plan("reversible", "production", {})
	production.stages == {on_call} with input as plan("reversible", "production", {})
}

test_customer_impact_outside_production_needs_on_call if {
	production.require_approval == {"customer-impacting actions need on-call approval"} with input as plan("reversible", "workstation", {"customer_impact": true})
	production.stages == {on_call} with input as plan("reversible", "workstation", {"customer_impact": true})
}

test_a_workstation_without_customer_impact_needs_nothing if {
	count(production.require_approval) == 0 with input as plan("reversible", "workstation", {"customer_impact": false})
	count(production.stages) == 0 with input as plan("reversible", "workstation", {})
}

test_read_only_in_production_needs_nothing if {
	count(production.require_approval) == 0 with input as plan("read_only", "production", {"customer_impact": true})
}
