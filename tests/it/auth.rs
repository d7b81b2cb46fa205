//! Authentication and authorization of senders, over real HTTP: tokens
//! from PyJWT (an independent implementation) and from orgsplit's own
//! commands, basic-auth users, client certificates; which tenant got what,
//! what the sender heard, what was counted.

use crate::common;

use std::path::{Path, PathBuf};

use common::*;
use orgsplit::cli::keys as cli;
use serde_json::json;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// One series in acme's namespace, one in globex's.
fn acme() -> orgsplit::formats::rw1::pb::WriteRequest {
    request(vec![series(
        &[("__name__", "up"), ("namespace", "shop-prod")],
        1.0,
        1000,
    )])
}

fn globex() -> orgsplit::formats::rw1::pb::WriteRequest {
    request(vec![series(
        &[("__name__", "up"), ("namespace", "billing")],
        1.0,
        1000,
    )])
}

/// Pushes `body` with an `Authorization` header (and a forged
/// `X-Scope-OrgID`, which must never matter).
async fn push_as(
    o: &Orgsplit,
    authorization: Option<&str>,
    body: &orgsplit::formats::rw1::pb::WriteRequest,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut r = client()
        .post(o.url("/api/v1/push"))
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .header("X-Scope-OrgID", "globex")
        .body(orgsplit::testing::compress(body));
    if let Some(a) = authorization {
        r = r.header("Authorization", a);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.unwrap())
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Starts orgsplit over the usual table with `auth` as its auth section.
async fn start(dir: &Path, upstream: &Upstream, routing: &str, auth: &str) -> Orgsplit {
    write_table(dir, TABLE);
    let cfg = format!("{}auth:\n{auth}", config(dir, &upstream.url(), routing));
    Orgsplit::start(dir, &cfg).await
}

/// orgsplit that accepts only HS256 tokens of a fresh secret, with
/// `routing` in its routing section; the secret's file.
async fn start_hs256(dir: &Path, upstream: &Upstream, routing: &str) -> (Orgsplit, PathBuf) {
    let secret = dir.join("secret");
    std::fs::write(&secret, "correct horse battery staple\n").unwrap();
    let auth = format!(
        "  anonymous: {{enabled: false}}\n  jwt:\n    hs256_secret_file: {}\n",
        secret.display()
    );
    (start(dir, upstream, routing, &auth).await, secret)
}

fn tenants(upstream: &Upstream) -> Vec<String> {
    upstream.received().into_iter().map(|r| r.tenant).collect()
}

#[tokio::test]
async fn hs256_tokens_write_only_their_own_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start().await;
    let (o, secret) = start_hs256(dir.path(), &upstream, "  default_tenant: fallback").await;
    // cortex-gateway's token: HS256, claim tenant_id, no expiry.
    let token = pyjwt(json!({"alg": "HS256", "key_file": secret, "claims": {"tenant_id": "acme"}}));

    let (status, _, body) = push_as(&o, Some(&bearer(&token)), &acme()).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(
        tenants(&upstream),
        ["acme"],
        "X-Scope-OrgID: globex was obeyed"
    );

    // A series of another organization: 403 naming it, nothing forwarded.
    upstream.reset();
    let mut both = acme();
    both.timeseries.extend(globex().timeseries);
    let (status, _, body) = push_as(&o, Some(&bearer(&token)), &both).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("globex"), "{body}");
    // An unmapped series would go to the default tenant, which acme's
    // token may not write either.
    let stray = request(vec![series(&[("__name__", "up")], 1.0, 1)]);
    let (status, _, body) = push_as(&o, Some(&bearer(&token)), &stray).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("fallback"), "{body}");
    assert!(upstream.received().is_empty());

    // No credential at all.
    let (status, headers, _) = push_as(&o, None, &acme()).await;
    assert_eq!(status, 401);
    assert_eq!(
        headers.get("www-authenticate").unwrap(),
        "Bearer realm=\"orgsplit\""
    );
    assert!(upstream.received().is_empty());

    let page = o.metrics().await;
    assert_eq!(
        metric(
            &page,
            "orgsplit_requests_rejected_total{reason=\"forbidden\""
        ),
        2.0
    );
    assert_eq!(
        metric(
            &page,
            "orgsplit_auth_failures_total{mode=\"anonymous\",reason=\"missing\""
        ),
        1.0
    );
}

