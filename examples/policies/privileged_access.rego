# Security-posture changes — membership of a privileged group — need the
# requester's manager, then security.
#
# The groups a plan touches are read from the plan itself, so they are the
# ones the run would really change:
# - its resolved inputs `group` (one) or `groups` (a list), for runbooks
#   that take the group as an input;
# - the URL of any step calling `…/groups/NAME/members…` (the membership
#   endpoints of directory APIs such as Microsoft Graph and the endpoint
#   API of the examples), for runbooks that name the group themselves, as
#   `grant-vpn-access` does.
# Adding and removing are both changes of posture. Names compare ignoring
# case.
package opsgate.privileged_access

# Groups whose members reach or change what others may not, in lower case.
privileged_groups := {
	"vpn-users",
	"vpn-contractors",
	"domain-admins",
	"enterprise-admins",
	"security",
	"firewall-operators",
}

touched contains input.plan.inputs.group if is_string(input.plan.inputs.group)

touched contains group if {
	some group in input.plan.inputs.groups
	is_string(group)
}

touched contains parts[i + 1] if {
	some step in input.plan.steps
	parts := split(step.request.url, "/")
	parts[i] == "groups"
	parts[i + 2] == "members"
}

privileged contains group if {
	some group in touched
	lower(group) in privileged_groups
}

# Any `*-admins` group is privileged, whether listed or not.
privileged contains group if {
	some group in touched
	endswith(lower(group), "-admins")
}

require_approval contains sprintf("membership of privileged group `%s` changes security posture: the requester's manager and security approve", [group]) if {
	some group in privileged
}

stages contains {
	"name": "manager",
	"order": 20,
	"approvers": ["manager_of(requester)"],
	"rule": "any",
	"timeout": "4h",
} if count(privileged) > 0

stages contains {
	"name": "security",
	"order": 30,
	"approvers": ["group:security"],
	"rule": "any",
	"timeout": "4h",
} if count(privileged) > 0
