//! Operating orgsplit: upstream auth and TLS, ingress TLS, backpressure,
//! metrics after known traffic.

use crate::common;

use std::time::Duration;

use common::tls::Pki;
use common::*;

fn mixed() -> orgsplit::formats::rw1::pb::WriteRequest {
    request(vec![
        series(&[("__name__", "a"), ("namespace", "shop-prod")], 1.0, 1),
        series(&[("__name__", "b"), ("namespace", "billing")], 2.0, 2),
    ])
}

fn yaml(dir: &std::path::Path, url: &str, upstream_extra: &str, extra: &str) -> String {
    write_table(dir, TABLE);
    format!(
        "listen: 127.0.0.1:0
upstream:
  url: {url}
  timeout: 2s
{upstream_extra}
routing: {{unmapped: drop}}
lookup: {{file: \"{}\"}}
{extra}",
        dir.join("table.yaml").display()
    )
}

#[tokio::test]
async fn bearer_token_is_sent_and_re_read_when_rotated() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "first-token\n").unwrap();
    let upstream = Upstream::start().await;
    let orgsplit = Orgsplit::start(
        dir.path(),
        &yaml(
            dir.path(),
            &upstream.url(),
            &format!("  bearer_token_file: \"{}\"", token.display()),
            "",
        ),
    )
    .await;
    assert_eq!(orgsplit.push(&mixed()).await.0, 204);
    for r in upstream.received() {
        assert_eq!(r.headers["authorization"], "Bearer first-token");
    }
    std::fs::write(&token, "second-token\n").unwrap();
    let started = std::time::Instant::now();
    loop {
        upstream.reset();
        assert_eq!(orgsplit.push(&mixed()).await.0, 204);
        if upstream.received()[0].headers["authorization"] == "Bearer second-token" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(12),
            "token never rotated"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn basic_auth_password_from_file() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "hunter2\n").unwrap();
    let upstream = Upstream::start().await;
    let orgsplit = Orgsplit::start(
        dir.path(),
        &yaml(
            dir.path(),
            &upstream.url(),
            &format!(
                "  basic_auth: {{username: orgsplit, password_file: \"{}\"}}",
                pw.display()
            ),
            "",
        ),
    )
    .await;
    assert_eq!(orgsplit.push(&mixed()).await.0, 204);
    use base64::Engine;
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("orgsplit:hunter2")
    );
    assert_eq!(upstream.received().len(), 2);
    for r in upstream.received() {
        assert_eq!(r.headers["authorization"], want.as_str());
    }
}

#[tokio::test]
async fn upstream_tls_with_a_custom_ca_and_client_certificates() {
    let pki = Pki::new();
    let server = pki.leaf(&["localhost", "127.0.0.1"], false);
    let client = pki.leaf(&["orgsplit"], true);
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let ca = write("ca.pem", &pki.ca_pem);
    let cert = write("client.pem", &client.cert_pem);
    let key = write("client.key", &client.key_pem);

    // Server-authenticated TLS with our CA.
    let upstream = Upstream::start_tls(&server, None).await;
    let url = format!("https://localhost:{}/api/v1/push", upstream.addr.port());
    let o = Orgsplit::start(
        dir.path(),
        &yaml(
            dir.path(),
            &url,
            &format!("  tls: {{ca_file: \"{ca}\"}}"),
            "",
        ),
    )
    .await;
    let (status, _, body) = o.push(&mixed()).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(upstream.series_by_tenant().len(), 2);

    // Without the CA the certificate is not trusted: retryable, named.
    let o = Orgsplit::start(dir.path(), &yaml(dir.path(), &url, "", "")).await;
    let (status, _, body) = o.push(&mixed()).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("certificate"), "{body}");

    // insecure_skip_verify connects anyway.
    let o = Orgsplit::start(
        dir.path(),
        &yaml(dir.path(), &url, "  tls: {insecure_skip_verify: true}", ""),
    )
    .await;
    assert_eq!(o.push(&mixed()).await.0, 204);

    // mTLS: the upstream requires a client certificate.
    let mtls = Upstream::start_tls(&server, Some(&pki.ca_pem)).await;
    let url = format!("https://localhost:{}/api/v1/push", mtls.addr.port());
    let without = Orgsplit::start(
        dir.path(),
        &yaml(
            dir.path(),
            &url,
            &format!("  tls: {{ca_file: \"{ca}\"}}"),
            "",
        ),
    )
    .await;
    assert_eq!(without.push(&mixed()).await.0, 502);
    assert!(mtls.received().is_empty());
    let with = Orgsplit::start(
        dir.path(),
        &yaml(
            dir.path(),
            &url,
            &format!("  tls: {{ca_file: \"{ca}\", cert_file: \"{cert}\", key_file: \"{key}\"}}"),
            "",
        ),
    )
    .await;
    let (status, _, body) = with.push(&mixed()).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(mtls.series_by_tenant().len(), 2);
}

