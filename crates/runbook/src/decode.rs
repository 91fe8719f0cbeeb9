//! A small decoder over the span-carrying YAML tree that records a
//! diagnostic for every problem and keeps going.
//!
//! Each reader returns `Option<T>`: `None` means "a diagnostic was recorded
//! here", so the caller simply carries on with the next key. This is what
//! lets one validation pass report an unknown key, a wrong type and a
//! missing key in the same file, instead of the first of them only.

use std::path::{Path, PathBuf};

use crate::diagnostic::{Diagnostic, suggestion};
use crate::yaml::{self, Node, Yaml};

pub(crate) struct Decoder {
    file: PathBuf,
    pub(crate) diagnostics: Vec<Diagnostic>,
}

impl Decoder {
    pub(crate) fn new(file: &Path) -> Self {
        Decoder {
            file: file.to_owned(),
            diagnostics: Vec::new(),
        }
    }

    pub(crate) fn report_at(
        &mut self,
        line: u32,
        column: u32,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        self.diagnostics.push(Diagnostic {
            file: self.file.clone(),
            line: line.max(1),
            column: column.max(1),
            message: message.into(),
            hint,
        });
    }

    pub(crate) fn report(&mut self, at: &Yaml, message: impl Into<String>, hint: Option<String>) {
        self.report_at(yaml::line(at), yaml::column(at), message, hint);
    }

    fn wrong_type(&mut self, node: &Yaml, what: &str, expected: &str) {
        let hint = match (&node.value, expected) {
            (Node::Int(_) | Node::Float(_) | Node::Bool(_), "a string") => {
                Some(format!("put it in quotes: \"{}\"", yaml::to_json(node)))
            }
            (Node::Null, _) => Some("the key has no value".to_owned()),
            _ => None,
        };
        self.report(
            node,
            format!(
                "{what}: expected {expected}, found {}",
                node.value.describe()
            ),
            hint,
        );
    }

