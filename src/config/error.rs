//! [`ConfigError`] and the collector validation reports into.
//!
//! # Errors
//! Every refusal names the file, and where it can the 1-based line and the dotted key
//! (`routing.toml:7: key `workers.count`: invalid type: …`). Validation keeps going after
//! the first problem only to stay simple; the first one found is reported.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// A refused configuration: where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Dotted key, when known.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// An error about the file as a whole (unreadable, …).
    pub fn whole_file(path: &Path, message: String) -> Self {
        Self {
            path: path.to_path_buf(),
            line: None,
            key: None,
            message,
        }
    }
}

/// A TOML syntax or type error, with its line and the dotted key it is about.
///
/// serde reports only a byte span; the key is found by walking the parsed document (with
/// its spans) down to the deepest key or value that contains the span's start. A duplicate
/// key is found the same way once it is renamed (see [`duplicate_key_at`]). Another syntax
/// error, where the document cannot be parsed, names the line only.
pub(crate) fn from_toml(e: &toml::de::Error, text: &str, path: &Path) -> ConfigError {
    let span = e.span();
    let is_duplicate = e.message().starts_with("duplicate key");
    ConfigError {
        path: path.to_path_buf(),
        line: span.as_ref().map(|s| line_of(text, s.start)),
        key: span.and_then(|s| {
            key_at(text, s.start).or_else(|| is_duplicate.then(|| duplicate_key_at(text, s))?)
        }),
        message: e.message().to_string(),
    }
}

/// The dotted key of the duplicate key segment written at `span` (the second `alice` of a
/// `[users]` table, the `zone_1` of a second `[partitions.zone_1]`): the text with that
/// segment renamed parses, and the renamed key's place names it.
fn duplicate_key_at(text: &str, span: Range<usize>) -> Option<String> {
    const STAND_IN: &str = "__ringgate_duplicate_key__";
    let written = text.get(span.clone())?;
    let renamed = format!("{}{STAND_IN}{}", &text[..span.start], &text[span.end..]);
    let mut dotted = key_at(&renamed, span.start)?;
    let prefix = dotted.strip_suffix(STAND_IN)?.len();
    // The segment as written may be quoted: read it as TOML reads a key.
    let line = format!("{written} = 0");
    let doc = DeTable::parse(&line).ok()?;
    let (key, _) = doc.get_ref().iter().next()?;
    dotted.truncate(prefix);
    dotted.push_str(&key_segment(key.get_ref()));
    Some(dotted)
}

/// The dotted key whose key or value holds byte `offset` of `text`, if the text parses.
pub(crate) fn key_at(text: &str, offset: usize) -> Option<String> {
    let doc = DeTable::parse(text).ok()?;
    let mut path = Vec::new();
    find_in_table(doc.get_ref(), offset, &mut path).then(|| path.join("."))
}

/// Push onto `path` the keys leading to `offset` inside `table`; false if it is not there.
fn find_in_table(table: &DeTable<'_>, offset: usize, path: &mut Vec<String>) -> bool {
    for (key, value) in table.iter() {
        path.push(key_segment(key.get_ref()));
        if find_in_value(value.get_ref(), offset, path)
            || key.span().contains(&offset)
            || value.span().contains(&offset)
        {
            return true;
        }
        path.pop();
    }
    false
}

/// Tables and arrays are searched inside (their own spans do not always cover their
/// contents: a `[section]` header is far from its keys); arrays add no key segment.
fn find_in_value(value: &DeValue<'_>, offset: usize, path: &mut Vec<String>) -> bool {
    match value {
        DeValue::Table(t) => find_in_table(t, offset, path),
        DeValue::Array(items) => items
            .iter()
            .any(|item| find_in_value(item.get_ref(), offset, path)),
        _ => false,
    }
}

/// A key as TOML would write it: bare when it can be, quoted otherwise.
fn key_segment(key: &str) -> String {
    let is_bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if is_bare {
        key.to_string()
    } else {
        format!("{key:?}")
    }
}

/// 1-based line of a byte offset.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// `parent.key`, quoting `key` the way TOML would when it is not a bare key (so an empty or
/// odd user id is visible in the message), and shortening very long keys.
pub(crate) fn dotted(parent: &str, key: &str) -> String {
    const MAX_SHOWN_CHARS: usize = 40;
    if key.chars().count() <= MAX_SHOWN_CHARS {
        return format!("{parent}.{}", key_segment(key));
    }
    let mut shown: String = key.chars().take(MAX_SHOWN_CHARS).collect();
    shown.push('…');
    format!("{parent}.{shown:?}")
}

