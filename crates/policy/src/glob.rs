//! Glob patterns over names: `*` for any run of characters, `?` for one.
//!
//! Runbooks name sensitive targets (`db-prod-*`) and the directory maps
//! CIs to owners (`db-*`) with them. Matching ignores ASCII case, because
//! host and CI names are case-insensitive in the systems they come from and
//! a sensitive target must not slip through as `DB-PROD-01`. There are no
//! character classes or escapes: names do not need them, and a pattern
//! language with fewer corners is easier to audit.

/// Whether `name` matches `pattern` as a whole.
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().map(|c| c.to_ascii_lowercase()).collect();
    let name: Vec<char> = name.chars().map(|c| c.to_ascii_lowercase()).collect();
    // The classic linear matcher: on a mismatch, let the last `*` swallow
    // one more character and try again from there.
    let (mut p, mut n) = (0, 0);
    let mut last_star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some('*') => {
                last_star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == '?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match last_star {
                Some((star, swallowed)) => {
                    p = star + 1;
                    n = swallowed + 1;
                    last_star = Some((star, swallowed + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::glob_matches;

    #[test]
    fn globs() {
        let check = |pattern: &str, name: &str, expected: bool| {
            assert_eq!(
                glob_matches(pattern, name),
                expected,
                "`{pattern}` vs `{name}`"
            );
        };
        check("db-prod-*", "db-prod-01", true);
        check("db-prod-*", "db-prod-", true);
        check("db-prod-*", "db-staging-01", false);
        check("db-prod-*", "DB-PROD-01", true);
        check("ceo-laptop", "ceo-laptop", true);
        check("ceo-laptop", "ceo-laptop-2", false);
        check("ceo-laptop", "my-ceo-laptop", false);
        check("web-0?", "web-01", true);
        check("web-0?", "web-1", false);
        check("*", "", true);
        check("", "", true);
        check("", "x", false);
        check("*-prod-*", "db-prod-01", true);
        check("*a*b", "xaxxaxb", true);
        check("*a*b", "xaxxaxbx", false);
        check("**", "anything", true);
        check("münchen-*", "MüNCHEN-01", true);
    }
}