#[tokio::test]
async fn ingress_tls() {
    let pki = Pki::new();
    let server = pki.leaf(&["localhost"], false);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tls.crt"), &server.cert_pem).unwrap();
    std::fs::write(dir.path().join("tls.key"), &server.key_pem).unwrap();
    let upstream = Upstream::start().await;
    let o = Orgsplit::start(
        dir.path(),
        &yaml(
            dir.path(),
            &upstream.url(),
            "",
            &format!(
                "tls: {{cert_file: \"{}\", key_file: \"{}\"}}",
                dir.path().join("tls.crt").display(),
                dir.path().join("tls.key").display()
            ),
        ),
    )
    .await;
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/api/v1/push", o.addr.port());
    let r = client
        .post(&url)
        .header("Content-Encoding", "snappy")
        .body(orgsplit::testing::compress(&mixed()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(upstream.series_by_tenant().len(), 2);
    // plain HTTP to the TLS port does not get through
    assert!(common::client()
        .post(o.url("/api/v1/push"))
        .body(orgsplit::testing::compress(&mixed()))
        .send()
        .await
        .is_err());
}

#[tokio::test]
async fn beyond_the_inflight_limit_senders_are_told_to_retry() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start().await;
    upstream.set("acme", Behaviour::Delay(Duration::from_millis(700)));
    let o = Orgsplit::start(
        dir.path(),
        &yaml(
            dir.path(),
            &upstream.url(),
            "",
            "limits: {max_inflight_requests: 2}",
        ),
    )
    .await;
    let req = mixed();
    let pushes = (0..8).map(|_| o.push(&req));
    let results = futures::future::join_all(pushes).await;
    let ok = results.iter().filter(|r| r.0 == 204).count();
    let overloaded: Vec<_> = results.iter().filter(|r| r.0 == 503).collect();
    assert_eq!(ok, 2, "{results:?}");
    assert_eq!(overloaded.len(), 6, "{results:?}");
    for (_, headers, body) in overloaded {
        assert_eq!(headers["retry-after"], "1");
        assert!(body.contains("overloaded"), "{body}");
    }
    let page = o.metrics().await;
    assert_eq!(
        metric(
            &page,
            "orgsplit_requests_overloaded_total{limit=\"requests\"}"
        ),
        6.0
    );
    // and once the load is gone, pushes go through again
    upstream.clear("acme");
    assert_eq!(o.push(&mixed()).await.0, 204);
}

#[tokio::test]
async fn the_byte_budget_bounds_decoded_data_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start().await;
    upstream.set("acme", Behaviour::Delay(Duration::from_millis(700)));
    let mut big = orgsplit::testing::request(&orgsplit::testing::Shape {
        series: 2000,
        namespaces: 1,
        ..Default::default()
    });
    orgsplit::testing::set_namespace(&mut big, "shop-prod");
    // A request being split holds three times its decoded size (clamped to
    // the whole budget); the budget fits one at a time.
    let len = {
        use prost::Message;
        big.encode_to_vec().len()
    };
    let max_decoded = len + len / 5;
    let o = Orgsplit::start(
        dir.path(),
        &yaml(
            dir.path(),
            &upstream.url(),
            "",
            &format!(
                "limits: {{max_decoded_bytes: {max_decoded}, max_inflight_bytes: {}, overload_status: 429}}",
                2 * max_decoded
            ),
        ),
    )
    .await;
    let results = futures::future::join_all((0..4).map(|_| o.push(&big))).await;
    let statuses: Vec<u16> = results.iter().map(|r| r.0).collect();
    assert_eq!(
        statuses.iter().filter(|&&s| s == 204).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 429).count(),
        3,
        "{statuses:?}"
    );
    let page = o.metrics().await;
    assert_eq!(
        metric(&page, "orgsplit_requests_overloaded_total{limit=\"bytes\"}"),
        3.0
    );
}

