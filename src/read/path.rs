//! The one path a read request is classified by and forwarded with.
//!
//! ```text
//!  request path ─► canonical: every segment decoded (repeatedly) and checked
//!                   ├─ `.` / `..` (raw, %2e in any case, `..;x`) ─► 404 dot_segment
//!                   ├─ `%2f` `%5c` `\` (at any decoding depth)   ─► 404 encoded_separator
//!                   ├─ `//` (an empty segment)                   ─► 404 empty_segment
//!                   ├─ NUL or another control byte               ─► 404 control_byte
//!                   └─ escapes that decode to invalid UTF-8      ─► 404 bad_encoding
//!               ─► the same, unchanged text: classified, then forwarded as it is
//! ```
//!
//! Invariant: the path an upstream receives is byte for byte the path that
//! was classified, and no server or proxy in front of the upstream can read
//! it as another path: decoding it (once or several times) or normalising
//! it (resolving dot segments, merging slashes, turning `\` into `/`) gives
//! the same segments. So a route that is forwarded whole (`/alertmanager/…`,
//! the ruler's configuration API) cannot be walked out of into an
//! upstream's admin endpoints, whatever sits between orgsplit and it.
//!
//! A single trailing slash is kept (`/alertmanager/` is Alertmanager's UI);
//! an empty segment anywhere else is refused. The query string is not part
//! of the path: it is forwarded after the `?` and cannot move the path.
//!
//! Pure text handling; no HTTP types.

/// Why a path was refused (the `reason` label of
/// `orgsplit_read_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathRefusal {
    /// A `.` or `..` segment, raw or percent-encoded.
    DotSegment,
    /// An encoded slash or backslash, or a raw backslash.
    EncodedSeparator,
    /// `//` inside the path.
    EmptySegment,
    /// NUL or another control byte, raw or encoded.
    ControlByte,
    /// Percent escapes that decode to bytes that are not UTF-8 (overlong
    /// forms of `.` and `/` among them).
    BadEncoding,
    /// A canonical path that is not a read route.
    NotARoute,
}

impl PathRefusal {
    /// Every reason, for the metric's label set.
    pub const ALL: [PathRefusal; 6] = [
        PathRefusal::DotSegment,
        PathRefusal::EncodedSeparator,
        PathRefusal::EmptySegment,
        PathRefusal::ControlByte,
        PathRefusal::BadEncoding,
        PathRefusal::NotARoute,
    ];

    /// Metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            PathRefusal::DotSegment => "dot_segment",
            PathRefusal::EncodedSeparator => "encoded_separator",
            PathRefusal::EmptySegment => "empty_segment",
            PathRefusal::ControlByte => "control_byte",
            PathRefusal::BadEncoding => "bad_encoding",
            PathRefusal::NotARoute => "not_a_route",
        }
    }
}

/// How many times a segment is percent-decoded at most while checking it:
/// enough for any chain of proxies that each decode once more.
const MAX_DECODINGS: usize = 4;

/// `path` itself if it may be classified and forwarded, or why not.
pub fn canonical(path: &str) -> Result<&str, PathRefusal> {
    let Some(rest) = path.strip_prefix('/') else {
        // `*` (OPTIONS) and the like: no read route.
        return Err(PathRefusal::NotARoute);
    };
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        if segment.is_empty() {
            // "/" itself, and one trailing slash, are not empty segments
            // that a normaliser would merge away.
            if segments.peek().is_none() {
                continue;
            }
            return Err(PathRefusal::EmptySegment);
        }
        check_segment(segment.as_bytes())?;
    }
    Ok(path)
}

/// Checks one segment as it is and after each round of percent-decoding.
fn check_segment(raw: &[u8]) -> Result<(), PathRefusal> {
    let mut current = std::borrow::Cow::Borrowed(raw);
    for round in 0..=MAX_DECODINGS {
        check_bytes(&current, round > 0)?;
        if !current.contains(&b'%') {
            return Ok(());
        }
        let decoded = percent_decode(&current);
        if decoded == *current {
            return Ok(());
        }
        if std::str::from_utf8(&decoded).is_err() {
            return Err(PathRefusal::BadEncoding);
        }
        current = std::borrow::Cow::Owned(decoded);
    }
    // Still decoding after that many rounds: nobody writes that by accident.
    Err(PathRefusal::BadEncoding)
}