/// A trust store with one key made by `orgsplit keys create`; returns
/// (store dir, private key path, kid).
fn trust_store(dir: &Path, kind: cli::KeyType) -> (PathBuf, PathBuf, String) {
    let store = dir.join("trust");
    std::fs::create_dir_all(&store).unwrap();
    let key = dir.join(format!("signing-{kind:?}.pem"));
    let kid = cli::create(&key, kind, false).unwrap();
    std::fs::write(store.join(format!("{kid}.pem")), cli::public(&key).unwrap()).unwrap();
    (store, key, kid)
}

/// orgsplit that accepts only tokens of the keys in `store` (more `jwt`
/// keys in `extra_jwt`), dropping unmapped series.
async fn start_trusting(
    dir: &Path,
    upstream: &Upstream,
    store: &Path,
    extra_jwt: &str,
) -> Orgsplit {
    let auth = format!(
        "  anonymous: {{enabled: false}}\n  jwt:\n    trust_store: {}\n{extra_jwt}",
        store.display()
    );
    start(dir, upstream, "  unmapped: drop", &auth).await
}

#[tokio::test]
async fn every_bad_token_is_401_and_nothing_is_forwarded() {
    let dir = tempfile::tempdir().unwrap();
    let (store, rsa_key, kid) = trust_store(dir.path(), cli::KeyType::Rsa);
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "hs-secret").unwrap();
    let public_pem = dir.path().join("public.pem");
    std::fs::write(&public_pem, cli::public(&rsa_key).unwrap()).unwrap();
    let upstream = Upstream::start().await;
    // Both an HS256 secret and RSA keys: the confused token meets a real
    // HMAC check, and fails it.
    let extra = format!(
        "    hs256_secret_file: {}\n    audience: orgsplit\n    leeway: 5s\n",
        secret.display()
    );
    let o = start_trusting(dir.path(), &upstream, &store, &extra).await;
    let rs = |claims: serde_json::Value, headers: serde_json::Value| {
        pyjwt(json!({"alg": "RS256", "key_file": rsa_key, "claims": claims, "headers": headers}))
    };
    let good_claims = json!({"sub": "tenant-acme", "aud": "orgsplit", "exp": now() + 600});
    let good = rs(good_claims.clone(), json!({"kid": kid}));
    let (status, _, body) = push_as(&o, Some(&bearer(&good)), &acme()).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(tenants(&upstream), ["acme"]);
    upstream.reset();

    let other_key = dir.path().join("other.pem");
    cli::create(&other_key, cli::KeyType::Rsa, false).unwrap();
    let bad = [
        (
            "expired",
            rs(
                json!({"sub": "tenant-acme", "aud": "orgsplit", "exp": now() - 60}),
                json!({"kid": kid}),
            ),
        ),
        (
            "not yet valid",
            rs(
                json!({"sub": "tenant-acme", "aud": "orgsplit", "nbf": now() + 600, "exp": now() + 1200}),
                json!({"kid": kid}),
            ),
        ),
        (
            "wrong audience",
            rs(
                json!({"sub": "tenant-acme", "aud": "someone-else", "exp": now() + 600}),
                json!({"kid": kid}),
            ),
        ),
        (
            "unknown kid",
            rs(good_claims.clone(), json!({"kid": "0123abcd"})),
        ),
        (
            "no kid, no fallback key",
            rs(good_claims.clone(), json!({})),
        ),
        (
            "signed by another key",
            pyjwt(
                json!({"alg": "RS256", "key_file": other_key, "claims": good_claims, "headers": {"kid": kid}}),
            ),
        ),
        (
            "alg none",
            pyjwt(json!({"alg": "none", "claims": good_claims, "headers": {"kid": kid}})),
        ),
        (
            "HS256 keyed with the RSA public key",
            pyjwt(
                json!({"alg": "HS256", "key_file": public_pem, "claims": good_claims,
                         "headers": {"kid": kid}, "forge": "hs256-with-public-key"}),
            ),
        ),
        (
            "tampered payload",
            pyjwt(
                json!({"alg": "RS256", "key_file": rsa_key, "claims": good_claims,
                         "headers": {"kid": kid}, "forge": "tamper"}),
            ),
        ),
        ("not a token", "not.a.token".to_string()),
        ("far too long", "a".repeat(10_000)),
    ];
    for (what, token) in &bad {
        let (status, headers, _) = push_as(&o, Some(&bearer(token)), &acme()).await;
        assert_eq!(status, 401, "{what}");
        assert!(headers.get("www-authenticate").is_some(), "{what}");
    }
    let (status, _, _) = push_as(&o, Some("Digest whatever"), &acme()).await;
    assert_eq!(status, 401, "unknown scheme");
    assert!(
        upstream.received().is_empty(),
        "a bad token got data through"
    );

    let page = o.metrics().await;
    assert_jwt_failures(
        &page,
        &[
            ("expired", 1.0),
            ("not_yet_valid", 1.0),
            ("audience", 1.0),
            ("unknown_key", 2.0),
            ("bad_signature", 3.0),
            ("algorithm", 0.0),
            ("malformed", 2.0),
            ("too_large", 1.0),
        ],
    );
}

