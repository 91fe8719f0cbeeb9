package opsgate.privileged_access_test

import data.opsgate.privileged_access

with_inputs(inputs) := {"plan": {"inputs": inputs, "steps": []}}

calling(url) := {"plan": {"inputs": {}, "steps": [{"id": "add", "request": {"method": "PUT", "url": url}}]}}

test_a_privileged_group_input_needs_manager_and_security if {
	privileged_access.require_approval == {"membership of privileged group `vpn-contractors` changes security posture: the requester's manager and security approve"} with input as with_inputs({"user": "kim", "group": "vpn-contractors"})
	names := {stage.name | some stage in privileged_access.stages} with input as with_inputs({"user": "kim", "group": "vpn-contractors"})
	names == {"manager", "security"}
}

test_a_membership_call_on_a_privileged_group_needs_manager_and_security if {
	privileged_access.privileged == {"VPN-Users"} with input as calling("http://endpoint.example/groups/VPN-Users/members/kim")
	count(privileged_access.stages) == 2 with input as calling("http://endpoint.example/groups/VPN-Users/members/kim")
}

test_any_admins_group_is_privileged if {
	count(privileged_access.require_approval) == 1 with input as with_inputs({"user": "kim", "groups": ["staff", "SQL-Admins"]})
}

test_an_ordinary_group_needs_nothing if {
	count(privileged_access.require_approval) == 0 with input as with_inputs({"user": "kim", "group": "staff"})
	count(privileged_access.stages) == 0 with input as with_inputs({"user": "kim", "groups": ["staff", "printers"]})
	count(privileged_access.stages) == 0 with input as calling("http://endpoint.example/groups/printers/members/kim")
}

test_a_runbook_without_groups_needs_nothing if {
	count(privileged_access.stages) == 0 with input as calling("http://endpoint.example/devices/LAPTOP-0042/services/vpnagent/restart")
}
