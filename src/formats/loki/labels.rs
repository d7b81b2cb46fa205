//! A Loki stream's label string, `{name="value", ...}`, read the way Loki's
//! distributor reads it (`syntax.ParseLabels`: the PromQL series syntax),
//! borrowing from the string.
//!
//! ```text
//!  `{app="shop", namespace="shop-prod"}` ─► scan ─► Scan { best: the query's best label, labels: 2 }
//! ```
//!
//! What Loki accepts, this accepts, and reads to the same labels:
//! - an optional metric name before `{`, spaces, tabs and newlines between
//!   tokens, a trailing comma;
//! - names as identifiers (`[a-zA-Z_][a-zA-Z0-9_]*`) or quoted strings;
//! - values in `"…"` or `'…'` with Go's escapes (`\n`, `\"`, `\x41`,
//!   `\101`, `\u00e9`, `\U0001F600`, …) or in raw backquotes;
//! - only `=` between name and value.
//!
//! Invariants (what keeps a stream in its own tenant):
//! - a value is decoded exactly as Go's unquoting does, so the namespace
//!   orgsplit routes by is the namespace Loki stores;
//! - an empty value is no label at all, as in Loki (its label builder drops
//!   them);
//! - a query label that appears twice is refused: Loki would refuse such a
//!   stream or keep a different one of the values;
//! - anything Loki would not parse is refused, never guessed at.
//!
//! Only the values of the labels the router asks for are decoded; the rest
//! are checked and skipped. A value is copied only when it has escapes.

use std::borrow::Cow;

use crate::wire::LabelQuery;

/// What a label string holds that the router needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan<'s> {
    /// The query's best (lowest-ranked) label with a non-empty value.
    pub best: Option<Found<'s>>,
    /// Labels in the string (with empty values too).
    pub labels: usize,
}

/// One label the query asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found<'s> {
    /// Index into the query's names.
    pub rank: usize,
    /// The decoded value (borrowed unless it had escapes).
    pub value: Cow<'s, str>,
    /// Byte range of the whole `name="value"` pair, so the label can be
    /// left out (label mode's `remove_tenant_label`).
    pub span: (usize, usize),
}

/// Why a label string is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("stream labels {0}")]
    Syntax(String),
    #[error("stream has label {0:?} twice")]
    Duplicate(String),
    #[error("stream has {count} labels, more than the limit of {limit}")]
    TooMany { count: usize, limit: usize },
    #[error("stream has no labels")]
    Empty,
}

fn syntax(what: impl std::fmt::Display, at: usize) -> LabelError {
    LabelError::Syntax(format!("{what} at byte {at}"))
}