/// Collects the first validation error (with line and key).
pub(crate) struct Errors<'a> {
    path: &'a Path,
    text: &'a str,
    first: Option<ConfigError>,
}

impl<'a> Errors<'a> {
    pub(crate) fn new(path: &'a Path, text: &'a str) -> Self {
        Self {
            path,
            text,
            first: None,
        }
    }

    /// The first error reported, if any.
    pub(crate) fn into_first(self) -> Option<ConfigError> {
        self.first
    }

    /// Report a problem with the value at `span` (an empty `0..0` span: a default value,
    /// or the file as a whole; no line is given).
    pub(crate) fn add(&mut self, span: Range<usize>, key: &str, message: String) {
        if self.first.is_none() {
            let line = (span.end > 0).then(|| line_of(self.text, span.start));
            self.first = Some(ConfigError {
                path: self.path.to_path_buf(),
                line,
                key: Some(key.to_string()),
                message,
            });
        }
    }

    /// A `host:port` value, resolved; `None` (and an error) when it is not one.
    pub(crate) fn addr(&mut self, v: &Spanned<String>, key: &str) -> Option<SocketAddr> {
        match resolve(v.get_ref()) {
            Ok(a) => Some(a),
            Err(m) => {
                self.add(v.span(), key, m);
                None
            }
        }
    }

    /// A timeout in milliseconds, which must be at least 1 (0 would time out at once).
    pub(crate) fn timeout_ms(&mut self, v: &Spanned<u64>, key: &str) -> Duration {
        let n = *v.get_ref();
        if n == 0 {
            self.add(
                v.span(),
                key,
                "0 ms would time out at once: at least 1".into(),
            );
        }
        Duration::from_millis(n.max(1))
    }

    /// A real number that must lie in `lo..=hi` (NaN does not); clamped into it (and an
    /// error) when it does not.
    pub(crate) fn real(&mut self, v: &Spanned<f64>, key: &str, lo: f64, hi: f64) -> f64 {
        let x = *v.get_ref();
        if !(lo..=hi).contains(&x) {
            self.add(v.span(), key, format!("{x} is out of range {lo}..={hi}"));
            return if x > hi { hi } else { lo };
        }
        x
    }

    /// A number that must lie in `lo..=hi`; clamped into it (and an error) when it does not.
    pub(crate) fn range<T: Ord + Copy + fmt::Display>(
        &mut self,
        v: &Spanned<T>,
        key: &str,
        lo: T,
        hi: T,
    ) -> T {
        let n = *v.get_ref();
        if n < lo || n > hi {
            self.add(v.span(), key, format!("{n} is out of range {lo}..={hi}"));
        }
        n.clamp(lo, hi)
    }
}

/// `host:port` → the first address it resolves to.
pub(crate) fn resolve(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    match s.to_socket_addrs() {
        Ok(mut it) => it
            .next()
            .ok_or_else(|| format!("\"{s}\" resolves to no address")),
        Err(e) => Err(format!("\"{s}\" is not a valid host:port ({e})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_keys_quote_what_is_not_bare() {
        assert_eq!(dotted("users", "alice"), "users.alice");
        assert_eq!(dotted("users", ""), "users.\"\"");
        assert_eq!(dotted("users", "a b"), "users.\"a b\"");
        let long = "x".repeat(300);
        assert_eq!(
            dotted("users", &long),
            format!("users.\"{}…\"", "x".repeat(40))
        );
    }

    #[test]
    fn keys_are_found_from_an_offset() {
        let text = "top = 1\n[workers]\ncount = \"two\"\n[users]\n\"a b\" = \"z\"\n[x]\nlist = [1, \"q\"]\n";
        let at = |needle: &str| key_at(text, text.find(needle).unwrap());
        assert_eq!(at("1\n").as_deref(), Some("top"));
        assert_eq!(at("\"two\"").as_deref(), Some("workers.count"));
        assert_eq!(at("count").as_deref(), Some("workers.count"));
        assert_eq!(at("\"z\"").as_deref(), Some("users.\"a b\""));
        assert_eq!(at("\"q\"").as_deref(), Some("x.list"));
        assert_eq!(key_at("x = [\n", 0), None, "unparsable text names no key");
    }

    #[test]
    fn lines_are_one_based() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 99), 3);
    }
}
