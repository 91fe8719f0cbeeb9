//! A YAML document as a tree in which every node knows its line and column.
//!
//! Deserialising straight into typed structs would stop at the first wrong
//! key or type and lose the positions of everything else. Instead the whole
//! document is read into this untyped, span-carrying tree (every child is a
//! [`serde_saphyr::Spanned`]), and the validator walks it at leisure,
//! reporting every problem at its own position.
//!
//! YAML 1.1 boolean spellings (`yes`, `no`, `on`, `off`, `y`, `n`) stay
//! strings: `service: on` should not quietly become `true`.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{MessageFormatter, Spanned};

/// A node with its position in the document.
pub(crate) type Yaml = Spanned<Node>;

#[derive(Debug, Clone)]
pub(crate) enum Node {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Yaml>),
    /// Entries in document order; keys are nodes too, so that a key that is
    /// not a string can be reported where it is.
    Map(Vec<(Yaml, Yaml)>),
}

impl Node {
    /// What this node is, as a message names it: "expected a string, found a list".
    pub(crate) fn describe(&self) -> &'static str {
        match self {
            Node::Null => "nothing",
            Node::Bool(_) => "a boolean",
            Node::Int(_) => "an integer",
            Node::Float(_) => "a number",
            Node::Str(_) => "a string",
            Node::Seq(_) => "a list",
            Node::Map(_) => "a map",
        }
    }
}

/// A YAML syntax error, at the position the parser reported.
#[derive(Debug)]
pub(crate) struct SyntaxError {
    pub line: u32,
    pub column: u32,
    pub message: String,
}

/// Reads one YAML document. An empty document is [`Node::Null`].
pub(crate) fn parse(text: &str) -> Result<Yaml, SyntaxError> {
    let options = serde_saphyr::options! { strict_booleans: true };
    serde_saphyr::from_str_with_options::<Yaml>(text, options).map_err(|error| {
        let (line, column) = error
            .location()
            .map(|location| (location.line() as u32, location.column() as u32))
            .unwrap_or((1, 1));
        let message = serde_saphyr::DefaultMessageFormatter.format_message(error.without_snippet());
        SyntaxError {
            line: line.max(1),
            column: column.max(1),
            message: message.into_owned(),
        }
    })
}

pub(crate) fn line(node: &Yaml) -> u32 {
    node.referenced.line() as u32
}

pub(crate) fn column(node: &Yaml) -> u32 {
    node.referenced.column() as u32
}

/// The JSON form of a node. Keys that are not strings are written as their
/// YAML text (`200: x` → `{"200": "x"}`); non-finite floats become `null`,
/// as JSON has no spelling for them.
pub(crate) fn to_json(node: &Yaml) -> serde_json::Value {
    use serde_json::Value;
    match &node.value {
        Node::Null => Value::Null,
        Node::Bool(value) => Value::Bool(*value),
        Node::Int(value) => Value::from(*value),
        Node::Float(value) => {
            serde_json::Number::from_f64(*value).map_or(Value::Null, Value::Number)
        }
        Node::Str(value) => Value::String(value.clone()),
        Node::Seq(items) => Value::Array(items.iter().map(to_json).collect()),
        Node::Map(entries) => Value::Object(
            entries
                .iter()
                .map(|(key, value)| (key_text(key), to_json(value)))
                .collect(),
        ),
    }
}

/// A map key as text.
pub(crate) fn key_text(key: &Yaml) -> String {
    match &key.value {
        Node::Str(text) => text.clone(),
        Node::Null => "null".to_owned(),
        Node::Bool(value) => value.to_string(),
        Node::Int(value) => value.to_string(),
        Node::Float(value) => value.to_string(),
        Node::Seq(_) | Node::Map(_) => to_json(key).to_string(),
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("any YAML value")
    }

    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        Node::deserialize(deserializer)
    }

    fn visit_bool<E>(self, value: bool) -> Result<Node, E> {
        Ok(Node::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Node, E> {
        Ok(Node::Int(value))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Node, E> {
        // Beyond i64 no runbook number is meaningful; keep it approximately.
        Ok(i64::try_from(value).map_or(Node::Float(value as f64), Node::Int))
    }

    fn visit_i128<E>(self, value: i128) -> Result<Node, E> {
        Ok(i64::try_from(value).map_or(Node::Float(value as f64), Node::Int))
    }

    fn visit_u128<E>(self, value: u128) -> Result<Node, E> {
        Ok(i64::try_from(value).map_or(Node::Float(value as f64), Node::Int))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Node, E> {
        Ok(Node::Float(value))
    }

    fn visit_str<E>(self, value: &str) -> Result<Node, E> {
        Ok(Node::Str(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Node, E> {
        Ok(Node::Str(value))
    }

    fn visit_bytes<E>(self, value: &[u8]) -> Result<Node, E> {
        Ok(Node::Str(String::from_utf8_lossy(value).into_owned()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut access: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = access.next_element::<Yaml>()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = access.next_key::<Yaml>()? {
            let value = access.next_value::<Yaml>()?;
            entries.push((key, value));
        }
        Ok(Node::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position_of(root: &Yaml, key: &str) -> (u32, u32) {
        let Node::Map(entries) = &root.value else {
            panic!("not a map")
        };
        let (_, value) = entries
            .iter()
            .find(|(k, _)| key_text(k) == key)
            .expect("key present");
        (line(value), column(value))
    }

    #[test]
    fn every_node_knows_where_it_is() {
        let root = parse("# comment\nid: x\nsteps:\n  - id: a\n    with: { n: 1 }\n").unwrap();
        assert_eq!(position_of(&root, "id"), (2, 5));
        assert_eq!(position_of(&root, "steps"), (4, 3));
    }

    #[test]
    fn yaml_1_1_booleans_stay_strings_and_json_keeps_types() {
        let root = parse("a: yes\nb: true\nc: 1.5\nd: 7\n200: ok\ne:\n").unwrap();
        assert_eq!(
            to_json(&root),
            serde_json::json!({"a": "yes", "b": true, "c": 1.5, "d": 7, "200": "ok", "e": null})
        );
    }

    #[test]
    fn syntax_errors_carry_a_position_and_no_snippet() {
        let error = parse("a: 1\na: 2\n").unwrap_err();
        assert_eq!((error.line, error.column), (2, 1));
        assert!(
            error.message.starts_with("duplicate mapping key"),
            "{}",
            error.message
        );
        assert!(!error.message.contains('\n'));
    }
}
