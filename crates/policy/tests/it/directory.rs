//! The directory: the example file, every validation problem at its line,
//! each relation, out-of-office boundaries in the person's zone.

use std::path::Path;

use policy::{ChatPlatform, Directory, Error, RelationContext};

use crate::at;

fn example() -> Directory {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/directory.yaml");
    Directory::load(&path).unwrap_or_else(|error| panic!("{error}"))
}

/// The problems in `text`, as `line:column: message [hint: ...]`.
fn problems(text: &str) -> Vec<String> {
    match Directory::parse(Path::new("directory.yaml"), text) {
        Ok(_) => Vec::new(),
        Err(Error::Directory { path, diagnostics }) => {
            assert_eq!(path, Path::new("directory.yaml"));
            diagnostics
                .iter()
                .map(|d| match &d.hint {
                    Some(hint) => format!("{}:{}: {} [hint: {hint}]", d.line, d.column, d.message),
                    None => format!("{}:{}: {}", d.line, d.column, d.message),
                })
                .collect()
        }
        Err(other) => panic!("expected problems, got {other}"),
    }
}

#[track_caller]
fn check(text: &str, expected: &[&str]) {
    assert_eq!(problems(text), expected);
}

/// A small valid directory; cases add to it or change one line.
const SMALL: &str = "time_zone: UTC
people:
  - id: alice
    name: Alice
    email: alice@example.com
    chat: { slack: U1 }
    manager: carol
  - id: carol
    name: Carol
groups:
  ops: [alice]
";

#[track_caller]
fn edit(from: &str, to: &str) -> String {
    assert_eq!(SMALL.matches(from).count(), 1, "`{from}` must occur once");
    SMALL.replace(from, to)
}

// -- loading -----------------------------------------------------------------

#[test]
fn the_example_directory_loads() {
    let directory = example();
    assert_eq!(directory.people().len(), 11);
    let carol = directory.person("carol").expect("carol");
    assert_eq!(carol.name, "Carol Chen");
    assert_eq!(carol.manager.as_deref(), Some("grace"));
    assert_eq!(carol.backup.as_deref(), Some("frank"));
    assert_eq!(
        carol.time_zone.iana_name(),
        Some("Europe/Berlin"),
        "the directory's zone"
    );
    let heidi = directory.person("heidi").expect("heidi");
    assert_eq!(
        heidi.time_zone.iana_name(),
        Some("America/New_York"),
        "her own zone"
    );
    let names = |members: Vec<&policy::Person>| -> Vec<String> {
        members.iter().map(|person| person.id.clone()).collect()
    };
    assert_eq!(
        names(directory.group("cab").expect("cab")),
        ["frank", "grace", "carol"]
    );
    assert_eq!(
        directory.group_names().collect::<Vec<_>>(),
        [
            "cab",
            "dba",
            "endpoint-l2",
            "finance-mailbox-owners",
            "iis-team",
            "messaging",
            "on-call",
            "security"
        ]
    );
    assert_eq!(directory.owner_of("IIS Web Tier"), Some("iis-team"));
    assert_eq!(
        directory.owner_of("Finance shared mailbox"),
        Some("finance-mailbox-owners")
    );
    assert_eq!(directory.owner_of("PC-0042"), Some("endpoint-l2"));
    assert_eq!(directory.owner_of("mail-01"), None);
}

#[test]
fn the_example_in_the_docs_is_valid() {
    let docs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/directory.md"
    ))
    .expect("docs/directory.md exists");
    let start = docs.find("```yaml\n").expect("a yaml example") + "```yaml\n".len();
    let end = start + docs[start..].find("```").expect("the example ends");
    let directory = Directory::parse(Path::new("docs/directory.md"), &docs[start..end])
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(directory.people().len(), 4);
    assert_eq!(directory.owner_of("db-prod-01"), Some("dba"));
}