/// Reads `text`, finding the labels `query` names.
pub fn scan<'s>(
    text: &'s str,
    query: &LabelQuery,
    max_labels: usize,
) -> Result<Scan<'s>, LabelError> {
    let b = text.as_bytes();
    let mut pos = skip_space(b, 0);
    // An optional metric name before the braces.
    if b.get(pos).is_some_and(|&c| is_name_start(c)) {
        pos = identifier_end(b, pos);
        pos = skip_space(b, pos);
    }
    if b.get(pos) != Some(&b'{') {
        return Err(syntax("do not start with '{'", pos));
    }
    pos += 1;
    let mut best: Option<Found<'s>> = None;
    // Which query names were seen (ranks below 64; a query has a few).
    let mut seen: u64 = 0;
    let mut labels = 0;
    loop {
        pos = skip_space(b, pos);
        match b.get(pos) {
            Some(b'}') => {
                pos += 1;
                break;
            }
            None => return Err(syntax("end before '}'", pos)),
            _ => {}
        }
        let start = pos;
        // The name.
        let rank = match b[pos] {
            c if is_name_start(c) => {
                let end = identifier_end(b, pos);
                let rank = query.rank(&b[pos..end]);
                pos = end;
                rank
            }
            q @ (b'"' | b'\'' | b'`') => {
                let (name, end) = string(text, pos, q, true)?;
                pos = end;
                query.rank(name.unwrap_or_default().as_bytes())
            }
            c => return Err(syntax(format!("unexpected {:?}", c as char), pos)),
        };
        pos = skip_space(b, pos);
        if b.get(pos) != Some(&b'=') || matches!(b.get(pos + 1), Some(b'~')) {
            return Err(syntax("expect '=' after a label name", pos));
        }
        pos = skip_space(b, pos + 1);
        let q = match b.get(pos) {
            Some(&q @ (b'"' | b'\'' | b'`')) => q,
            _ => return Err(syntax("expect a quoted label value", pos)),
        };
        let (value, end) = string(text, pos, q, rank.is_some())?;
        pos = end;
        labels += 1;
        if labels > max_labels {
            return Err(LabelError::TooMany {
                count: labels,
                limit: max_labels,
            });
        }
        if let Some(rank) = rank {
            let bit = 1u64.checked_shl(rank as u32).unwrap_or(0);
            if seen & bit != 0 {
                return Err(LabelError::Duplicate(
                    String::from_utf8_lossy(&b[start..pos]).into_owned(),
                ));
            }
            seen |= bit;
            let value = value.unwrap_or_default();
            if !value.is_empty() && best.as_ref().is_none_or(|f| rank < f.rank) {
                best = Some(Found {
                    rank,
                    value,
                    span: (start, pos),
                });
            }
        }
        pos = skip_space(b, pos);
        match b.get(pos) {
            Some(b',') => pos += 1,
            Some(b'}') => {}
            _ => return Err(syntax("expect ',' or '}' after a label", pos)),
        }
    }
    pos = skip_space(b, pos);
    if pos != b.len() {
        return Err(syntax("text after '}'", pos));
    }
    if labels == 0 {
        return Err(LabelError::Empty);
    }
    Ok(Scan { best, labels })
}

/// The string without the label pair at `span` (and the comma that
/// separates it from its neighbour), still a valid label string.
pub fn without(text: &str, span: (usize, usize)) -> String {
    let b = text.as_bytes();
    let (mut start, mut end) = span;
    // Take the comma after the pair, or else the one before it.
    let after = skip_space(b, end);
    if b.get(after) == Some(&b',') {
        end = skip_space(b, after + 1);
    } else {
        let mut before = start;
        while before > 0 && is_space(b[before - 1]) {
            before -= 1;
        }
        if before > 0 && b[before - 1] == b',' {
            start = before - 1;
        }
    }
    let mut out = String::with_capacity(text.len());
    out.push_str(&text[..start]);
    out.push_str(&text[end..]);
    out
}

#[inline]
fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r')
}

#[inline]
fn skip_space(b: &[u8], mut pos: usize) -> usize {
    while b.get(pos).is_some_and(|&c| is_space(c)) {
        pos += 1;
    }
    pos
}

#[inline]
fn is_name_start(c: u8) -> bool {
    c == b'_' || c.is_ascii_alphabetic()
}

#[inline]
fn identifier_end(b: &[u8], mut pos: usize) -> usize {
    while b
        .get(pos)
        .is_some_and(|&c| c == b'_' || c.is_ascii_alphanumeric())
    {
        pos += 1;
    }
    pos
}