#[tokio::test]
async fn metrics_count_known_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start().await;
    let o = Orgsplit::start(
        dir.path(),
        &yaml(
            dir.path(),
            &upstream.url(),
            "",
            "metrics: {per_tenant: true}",
        ),
    )
    .await;
    let mut req = orgsplit::testing::request(&orgsplit::testing::Shape {
        series: 30,
        namespaces: 1,
        histogram_every: 3,
        exemplar_every: 5,
        ..Default::default()
    });
    orgsplit::testing::set_namespace(&mut req, "billing");
    req.timeseries.push(series(
        &[("__name__", "x"), ("namespace", "nowhere")],
        1.0,
        1,
    ));
    assert_eq!(o.push(&req).await.0, 204);
    upstream.set("globex", Behaviour::Status(500, None, "down"));
    assert_eq!(o.push(&req).await.0, 500);

    let page = o.metrics().await;
    let m = |name: &str| metric(&page, name);
    assert_eq!(m("orgsplit_received_series_total"), 62.0);
    assert_eq!(m("orgsplit_received_samples_total"), 42.0);
    assert_eq!(m("orgsplit_received_histograms_total"), 20.0);
    assert_eq!(m("orgsplit_received_exemplars_total"), 12.0);
    // only the first push was accepted
    assert_eq!(m("orgsplit_forwarded_series_total"), 30.0);
    assert_eq!(m("orgsplit_forwarded_samples_total"), 20.0);
    assert_eq!(m("orgsplit_forwarded_histograms_total"), 10.0);
    assert_eq!(m("orgsplit_forwarded_exemplars_total"), 6.0);
    assert_eq!(
        m("orgsplit_series_dropped_total{reason=\"no_organization\"}"),
        2.0
    );
    assert_eq!(m("orgsplit_upstream_requests_total{status=\"2xx\"}"), 1.0);
    assert_eq!(m("orgsplit_upstream_requests_total{status=\"5xx\"}"), 1.0);
    assert_eq!(m("orgsplit_requests_total{code=\"204\"}"), 1.0);
    assert_eq!(m("orgsplit_requests_total{code=\"500\"}"), 1.0);
    assert_eq!(m("orgsplit_tenant_series_total{tenant=\"globex\"}"), 30.0);
    assert_eq!(m("orgsplit_table_namespaces"), 4.0);
    assert!(page.contains("orgsplit_request_duration_seconds_bucket"));
    assert!(page.contains("orgsplit_upstream_request_duration_seconds_bucket"));
    assert!(page.contains("orgsplit_inflight_requests"));
}

#[tokio::test]
async fn a_separate_metrics_listener_serves_metrics_and_health_only() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    write_table(dir.path(), TABLE);
    let cfg = yaml(
        dir.path(),
        &upstream.url(),
        "",
        &format!("metrics_listen: 127.0.0.1:{port}"),
    );
    std::fs::write(dir.path().join("c.yaml"), cfg).unwrap();
    let mut config =
        orgsplit::config::Config::load(Some(&dir.path().join("c.yaml")), &Default::default())
            .unwrap();
    config.listen = "127.0.0.1:0".parse().unwrap();
    let server = orgsplit::server::Server::bind(&config).await.unwrap();
    tokio::spawn(server.serve(std::future::pending()));
    let base = format!("http://127.0.0.1:{port}");
    let get = |path: &str| client().get(format!("{base}{path}")).send();
    assert_eq!(get("/metrics").await.unwrap().status().as_u16(), 200);
    assert_eq!(get("/readyz").await.unwrap().status().as_u16(), 200);
    let push = client()
        .post(format!("{base}/api/v1/push"))
        .body(orgsplit::testing::compress(&mixed()))
        .send()
        .await
        .unwrap();
    assert_eq!(push.status().as_u16(), 404, "no pushes on the metrics port");
}