/// Each JWT failure reason was counted `n` times.
fn assert_jwt_failures(page: &str, counts: &[(&str, f64)]) {
    for (reason, n) in counts {
        let prefix = format!("orgsplit_auth_failures_total{{mode=\"jwt\",reason=\"{reason}\"");
        assert_eq!(metric(page, &prefix), *n, "{reason}");
    }
}

#[tokio::test]
async fn keys_added_and_removed_while_running_take_effect_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _, _) = trust_store(dir.path(), cli::KeyType::Ec);
    let upstream = Upstream::start().await;
    let o = start_trusting(dir.path(), &upstream, &store, "").await;
    // A second key, not yet trusted; its token is made by orgsplit's CLI code.
    let new_key = dir.path().join("new.pem");
    let new_kid = cli::create(&new_key, cli::KeyType::Ec, false).unwrap();
    let token = cli::token(&cli::TokenRequest {
        key: Some(&new_key),
        ..cli::TokenRequest::for_tenant("globex")
    })
    .unwrap();
    let (status, _, _) = push_as(&o, Some(&bearer(&token)), &globex()).await;
    assert_eq!(status, 401);

    // Added (as `orgsplit keys public` prints it): works on the next request.
    let file = store.join("new.pem");
    std::fs::write(&file, cli::public(&new_key).unwrap()).unwrap();
    let (status, _, body) = push_as(&o, Some(&bearer(&token)), &globex()).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(tenants(&upstream), ["globex"]);
    assert_eq!(cli::id(&file).unwrap(), new_kid);

    // Removed: its tokens are refused on the next request.
    std::fs::remove_file(&file).unwrap();
    upstream.reset();
    let (status, _, _) = push_as(&o, Some(&bearer(&token)), &globex()).await;
    assert_eq!(status, 401);
    assert!(upstream.received().is_empty());
}

#[tokio::test]
async fn organization_lists_and_outside_allowance_drop() {
    let dir = tempfile::tempdir().unwrap();
    let (store, key, _) = trust_store(dir.path(), cli::KeyType::Ec);
    let upstream = Upstream::start().await;
    let o = start(
        dir.path(),
        &upstream,
        "  unmapped: drop",
        &format!(
            "  outside_allowance: drop\n  jwt:\n    trust_store: {}\n",
            store.display()
        ),
    )
    .await;
    // PyJWT, ES256, a list of organizations with a prefix.
    let kid = cli::id(&key).unwrap();
    let token = pyjwt(
        json!({"alg": "ES256", "key_file": key, "headers": {"kid": kid},
        "claims": {"sub": "ci-runner", "organizations": ["ac*", "initech"], "exp": now() + 600}}),
    );
    let mut mixed = acme();
    mixed.timeseries.extend(globex().timeseries);
    mixed.timeseries.push(series(
        &[("__name__", "up"), ("namespace", "billing")],
        2.0,
        1000,
    ));
    let (status, _, body) = push_as(&o, Some(&bearer(&token)), &mixed).await;
    assert_eq!(status, 204, "{body}");
    let by_tenant = upstream.series_by_tenant();
    assert_eq!(by_tenant.keys().collect::<Vec<_>>(), ["acme"]);
    assert_eq!(by_tenant["acme"].len(), 1);
    let page = o.metrics().await;
    assert_eq!(
        metric(&page, "orgsplit_series_dropped_total{reason=\"forbidden\""),
        2.0
    );
    assert_eq!(metric(&page, "orgsplit_samples_dropped_total"), 2.0);

    // Anonymous (still enabled, allowance `*`) writes anywhere, as before.
    upstream.reset();
    let (status, _, _) = push_as(&o, None, &mixed).await;
    assert_eq!(status, 204);
    assert_eq!(upstream.series_by_tenant()["globex"].len(), 2);
}

