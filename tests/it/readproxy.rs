//! The read path over real HTTP: a recording upstream that keeps every
//! header it sees, tokens from orgsplit's commands and PyJWT; which tenant
//! each route's upstream saw, what the client heard, streaming and a
//! WebSocket tail.

use crate::common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::IntoResponse;
use common::*;
use futures::{SinkExt, StreamExt};
use orgsplit::cli::keys as cli;

/// What the recording upstream saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    uri: String,
    headers: HeaderMap,
}

/// An upstream for every read route: records each request, answers with a
/// JSON body naming the tenant it saw; `?slow=1` streams its answer in two
/// parts two seconds apart, `?hang=1` answers after five seconds;
/// `/loki/api/v1/tail` echoes WebSocket messages.
async fn recorder() -> (std::net::SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let log = seen.clone();
    let app = axum::Router::new()
        .route(
            "/loki/api/v1/tail",
            axum::routing::get(|ws: WebSocketUpgrade, headers: HeaderMap| async move {
                let tenant = headers
                    .get("x-scope-orgid")
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default();
                ws.on_upgrade(move |mut socket| async move {
                    let _ = socket.send(Message::text(format!("tenant {tenant}"))).await;
                    while let Some(Ok(Message::Text(t))) = socket.recv().await {
                        let _ = socket.send(Message::text(format!("echo {t}"))).await;
                    }
                })
            }),
        )
        .fallback(move |method: Method, uri: Uri, headers: HeaderMap| {
            let log = log.clone();
            async move {
                let tenant = headers
                    .get("x-scope-orgid")
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default();
                log.lock().unwrap().push(Seen {
                    method,
                    uri: uri.to_string(),
                    headers,
                });
                if uri.query().is_some_and(|q| q.contains("hang=1")) {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                if uri.query().is_some_and(|q| q.contains("slow=1")) {
                    let stream = futures::stream::iter(0..2).then(|i| async move {
                        if i == 1 {
                            tokio::time::sleep(Duration::from_secs(2)).await;
                        }
                        Ok::<_, std::io::Error>(format!("part{i};"))
                    });
                    return axum::body::Body::from_stream(stream).into_response();
                }
                (
                    [("content-type", "application/json"), ("x-upstream", "yes")],
                    format!("{{\"status\":\"success\",\"tenant\":\"{tenant}\"}}"),
                )
                    .into_response()
            }
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, seen)
}

/// orgsplit with an HS256 secret, every read route at the recorder.
async fn start(dir: &Path, upstream: std::net::SocketAddr, read: &str) -> Orgsplit {
    write_table(dir, TABLE);
    std::fs::write(dir.join("secret"), "read-secret").unwrap();
    let cfg = format!(
        "{}auth:\n  jwt:\n    hs256_secret_file: {}\nread:\n  loki: http://{upstream}\n{read}",
        config(
            dir,
            &format!("http://{upstream}/api/v1/push"),
            "  unmapped: drop"
        ),
        dir.join("secret").display()
    );
    Orgsplit::start(dir, &cfg).await
}

fn token(dir: &Path, orgs: &[&str], read: &[&str], rules: bool) -> String {
    let (tenant, organizations) = match orgs {
        [one] => (Some(*one), vec![]),
        many => (None, many.iter().map(|s| s.to_string()).collect()),
    };
    let secret = dir.join("secret");
    cli::token(&cli::TokenRequest {
        hs_secret_file: Some(&secret),
        tenant,
        organizations,
        read_organizations: read.iter().map(|s| s.to_string()).collect(),
        rules,
        ..cli::TokenRequest::for_tenant("")
    })
    .unwrap()
}

async fn get(
    o: &Orgsplit,
    method: Method,
    path: &str,
    token: Option<&str>,
    tenant: Option<&str>,
) -> (u16, HeaderMap, String) {
    let mut r = client()
        .request(method, o.url(path))
        .header("Cookie", "grafana_session=secret");
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(t) = tenant {
        r = r.header("X-Scope-OrgID", t);
    }
    let r = r.send().await.unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    (status, headers, r.text().await.unwrap())
}

#[tokio::test]
async fn every_route_gets_the_tenant_of_the_credential() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, seen) = recorder().await;
    let o = start(dir.path(), addr, "").await;
    let acme = token(dir.path(), &["acme"], &[], false);
    for path in [
        "/prometheus/api/v1/query?query=up",
        "/prometheus/api/v1/query_range?query=up&start=1&end=2&step=1",
        "/prometheus/api/v1/labels",
        "/prometheus/api/v1/label/job/values",
        "/prometheus/api/v1/series?match[]=up",
        "/prometheus/api/v1/metadata",
        "/prometheus/api/v1/status/buildinfo",
        "/prometheus/api/v1/rules",
        "/prometheus/api/v1/alerts",
        "/prometheus/config/v1/rules",
        "/alertmanager/api/v2/status",
        "/api/v1/alerts",
        "/loki/api/v1/query_range?query=%7Bjob%3D%22x%22%7D",
        "/loki/api/v1/labels",
    ] {
        seen.lock().unwrap().clear();
        // The client names another tenant and sends a cookie: neither
        // reaches the upstream.
        let (status, headers, body) = get(&o, Method::GET, path, Some(&acme), Some("globex")).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(
            body, "{\"status\":\"success\",\"tenant\":\"acme\"}",
            "{path}"
        );
        assert_eq!(headers.get("x-upstream").unwrap(), "yes", "{path}");
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1, "{path}");
        let s = &seen[0];
        assert_eq!(s.uri, path, "path and query pass unchanged");
        let tenants: Vec<_> = s.headers.get_all("x-scope-orgid").iter().collect();
        assert_eq!(tenants, ["acme"], "{path}");
        assert!(
            s.headers.get("authorization").is_none(),
            "{path}: client token leaked"
        );
        assert!(s.headers.get("cookie").is_none(), "{path}: cookie leaked");
    }
    // POST queries (Grafana's default) pass their form body.
    let r = client()
        .post(o.url("/prometheus/api/v1/query"))
        .bearer_auth(&acme)
        .form(&[("query", "up")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(seen.lock().unwrap().last().unwrap().method, Method::POST);

    // Not a read route: 404, never proxied.
    seen.lock().unwrap().clear();
    for (method, path) in [
        (Method::GET, "/prometheus/api/v1/admin/tsdb/snapshot"),
        (Method::POST, "/prometheus/api/v1/admin/tsdb/delete_series"),
        (Method::GET, "/api/v1/status/config"),
        (Method::GET, "/distributor/all_user_stats"),
        (Method::DELETE, "/prometheus/api/v1/query"),
        (Method::GET, "/"),
    ] {
        let (status, _, _) = get(&o, method.clone(), path, Some(&acme), None).await;
        assert_eq!(status, 404, "{method} {path}");
    }
    assert!(seen.lock().unwrap().is_empty());

    // No credential: 401 asking for one (anonymous may write, not read).
    let (status, headers, _) = get(
        &o,
        Method::GET,
        "/prometheus/api/v1/query?query=up",
        None,
        Some("acme"),
    )
    .await;
    assert_eq!(status, 401);
    assert!(headers.get("www-authenticate").is_some());
    let (status, _, _) = get(
        &o,
        Method::GET,
        "/prometheus/api/v1/query?query=up",
        Some("nonsense"),
        None,
    )
    .await;
    assert_eq!(status, 401);
    assert!(seen.lock().unwrap().is_empty());

    let page = o.metrics().await;
    assert_eq!(
        metric(
            &page,
            "orgsplit_read_requests_total{route=\"query\",code=\"200\""
        ),
        8.0
    );
    assert_eq!(
        metric(
            &page,
            "orgsplit_read_requests_total{route=\"query\",code=\"401\""
        ),
        2.0
    );
}

#[tokio::test]
async fn a_principal_of_several_organizations_names_one_it_may_read() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, seen) = recorder().await;
    let o = start(dir.path(), addr, "").await;
    // Writes acme only, reads acme and globex (PyJWT-free: orgsplit's CLI).
    let t = token(dir.path(), &["acme"], &["acme", "globex"], false);
    let q = "/prometheus/api/v1/query?query=up";
    let (status, _, body) = get(&o, Method::GET, q, Some(&t), Some("globex")).await;
    assert_eq!(
        (status, body.contains("\"tenant\":\"globex\"")),
        (200, true),
        "{body}"
    );
    let (status, _, body) = get(&o, Method::GET, q, Some(&t), Some("initech")).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("initech"), "{body}");
    let (status, _, _) = get(&o, Method::GET, q, Some(&t), None).await;
    assert_eq!(status, 400);
    let (status, _, body) = get(&o, Method::GET, q, Some(&t), Some("acme|globex")).await;
    assert_eq!(status, 403, "federation is off: {body}");
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "only the allowed query went through"
    );

    // With read.federation, a|b passes when every member is allowed.
    let dir2 = tempfile::tempdir().unwrap();
    let o2 = start(dir2.path(), addr, "  federation: true\n").await;
    let t2 = token(dir2.path(), &["acme"], &["acme", "globex"], false);
    seen.lock().unwrap().clear();
    let (status, _, body) = get(&o2, Method::GET, q, Some(&t2), Some("acme|globex")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        seen.lock().unwrap()[0].headers["x-scope-orgid"],
        "acme|globex"
    );
    let (status, _, _) = get(&o2, Method::GET, q, Some(&t2), Some("acme|initech")).await;
    assert_eq!(status, 403);
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn changing_rules_and_alertmanager_state_needs_the_rules_grant() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, seen) = recorder().await;
    let o = start(dir.path(), addr, "").await;
    let reader = token(dir.path(), &["acme"], &[], false);
    let editor = token(dir.path(), &["acme"], &[], true);
    let changes = [
        (Method::POST, "/prometheus/config/v1/rules/team"),
        (Method::DELETE, "/prometheus/config/v1/rules/team/group"),
        (Method::POST, "/alertmanager/api/v2/silences"),
        (Method::POST, "/api/v1/alerts"),
    ];
    for (method, path) in &changes {
        let (status, _, body) = get(&o, method.clone(), path, Some(&reader), None).await;
        assert_eq!(status, 403, "{method} {path}: {body}");
    }
    assert!(
        seen.lock().unwrap().is_empty(),
        "a read-only change got through"
    );
    let (status, _, _) = get(
        &o,
        Method::GET,
        "/prometheus/config/v1/rules",
        Some(&reader),
        None,
    )
    .await;
    assert_eq!(status, 200);
    for (method, path) in &changes {
        let (status, _, body) = get(&o, method.clone(), path, Some(&editor), None).await;
        assert_eq!(status, 200, "{method} {path}: {body}");
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 5);
    assert!(seen.iter().all(|s| s.headers["x-scope-orgid"] == "acme"));
}

