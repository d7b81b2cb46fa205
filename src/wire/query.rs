//! Picking a few labels out of an item without decoding it: the names a
//! walk looks for ([`LabelQuery`]), what it found ([`Hit`]), and the byte
//! comparisons the walks of every format share.

/// Label names the walk should pick out of each series, in priority order.
///
/// The walk reports the value of the earliest-listed name that the series
/// carries; for a name that appears more than once on one series, its first
/// occurrence wins.
#[derive(Debug, Clone, Default)]
pub struct LabelQuery {
    names: Vec<Box<[u8]>>,
}

impl LabelQuery {
    pub fn new<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self {
            names: names
                .into_iter()
                .map(|n| n.as_ref().as_bytes().into())
                .collect(),
        }
    }

    #[inline(always)]
    pub(crate) fn rank(&self, name: &[u8]) -> Option<usize> {
        self.names.iter().position(|n| same(n, name))
    }
}

/// Slice equality that rejects most unequal short strings (label names,
/// namespaces) on length and first and last byte, before calling memcmp.
#[inline(always)]
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && match (a.first(), b.first(), a.last(), b.last()) {
            (Some(a0), Some(b0), Some(a1), Some(b1)) => a0 == b0 && a1 == b1 && a == b,
            _ => true, // both empty
        }
}

/// One label that matched a [`LabelQuery`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit<'a> {
    /// Index into the query's names.
    pub rank: usize,
    /// The label's value (valid UTF-8).
    pub value: &'a str,
    /// Byte range of the whole label field (key, length, body) within the
    /// series body, so it can be left out when the series is re-encoded.
    pub field: (usize, usize),
}
/// Whether `bytes` is all ASCII. An OR over the bytes, which the compiler
/// vectorizes; for the short strings of labels it is about twice as fast as
/// `<[u8]>::is_ascii`, whose setup dominates below a few dozen bytes.
#[inline(always)]
pub(crate) fn all_ascii(bytes: &[u8]) -> bool {
    or_bytes(bytes) < 0x80
}

/// The OR of all of `bytes` (vectorized by the compiler).
#[inline(always)]
pub(crate) fn or_bytes(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |acc, &b| acc | b)
}