#[test]
fn a_file_that_is_not_there_is_an_io_error() {
    let error = Directory::load(Path::new("no/such/directory.yaml")).unwrap_err();
    assert!(matches!(error, Error::Io { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .starts_with("cannot read no/such/directory.yaml: "),
        "{error}"
    );
}

#[test]
fn shape_errors_name_the_line_and_what_is_wrong() {
    check(
        &edit("    manager: carol\n", "    mangaer: carol\n"),
        &[
            "7:5: unknown field `mangaer`, expected one of id, name, email, chat, manager, backup, time_zone, out_of_office",
        ],
    );
    check(
        &edit("  - id: carol\n    name: Carol\n", "  - id: carol\n"),
        &["8:5: missing field `name`"],
    );
    // The wording of a bad date is jiff's; the position is ours.
    let bad_date = problems(&edit(
        "    manager: carol\n",
        "    manager: carol\n    out_of_office: [{ from: 2026-11-20, to: 2026-11-31 }]\n",
    ));
    assert!(
        bad_date.len() == 1 && bad_date[0].starts_with("8:45: ") && bad_date[0].contains("day"),
        "{bad_date:?}"
    );
    check(
        &edit("    chat: { slack: U1 }\n", "    chat: { signal: U1 }\n"),
        &["6:13: unknown field `signal`, expected one of slack, teams"],
    );
    check("people: []\n", &["1:1: missing field `time_zone`"]);
    check(
        &edit("time_zone: UTC\n", "time_zone: UTC\ntime_zone: UTC\n"),
        &["2:1: duplicate mapping key: time_zone"],
    );
}

#[test]
fn every_name_must_be_a_person() {
    check(
        &edit(
            "    manager: carol\n",
            "    manager: carl\n    backup: dave\n",
        ),
        &[
            "7:14: the manager of `alice` is `carl`, who is not in `people` [hint: did you mean `carol`?]",
            "8:13: the backup of `alice` is `dave`, who is not in `people` [hint: the people are: alice, carol]",
        ],
    );
    check(
        &edit("  ops: [alice]\n", "  ops: [alice, bob, alice]\n"),
        &[
            "11:16: a member of group `ops` is `bob`, who is not in `people` [hint: the people are: alice, carol]",
        ],
    );
    check(
        &edit(
            "    manager: carol\n",
            "    manager: alice\n    backup: alice\n",
        ),
        &[
            "7:14: `alice` is their own manager",
            "8:13: `alice` is their own backup",
        ],
    );
}

#[test]
fn ids_emails_and_chat_ids_are_unique() {
    check(
        &format!("{SMALL}  - id: alice\n    name: Another Alice\n")
            .replace("groups:\n  ops: [alice]\n", ""),
        &[
            "10:9: person id `alice` is used twice [hint: it is first used on line 3; ids must be unique]",
        ],
    );
    check(
        &edit(
            "    name: Carol\n",
            "    name: Carol\n    email: ALICE@example.com\n    chat: { slack: U1 }\n",
        ),
        &[
            "10:12: email `ALICE@example.com` of `carol` is also that of `alice` [hint: each email must belong to one person]",
            "11:20: Slack id `U1` of `carol` is also that of `alice` [hint: each Slack id must belong to one person]",
        ],
    );
    check(
        &edit("  - id: carol\n", "  - id: carol smith\n"),
        &[
            "7:14: the manager of `alice` is `carol`, who is not in `people` [hint: did you mean `carol smith`?]",
            "8:9: invalid person id `carol smith` [hint: use letters, digits, `.`, `_` and `-`]",
        ],
    );
}

#[test]
fn managers_form_no_cycle() {
    check(
        "time_zone: UTC
people:
  - { id: ann, name: Ann, manager: ben }
  - { id: ben, name: Ben, manager: cid }
  - { id: cid, name: Cid, manager: ann }
  - { id: dan, name: Dan, manager: ann }
  - { id: eve, name: Eve, manager: fay }
  - { id: fay, name: Fay, manager: eve }
",
        &[
            "3:36: managers form a cycle: ann → ben → cid → ann [hint: following managers upwards must end at someone without one]",
            "7:36: managers form a cycle: eve → fay → eve [hint: following managers upwards must end at someone without one]",
        ],
    );
}

#[test]
fn out_of_office_ranges_groups_owners_and_zones_are_checked() {
    check(
        &edit(
            "    manager: carol\n",
            "    manager: carol\n    out_of_office:\n      - { from: 2026-11-27, to: 2026-11-20 }\n      - { from: 2026-11-27, to: 2026-11-27 }\n",
        ),
        &[
            "9:9: an out-of-office range of `alice` ends (2026-11-20) before it starts (2026-11-27) [hint: both dates are included: a single day is `{ from: D, to: D }`]",
        ],
    );
    check(
        &format!("{SMALL}ownership:\n  ci: {{ \"web-*\": web-team, \"db-01\": ops }}\n"),
        &[
            "13:18: CI `web-*` is owned by `web-team`, which is no group [hint: the groups are: ops]",
        ],
    );
    check(
        &edit("  ops: [alice]\n", "  ops: []\n  on call: [alice]\n"),
        &[
            "11:3: group `ops` has no members [hint: an approval addressed to it could never be given; add someone or remove the group]",
            "12:3: invalid group name `on call` [hint: use letters, digits, `.`, `_` and `-`]",
        ],
    );
    check(
        &edit(
            "    name: Carol\n",
            "    name: Carol\n    time_zone: Europe/Berln\n",
        )
        .replace("time_zone: UTC", "time_zone: Mars/Olympus"),
        &[
            "1:12: unknown time zone `Mars/Olympus` [hint: use an IANA time zone name such as `Europe/Berlin`, `America/New_York` or `UTC`]",
            "10:16: unknown time zone `Europe/Berln` [hint: use an IANA time zone name such as `Europe/Berlin`, `America/New_York` or `UTC`]",
        ],
    );
}

#[test]
fn the_error_lists_every_problem_with_the_file() {
    let error = Directory::parse(
        Path::new("people.yaml"),
        &edit(
            "    manager: carol\n",
            "    manager: carl\n    backup: alice\n",
        ),
    )
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid directory people.yaml:
people.yaml:7:14: the manager of `alice` is `carl`, who is not in `people`
    hint: did you mean `carol`?
people.yaml:8:13: `alice` is their own backup"
    );
}

// -- relations ---------------------------------------------------------------

/// The ids `reference` resolves to, or the error's text.
fn resolve(
    directory: &Directory,
    reference: &str,
    context: &RelationContext,
) -> Result<Vec<String>, String> {
    directory
        .resolve(reference, context)
        .map(|people| people.iter().map(|person| person.id.clone()).collect())
        .map_err(|error| error.to_string())
}

#[test]
fn relations_resolve_to_people() {
    let directory = example();
    let kim_on_a_pc = RelationContext {
        requester: Some("kim"),
        ci: Some("PC-0042"),
    };
    let cases: &[(&str, &[&str])] = &[
        ("user:alice", &["alice"]),
        ("group:security", &["erin", "heidi"]),
        ("group:cab", &["frank", "grace", "carol"]),
        ("manager_of(requester)", &["carol"]),
        ("manager_of( user:carol )", &["grace"]),
        ("backup_of(user:carol)", &["frank"]),
        ("owner_of(ci)", &["dave", "alice"]),
        ("owner_of(ci:web-01)", &["judy", "bob"]),
        ("owner_of(ci:IIS Web Tier)", &["judy", "bob"]),
        ("owner_of(ci:DB-17)", &["ivan"]),
    ];
    for (reference, expected) in cases {
        assert_eq!(
            resolve(&directory, reference, &kim_on_a_pc),
            Ok(expected.iter().map(|id| id.to_string()).collect()),
            "{reference}"
        );
    }
}

#[test]
fn a_reference_to_no_one_says_what_and_which_name() {
    let directory = example();
    let nobody = RelationContext::default();
    let grace = RelationContext {
        requester: Some("grace"),
        ci: Some("mail-01"),
    };
    let cases: &[(&str, &RelationContext, &str)] = &[
        (
            "user:alce",
            &nobody,
            "cannot resolve `user:alce`: no person has the id `alce` (did you mean `alice`?)",
        ),
        (
            "group:secruity",
            &nobody,
            "cannot resolve `group:secruity`: no group is named `secruity` (did you mean `security`?)",
        ),
        (
            "group:auditors",
            &nobody,
            "cannot resolve `group:auditors`: no group is named `auditors` (the groups are: cab, dba, endpoint-l2, finance-mailbox-owners, iis-team, messaging, on-call, security)",
        ),
        (
            "manager_of(requester)",
            &nobody,
            "cannot resolve `manager_of(requester)`: the run was not requested by a person (but by an agent or a source), so it has no requester in the directory",
        ),
        (
            "manager_of(requester)",
            &grace,
            "cannot resolve `manager_of(requester)`: `grace` has no manager in the directory",
        ),
        (
            "backup_of(user:ivan)",
            &nobody,
            "cannot resolve `backup_of(user:ivan)`: `ivan` has no backup in the directory",
        ),
        (
            "manager_of(alice)",
            &nobody,
            "cannot resolve `manager_of(alice)`: expected `requester` or `user:ID`, found `alice`",
        ),
        (
            "owner_of(ci)",
            &nobody,
            "cannot resolve `owner_of(ci)`: no CI is known for this run",
        ),
        (
            "owner_of(ci)",
            &grace,
            "cannot resolve `owner_of(ci)`: no group owns CI `mail-01` (see `ownership.ci`)",
        ),
        (
            "owner_of(web-01)",
            &nobody,
            "cannot resolve `owner_of(web-01)`: `owner_of` takes `ci` or `ci:NAME`, not `web-01`",
        ),
        (
            "alice",
            &nobody,
            "cannot resolve `alice`: not an approver reference; write `user:ID`, `group:NAME`, `manager_of(requester)`, `manager_of(user:ID)`, `backup_of(requester)`, `backup_of(user:ID)`, `owner_of(ci)` or `owner_of(ci:NAME)`",
        ),
    ];
    for (reference, context, expected) in cases {
        assert_eq!(
            resolve(&directory, reference, context),
            Err(expected.to_string()),
            "{reference}"
        );
    }
    let stranger = RelationContext {
        requester: Some("mallory"),
        ci: None,
    };
    assert_eq!(
        resolve(&directory, "manager_of(requester)", &stranger),
        Err("cannot resolve `manager_of(requester)`: the requester `mallory` is not in the directory".to_owned())
    );
}

#[test]
fn the_most_specific_ci_owner_wins() {
    let directory = Directory::parse(
        Path::new("directory.yaml"),
        &format!(
            "{SMALL}  dba: [carol]\n  cab: [alice, carol]\nownership:\n  ci: {{ \"db-*\": dba, \"db-prod-*\": cab, \"db-prod-01\": ops, \"db-?rod-*\": ops }}\n"
        ),
    )
    .unwrap_or_else(|error| panic!("{error}"));
    let cases = [
        ("db-prod-01", Some("ops")),
        ("DB-PROD-01", Some("ops")),
        ("db-prod-02", Some("cab")),
        ("db-test-01", Some("dba")),
        ("web-01", None),
    ];
    for (ci, expected) in cases {
        assert_eq!(directory.owner_of(ci), expected, "{ci}");
    }
}

#[test]
fn people_are_found_by_email_and_chat_id() {
    let directory = example();
    let id = |person: Option<&policy::Person>| person.map(|person| person.id.clone());
    assert_eq!(
        id(directory.find_by_email("Alice.Admin@Example.com")),
        Some("alice".into())
    );
    assert_eq!(id(directory.find_by_email("nobody@example.com")), None);
    assert_eq!(
        id(directory.find_by_chat(ChatPlatform::Slack, "U012ABCDEF")),
        Some("alice".into())
    );
    assert_eq!(
        id(directory.find_by_chat(ChatPlatform::Slack, "u012abcdef")),
        None,
        "chat ids are exact"
    );
    assert_eq!(
        id(directory.find_by_chat(ChatPlatform::Teams, "29:1dave-diaz")),
        Some("dave".into())
    );
    assert_eq!(
        id(directory.find_by_chat(ChatPlatform::Teams, "U012ABCDEF")),
        None,
        "a Slack id is no Teams id"
    );
}

// -- out of office -----------------------------------------------------------

#[test]
fn out_of_office_days_are_whole_days_on_the_persons_calendar() {
    let directory = example();
    let cases = [
        // Carol, 20-27 November, Europe/Berlin (UTC+1).
        ("carol", "2026-11-19T22:59:59Z", false),
        ("carol", "2026-11-19T23:00:00Z", true),
        ("carol", "2026-11-27T22:59:59Z", true),
        ("carol", "2026-11-27T23:00:00Z", false),
        // Heidi, 24 December to 1 January, America/New_York (UTC-5).
        ("heidi", "2026-12-24T04:59:59Z", false),
        ("heidi", "2026-12-24T05:00:00Z", true),
        ("heidi", "2027-01-02T04:59:59Z", true),
        ("heidi", "2027-01-02T05:00:00Z", false),
        ("alice", "2026-11-24T12:00:00Z", false),
    ];
    for (id, instant, expected) in cases {
        let person = directory.person(id).expect("person");
        assert_eq!(
            person.is_out_of_office(at(instant)),
            expected,
            "{id} at {instant}"
        );
    }
}

#[test]
fn a_backup_stands_in_for_someone_out_of_office() {
    let directory = example();
    let stand_in = |id: &str, instant: &str| {
        let person = directory.person(id).expect("person");
        directory
            .available_stand_in(person, at(instant))
            .map(|person| person.id.clone())
    };
    assert_eq!(
        stand_in("carol", "2026-11-10T12:00:00Z"),
        Some("carol".into())
    );
    assert_eq!(
        stand_in("carol", "2026-11-24T12:00:00Z"),
        Some("frank".into())
    );
    // Erin is in, so she is asked; her backup Heidi would be away.
    assert_eq!(
        stand_in("erin", "2026-12-28T12:00:00Z"),
        Some("erin".into())
    );
    assert_eq!(
        stand_in("heidi", "2026-12-28T12:00:00Z"),
        None,
        "Heidi is away and has no backup"
    );

    // Backups that are each other's, both away: nobody.
    let both_away = Directory::parse(
        Path::new("directory.yaml"),
        "time_zone: UTC
people:
  - { id: ann, name: Ann, backup: ben, out_of_office: [{ from: 2026-11-20, to: 2026-11-27 }] }
  - { id: ben, name: Ben, backup: ann, out_of_office: [{ from: 2026-11-24, to: 2026-11-24 }] }
",
    )
    .unwrap_or_else(|error| panic!("{error}"));
    let ann = both_away.person("ann").expect("ann");
    assert_eq!(
        both_away.available_stand_in(ann, at("2026-11-24T12:00:00Z")),
        None
    );
    assert_eq!(
        both_away
            .available_stand_in(ann, at("2026-11-25T12:00:00Z"))
            .map(|person| person.id.as_str()),
        Some("ben")
    );
}
