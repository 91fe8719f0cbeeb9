//! Identifiers: a prefix, the creation time and randomness, so ids sort by
//! creation and never collide across restarts.

/// `evt_0192f3a4b5c6d7e8f9a0b1c2` style: 12 hex digits of milliseconds since
/// the epoch, then 12 random hex digits.
pub fn new_id(prefix: &str) -> String {
    let millis = jiff::Timestamp::now().as_millisecond().max(0) as u64;
    let random: u64 = rand::random::<u64>() & 0xffff_ffff_ffff;
    format!("{prefix}_{millis:012x}{random:012x}")
}
