//! The operator page (`/ui/`), as an operator sees it: loaded by a real
//! browser (Debian's `chromium`, headless) from the real binary while a
//! real Prometheus sends through it; and who may see it, with tokens made
//! by PyJWT, from loopback and from another address.

use crate::common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::prom::*;
use common::*;
use serde_json::json;

/// Chromium as root in a container: no sandbox, no GPU.
fn chromium(args: &[&str], url: &str) -> String {
    let bin = binary("chromium").expect("chromium");
    let out = std::process::Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
        ])
        .args(args)
        .arg(url)
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `<tr>` of `class` whose text holds `>needle<`, as the browser
/// rendered it.
fn row<'a>(dom: &'a str, class: &str, needle: &str) -> Option<&'a str> {
    let open = format!("<tr class=\"{class}\">");
    dom.split(open.as_str())
        .skip(1)
        .map(|rest| &rest[..rest.find("</tr>").unwrap_or(rest.len())])
        .find(|r| r.contains(&format!(">{needle}<")))
}

/// The text of the cell of `class` in a row.
fn cell<'a>(row: &'a str, class: &str) -> &'a str {
    let open = format!("class=\"n {class}\">");
    let start = row
        .find(&open)
        .unwrap_or_else(|| panic!("no {class} cell in {row}"))
        + open.len();
    &row[start..start + row[start..].find('<').unwrap()]
}

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_sees_organizations_unmapped_namespaces_and_rates() {
    let Some(bin) = prometheus_bin() else { return };
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start().await;
    // globex's pushes are refused: the page shows it.
    upstream.set(
        "globex",
        Behaviour::Status(400, None, "out of order sample"),
    );
    let targets = start_targets().await;
    let (_orgsplit, port) = start_orgsplit(
        dir.path(),
        &upstream.url(),
        "shop-prod: acme\nshop-dev: acme\nbilling: globex\nmonitoring: platform\n",
    )
    .await;
    let (_prom, _) = start_prometheus(
        &bin,
        dir.path(),
        "sender",
        targets,
        &[
            ("shop", Some("shop-prod")),
            ("billing", Some("billing")),
            ("stray", Some("not-in-table")),
            ("nolabel", None),
        ],
        Some(&format!("http://127.0.0.1:{port}/api/v1/push")),
        &[],
    )
    .await;
    eventually("acme's series upstream", Duration::from_secs(60), || {
        upstream.series_by_tenant().contains_key("acme")
    })
    .await;

    let url = format!("http://127.0.0.1:{port}/ui/");
    let mut dom = String::new();
    for _ in 0..30 {
        dom = chromium(&["--dump-dom"], &url);
        if row(&dom, "unmapped", "not-in-table").is_some()
            && row(&dom, "organization", "globex").is_some_and(|r| r.contains("4xx"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    std::fs::write(artifacts().join("ui-tenants.html"), &dom).unwrap();
    chromium(
        &[
            "--window-size=1280,1500",
            &format!(
                "--screenshot={}",
                artifacts().join("ui-tenants.png").display()
            ),
        ],
        &url,
    );

    // Organizations with their namespaces, and acme's rate.
    let acme = row(&dom, "organization", "acme").expect("acme's row");
    assert!(
        acme.contains(">shop-prod<") && acme.contains(">shop-dev<"),
        "{acme}"
    );
    let rate = cell(acme, "samples");
    assert!(rate.ends_with("/s"), "acme's samples per second: {rate:?}");
    assert!(
        rate.split_whitespace()
            .next()
            .unwrap()
            .trim_end_matches("/s")
            .parse::<f64>()
            .unwrap()
            > 0.0,
        "{rate}"
    );
    // globex: refused upstream, never accepted.
    let globex = row(&dom, "organization", "globex").expect("globex's row");
    assert!(globex.contains(">billing<"), "{globex}");
    assert!(
        globex.contains("4xx") && globex.contains("none"),
        "{globex}"
    );
    // platform sent nothing, and says so.
    let platform = row(&dom, "organization", "platform").expect("platform's row");
    assert!(
        platform.contains("nothing in the last 15 minutes"),
        "{platform}"
    );
    // The namespace with no organization, what the policy did, and the
    // series with no namespace label at all.
    let stray = row(&dom, "unmapped", "not-in-table").expect("the unmapped namespace");
    assert!(
        stray.contains("no_organization") && stray.contains("dropped"),
        "{stray}"
    );
    assert!(
        row(&dom, "unmapped", "(no namespace label)").is_some(),
        "{dom}"
    );
    assert!(!dom.contains("<script"), "the page has no script");

    // The JSON says the same.
    let data: serde_json::Value = client()
        .get(format!("http://127.0.0.1:{port}/ui/api/tenants"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let orgs = data["organizations"].as_array().unwrap();
    let acme = orgs.iter().find(|o| o["organization"] == "acme").unwrap();
    assert!(acme["traffic"]["samples_per_second"].as_f64().unwrap() > 0.0);
    assert_eq!(acme["traffic"]["refused_pushes"], 0);
    let unmapped = data["activity"]["unmapped"].as_array().unwrap();
    let stray = unmapped
        .iter()
        .find(|u| u["key"] == "not-in-table")
        .unwrap();
    assert!(stray["items_dropped"].as_u64().unwrap() > 0);
    assert_eq!(stray["items_defaulted"], 0);
}

/// An address of this machine other than loopback, to call from "outside".
fn outside_ip() -> IpAddr {
    let probe = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.200:9").map(|_| s))
        .and_then(|s| s.local_addr());
    if let Ok(a) = probe {
        if !a.ip().is_loopback() && !a.ip().is_unspecified() {
            return a.ip();
        }
    }
    let out = std::process::Command::new("hostname")
        .arg("-I")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|w| w.parse::<IpAddr>().ok())
        .find(|ip| ip.is_ipv4() && !ip.is_loopback())
        .expect("this machine has an address besides loopback")
}

/// One raw HTTP/1.1 GET (reqwest would normalise the path): status and body.
fn raw_get(addr: SocketAddr, path: &str, authorization: Option<&str>) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_and_loopback_callers_see_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start().await;
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "a shared secret for the ui test").unwrap();
    let table = dir.path().join("namespaces.yaml");
    std::fs::write(&table, "shop-prod: acme\n").unwrap();
    let users = dir.path().join("users.yaml");
    let hash = orgsplit::auth::basic::hash("alice's password").unwrap();
    std::fs::write(
        &users,
        format!(
            "alice: {{password_hash: '{hash}', allowance: [acme], read_allowance: ['team-*']}}\n"
        ),
    )
    .unwrap();
    let outside_port = free_port();
    let (_orgsplit, port) = start_orgsplit_with(
        dir.path(),
        &format!(
            "metrics_listen: 0.0.0.0:{outside_port}
upstream:
  url: {}
routing:
  unmapped: drop
lookup:
  file: {}
auth:
  anonymous: {{enabled: true, allowance: ['*']}}
  jwt:
    hs256_secret_file: {}
    key_allowances: {{hs256: [acme, 'team-*']}}
  basic:
    users_file: {}
ui:
  admins: [ops, 'basic:nobody']
",
            upstream.url(),
            table.display(),
            secret.display(),
            users.display()
        ),
    )
    .await;
    let token = |sub: &str| {
        format!(
            "Bearer {}",
            pyjwt(
                json!({"alg": "HS256", "key_file": secret, "claims": {"sub": sub, "organizations": ["acme"]}})
            )
        )
    };
    let (ops, dev) = (token("ops"), token("dev"));
    let here = SocketAddr::from(([127, 0, 0, 1], port));
    let outside = SocketAddr::new(outside_ip(), outside_port);
    let page = "/ui/";
    let json_page = "/ui/api/tenants";

    // Loopback without a credential (kubectl port-forward): allowed.
    let (status, body) = raw_get(here, page, None);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("orgsplit: tenants"));
    // From elsewhere, without a credential: asked for one, although
    // anonymous pushes are allowed.
    for path in [page, json_page] {
        let (status, body) = raw_get(outside, path, None);
        assert_eq!(status, 401, "{path}: {body}");
        assert!(body.contains("www-authenticate: Bearer"), "{body}");
        assert!(!body.contains("acme"), "{body}");
    }
    // A valid token without the admin grant: refused, here and from elsewhere.
    for addr in [here, outside] {
        let (status, body) = raw_get(addr, json_page, Some(&dev));
        assert_eq!(status, 403, "{body}");
        assert!(!body.contains("shop-prod"), "{body}");
    }
    // A forged or broken token: 401, wherever it comes from.
    let (status, _) = raw_get(here, page, Some("Bearer not.a.token"));
    assert_eq!(status, 401);
    // Tokens naming the admin that must not open the page (made by PyJWT):
    // unsigned, signed with another secret, expired, changed after signing.
    let other = dir.path().join("other-secret");
    std::fs::write(&other, "not the secret orgsplit trusts").unwrap();
    let admin_claims = json!({"sub": "ops", "organizations": ["acme"]});
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let forged = [
        ("alg none", json!({"alg": "none", "claims": admin_claims})),
        (
            "another key",
            json!({"alg": "HS256", "key_file": other, "claims": admin_claims}),
        ),
        (
            "expired",
            json!({"alg": "HS256", "key_file": secret,
                   "claims": {"sub": "ops", "organizations": ["acme"], "exp": now - 3600}}),
        ),
        (
            "tampered",
            json!({"alg": "HS256", "key_file": secret, "claims": admin_claims, "forge": "tamper"}),
        ),
    ];
    for (what, spec) in forged {
        let bearer = format!("Bearer {}", pyjwt(spec));
        for addr in [here, outside] {
            let (status, body) = raw_get(addr, json_page, Some(&bearer));
            assert_eq!(status, 401, "{what} from {addr}: {body}");
            assert!(!body.contains("shop-prod"), "{what}: {body}");
        }
    }
    // The admin: allowed from elsewhere.
    let (status, body) = raw_get(outside, json_page, Some(&ops));
    assert_eq!(status, 200, "{body}");
    let json_body = &body[body.find("\r\n\r\n").unwrap() + 4..];
    let data: serde_json::Value = serde_json::from_str(json_body)
        .or_else(|_| {
            // (chunked) the one chunk's payload.
            let start = json_body.find('{').unwrap();
            let end = json_body.rfind('}').unwrap();
            serde_json::from_str(&json_body[start..=end])
        })
        .unwrap();
    assert_eq!(data["organizations"][0]["organization"], "acme");
    assert_eq!(data["table"]["namespaces"], 1);
    // The failures were recorded by reason (the token itself never is).
    let reasons: Vec<&str> = data["activity"]["auth"]["recent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["reason"].as_str().unwrap())
        .collect();
    assert!(reasons.contains(&"malformed"), "{reasons:?}");
    assert!(
        !body.contains("not.a.token") && !body.contains(&dev[7..]),
        "a token on the page"
    );
    // What authentication trusts, by name and file: never a secret or a hash.
    let key = &data["credentials"]["jwt"]["keys"][0];
    assert_eq!(key["kid"], "hs256");
    assert_eq!(key["source"], secret.display().to_string());
    assert_eq!(key["may_grant"], "acme,team-*");
    let alice = &data["credentials"]["users"][0];
    assert_eq!(
        (&alice["name"], &alice["writes"], &alice["reads"]),
        (&json!("alice"), &json!("acme"), &json!("team-*"))
    );
    assert!(
        !body.contains("a shared secret") && !body.contains(&hash[..20]),
        "a secret on the page"
    );
    // A known user's failed login names the user; an unknown name is not kept.
    use base64::Engine;
    let basic = |who: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{who}:wrong"))
        )
    };
    assert_eq!(raw_get(here, page, Some(&basic("alice"))).0, 401);
    assert_eq!(
        raw_get(here, page, Some(&basic("hunter2-typed-as-a-name"))).0,
        401
    );
    let (_, body) = raw_get(outside, json_page, Some(&ops));
    assert!(
        body.contains(r#""reason":"bad_password","who":"alice""#),
        "{body}"
    );
    assert!(
        body.contains(r#""reason":"unknown_user","who":null"#),
        "{body}"
    );
    assert!(!body.contains("hunter2"), "{body}");

    // Nothing else under /ui is a page: dot segments, escapes, empty
    // segments and trailing slashes are 404, never the page.
    for path in [
        "/ui/../metrics",
        "/ui/%2e%2e/metrics",
        "/ui/%2E%2E/api/tenants",
        "/ui//",
        "/ui/api//tenants",
        "/ui/api/tenants/",
        "/ui/api/../api/tenants",
        "/ui/api/%74enants",
        "/ui/index.html",
    ] {
        for addr in [here, outside] {
            let (status, body) = raw_get(addr, path, Some(&ops));
            assert_eq!(status, 404, "{path} on {addr}: {body}");
            assert!(!body.contains("shop-prod"), "{path}: {body}");
        }
    }
    // /ui sends the browser to /ui/.
    let (status, body) = raw_get(here, "/ui", None);
    assert_eq!(status, 308, "{body}");
    assert!(body.contains("location: /ui/"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_can_be_closed_to_loopback_or_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start().await;
    let table = dir.path().join("namespaces.yaml");
    std::fs::write(&table, "shop-prod: acme\n").unwrap();
    let base = format!(
        "upstream:\n  url: {}\nrouting:\n  unmapped: drop\nlookup:\n  file: {}\n",
        upstream.url(),
        table.display()
    );
    let closed = tempfile::tempdir().unwrap();
    let (_a, port) =
        start_orgsplit_with(closed.path(), &format!("{base}ui:\n  loopback: false\n")).await;
    let (status, _) = raw_get(SocketAddr::from(([127, 0, 0, 1], port)), "/ui/", None);
    assert_eq!(status, 401);
    let off = tempfile::tempdir().unwrap();
    let (_b, port) =
        start_orgsplit_with(off.path(), &format!("{base}ui:\n  enabled: false\n")).await;
    let (status, _) = raw_get(SocketAddr::from(([127, 0, 0, 1], port)), "/ui/", None);
    assert_eq!(status, 404);
    drop(dir);
}
