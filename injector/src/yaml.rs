//! The YAML writer for injected manifests.
//!
//! serde_norway writes YAML 1.2 and leaves strings such as `on`, `yes` or
//! `off` unquoted, which YAML 1.1 readers (Kubernetes' go-yaml, kubectl,
//! PyYAML) read back as booleans: a label `"on"` would come back as `true`
//! and the API server would refuse the object. This writer quotes every
//! string that is not plainly a string to both versions, so the manifest
//! means the same to every reader. The layout is serde_norway's block style
//! (sequences under a key at the key's indentation).

use serde_norway::{Mapping, Value};
use std::fmt::Write as _;

/// Why a value cannot be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum YamlError {
    /// A YAML tag (`!Thing value`): Kubernetes manifests have none.
    #[error("YAML tags are not supported: {0}")]
    Tagged(String),
    /// A mapping key that is a mapping or a sequence.
    #[error("a mapping key that is a mapping or a sequence")]
    ComplexKey,
}

/// Writes one document (without the `---` separator).
pub fn to_string(value: &Value) -> Result<String, YamlError> {
    let mut out = String::new();
    match value {
        Value::Mapping(m) if !m.is_empty() => mapping(&mut out, m, 0, false)?,
        Value::Sequence(s) if !s.is_empty() => sequence(&mut out, s, 0, false)?,
        v => {
            scalar(&mut out, v)?;
            out.push('\n');
        }
    }
    Ok(out)
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

/// A block mapping at `indent`; `inline` when its first key continues a
/// line already started (a sequence item's `- `).
fn mapping(out: &mut String, m: &Mapping, indent: usize, inline: bool) -> Result<(), YamlError> {
    for (i, (k, v)) in m.iter().enumerate() {
        if i > 0 || !inline {
            pad(out, indent);
        }
        match k {
            Value::Mapping(_) | Value::Sequence(_) => return Err(YamlError::ComplexKey),
            k => scalar(out, k)?,
        }
        out.push(':');
        match v {
            Value::Mapping(m) if !m.is_empty() => {
                out.push('\n');
                mapping(out, m, indent + 2, false)?;
            }
            Value::Sequence(s) if !s.is_empty() => {
                out.push('\n');
                sequence(out, s, indent, false)?;
            }
            v => {
                out.push(' ');
                scalar(out, v)?;
                out.push('\n');
            }
        }
    }
    Ok(())
}

/// A block sequence at `indent` (see [`mapping`] for `inline`).
fn sequence(out: &mut String, s: &[Value], indent: usize, inline: bool) -> Result<(), YamlError> {
    for (i, item) in s.iter().enumerate() {
        if i > 0 || !inline {
            pad(out, indent);
        }
        out.push_str("- ");
        match item {
            Value::Mapping(m) if !m.is_empty() => mapping(out, m, indent + 2, true)?,
            Value::Sequence(s) if !s.is_empty() => sequence(out, s, indent + 2, true)?,
            v => {
                scalar(out, v)?;
                out.push('\n');
            }
        }
    }
    Ok(())
}

/// A scalar, or an empty collection in flow style.
fn scalar(out: &mut String, v: &Value) -> Result<(), YamlError> {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => string(out, s),
        Value::Mapping(_) => out.push_str("{}"),
        Value::Sequence(_) => out.push_str("[]"),
        Value::Tagged(t) => return Err(YamlError::Tagged(t.tag.to_string())),
    }
    Ok(())
}

/// Words YAML 1.1 or 1.2 resolve to a boolean or null when plain.
const RESERVED: [&str; 12] = [
    "y", "yes", "n", "no", "true", "false", "on", "off", "null", "~", "<<", "=",
];

/// Whether `s` may be written plain: it is read back as this very string by
/// YAML 1.1 and 1.2 readers alike. Deliberately narrow; anything else is
/// double-quoted, which is always correct.
fn plain(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    // Anything starting with a digit, a sign or a dot might be a number in
    // one version or the other (0755, 0o17, 1_000, 1:30, .5, +1, 1e3).
    (first.is_ascii_alphabetic() || first == '/' || first == '_')
        && !RESERVED.iter().any(|w| w.eq_ignore_ascii_case(s))
        && !s.ends_with(':')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./@=+:".contains(&b))
        && !s.contains(": ")
        && !s.eq_ignore_ascii_case(".inf")
}

/// `s` as a double-quoted scalar, or plain when [`plain`] allows.
fn string(out: &mut String, s: &str) {
    if plain(s) {
        out.push_str(s);
        return;
    }
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            // Controls, and the characters YAML treats as line breaks or a
            // byte-order mark, are escaped rather than written raw.
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}') => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(v: &Value) {
        let text = to_string(v).unwrap();
        let back: Value = serde_norway::from_str(&text).unwrap();
        assert_eq!(&back, v, "{text}");
    }

    #[test]
    fn strings_that_look_like_something_else_are_quoted() {
        for s in [
            "on",
            "Off",
            "YES",
            "n",
            "null",
            "~",
            "",
            "0755",
            "1e3",
            "0x1F",
            "1_000",
            "1:30",
            ".5",
            "+1",
            "-",
            "- a",
            "a: b",
            "a:",
            "#x",
            "x #y",
            "&a",
            "*a",
            "!a",
            "|",
            ">",
            "'",
            "\"",
            "[a]",
            "{a}",
            "a,b",
            "%x",
            "@x",
            "`x",
            "=",
            "<<",
            ".inf",
            "line\nbreak",
            "tab\t",
            "nul\0",
            "del\u{7f}",
            "ls\u{2028}",
            "bom\u{feff}",
            " lead",
            "trail ",
            "ünï",
        ] {
            let text = to_string(&Value::String(s.into())).unwrap();
            assert!(text.starts_with('"'), "{s:?} -> {text}");
            round_trip(&Value::String(s.into()));
        }
        for s in [
            "web",
            "localhost/web:1",
            "spiffe://example.org/x",
            "ClusterFirst",
            "a-b_c.d",
            "/run/tessera",
        ] {
            assert_eq!(
                to_string(&Value::String(s.into())).unwrap(),
                format!("{s}\n")
            );
        }
    }

    #[test]
    fn nested_collections_round_trip() {
        let v: Value = serde_norway::from_str(
            "a:\n  b: [1, 2.5, -3, true, null]\n  c: []\n  d: {}\nl:\n- x: 1\n  y:\n  - - p\n    - q\n  - {}\n- [[]]\n- 7\n",
        )
        .unwrap();
        round_trip(&v);
        assert_eq!(
            to_string(&v).unwrap(),
            "a:\n  b:\n  - 1\n  - 2.5\n  - -3\n  - true\n  - null\n  c: []\n  d: {}\nl:\n- x: 1\n  \"y\":\n  - - p\n    - q\n  - {}\n- - []\n- 7\n"
        );
        let tagged: Value = serde_norway::from_str("a: !Thing 1\n").unwrap();
        assert!(matches!(to_string(&tagged), Err(YamlError::Tagged(_))));
    }
}
