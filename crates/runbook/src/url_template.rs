//! URLs in runbooks: rendered so that an event's values cannot steer them.
//!
//! A URL template is fixed text and `{{ expression }}`s (no `{% %}` blocks).
//! Rendering it as one string would let a value such as `../../admin`, `a?x=1`
//! or `a#b` walk the path, add a query or cut the URL short, so each part is
//! rendered on its own and encoded for where it lands:
//!
//! - An expression at the very start gives the URL's **base** (scheme, host,
//!   maybe a base path) from configuration: it may read only `env` (checked
//!   when the runbook is loaded), is taken as it is, and must be an absolute
//!   http(s) URL without user information.
//! - An expression in the **host** must yield a host name (letters, digits,
//!   `-`, `.`).
//! - An expression in the **path** is one segment's value: everything but
//!   the unreserved characters (`A-Z a-z 0-9 - . _ ~`) is percent-encoded,
//!   `/ ? # % \` and spaces included; a value that is, or decodes to, `.`
//!   or `..` is refused.
//! - An expression after the `?` (or `#`) is a query value, encoded the same
//!   way, so `& = + #` stay inside it.
//!
//! The rendered URL is then checked as a whole: no path segment may be a dot
//! segment, even once decoded; its path, normalised, must still begin with
//! the fixed prefix written before the first expression (defence in depth,
//! should encoding ever miss a case); and it is stored as the `url` crate —
//! and so reqwest — serialises it, so the plan shows byte for byte what is
//! sent. A runbook's `allowed_hosts`, when given, must match its host.

use serde_json::Value;
use url::Url;

/// A piece of a URL template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Piece<'a> {
    Text(&'a str),
    Expression(&'a str),
}

/// Splits a URL template into fixed text and expressions.
pub(crate) fn pieces(text: &str) -> Result<Vec<Piece<'_>>, String> {
    if text.contains("{%") || text.contains("{#") {
        return Err(
            "a URL is fixed text and `{{ expression }}`s: no `{% %}` blocks or `{# #}` comments"
                .to_owned(),
        );
    }
    let mut pieces = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        if start > 0 {
            pieces.push(Piece::Text(&rest[..start]));
        }
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| "a `{{` in the URL is never closed".to_owned())?;
        let inner = after[..end].trim();
        let inner = inner.strip_prefix(['-', '+']).unwrap_or(inner);
        let inner = inner.strip_suffix(['-', '+']).unwrap_or(inner);
        pieces.push(Piece::Expression(inner.trim()));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest));
    }
    Ok(pieces)
}

/// Where in a URL the text written so far ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    Scheme,
    Host,
    Path,
    Query,
}

impl Position {
    /// Where the next piece lands after `written`.
    fn after(written: &str) -> Position {
        let Some(authority) = written.find("://") else {
            return Position::Scheme;
        };
        let rest = &written[authority + 3..];
        if rest.contains(['?', '#']) {
            Position::Query
        } else if rest.contains('/') {
            Position::Path
        } else {
            Position::Host
        }
    }
}

/// Why a URL could not be rendered; the caller knows where it is written.
#[derive(Debug)]
pub(crate) enum Failure {
    /// An expression could not be evaluated (an undefined variable).
    Evaluate(String),
    /// The URL, or a value in it, is refused.
    Refused(String),
}

/// Renders a URL template: `evaluate` gives each expression's value.
pub(crate) fn render(
    text: &str,
    mut evaluate: impl FnMut(&str) -> Result<Value, String>,
) -> Result<Url, Failure> {
    let pieces = pieces(text).map_err(Failure::Refused)?;
    let mut rendered = String::new();
    // Where the first value after the base was written: the text before
    // it is the prefix the path must stay under.
    let mut fixed_prefix: Option<usize> = None;
    for (index, piece) in pieces.iter().enumerate() {
        match piece {
            Piece::Text(text) => rendered.push_str(text),
            Piece::Expression(expression) => {
                let value = evaluate(expression).map_err(Failure::Evaluate)?;
                let value = scalar(value, expression).map_err(Failure::Refused)?;
                if index == 0 {
                    base(&value).map_err(Failure::Refused)?;
                    rendered.push_str(&value);
                    continue;
                }
                let position = Position::after(&rendered);
                if matches!(position, Position::Path | Position::Query) {
                    fixed_prefix.get_or_insert(rendered.len());
                }
                if position == Position::Host {
                    leading_labels(&rendered, pieces.get(index + 1), expression)
                        .map_err(Failure::Refused)?;
                }
                let placed = place(position, expression, &value).map_err(Failure::Refused)?;
                rendered.push_str(&placed);
            }
        }
    }
    check(&rendered, fixed_prefix).map_err(Failure::Refused)
}

