//! The file lookup follows edits and ConfigMap-style symlink swaps, and keeps
//! the last good table when an edit is broken.

use crate::common;

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

/// orgsplit over a table file holding `text`; returns the file's path.
async fn start_with(text: &str) -> (tempfile::TempDir, std::path::PathBuf, Upstream, Orgsplit) {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table.yaml");
    std::fs::write(&table, text).unwrap();
    let upstream = Upstream::start().await;
    let orgsplit = Orgsplit::start(dir.path(), &yaml(&table, &upstream.url())).await;
    (dir, table, upstream, orgsplit)
}

#[tokio::test]
async fn edits_apply_and_broken_edits_keep_the_last_good_table() {
    let (_dir, table, upstream, orgsplit) = start_with("shop-prod: acme\n").await;
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

/// Pushes one series per namespace and returns namespace → tenants it reached.
async fn route_each(
    orgsplit: &Orgsplit,
    upstream: &Upstream,
    namespaces: &[&str],
) -> std::collections::BTreeMap<String, Vec<String>> {
    upstream.reset();
    let all = namespaces
        .iter()
        .map(|ns| series(&[("__name__", "up"), ("namespace", ns)], 1.0, 1))
        .collect();
    let (status, _, body) = orgsplit.push(&request(all)).await;
    assert_eq!(status, 204, "{body}");
    let mut out: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (tenant, series) in upstream.series_by_tenant() {
        for s in series {
            out.entry(label_of(&s, "namespace").unwrap().to_string())
                .or_default()
                .push(tenant.clone());
        }
    }
    out
}

#[tokio::test]
async fn table_keys_and_values_are_the_literal_text() {
    // A YAML 1.1/1.2 reader makes 0x1f the number 31 (overwriting the real
    // namespace 31) and the organization 0x1F the tenant "31".
    let (_dir, _table, upstream, orgsplit) =
        start_with("31: acme\n0x1f: globex\n1e3: 0x1F\n'017': \"1e3\"\ntrue: no\nnull: ~ok\n")
            .await;
    let got = route_each(
        &orgsplit,
        &upstream,
        &["31", "0x1f", "1e3", "017", "true", "null", "1000", "15"],
    )
    .await;
    let want: std::collections::BTreeMap<String, Vec<String>> = [
        ("31", "acme"),
        ("0x1f", "globex"),
        ("1e3", "0x1F"),
        ("017", "1e3"),
        ("true", "no"),
    ]
    .into_iter()
    .map(|(ns, t)| (ns.to_string(), vec![t.to_string()]))
    .collect();
    // "null" maps to "~ok", which is not a tenant ID: unmapped and dropped;
    // "1000" and "15" are in no table.
    assert_eq!(got, want);
    let page = orgsplit.metrics().await;
    assert_eq!(
        metric(
            &page,
            "orgsplit_series_dropped_total{reason=\"invalid_tenant\""
        ),
        1.0
    );
    assert_eq!(
        metric(
            &page,
            "orgsplit_series_dropped_total{reason=\"no_organization\""
        ),
        2.0
    );
}

#[tokio::test]
async fn an_empty_file_is_a_truncated_write_not_an_empty_table() {
    let (_dir, table, upstream, orgsplit) = start_with("shop-prod: acme\n").await;
    wait_for_tenant(&orgsplit, &upstream, "acme").await;

    for (i, broken) in ["", "  \n\n", "# truncated\n"].into_iter().enumerate() {
        std::fs::write(&table, broken).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let page = orgsplit.metrics().await;
            if metric(&page, "orgsplit_table_sync_errors_total") > i as f64 {
                assert_eq!(metric(&page, "orgsplit_table_source_up"), 0.0, "{page}");
                break;
            }
            assert!(Instant::now() < deadline, "{broken:?} not counted: {page}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        wait_for_tenant(&orgsplit, &upstream, "acme").await;
    }

    // `{}` is the explicit empty table: shop-prod becomes unmapped (dropped).
    std::fs::write(&table, "{}\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = route_each(&orgsplit, &upstream, &["shop-prod"]).await;
        if got.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "{{}} never applied: {got:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let page = orgsplit.metrics().await;
    assert_eq!(metric(&page, "orgsplit_table_source_up"), 1.0, "{page}");
    assert_eq!(metric(&page, "orgsplit_table_namespaces"), 0.0, "{page}");
}
