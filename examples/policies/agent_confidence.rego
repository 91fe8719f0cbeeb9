# An agent's proposal below the confidence threshold does not run on its
# own: below the floor it is denied; between the floor and the threshold it
# is downgraded to a suggestion — it waits for an on-call engineer, who
# decides (suggest only).
#
# The confidence is the agent's own (`requester.confidence`, from the
# proposal's `fields.confidence`). People and webhook sources are not judged
# here.
package opsgate.agent_confidence

# At or above: the proposal is judged like anyone's.
threshold := 0.8

# Below: denied outright.
floor := 0.5

agent if input.requester.kind == "agent"

# A number: `null < 0.5` holds in Rego, so a missing confidence is
# handled on its own.
confidence := input.requester.confidence if is_number(input.requester.confidence)

deny contains sprintf("agent `%s` gave no confidence; a proposal needs at least %v", [input.requester.name, floor]) if {
	agent
	not confidence
}

deny contains sprintf("agent `%s` proposed with confidence %v, below %v", [input.requester.name, confidence, floor]) if {
	agent
	confidence < floor
}

suggest_only if {
	agent
	floor <= confidence
	confidence < threshold
}

require_approval contains sprintf("suggest only: agent `%s` proposed with confidence %v, below %v; a person decides", [input.requester.name, confidence, threshold]) if suggest_only

stages contains {
	"name": "on-call",
	"order": 10,
	"approvers": ["group:on-call"],
	"rule": "any",
	"timeout": "30m",
} if suggest_only
