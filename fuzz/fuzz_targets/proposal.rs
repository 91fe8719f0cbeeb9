//! `POST /v1/proposals` (and `/v1/proposals/plan`, MCP's `propose`): an
//! agent's proposal, read as the server reads it and held to its limits
//! (`Proposal::problem`). A proposal within them is stored as its JSON
//! and told apart by its hash, so it must read back from that JSON as the
//! same proposal, with the same hash, still within its limits.

#![no_main]

use domain::Proposal;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let Ok(proposal) = runtime::parse_json::<Proposal>(body) else {
        return;
    };
    if proposal.problem().is_some() {
        return;
    }
    let hash = proposal.hash();
    let json = serde_json::to_vec(&proposal).expect("a proposal serialises");
    let again: Proposal = runtime::parse_json(&json)
        .unwrap_or_else(|error| panic!("a proposal's own JSON is refused: {error}"));
    assert_eq!(again, proposal);
    assert_eq!(again.hash(), hash);
    assert_eq!(again.problem(), None);
});