/// A value in the host may only stand for its leading labels, under a
/// domain the runbook writes out: `https://{{ inputs.device }}.mgmt.example`.
/// Anywhere else it could extend a host written before it
/// (`https://api.example{{ x }}` with `x` = `.evil.example`) or be the
/// whole host.
fn leading_labels(written: &str, next: Option<&Piece<'_>>, expression: &str) -> Result<(), String> {
    let starts_the_host = written.ends_with("://");
    let domain_follows = match next {
        Some(Piece::Text(text)) => text
            .strip_prefix('.')
            .and_then(|rest| rest.split(['/', ':', '?', '#']).next())
            .is_some_and(|domain| domain.contains(|c: char| c.is_ascii_alphanumeric())),
        _ => false,
    };
    if starts_the_host && domain_follows {
        Ok(())
    } else {
        Err(format!(
            "`{expression}` stands in the URL's host; a value there may only give its leading \
             labels, right after `://` and before a domain the runbook writes out \
             (`https://{{{{ inputs.device }}}}.mgmt.example/…`)"
        ))
    }
}

/// A value as it is written where it lands.
fn place(position: Position, expression: &str, value: &str) -> Result<String, String> {
    match position {
        Position::Scheme => Err(format!(
            "`{expression}` stands in the URL's scheme; start the URL with `https://` or with its base, `{{{{ env.NAME }}}}`"
        )),
        Position::Host if is_host_name(value) => Ok(value.to_owned()),
        Position::Host => Err(format!(
            "`{expression}` gives `{value}` for the URL's host, which is not a host name"
        )),
        Position::Path if is_dot_segment(value) => Err(format!(
            "`{expression}` gives `{value}`, a `.` or `..` path segment, which would leave the path the runbook names"
        )),
        Position::Path | Position::Query => Ok(encode(value)),
    }
}