#[tokio::test]
async fn principal_mode_sends_the_whole_push_to_the_credentials_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start().await;
    let (o, secret) =
        start_hs256(dir.path(), &upstream, "  mode: principal\n  unmapped: drop").await;
    let token = pyjwt(json!({"alg": "HS256", "key_file": secret, "claims": {"tenant_id": "acme"}}));
    let mut mixed = acme();
    mixed.timeseries.extend(globex().timeseries);
    mixed
        .timeseries
        .push(series(&[("__name__", "no_namespace")], 3.0, 1000));
    let (status, _, body) = push_as(&o, Some(&bearer(&token)), &mixed).await;
    assert_eq!(status, 204, "{body}");
    let received = upstream.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].tenant, "acme");
    assert_eq!(
        received[0].request, mixed,
        "the push was changed on the way"
    );
    let page = o.metrics().await;
    assert_eq!(metric(&page, "orgsplit_forwarded_series_total"), 3.0);

    // A malformed body is refused, as in any mode.
    let (status, _) = {
        let r = client()
            .post(o.url("/api/v1/push"))
            .header("Authorization", bearer(&token))
            .body(snappy(b"\x0a\x05garbage"))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), ())
    };
    assert_eq!(status, 400);

    // A credential for several organizations cannot pick one.
    let several = pyjwt(json!({"alg": "HS256", "key_file": secret,
        "claims": {"sub": "x", "organizations": ["acme", "globex"]}}));
    upstream.reset();
    let (status, _, body) = push_as(&o, Some(&bearer(&several)), &acme()).await;
    assert_eq!(status, 403, "{body}");
    assert!(upstream.received().is_empty());
}

#[tokio::test]
async fn basic_auth_users_from_a_hashed_users_file() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.yaml");
    let argon = orgsplit::auth::basic::hash("acme-password").unwrap();
    let bcrypt = bcrypt_hash("globex-password");
    std::fs::write(
        &users,
        format!(
            "prom-acme: {{password_hash: '{argon}', allowance: [acme]}}\n\
             prom-globex: {{password_hash: '{bcrypt}', allowance: [globex]}}\n"
        ),
    )
    .unwrap();
    let upstream = Upstream::start().await;
    let o = start(
        dir.path(),
        &upstream,
        "  unmapped: drop",
        &format!(
            "  anonymous: {{enabled: false}}\n  basic:\n    users_file: {}\n",
            users.display()
        ),
    )
    .await;
    let basic = |user: &str, password: &str| {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    };
    for _ in 0..3 {
        let (status, _, body) =
            push_as(&o, Some(&basic("prom-acme", "acme-password")), &acme()).await;
        assert_eq!(status, 204, "{body}");
    }
    let (status, _, _) = push_as(
        &o,
        Some(&basic("prom-globex", "globex-password")),
        &globex(),
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(tenants(&upstream), ["acme", "acme", "acme", "globex"]);
    upstream.reset();

    let (status, headers, _) = push_as(&o, Some(&basic("prom-acme", "wrong")), &acme()).await;
    assert_eq!(status, 401);
    assert!(headers
        .get("www-authenticate")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("Basic"));
    let (status, _, _) = push_as(&o, Some(&basic("nobody", "acme-password")), &acme()).await;
    assert_eq!(status, 401);
    let (status, _, _) = push_as(&o, Some(&basic("prom-acme", "acme-password")), &globex()).await;
    assert_eq!(status, 403);
    assert!(upstream.received().is_empty());

    // The users file changes: prom-acme is gone at once.
    let tmp = dir.path().join("users.tmp");
    std::fs::write(
        &tmp,
        format!("prom-globex: {{password_hash: '{bcrypt}', allowance: [globex]}}\n"),
    )
    .unwrap();
    std::fs::rename(&tmp, &users).unwrap();
    let (status, _, _) = push_as(&o, Some(&basic("prom-acme", "acme-password")), &acme()).await;
    assert_eq!(status, 401);
    // A plaintext password written later is refused; the last good file stays.
    std::fs::write(&tmp, "prom-globex: {password: globex-password}\n").unwrap();
    std::fs::rename(&tmp, &users).unwrap();
    let (status, _, _) = push_as(
        &o,
        Some(&basic("prom-globex", "globex-password")),
        &globex(),
    )
    .await;
    assert_eq!(status, 204);
    let page = o.metrics().await;
    assert_eq!(metric(&page, "orgsplit_auth_reload_errors_total"), 1.0);
    assert_eq!(
        metric(
            &page,
            "orgsplit_auth_failures_total{mode=\"basic\",reason=\"bad_password\""
        ),
        1.0
    );
    assert_eq!(
        metric(
            &page,
            "orgsplit_auth_failures_total{mode=\"basic\",reason=\"unknown_user\""
        ),
        2.0
    );
}