#[tokio::test]
async fn answers_stream_and_tail_is_a_websocket_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _) = recorder().await;
    let o = start(dir.path(), addr, "").await;
    let t = token(dir.path(), &["acme"], &[], false);

    // The first part arrives while the upstream is still writing the rest.
    let started = Instant::now();
    let mut r = client()
        .get(o.url("/prometheus/api/v1/query_range?query=up&slow=1"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    let first = r.chunk().await.unwrap().unwrap();
    assert_eq!(&first[..], b"part0;");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "buffered: {:?}",
        started.elapsed()
    );
    let rest = r.chunk().await.unwrap().unwrap();
    assert_eq!(&rest[..], b"part1;");

    // Loki tail: a WebSocket through orgsplit, with the tenant set by it.
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://{}/loki/api/v1/tail?query=%7Bjob%3D%22x%22%7D",
            o.addr
        ))
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {t}").parse().unwrap());
    request
        .headers_mut()
        .insert("x-scope-orgid", "globex".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    use tokio_tungstenite::tungstenite::Message as M;
    assert_eq!(ws.next().await.unwrap().unwrap(), M::text("tenant acme"));
    ws.send(M::text("hello")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), M::text("echo hello"));
}

#[tokio::test]
async fn each_route_has_its_own_timeout_and_body_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, seen) = recorder().await;
    let o = start(
        dir.path(),
        addr,
        "  timeouts: {query: 300ms, ruler: 10s}\n  max_body_bytes: 1000\n",
    )
    .await;
    let t = token(dir.path(), &["acme"], &[], true);
    let started = Instant::now();
    let (status, _, body) = get(
        &o,
        Method::GET,
        "/prometheus/api/v1/query?query=up&hang=1",
        Some(&t),
        None,
    )
    .await;
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("read.timeouts.query"), "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // The ruler's own timeout is longer: the same wait is served.
    let (status, _, _) = get(
        &o,
        Method::GET,
        "/prometheus/api/v1/rules?hang=1",
        Some(&t),
        None,
    )
    .await;
    assert_eq!(status, 200);
    // A rule group of exactly read.max_body_bytes passes, whole...
    let r = client()
        .post(o.url("/prometheus/config/v1/rules/team"))
        .bearer_auth(&t)
        .body("y".repeat(1000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        seen.lock().unwrap().last().unwrap().headers["content-length"],
        "1000"
    );
    seen.lock().unwrap().clear();
    // ...a larger one is 413, declared or chunked, and reaches nobody.
    let big = "x".repeat(1001);
    let r = client()
        .post(o.url("/prometheus/config/v1/rules/team"))
        .bearer_auth(&t)
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let chunks = futures::stream::iter([Ok::<_, std::io::Error>(big.clone())]);
    let r = client()
        .post(o.url("/prometheus/config/v1/rules/team"))
        .bearer_auth(&t)
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .all(|s| !s.uri.starts_with("/prometheus/config")),
        "an oversized body was proxied whole"
    );
}

