# Production or customer-impacting actions need an on-call engineer's
# approval.
#
# Production is the plan's environment (`facts.environment`, from the event's
# `fields.environment` unless the runtime knows better). Customer impact is
# what the event says: `fields.customer_impact: true`, as an ITSM tool sets
# it for an incident with customer-facing impact. Read-only runbooks change
# nothing and are left alone.
package opsgate.production

production if input.facts.environment == "production"

customer_impacting if input.event.fields.customer_impact == true

acts if input.runbook.risk != "read_only"

require_approval contains "production actions need on-call approval" if {
	acts
	production
}

require_approval contains "customer-impacting actions need on-call approval" if {
	acts
	customer_impacting
}

stages contains {
	"name": "on-call",
	"order": 10,
	"approvers": ["group:on-call"],
	"rule": "any",
	"timeout": "30m",
} if count(require_approval) > 0