/// A bcrypt hash (as `htpasswd -B` makes them), cost 4 to keep tests fast.
fn bcrypt_hash(password: &str) -> String {
    bcrypt::hash(password, 4).unwrap()
}

#[tokio::test]
async fn a_plaintext_users_file_is_refused_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.yaml");
    std::fs::write(
        &users,
        "prom-acme: {password: hunter2, allowance: [acme]}\n",
    )
    .unwrap();
    write_table(dir.path(), TABLE);
    let cfg = format!(
        "{}auth:\n  basic:\n    users_file: {}\n",
        config(dir.path(), "http://127.0.0.1:1/push", "  unmapped: drop"),
        users.display()
    );
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, cfg).unwrap();
    let config = orgsplit::config::Config::load(Some(&path), &Default::default()).unwrap();
    let err = orgsplit::server::Server::bind(&config)
        .await
        .err()
        .expect("started with a plaintext password")
        .to_string();
    assert!(err.contains("plaintext"), "{err}");
}

/// orgsplit on TLS with `server` as its certificate, client certificates
/// checked against `ca.pem` (written from `ca_pem` in `dir`) and
/// `prom-acme.example` allowed to write acme, anonymous access off; in
/// front of a fresh recording upstream. Returns the CA bundle's path too.
async fn start_mtls(dir: &Path, server: &tls::Leaf, ca_pem: &str) -> (Upstream, Orgsplit, PathBuf) {
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let (cert, key, ca) = (
        write("server.pem", &server.cert_pem),
        write("server.key", &server.key_pem),
        write("ca.pem", ca_pem),
    );
    let upstream = Upstream::start().await;
    write_table(dir, TABLE);
    let cfg = format!(
        "{}tls: {{cert_file: {}, key_file: {}}}\nauth:\n  anonymous: {{enabled: false}}\n  mtls:\n    client_ca_file: {}\n    principals:\n      prom-acme.example: [acme]\n",
        config(dir, &upstream.url(), "  unmapped: drop"),
        cert.display(),
        key.display(),
        ca.display()
    );
    let o = Orgsplit::start(dir, &cfg).await;
    (upstream, o, ca)
}

/// A new HTTPS client (so a new connection) for `o`, trusting `server_ca`,
/// presenting `identity` if given.
fn tls_client(o: &Orgsplit, server_ca: &str, identity: Option<&tls::Leaf>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(server_ca.as_bytes()).unwrap())
        .resolve("localhost", o.addr);
    if let Some(leaf) = identity {
        let pem = format!("{}{}", leaf.cert_pem, leaf.key_pem);
        b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    b.build().unwrap()
}