/// Checks the URL as a whole and gives it as it will be sent.
fn check(rendered: &str, fixed_prefix: Option<usize>) -> Result<Url, String> {
    let url = Url::parse(rendered)
        .map_err(|error| format!("`{rendered}` is not an absolute URL: {error}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("`{rendered}` is not an http(s) URL with a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("the URL carries user information; use a `credential` instead".to_owned());
    }
    if let Some(segment) = raw_path(rendered)
        .split(['/', '\\'])
        .find(|s| is_dot_segment(s))
    {
        return Err(format!(
            "`{rendered}` has the path segment `{segment}`, which walks the path"
        ));
    }
    if let Some(end) = fixed_prefix {
        let prefix = &rendered[..end];
        let prefix_path = Url::parse(prefix)
            .map(|prefix| prefix.path().to_owned())
            .unwrap_or_else(|_| raw_path(prefix).to_owned());
        if !stays_under(&prefix_path, url.path()) {
            return Err(format!(
                "`{rendered}` leaves `{prefix_path}`, the path the runbook writes before its first value"
            ));
        }
    }
    Ok(url)
}

/// The host `text` names when it is known before any event: written in
/// the URL, or given by its base from configuration (`evaluate` reads
/// `env`). `None` when a value from the event is part of the host, or the
/// URL cannot be read.
pub(crate) fn host_before_planning(
    text: &str,
    mut evaluate: impl FnMut(&str) -> Result<Value, String>,
) -> Option<String> {
    let pieces = pieces(text).ok()?;
    let mut known = String::new();
    for (index, piece) in pieces.iter().enumerate() {
        match piece {
            Piece::Text(text) => known.push_str(text),
            Piece::Expression(expression) if index == 0 => {
                known.push_str(evaluate(expression).ok()?.as_str()?);
            }
            Piece::Expression(_) if Position::after(&known) == Position::Host => return None,
            Piece::Expression(_) => break,
        }
    }
    Url::parse(&known).ok()?.host_str().map(str::to_owned)
}

/// Checks a base from configuration: an absolute http(s) URL with a host.
fn base(value: &str) -> Result<(), String> {
    let url = Url::parse(value).map_err(|error| {
        format!("the URL's base `{value}` is not an absolute http(s) URL: {error}")
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!(
            "the URL's base `{value}` is not an absolute http(s) URL"
        ));
    }
    Ok(())
}

/// A value as it is written into a URL: strings as they are, numbers and
/// booleans as JSON writes them.
fn scalar(value: Value, expression: &str) -> Result<String, String> {
    match value {
        Value::String(text) => Ok(text),
        Value::Number(_) | Value::Bool(_) => Ok(value.to_string()),
        other => Err(format!(
            "`{expression}` gives {other}, which cannot be written into a URL"
        )),
    }
}

fn is_host_name(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.'))
}

/// Percent-encodes every byte but the unreserved characters of RFC 3986.
pub(crate) fn encode(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// `.` or `..`, as written or once percent-decoded (`%2e%2E`).
fn is_dot_segment(segment: &str) -> bool {
    let decoded = decode(segment);
    matches!(segment, "." | "..") || matches!(decoded.as_slice(), b"." | b"..")
}

fn decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let hex = |at: usize| bytes.get(at).and_then(|byte| (*byte as char).to_digit(16));
        match (bytes[index], hex(index + 1), hex(index + 2)) {
            (b'%', Some(high), Some(low)) => {
                decoded.push((high * 16 + low) as u8);
                index += 3;
            }
            (byte, _, _) => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    decoded
}

/// The path of a URL as written: after the authority, before `?` or `#`.
fn raw_path(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(url, |at| &url[at + 3..]);
    let path = after_scheme
        .find(['/', '\\'])
        .map_or("", |at| &after_scheme[at..]);
    path.find(['?', '#']).map_or(path, |end| &path[..end])
}

/// Whether `path`, its dot segments resolved, still begins with `prefix`.
pub(crate) fn stays_under(prefix: &str, path: &str) -> bool {
    let mut resolved: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    for (index, segment) in segments.iter().enumerate() {
        let last = index + 1 == segments.len();
        match decode(segment).as_slice() {
            b"." => {
                if last {
                    resolved.push("");
                }
            }
            b".." => {
                resolved.pop();
                if last {
                    resolved.push("");
                }
            }
            _ => resolved.push(segment),
        }
    }
    let normalised = format!("/{}", resolved.join("/"));
    normalised.starts_with(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_split_into_text_and_expressions() {
        assert_eq!(
            pieces("{{ env.API }}/d/{{- inputs.id -}}/x?q={{inputs.q}}").unwrap(),
            vec![
                Piece::Expression("env.API"),
                Piece::Text("/d/"),
                Piece::Expression("inputs.id"),
                Piece::Text("/x?q="),
                Piece::Expression("inputs.q"),
            ]
        );
        assert!(pieces("{{ env.API }}/{% if x %}a{% endif %}").is_err());
        assert!(pieces("{{ env.API }}/{{ x").is_err());
    }

    #[test]
    fn a_path_that_walks_above_its_prefix_is_caught() {
        let check = |prefix: &str, path: &str, expected: bool| {
            assert_eq!(stays_under(prefix, path), expected, "{prefix} {path}")
        };
        check("/devices/", "/devices/PC-1/restart", true);
        check("/devices/", "/devices/../admin", false);
        check("/devices/", "/devices/%2e%2E/admin", false);
        check("/devices/", "/devices/a/../b", true);
        check("/devices/", "/devices/..", false);
        check("/api/v2/", "/api/v2/./x", true);
        check("/", "/anything/..", true);
    }

    #[test]
    fn values_are_encoded_but_for_unreserved_characters() {
        assert_eq!(encode("PC-0042_a.b~"), "PC-0042_a.b~");
        assert_eq!(
            encode("../a b/c?d#e%f\\g"),
            "..%2Fa%20b%2Fc%3Fd%23e%25f%5Cg"
        );
        assert_eq!(encode("a&b=c+d"), "a%26b%3Dc%2Bd");
        assert_eq!(encode("é"), "%C3%A9");
    }
}
