//! Every resource that grows with input or time is bounded: each test drives
//! one resource to its limit (or an attacker's far past it) and checks the
//! answer the sender gets, that nothing leaks or is lost silently, and that
//! the server keeps serving others.

mod common;

use std::time::{Duration, Instant};

use common::*;

async fn setup(extra: &str) -> (tempfile::TempDir, Upstream, Orgsplit) {
    let dir = tempfile::tempdir().unwrap();
    write_table(dir.path(), TABLE);
    let upstream = Upstream::start().await;
    let cfg = format!(
        "{}{extra}",
        config(dir.path(), &upstream.url(), "  unmapped: drop")
    );
    let orgsplit = Orgsplit::start(dir.path(), &cfg).await;
    (dir, upstream, orgsplit)
}

fn two_tenants() -> orgsplit::wire::pb::WriteRequest {
    request(vec![
        series(&[("__name__", "a"), ("namespace", "shop-prod")], 1.0, 1),
        series(&[("__name__", "b"), ("namespace", "billing")], 2.0, 2),
    ])
}

#[tokio::test]
async fn a_huge_upstream_answer_is_read_only_as_far_as_the_message_needs() {
    let (_d, upstream, o) = setup("").await;
    // 400 MiB of error message: orgsplit must read a prefix and hang up.
    upstream.set("globex", Behaviour::HugeBody(500, 400 << 20));
    let started = Instant::now();
    let (status, _, body) = o.push(&two_tenants()).await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("globex"), "{body}");
    assert!(body.len() < 16 << 10, "message is a prefix: {} bytes", body.len());
    // A few socket buffers' worth at most, not the 400 MiB.
    let taken = upstream.streamed();
    assert!(taken < 32 << 20, "orgsplit read {taken} bytes of the answer");
    assert!(started.elapsed() < Duration::from_secs(5));

    // Same for a 2xx with a body nobody asked for: accepted, not drained.
    upstream.reset();
    upstream.set("globex", Behaviour::HugeBody(200, 400 << 20));
    let before = upstream.streamed();
    let (status, _, body) = o.push(&two_tenants()).await;
    assert_eq!(status, 204, "{body}");
    assert!(upstream.streamed() - before < 32 << 20);
    upstream.clear("globex");
    let (status, _, _) = o.push(&two_tenants()).await;
    assert_eq!(status, 204);
}
