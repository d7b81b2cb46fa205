//! The file lookup follows edits and ConfigMap-style symlink swaps, and keeps
//! the last good table when an edit is broken.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

/// Pushes one `shop-prod` series until it lands in `want` (or times out),
/// returning how long that took.
async fn wait_for_tenant(orgsplit: &Orgsplit, upstream: &Upstream, want: &str) -> Duration {
    let started = Instant::now();
    loop {
        upstream.reset();
        let (status, _, body) = orgsplit
            .push(&request(vec![series(
                &[("__name__", "up"), ("namespace", "shop-prod")],
                1.0,
                1,
            )]))
            .await;
        assert_eq!(status, 204, "{body}");
        let got = upstream.series_by_tenant();
        if got.contains_key(want) {
            assert_eq!(
                got.len(),
                1,
                "series must land in exactly one tenant: {got:?}"
            );
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "routing never changed to {want}; got {:?}",
            got.keys()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn yaml(table: &Path, upstream: &str) -> String {
    format!(
        "listen: 127.0.0.1:0\nupstream: {{url: \"{upstream}\"}}\nrouting: {{unmapped: drop}}\nlookup: {{file: \"{}\"}}\n",
        table.display()
    )
}

#[tokio::test]
async fn edits_apply_and_broken_edits_keep_the_last_good_table() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table.yaml");
    std::fs::write(&table, "shop-prod: acme\n").unwrap();
    let upstream = Upstream::start().await;
    let orgsplit = Orgsplit::start(dir.path(), &yaml(&table, &upstream.url())).await;
    wait_for_tenant(&orgsplit, &upstream, "acme").await;

    std::fs::write(&table, "shop-prod: newco\n").unwrap();
    let took = wait_for_tenant(&orgsplit, &upstream, "newco").await;
    assert!(took < Duration::from_secs(3), "took {took:?}");

    std::fs::write(&table, "shop-prod: [this is: not a table\n").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    wait_for_tenant(&orgsplit, &upstream, "newco").await;
    let page = orgsplit.metrics().await;
    assert!(
        metric(&page, "orgsplit_table_sync_errors_total") >= 1.0,
        "{page}"
    );
}

#[tokio::test]
async fn configmap_symlink_swap_is_followed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The layout kubelet writes for a ConfigMap volume.
    std::fs::create_dir(d.join("..2026_11_23_a")).unwrap();
    std::fs::write(
        d.join("..2026_11_23_a/namespaces.yaml"),
        "shop-prod: acme\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("..2026_11_23_a", d.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/namespaces.yaml", d.join("namespaces.yaml")).unwrap();

    let upstream = Upstream::start().await;
    let cfg_dir = tempfile::tempdir().unwrap();
    let orgsplit = Orgsplit::start(
        cfg_dir.path(),
        &yaml(&d.join("namespaces.yaml"), &upstream.url()),
    )
    .await;
    wait_for_tenant(&orgsplit, &upstream, "acme").await;

    // kubelet's atomic update: new dir, new ..data_tmp link, rename over ..data
    std::fs::create_dir(d.join("..2026_11_23_b")).unwrap();
    std::fs::write(
        d.join("..2026_11_23_b/namespaces.yaml"),
        "shop-prod: globex\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("..2026_11_23_b", d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    std::fs::remove_dir_all(d.join("..2026_11_23_a")).unwrap();
    let took = wait_for_tenant(&orgsplit, &upstream, "globex").await;
    assert!(took < Duration::from_secs(3), "took {took:?}");
}