    /// Reads a map whose keys must all be in `known`. `context` says where
    /// the map is ("step `restart`"), or is empty at the top level.
    pub(crate) fn fields<'y>(
        &mut self,
        node: &'y Yaml,
        context: &str,
        known: &[&str],
    ) -> Option<Fields<'y>> {
        let Node::Map(entries) = &node.value else {
            let what = if context.is_empty() {
                "the runbook".to_owned()
            } else {
                context.to_owned()
            };
            self.wrong_type(node, &what, "a map");
            return None;
        };
        let mut fields = Fields {
            node,
            context: context.to_owned(),
            entries: Vec::with_capacity(entries.len()),
        };
        for (key, value) in entries {
            let Node::Str(name) = &key.value else {
                self.report(
                    key,
                    format!(
                        "a key must be a string, found {}{}",
                        key.value.describe(),
                        in_context(context)
                    ),
                    None,
                );
                continue;
            };
            if !known.contains(&name.as_str()) {
                self.report(
                    key,
                    format!("unknown key `{name}`{}", in_context(context)),
                    Some(suggestion(name, known, "known keys")),
                );
                continue;
            }
            fields.entries.push((name.as_str(), key, value));
        }
        Some(fields)
    }

    pub(crate) fn required<'y>(&mut self, fields: &Fields<'y>, name: &str) -> Option<&'y Yaml> {
        let value = fields.get(name);
        if value.is_none() {
            self.report(
                fields.node,
                format!(
                    "missing required key `{name}`{}",
                    in_context(&fields.context)
                ),
                None,
            );
        }
        value
    }

    pub(crate) fn string(&mut self, node: &Yaml, what: &str) -> Option<String> {
        match &node.value {
            Node::Str(text) if text.trim().is_empty() => {
                self.report(node, format!("{what}: must not be empty"), None);
                None
            }
            Node::Str(text) => Some(text.clone()),
            _ => {
                self.wrong_type(node, what, "a string");
                None
            }
        }
    }

    pub(crate) fn boolean(&mut self, node: &Yaml, what: &str) -> Option<bool> {
        match node.value {
            Node::Bool(value) => Some(value),
            _ => {
                self.wrong_type(node, what, "`true` or `false`");
                None
            }
        }
    }

    /// An integer within `min..=max`.
    pub(crate) fn integer(&mut self, node: &Yaml, what: &str, min: i64, max: i64) -> Option<i64> {
        match node.value {
            Node::Int(value) if (min..=max).contains(&value) => Some(value),
            Node::Int(value) => {
                let range = if max >= i64::from(u32::MAX) {
                    format!("at least {min}")
                } else {
                    format!("between {min} and {max}")
                };
                self.report(
                    node,
                    format!("{what}: {value} is out of range; it must be {range}"),
                    None,
                );
                None
            }
            _ => {
                self.wrong_type(node, what, "an integer");
                None
            }
        }
    }

    pub(crate) fn number(&mut self, node: &Yaml, what: &str) -> Option<f64> {
        match node.value {
            Node::Int(value) => Some(value as f64),
            Node::Float(value) if value.is_finite() => Some(value),
            _ => {
                self.wrong_type(node, what, "a number");
                None
            }
        }
    }

    /// A duration such as `500ms`, `30s`, `5m`, `1h` or `1d`, in milliseconds.
    pub(crate) fn duration(&mut self, node: &Yaml, what: &str) -> Option<u64> {
        let Node::Str(text) = &node.value else {
            let hint = matches!(node.value, Node::Int(_))
                .then(|| "give a unit, e.g. `30s` or `500ms`".to_owned());
            self.report(
                node,
                format!(
                    "{what}: expected a duration such as `30s`, found {}",
                    node.value.describe()
                ),
                hint,
            );
            return None;
        };
        match parse_duration(text) {
            Some(0) => {
                self.report(
                    node,
                    format!("{what}: a duration must be longer than zero"),
                    None,
                );
                None
            }
            Some(milliseconds) => Some(milliseconds),
            None => {
                self.report(
                    node,
                    format!("{what}: invalid duration `{text}`"),
                    Some("write a whole number and a unit: ms, s, m, h or d (e.g. `500ms`, `30s`, `5m`, `1h`)".to_owned()),
                );
                None
            }
        }
    }

    /// One of a fixed set of words.
    pub(crate) fn choice(&mut self, node: &Yaml, what: &str, choices: &[&str]) -> Option<String> {
        let text = self.string(node, what)?;
        if choices.contains(&text.as_str()) {
            return Some(text);
        }
        self.report(
            node,
            format!("{what}: unknown value `{text}`"),
            Some(suggestion(&text, choices, "expected one of")),
        );
        None
    }

    pub(crate) fn list<'y>(&mut self, node: &'y Yaml, what: &str) -> Option<&'y [Yaml]> {
        match &node.value {
            Node::Seq(items) => Some(items),
            _ => {
                self.wrong_type(node, what, "a list");
                None
            }
        }
    }

    pub(crate) fn string_list(&mut self, node: &Yaml, what: &str) -> Option<Vec<String>> {
        let items = self.list(node, what)?;
        let strings: Vec<Option<String>> = items
            .iter()
            .enumerate()
            .map(|(index, item)| self.string(item, &format!("{what}, item {}", index + 1)))
            .collect();
        strings.into_iter().collect()
    }
}

/// " in step `restart`", or nothing at the top level.
pub(crate) fn in_context(context: &str) -> String {
    if context.is_empty() {
        String::new()
    } else {
        format!(" in {context}")
    }
}

/// The known keys of one map, with their nodes.
pub(crate) struct Fields<'y> {
    pub(crate) node: &'y Yaml,
    pub(crate) context: String,
    entries: Vec<(&'y str, &'y Yaml, &'y Yaml)>,
}

impl<'y> Fields<'y> {
    pub(crate) fn get(&self, name: &str) -> Option<&'y Yaml> {
        self.entries
            .iter()
            .find(|(key, _, _)| *key == name)
            .map(|(_, _, value)| *value)
    }

    /// The key node itself, to point at `inputs:` rather than its content.
    pub(crate) fn key(&self, name: &str) -> Option<&'y Yaml> {
        self.entries
            .iter()
            .find(|(key, _, _)| *key == name)
            .map(|(_, key, _)| *key)
    }

    /// How a message names the key `name` of this map: "`timeout` in step `restart`".
    pub(crate) fn what(&self, name: &str) -> String {
        format!("`{name}`{}", in_context(&self.context))
    }
}

/// `500ms`, `30s`, `5m`, `1h`, `1d` → milliseconds.
pub(crate) fn parse_duration(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = text.split_at(split);
    let amount: u64 = digits.parse().ok()?;
    let unit_ms = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    amount.checked_mul(unit_ms)
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations() {
        let check = |text: &str, expected: Option<u64>| {
            assert_eq!(parse_duration(text), expected, "{text}")
        };
        check("500ms", Some(500));
        check("30s", Some(30_000));
        check("5m", Some(300_000));
        check("1h", Some(3_600_000));
        check("2d", Some(172_800_000));
        check("30", None);
        check("1.5s", None);
        check("5 min", None);
        check("s", None);
        check("-1s", None);
    }
}
