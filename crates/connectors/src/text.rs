//! Bounding what is kept of a peer's text, and what is shown in chat.
//!
//! Two different budgets, so two kinds of cut. What opsgate *keeps* of an
//! answer (a body, a command's output, a job's traceback) is bounded in
//! bytes, because it is stored and its size is what matters; the cut says
//! how big the whole was. What opsgate *shows* in a chat message is bounded
//! in characters, because that is how Slack and Teams count their limits;
//! the cut ends in `…`. Every cut falls on a character boundary.

/// The start of `text`: at most `limit` bytes, then how many bytes there
/// were in all.
pub(crate) fn truncate(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_owned();
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..end], text.len())
}

/// The end of `text`: how many bytes there were in all, then at most the
/// last `limit` bytes. For output whose errors come last (a playbook's
/// stderr, a job's traceback).
pub(crate) fn tail(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_owned();
    }
    let mut start = text.len() - limit;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("({} bytes in all) …{}", text.len(), &text[start..])
}

/// `text` in at most `limit` characters (`limit` ≥ 1), the last one `…`
/// when it was cut: for a chat message's fields.
pub(crate) fn clip(text: &str, limit: usize) -> String {
    if text.chars().count() <= limit {
        return text.to_owned();
    }
    let mut clipped: String = text.chars().take(limit - 1).collect();
    clipped.push('…');
    clipped
}

#[cfg(test)]
mod tests {
    use super::{clip, tail, truncate};

    #[test]
    fn kept_text_is_bounded_in_bytes_and_says_how_big_it_was() {
        let check = |text: &str, limit: usize, head: &str, end: &str| {
            assert_eq!(truncate(text, limit), head, "truncate({text:?}, {limit})");
            assert_eq!(tail(text, limit), end, "tail({text:?}, {limit})");
        };
        check("short", 10, "short", "short");
        check("short", 5, "short", "short");
        check(
            "0123456789abc",
            3,
            "012… (13 bytes in all)",
            "(13 bytes in all) …abc",
        );
        // "é" is two bytes: a cut inside it moves to keep less, not more.
        check("aéb", 2, "a… (4 bytes in all)", "(4 bytes in all) …b");
    }

    #[test]
    fn shown_text_is_bounded_in_characters() {
        let check = |text: &str, limit: usize, expect: &str| {
            assert_eq!(clip(text, limit), expect, "clip({text:?}, {limit})");
            assert!(clip(text, limit).chars().count() <= limit);
        };
        check("short", 5, "short");
        check("shorter", 5, "shor…");
        check(&"é".repeat(6), 5, &format!("{}…", "é".repeat(4)));
        check("ab", 1, "…");
    }
}