/// The checks every form of a segment must pass. `decoded`: a `/` in it
/// came from an escape.
fn check_bytes(segment: &[u8], decoded: bool) -> Result<(), PathRefusal> {
    for &b in segment {
        match b {
            b'\\' => return Err(PathRefusal::EncodedSeparator),
            b'/' if decoded => return Err(PathRefusal::EncodedSeparator),
            0..=0x1f | 0x7f => return Err(PathRefusal::ControlByte),
            _ => {}
        }
    }
    // `..;x` is `..` to servers that take `;` as starting path parameters.
    let name = segment.split(|&b| b == b';').next().unwrap_or(segment);
    if matches!(name, b"." | b"..") {
        return Err(PathRefusal::DotSegment);
    }
    Ok(())
}

/// One round of percent-decoding; a `%` not followed by two hex digits is
/// kept as it is.
fn percent_decode(input: &[u8]) -> Vec<u8> {
    let hex = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    };
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' && i + 2 < input.len() {
            if let (Some(h), Some(l)) = (hex(input[i + 1]), hex(input[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_paths_pass_unchanged() {
        for path in [
            "/",
            "/prometheus/api/v1/query",
            "/alertmanager/",
            "/alertmanager/api/v2/silences",
            "/prometheus/config/v1/rules/my%20namespace/group-1",
            "/prometheus/api/v1/label/job/values",
            "/loki/api/v1/label/app/values",
            "/alertmanager/api/v2/silence/2c1d.7e",
            "/a/.../b",
            "/a/.hidden",
            "/a/x..",
            "/a/%41%42",
            "/a/100%",
            "/a/%zz",
            "/a/caf%C3%A9",
        ] {
            assert_eq!(canonical(path), Ok(path), "{path}");
        }
    }

    #[test]
    fn every_way_to_leave_a_prefix_is_refused() {
        use PathRefusal::*;
        let cases = [
            ("/alertmanager/../distributor/all_user_stats", DotSegment),
            ("/alertmanager/%2e%2e/ingester/flush", DotSegment),
            ("/alertmanager/%2E%2E/%2E%2E/distributor", DotSegment),
            ("/alertmanager/.%2e/x", DotSegment),
            ("/alertmanager/%2e./x", DotSegment),
            ("/alertmanager/%2e/x", DotSegment),
            ("/alertmanager/./x", DotSegment),
            ("/alertmanager/..", DotSegment),
            ("/alertmanager/%252e%252e/x", DotSegment),
            ("/alertmanager/%25252E%25252E/x", DotSegment),
            ("/alertmanager/..;/x", DotSegment),
            ("/alertmanager/%2e%2e;a=b/x", DotSegment),
            (
                "/prometheus/config/v1/rules/../../../../distributor",
                DotSegment,
            ),
            ("/alertmanager/a%2f..%2fdistributor", EncodedSeparator),
            ("/alertmanager/a%2F..", EncodedSeparator),
            ("/alertmanager/a%5c..%5cb", EncodedSeparator),
            ("/alertmanager/a%5C", EncodedSeparator),
            ("/alertmanager/a%252fb", EncodedSeparator),
            ("/alertmanager/..\\x", EncodedSeparator),
            ("/alertmanager//distributor", EmptySegment),
            ("//alertmanager/x", EmptySegment),
            ("/alertmanager/x//", EmptySegment),
            ("/alertmanager/a%00", ControlByte),
            ("/alertmanager/a%0a", ControlByte),
            ("/alertmanager/a%2500", ControlByte),
            ("/alertmanager/%c0%ae%c0%ae/x", BadEncoding),
            ("/alertmanager/%e0%80%ae/x", BadEncoding),
            ("*", NotARoute),
        ];
        for (path, why) in cases {
            assert_eq!(canonical(path), Err(why), "{path}");
        }
    }

    #[test]
    fn decoding_keeps_a_lone_percent() {
        assert_eq!(percent_decode(b"%"), b"%");
        assert_eq!(percent_decode(b"%4"), b"%4");
        assert_eq!(percent_decode(b"a%41"), b"aA");
        assert_eq!(percent_decode(b"%%41"), b"%A");
    }
}
