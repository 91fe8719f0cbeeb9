package opsgate.agent_confidence_test

import data.opsgate.agent_confidence

agent(confidence) := {"requester": {"kind": "agent", "name": "triage-bot", "confidence": confidence}}

test_a_sure_agent_is_judged_like_anyone if {
	count(agent_confidence.deny) == 0 with input as agent(0.9)
	count(agent_confidence.require_approval) == 0 with input as agent(0.8)
}

test_between_floor_and_threshold_is_suggest_only if {
	agent_confidence.require_approval == {"suggest only: agent `triage-bot` proposed with confidence 0.55, below 0.8; a person decides"} with input as agent(0.55)
	count(agent_confidence.deny) == 0 with input as agent(0.55)
	count(agent_confidence.stages) == 1 with input as agent(0.55)
}

test_below_the_floor_is_denied if {
	agent_confidence.deny == {"agent `triage-bot` proposed with confidence 0.3, below 0.5"} with input as agent(0.3)
}

test_no_confidence_is_denied if {
	agent_confidence.deny == {"agent `triage-bot` gave no confidence; a proposal needs at least 0.5"} with input as agent(null)
}

test_people_are_not_judged if {
	count(agent_confidence.deny) == 0 with input as {"requester": {"kind": "user", "name": "alice", "confidence": null}}
}