/// Pushes `body` over a new TLS connection as `identity`: the status.
async fn push_tls(
    o: &Orgsplit,
    server_ca: &str,
    identity: Option<&tls::Leaf>,
    body: &orgsplit::formats::rw1::pb::WriteRequest,
) -> Result<u16, String> {
    tls_client(o, server_ca, identity)
        .post(format!("https://localhost:{}/api/v1/push", o.addr.port()))
        .header("Content-Encoding", "snappy")
        .header("X-Scope-OrgID", "globex")
        .body(orgsplit::testing::compress(body))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn client_certificates_name_the_principal() {
    let dir = tempfile::tempdir().unwrap();
    let pki = tls::Pki::new();
    let server = pki.leaf(&["localhost"], false);
    let acme_client = pki.leaf(&["prom-acme.example"], true);
    let stranger = pki.leaf(&["prom-unknown.example"], true);
    let other_ca = tls::Pki::new();
    let impostor = other_ca.leaf(&["prom-acme.example"], true);
    let expired = pki.expired_client(&["prom-acme.example"]);
    let (upstream, o, _) = start_mtls(dir.path(), &server, &pki.ca_pem).await;
    let (acme, globex) = (acme(), globex());
    let push = |identity, body| push_tls(&o, &pki.ca_pem, identity, body);
    assert_eq!(push(Some(&acme_client), &acme).await, Ok(204));
    assert_eq!(tenants(&upstream), ["acme"]);
    upstream.reset();
    assert_eq!(push(Some(&acme_client), &globex).await, Ok(403));
    assert_eq!(push(Some(&impostor), &acme).await, Ok(401), "another CA");
    assert_eq!(push(Some(&expired), &acme).await, Ok(401), "expired");
    assert_eq!(push(Some(&stranger), &acme).await, Ok(401), "unlisted name");
    assert_eq!(push(None, &acme).await, Ok(401), "no certificate");
    assert!(upstream.received().is_empty());
}

#[tokio::test]
async fn a_rotated_client_ca_is_trusted_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (old_ca, new_ca) = (tls::Pki::new(), tls::Pki::new());
    let server = old_ca.leaf(&["localhost"], false);
    let (old_client, new_client) = (
        old_ca.leaf(&["prom-acme.example"], true),
        new_ca.leaf(&["prom-acme.example"], true),
    );
    let (upstream, o, ca) = start_mtls(dir.path(), &server, &old_ca.ca_pem).await;
    // A new connection per push.
    let body = acme();
    let push = |identity| push_tls(&o, &old_ca.ca_pem, Some(identity), &body);
    assert_eq!(push(&old_client).await, Ok(204));
    assert_eq!(push(&new_client).await, Ok(401), "not trusted yet");

    // Rotated in place, as cert-manager's CA injection does: the new CA's
    // certificate is accepted and the old one's no longer, no restart.
    std::fs::write(dir.path().join("ca.tmp"), &new_ca.ca_pem).unwrap();
    std::fs::rename(dir.path().join("ca.tmp"), &ca).unwrap();
    assert_eq!(push(&new_client).await, Ok(204), "the new CA is trusted");
    assert_eq!(push(&old_client).await, Ok(401), "the old CA is not");

    // A broken bundle keeps the last good one, and is counted.
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    assert_eq!(push(&new_client).await, Ok(204), "last good bundle kept");
    assert_eq!(push(&old_client).await, Ok(401));
    let page = tls_client(&o, &old_ca.ca_pem, None)
        .get(format!("https://localhost:{}/metrics", o.addr.port()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(metric(&page, "orgsplit_auth_reload_errors_total"), 1.0);
    // And a good one after it is taken.
    std::fs::write(&ca, format!("{}{}", old_ca.ca_pem, new_ca.ca_pem)).unwrap();
    assert_eq!(push(&old_client).await, Ok(204), "both CAs in one bundle");
    assert_eq!(push(&new_client).await, Ok(204));
    // Five accepted pushes, each to acme; the refused ones reached nothing.
    assert_eq!(tenants(&upstream), ["acme"; 5]);
}

#[tokio::test]
async fn jwks_keys_fallback_key_and_issuer() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (rsa, ec, fallback) = (d.join("rsa.pem"), d.join("ec.pem"), d.join("fallback.pem"));
    cli::create(&rsa, cli::KeyType::Rsa, false).unwrap();
    cli::create(&ec, cli::KeyType::Ec, false).unwrap();
    cli::create(&fallback, cli::KeyType::Ec, false).unwrap();
    let jwk = |key: &Path, kid: &str| -> serde_json::Value {
        serde_json::from_str(&pyjwt(json!({"jwk_of": key, "kid": kid}))).unwrap()
    };
    let jwks = d.join("jwks.json");
    std::fs::write(
        &jwks,
        json!({"keys": [jwk(&rsa, "rsa-1"), jwk(&ec, "ec-1")]}).to_string(),
    )
    .unwrap();
    let fallback_pub = d.join("fallback.pub");
    std::fs::write(&fallback_pub, cli::public(&fallback).unwrap()).unwrap();
    let upstream = Upstream::start().await;
    let o = start(
        d,
        &upstream,
        "  unmapped: drop",
        &format!(
            "  anonymous: {{enabled: false}}\n  jwt:\n    jwks_file: {}\n    fallback_key: {}\n    issuer: https://issuer.example\n",
            jwks.display(),
            fallback_pub.display()
        ),
    )
    .await;
    let claims = json!({"sub": "tenant-acme", "iss": "https://issuer.example", "exp": now() + 600});
    let cases = [
        (
            "RS256 by JWKS kid",
            json!({"alg": "RS256", "key_file": rsa, "headers": {"kid": "rsa-1"}, "claims": claims}),
            204,
        ),
        (
            "ES256 by JWKS kid",
            json!({"alg": "ES256", "key_file": ec, "headers": {"kid": "ec-1"}, "claims": claims}),
            204,
        ),
        (
            "no kid: the fallback key",
            json!({"alg": "ES256", "key_file": fallback, "claims": claims}),
            204,
        ),
        (
            "no kid, signed by another key",
            json!({"alg": "ES256", "key_file": ec, "claims": claims}),
            401,
        ),
        (
            "the EC key's kid on an RS256 token",
            json!({"alg": "RS256", "key_file": rsa, "headers": {"kid": "ec-1"}, "claims": claims}),
            401,
        ),
        (
            "wrong issuer",
            json!({"alg": "RS256", "key_file": rsa, "headers": {"kid": "rsa-1"},
            "claims": {"sub": "tenant-acme", "iss": "https://evil.example"}}),
            401,
        ),
        (
            "no tenant",
            json!({"alg": "RS256", "key_file": rsa, "headers": {"kid": "rsa-1"},
            "claims": {"sub": "someone", "iss": "https://issuer.example"}}),
            401,
        ),
    ];
    for (what, spec, want) in cases {
        let (status, _, body) = push_as(&o, Some(&bearer(&pyjwt(spec))), &acme()).await;
        assert_eq!(status, want, "{what}: {body}");
    }
    assert_eq!(tenants(&upstream), ["acme", "acme", "acme"]);
    let page = o.metrics().await;
    assert_jwt_failures(
        &page,
        &[
            ("bad_signature", 1.0),
            ("algorithm", 1.0),
            ("issuer", 1.0),
            ("no_tenant", 1.0),
        ],
    );
}

#[tokio::test]
async fn a_key_may_be_capped_to_its_organizations() {
    let dir = tempfile::tempdir().unwrap();
    let (store, key, kid) = trust_store(dir.path(), cli::KeyType::Ec);
    let upstream = Upstream::start().await;
    let caps = format!("    key_allowances:\n      {kid}: [\"shop-*\", acme]\n");
    let o = start_trusting(dir.path(), &upstream, &store, &caps).await;
    // acme's key team mints its own tokens: within the cap they work...
    let inside = pyjwt(
        json!({"alg": "ES256", "key_file": key, "headers": {"kid": kid},
        "claims": {"tenant_id": "acme"}}),
    );
    let (status, _, body) = push_as(&o, Some(&bearer(&inside)), &acme()).await;
    assert_eq!(status, 204, "{body}");
    // ...but a token from the same key for globex, or for everything, does not.
    for claims in [
        json!({"tenant_id": "globex"}),
        json!({"sub": "x", "organizations": ["*"]}),
        json!({"tenant_id": "acme", "read_organizations": ["globex"]}),
    ] {
        let t = pyjwt(
            json!({"alg": "ES256", "key_file": key, "headers": {"kid": kid}, "claims": claims}),
        );
        let (status, _, _) = push_as(&o, Some(&bearer(&t)), &globex()).await;
        assert_eq!(status, 401, "{claims}");
    }
    assert_eq!(tenants(&upstream), ["acme"]);
    let page = o.metrics().await;
    assert_eq!(
        metric(
            &page,
            "orgsplit_auth_failures_total{mode=\"jwt\",reason=\"key_allowance\""
        ),
        3.0
    );
}

/// `orgsplit token create` gives every token a `jti`; `orgsplit token
/// revoke` lists it in `auth.jwt.revoked_file`, and the running server
/// refuses that one token at once (counted as `revoked`), while another
/// token of the same key keeps working.
#[tokio::test]
async fn one_token_is_revoked_without_touching_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start().await;
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "correct horse battery staple\n").unwrap();
    let revoked = dir.path().join("revoked");
    std::fs::write(&revoked, "# revoked token IDs\n").unwrap();
    let auth = format!(
        "  anonymous: {{enabled: false}}\n  jwt:\n    hs256_secret_file: {}\n    revoked_file: {}\n",
        secret.display(),
        revoked.display()
    );
    let o = start(dir.path(), &upstream, "  unmapped: drop", &auth).await;
    let orgsplit = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_orgsplit"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let secret_arg = secret.display().to_string();
    let create = || {
        orgsplit(&[
            "token",
            "create",
            "--hs-secret-file",
            &secret_arg,
            "--tenant",
            "acme",
        ])
    };
    let (leaked, kept) = (create(), create());
    // Tokens from an independent implementation: one with a jti, one
    // without (which no revocation list can name).
    let pyjwt_jti = pyjwt(json!({"alg": "HS256", "key_file": secret,
        "claims": {"tenant_id": "acme", "jti": "pyjwt-4711"}}));
    let pyjwt_plain =
        pyjwt(json!({"alg": "HS256", "key_file": secret, "claims": {"tenant_id": "acme"}}));
    for token in [&leaked, &kept, &pyjwt_jti, &pyjwt_plain] {
        let (status, _, body) = push_as(&o, Some(&bearer(token)), &acme()).await;
        assert_eq!(status, 204, "{body}");
    }
    let said = orgsplit(&[
        "token",
        "revoke",
        &leaked,
        "--file",
        &revoked.display().to_string(),
    ]);
    assert!(said.starts_with("revoked "), "{said}");
    let (status, _, _) = push_as(&o, Some(&bearer(&leaked)), &acme()).await;
    assert_eq!(status, 401, "the revoked token is refused at once");
    let (status, _, body) = push_as(&o, Some(&bearer(&kept)), &acme()).await;
    assert_eq!(status, 204, "{body}");
    // By its bare jti.
    orgsplit(&[
        "token",
        "revoke",
        "pyjwt-4711",
        "--file",
        &revoked.display().to_string(),
    ]);
    let (status, _, _) = push_as(&o, Some(&bearer(&pyjwt_jti)), &acme()).await;
    assert_eq!(status, 401);
    let (status, _, body) = push_as(&o, Some(&bearer(&pyjwt_plain)), &acme()).await;
    assert_eq!(status, 204, "a token without jti is unaffected: {body}");
    // Revoking twice changes nothing; a broken file keeps the last good list.
    let said = orgsplit(&[
        "token",
        "revoke",
        &leaked,
        "--file",
        &revoked.display().to_string(),
    ]);
    assert!(said.contains("already revoked"), "{said}");
    std::fs::write(&revoked, "not a jti\n").unwrap();
    let (status, _, _) = push_as(&o, Some(&bearer(&leaked)), &acme()).await;
    assert_eq!(status, 401, "still revoked after a bad edit");
    let page = o.metrics().await;
    assert_eq!(
        metric(
            &page,
            "orgsplit_auth_failures_total{mode=\"jwt\",reason=\"revoked\""
        ),
        3.0,
        "{page}"
    );
    assert_eq!(upstream.received().len(), 6);
}