/// Sends `method path` as written (no client library normalises it) over
/// HTTP/1.1 with `token`; the status code.
async fn raw_status(o: &Orgsplit, method: &str, path: &str, token: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(o.addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: orgsplit\r\nAuthorization: Bearer {token}\r\n\
         X-Scope-OrgID: globex\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer))
        .await
        .expect("an answer")
        .unwrap();
    let head = String::from_utf8_lossy(&answer);
    head.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn no_path_leaves_the_route_it_was_classified_by() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, seen) = recorder().await;
    let o = start(dir.path(), addr, "").await;
    // A credential that may read and change rules: every one of these
    // would be proxied if its path were taken at face value.
    let acme = token(dir.path(), &["acme"], &[], true);
    let prefixes = [
        "/alertmanager/",
        "/alertmanager/api/v2/",
        "/prometheus/config/v1/rules/",
        "/prometheus/config/v1/rules/ns/",
        "/prometheus/api/v1/",
        "/prometheus/api/v1/label/",
        "/loki/api/v1/",
        "/api/v1/alerts/",
    ];
    let escapes = [
        "../distributor/all_user_stats",
        "%2e%2e/distributor/all_user_stats",
        "%2E%2E/%2E%2E/distributor/all_user_stats",
        ".%2E/ingester/flush",
        "%2e./ingester/flush",
        "../../../../distributor/all_user_stats",
        "./../ingester/flush",
        "%2e/x",
        "..;/ingester/flush",
        "%252e%252e/distributor/all_user_stats",
        "x%2f..%2f..%2fdistributor",
        "x%2F..%2Fdistributor",
        "x%5c..%5cdistributor",
        "x%5C..%5Cdistributor",
        "..\\distributor",
        "/distributor/all_user_stats",
        "x//values",
        "x%00/values",
        "%c0%ae%c0%ae/distributor",
        "..",
    ];
    let mut refused = 0;
    for prefix in prefixes {
        for escape in escapes {
            let path = format!("{prefix}{escape}");
            for method in ["GET", "POST", "DELETE"] {
                let status = raw_status(&o, method, &path, &acme).await;
                // 404, or 400 where the HTTP parser already refuses the
                // request line (a raw backslash).
                assert!(status == 404 || status == 400, "{method} {path}: {status}");
                refused += u64::from(status == 404);
            }
        }
    }
    assert!(
        seen.lock().unwrap().is_empty(),
        "proxied: {:?}",
        seen.lock()
            .unwrap()
            .iter()
            .map(|s| s.uri.clone())
            .collect::<Vec<_>>()
    );

    // The query string is forwarded after the path that was classified and
    // cannot move it.
    for query in [
        "?x=/../../distributor/all_user_stats",
        "?x=%2e%2e%2fdistributor",
        "?/../../ingester/flush",
        "?%2F..%2F..%2Fdistributor",
    ] {
        let path = format!("/alertmanager/api/v2/status{query}");
        assert_eq!(raw_status(&o, "GET", &path, &acme).await, 200, "{path}");
        let seen = seen.lock().unwrap().pop().unwrap();
        assert_eq!(seen.uri, path);
        assert_eq!(seen.headers.get("x-scope-orgid").unwrap(), "acme");
    }
    // Legitimate paths under the same prefixes still work.
    for path in [
        "/alertmanager/",
        "/alertmanager/api/v2/silences",
        "/prometheus/config/v1/rules/my%20ns/group",
        "/prometheus/api/v1/label/job/values",
    ] {
        assert_eq!(raw_status(&o, "GET", path, &acme).await, 200, "{path}");
        assert_eq!(seen.lock().unwrap().pop().unwrap().uri, path);
    }

    let page = o.metrics().await;
    let counted: f64 = [
        "dot_segment",
        "encoded_separator",
        "empty_segment",
        "control_byte",
        "bad_encoding",
        "not_a_route",
    ]
    .iter()
    .map(|r| {
        metric(
            &page,
            &format!("orgsplit_read_refused_total{{reason=\"{r}\""),
        )
    })
    .sum();
    assert_eq!(counted, refused as f64, "every refusal is counted");
    assert!(metric(&page, "orgsplit_read_refused_total{reason=\"dot_segment\"") > 0.0);
}
