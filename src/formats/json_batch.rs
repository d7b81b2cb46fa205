//! Merging the tenant batches of the JSON formats (Loki's JSON push,
//! OTLP/HTTP JSON) for the forwarder's coalescing.
//!
//! ```text
//!  {"streams":[a,b]}  {"streams":[c]}  ─► merge ─►  {"streams":[a,b,c]}
//! ```
//!
//! Each of these formats writes a tenant batch as one object holding one
//! array, `{"<key>":[item,item,…]}` (`Format::finish`), the items as the
//! sender wrote them. Two JSON documents one after the other are not one
//! document, but their items in one array are one push: [`merge`] is those
//! kinds' [`PushKind::merge`](super::PushKind::merge).
//!
//! Invariant: only batches orgsplit built reach [`merge`] (a sender's own
//! body that went whole is never merged), so anything else, or batches
//! under two keys, is refused, and the forwarder then sends them one by
//! one. The items are copied byte for byte: nothing is parsed again.

use crate::wire::WireError;

/// Merges tenant batches `{"<key>":[…]}` under one key into one,
/// their items one after the other.
pub fn merge(batches: &[&[u8]], out: &mut Vec<u8>) -> Result<(), WireError> {
    const CLOSE: &[u8] = b"]}";
    let not_ours = || WireError::Json("not a tenant batch orgsplit built".into());
    let open = batches
        .first()
        .and_then(|b| opening(b))
        .ok_or_else(not_ours)?;
    out.reserve(batches.iter().map(|b| b.len()).sum());
    out.extend_from_slice(open);
    let mut empty = true;
    for batch in batches {
        let items = batch
            .strip_prefix(open)
            .and_then(|b| b.strip_suffix(CLOSE))
            .ok_or_else(not_ours)?;
        if items.is_empty() {
            continue;
        }
        if !empty {
            out.push(b',');
        }
        out.extend_from_slice(items);
        empty = false;
    }
    out.extend_from_slice(CLOSE);
    Ok(())
}

/// The `{"<key>":[` a batch begins with (a key of ASCII letters).
fn opening(batch: &[u8]) -> Option<&[u8]> {
    let rest = batch.strip_prefix(b"{\"")?;
    let key = rest.iter().position(|&b| b == b'"')?;
    let valid = key > 0 && rest[..key].iter().all(u8::is_ascii_alphabetic);
    (valid && rest[key..].starts_with(b"\":[")).then(|| &batch[..2 + key + 3])
}

#[cfg(test)]
mod tests {
    use super::merge;

    fn merged(batches: &[&[u8]]) -> Result<String, String> {
        let mut out = Vec::new();
        merge(batches, &mut out).map_err(|e| e.to_string())?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn merged_batches_are_one_push_with_every_item_in_order() {
        let a =
            br#"{"streams":[{"stream":{"a":"1"},"values":[]},{"stream":{"b":"2"},"values":[]}]}"#;
        let b = br#"{"streams":[{"stream":{"c":"3"},"values":[]}]}"#;
        let empty = br#"{"streams":[]}"#;
        assert_eq!(
            merged(&[a, empty, b, empty]).unwrap(),
            r#"{"streams":[{"stream":{"a":"1"},"values":[]},{"stream":{"b":"2"},"values":[]},{"stream":{"c":"3"},"values":[]}]}"#
        );
        assert_eq!(merged(&[empty]).unwrap(), r#"{"streams":[]}"#);
        let logs = br#"{"resourceLogs":[{"resource":{},"scopeLogs":[]}]}"#;
        assert_eq!(
            merged(&[logs, logs]).unwrap(),
            r#"{"resourceLogs":[{"resource":{},"scopeLogs":[]},{"resource":{},"scopeLogs":[]}]}"#
        );
    }

    #[test]
    fn a_body_orgsplit_did_not_build_is_not_merged() {
        let ours = br#"{"streams":[{"stream":{"a":"1"},"values":[]}]}"#;
        for foreign in [
            &br#" {"streams":[{"stream":{"a":"1"},"values":[]}]}"#[..],
            br#"{"streams":[{"stream":{"a":"1"},"values":[]}]} "#,
            br#"{"streams": []}"#,
            br#"{"resourceLogs":[]}"#,
            b"",
        ] {
            assert!(merged(&[ours, foreign]).is_err(), "{foreign:?}");
            assert!(merged(&[foreign, ours]).is_err(), "{foreign:?}");
        }
        for odd in [&br#"{"":[]}"#[..], br#"{"a b":[]}"#, br#"{"a\"":[]}"#, b"{"] {
            assert!(merged(&[odd]).is_err(), "{odd:?}");
        }
        assert!(merged(&[]).is_err());
    }
}