/// Reads the quoted string opening at `start` with quote `q`. Returns the
/// decoded value (only when `decode`; borrowed if it has no escapes) and
/// the position after the closing quote.
fn string(
    text: &str,
    start: usize,
    q: u8,
    decode: bool,
) -> Result<(Option<Cow<'_, str>>, usize), LabelError> {
    let b = text.as_bytes();
    let body = start + 1;
    if q == b'`' {
        // Raw: anything up to the next backquote, no escapes.
        let Some(len) = b[body..].iter().position(|&c| c == b'`') else {
            return Err(syntax("unterminated raw string", start));
        };
        let value = decode.then(|| Cow::Borrowed(&text[body..body + len]));
        return Ok((value, body + len + 1));
    }
    // Fast path: up to the closing quote with no escape and no newline.
    let mut pos = body;
    while let Some(&c) = b.get(pos) {
        match c {
            c if c == q => {
                let value = decode.then(|| Cow::Borrowed(&text[body..pos]));
                return Ok((value, pos + 1));
            }
            b'\\' => break,
            b'\n' => return Err(syntax("unterminated quoted string", start)),
            _ => pos += 1,
        }
    }
    if pos >= b.len() {
        return Err(syntax("unterminated quoted string", start));
    }
    // Escapes: decode into bytes (\x and octal escapes are raw bytes, as in
    // Go), then require UTF-8 of the result.
    let mut out: Vec<u8> = Vec::new();
    if decode {
        out.extend_from_slice(&b[body..pos]);
    }
    loop {
        let Some(&c) = b.get(pos) else {
            return Err(syntax("unterminated quoted string", start));
        };
        match c {
            c if c == q => {
                pos += 1;
                break;
            }
            b'\n' => return Err(syntax("unterminated quoted string", start)),
            b'\\' => {
                let (bytes, len) = escape(b, pos, q)?;
                if decode {
                    out.extend_from_slice(bytes.as_slice());
                }
                pos += len;
            }
            _ => {
                // Copy one whole UTF-8 character.
                let len = utf8_len(c);
                if decode {
                    out.extend_from_slice(&b[pos..pos + len]);
                }
                pos += len;
            }
        }
    }
    if !decode {
        return Ok((None, pos));
    }
    match String::from_utf8(out) {
        Ok(s) => Ok((Some(Cow::Owned(s)), pos)),
        Err(_) => Err(syntax(
            "quoted value is not valid UTF-8 once unescaped",
            start,
        )),
    }
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xF0.. => 4,
        0xE0.. => 3,
        0xC0.. => 2,
        _ => 1,
    }
}

/// Up to four bytes an escape stands for.
struct Bytes4 {
    buf: [u8; 4],
    len: usize,
}

impl Bytes4 {
    fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }
    fn byte(b: u8) -> Self {
        Self {
            buf: [b, 0, 0, 0],
            len: 1,
        }
    }
}

