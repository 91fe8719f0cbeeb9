//! Host patterns: which hosts a runbook's calls, or a credential, may reach.
//!
//! Shared by `runbook` (a runbook's `allowed_hosts`, checked at plan time)
//! and `connectors` (a credential's `hosts`, checked before sending), so
//! both read a pattern the same way. A pattern is a host name, written as
//! it is (`endpoint.example`, `10.0.0.5`), or `*.` and a domain
//! (`*.corp.example`), which matches the hosts below that domain but not
//! the domain itself: a wildcard never reaches up. Comparison ignores ASCII
//! case; ports are not part of a pattern.

/// Whether `text` is a pattern [`host_matches`] can read: a name of
/// letters, digits, `-`, `_` and `.` without empty labels (an IPv4 address
/// is such a name), a bracketed IPv6 address, or `*.` and such a name.
pub fn is_host_pattern(text: &str) -> bool {
    let name = text.strip_prefix("*.").unwrap_or(text);
    if let Some(inner) = name
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
    {
        return !text.starts_with('*')
            && !inner.is_empty()
            && inner
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.');
    }
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

/// Whether `host` (as a URL names it) is one `pattern` allows.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.');
    match pattern.strip_prefix("*.") {
        Some(domain) => {
            host.len() > domain.len() + 1 && {
                let (below, rest) = host.split_at(host.len() - domain.len());
                below.ends_with('.') && rest.eq_ignore_ascii_case(domain)
            }
        }
        None => host.eq_ignore_ascii_case(pattern),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_the_host_or_the_hosts_below_a_domain() {
        let check = |pattern: &str, host: &str, expected: bool| {
            assert_eq!(host_matches(pattern, host), expected, "{pattern} ~ {host}")
        };
        check("endpoint.example", "endpoint.example", true);
        check("endpoint.example", "Endpoint.Example", true);
        check("endpoint.example", "endpoint.example.", true);
        check("endpoint.example", "evil-endpoint.example", false);
        check("endpoint.example", "endpoint.example.evil", false);
        check("*.corp.example", "api.corp.example", true);
        check("*.corp.example", "a.b.corp.example", true);
        check("*.corp.example", "corp.example", false);
        check("*.corp.example", "evilcorp.example", false);
        check("*.corp.example", "corp.example.evil", false);
        check("127.0.0.1", "127.0.0.1", true);
        check("[::1]", "[::1]", true);
    }

    #[test]
    fn only_names_and_wildcard_domains_are_patterns() {
        for good in [
            "endpoint.example",
            "*.corp.example",
            "10.0.0.5",
            "[::1]",
            "localhost",
        ] {
            assert!(is_host_pattern(good), "{good}");
        }
        for bad in [
            "",
            "*",
            "*.",
            "a..b",
            "https://endpoint.example",
            "endpoint.example:8443",
            "endpoint.example/x",
            "a*.example",
            "*.*.example",
            "*.[::1]",
        ] {
            assert!(!is_host_pattern(bad), "{bad}");
        }
    }
}
