//! Diagnostics: one problem in a runbook file, with where it is and how to fix it.
//!
//! A diagnostic is plain data rendered in the `file:line:column: message`
//! form that editors and terminals turn into links. Validation collects all
//! of them rather than stopping at the first, so an author fixes a file in
//! one round instead of one error at a time.

use std::fmt;
use std::path::PathBuf;

/// One problem found in a file (a runbook; the policy crate's directory
/// too). `line` and `column` are 1-based.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: u32,
    pub column: u32,
    pub message: String,
    /// How to fix it, when there is something useful to say.
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )?;
        if let Some(hint) = &self.hint {
            write!(f, "\n    hint: {hint}")?;
        }
        Ok(())
    }
}

/// The name in `known` closest to `unknown`, when it is close enough to be
/// a plausible typo.
pub fn closest<'k>(unknown: &str, known: impl IntoIterator<Item = &'k str>) -> Option<&'k str> {
    known
        .into_iter()
        .map(|candidate| (edit_distance(unknown, candidate), candidate))
        .filter(|&(distance, candidate)| {
            let prefix = unknown.len() >= 3
                && (candidate.starts_with(unknown) || unknown.starts_with(candidate));
            distance <= 2 || distance * 3 <= unknown.chars().count() || prefix
        })
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, candidate)| candidate)
}

/// "did you mean `x`?" for a near miss, otherwise the list of what is known.
pub fn suggestion(unknown: &str, known: &[&str], what: &str) -> String {
    match closest(unknown, known.iter().copied()) {
        Some(candidate) => format!("did you mean `{candidate}`?"),
        None => format!("{what}: {}", known.join(", ")),
    }
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, a_char) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, b_char) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(a_char != *b_char);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_finds_typos_and_ignores_strangers() {
        let known = ["timeout", "retry", "rollback", "idempotent"];
        let check = |unknown: &str, expected: Option<&str>| {
            assert_eq!(closest(unknown, known), expected, "for `{unknown}`");
        };
        check("timout", Some("timeout"));
        check("retyr", Some("retry"));
        check("idempotant", Some("idempotent"));
        check("rolback", Some("rollback"));
        check("idem", Some("idempotent"));
        check("colour", None);
    }

    #[test]
    fn display_puts_the_hint_on_its_own_line() {
        let diagnostic = Diagnostic {
            file: "examples/runbooks/x.yaml".into(),
            line: 12,
            column: 5,
            message: "unknown key `timout` in step `restart`".into(),
            hint: Some("did you mean `timeout`?".into()),
        };
        assert_eq!(
            diagnostic.to_string(),
            "examples/runbooks/x.yaml:12:5: unknown key `timout` in step `restart`\n    hint: did you mean `timeout`?"
        );
    }
}