/// The escape at `pos` (a backslash) inside a string quoted with `q`: what
/// it stands for and how many bytes it takes, by Go's rules.
fn escape(b: &[u8], pos: usize, q: u8) -> Result<(Bytes4, usize), LabelError> {
    let Some(&c) = b.get(pos + 1) else {
        return Err(syntax("escape sequence not terminated", pos));
    };
    let simple = |v: u8| Ok((Bytes4::byte(v), 2));
    let (digits, radix, max) = match c {
        b'a' => return simple(0x07),
        b'b' => return simple(0x08),
        b'f' => return simple(0x0c),
        b'n' => return simple(b'\n'),
        b'r' => return simple(b'\r'),
        b't' => return simple(b'\t'),
        b'v' => return simple(0x0b),
        b'\\' => return simple(b'\\'),
        c if c == q => return simple(q),
        b'0'..=b'7' => (3, 8, 255),
        b'x' => (2, 16, 255),
        b'u' => (4, 16, 0x10FFFF),
        b'U' => (8, 16, 0x10FFFF),
        other => {
            return Err(syntax(
                format!("unknown escape sequence '\\{}'", other as char),
                pos,
            ))
        }
    };
    let first = if radix == 8 { pos + 1 } else { pos + 2 };
    let Some(text) = b.get(first..first + digits) else {
        return Err(syntax("escape sequence not terminated", pos));
    };
    let mut value: u32 = 0;
    for &d in text {
        let Some(v) = (d as char).to_digit(radix) else {
            return Err(syntax("invalid digit in escape sequence", pos));
        };
        value = value * radix + v;
    }
    if value > max || (0xD800..0xE000).contains(&value) {
        return Err(syntax(
            "escape sequence is an invalid Unicode code point",
            pos,
        ));
    }
    let len = first + digits - pos;
    if max == 255 {
        // \x and octal escapes are single bytes.
        return Ok((Bytes4::byte(value as u8), len));
    }
    let ch = char::from_u32(value).ok_or_else(|| syntax("invalid code point", pos))?;
    let mut buf = [0u8; 4];
    let n = ch.encode_utf8(&mut buf).len();
    Ok((Bytes4 { buf, len: n }, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns() -> LabelQuery {
        LabelQuery::new(["namespace", "k8s_namespace_name"])
    }

    fn best(text: &str) -> Option<String> {
        scan(text, &ns(), 100)
            .unwrap()
            .best
            .map(|f| f.value.into_owned())
    }

    #[test]
    fn reads_the_forms_loki_accepts() {
        assert_eq!(best(r#"{namespace="a"}"#).as_deref(), Some("a"));
        assert_eq!(
            best("  {app=\"x\",\n\tnamespace = 'b' , }  ").as_deref(),
            Some("b")
        );
        assert_eq!(best("{namespace=`c\\n`}").as_deref(), Some("c\\n"));
        assert_eq!(best(r#"up{"namespace"="d"}"#).as_deref(), Some("d"));
        assert_eq!(best(r#"{app="x"}"#), None);
    }

    #[test]
    fn decodes_go_escapes() {
        assert_eq!(best(r#"{namespace="a\"b"}"#).as_deref(), Some("a\"b"));
        assert_eq!(
            best(r#"{namespace="\x61\142\u0063\U00000064"}"#).as_deref(),
            Some("abcd")
        );
        assert_eq!(best(r#"{namespace='it\'s'}"#).as_deref(), Some("it's"));
        assert_eq!(
            best(r#"{namespace="caf\u00e9 ü"}"#).as_deref(),
            Some("café ü")
        );
        // Borrowed when there is nothing to decode.
        let s = scan(r#"{namespace="plain"}"#, &ns(), 10).unwrap();
        assert!(matches!(s.best.unwrap().value, Cow::Borrowed("plain")));
    }

    #[test]
    fn refuses_what_loki_refuses() {
        for bad in [
            r#"namespace="a""#,
            r#"{namespace="a""#,
            r#"{namespace=~"a"}"#,
            r#"{namespace!="a"}"#,
            r#"{namespace="a"} x"#,
            r#"{namespace="a" app="b"}"#,
            r#"{namespace="a\q"}"#,
            r#"{namespace="a\'"}"#,
            r#"{namespace="\ud800"}"#,
            r#"{namespace="\xff"}"#,
            "{namespace=\"a\nb\"}",
            r#"{namespace=a}"#,
            r#"{9a="b"}"#,
            r#"{,}"#,
            r#"{namespace="a",,}"#,
        ] {
            assert!(scan(bad, &ns(), 10).is_err(), "accepted {bad:?}");
        }
        assert_eq!(scan("{}", &ns(), 10), Err(LabelError::Empty));
    }

    #[test]
    fn a_query_label_twice_is_refused_even_when_one_is_empty() {
        for dup in [
            r#"{namespace="a", namespace="b"}"#,
            r#"{namespace="a", namespace=""}"#,
            r#"{namespace="a", "namespace"="a"}"#,
        ] {
            assert!(
                matches!(scan(dup, &ns(), 10), Err(LabelError::Duplicate(_))),
                "{dup}"
            );
        }
        // Other labels may repeat (Loki decides about those).
        assert!(scan(r#"{a="1", a="2", namespace="n"}"#, &ns(), 10).is_ok());
    }

    #[test]
    fn empty_values_are_absent_and_ranks_decide() {
        assert_eq!(
            best(r#"{namespace="", k8s_namespace_name="b"}"#).as_deref(),
            Some("b")
        );
        assert_eq!(
            best(r#"{k8s_namespace_name="b", namespace="a"}"#).as_deref(),
            Some("a")
        );
    }

    #[test]
    fn counts_labels_against_the_limit() {
        assert_eq!(scan(r#"{a="1",b="2"}"#, &ns(), 2).unwrap().labels, 2);
        assert!(matches!(
            scan(r#"{a="1",b="2",c="3"}"#, &ns(), 2),
            Err(LabelError::TooMany { count: 3, limit: 2 })
        ));
    }

    #[test]
    fn without_leaves_a_valid_string() {
        for (text, want) in [
            (r#"{a="1", namespace="n", b="2"}"#, r#"{a="1", b="2"}"#),
            (r#"{namespace="n", b="2"}"#, r#"{b="2"}"#),
            (r#"{a="1", namespace="n"}"#, r#"{a="1"}"#),
            (r#"{a="1", namespace="n",}"#, r#"{a="1", }"#),
        ] {
            let s = scan(text, &ns(), 10).unwrap();
            let out = without(text, s.best.unwrap().span);
            assert_eq!(out, want);
            assert!(scan(&out, &ns(), 10).is_ok());
        }
    }
}
