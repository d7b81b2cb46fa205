//! What authentication adds to each request: verifying a token (HS256,
//! ES256, RS256 with a trust store) and a remembered basic-auth password.
//! `cargo bench --bench auth`; compare with a push's cost (`split` bench).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use orgsplit::auth::{basic, jwt};
use orgsplit::cli::keys as cli;

fn token(
    dir: &std::path::Path,
    key: Option<&std::path::Path>,
    secret: Option<&std::path::Path>,
) -> String {
    cli::token(&cli::TokenRequest {
        key,
        hs_secret_file: secret,
        ..cli::TokenRequest::for_tenant("acme")
    })
    .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let store = d.join("trust");
    std::fs::create_dir(&store).unwrap();
    let secret = d.join("secret");
    std::fs::write(&secret, "a-long-enough-hs256-secret").unwrap();
    let mut tokens = vec![("hs256", token(d, None, Some(&secret)))];
    for (name, kind) in [("es256", cli::KeyType::Ec), ("rs256", cli::KeyType::Rsa)] {
        let key = d.join(format!("{name}.pem"));
        cli::create(&key, kind, false).unwrap();
        std::fs::write(
            store.join(format!("{name}.pub")),
            cli::public(&key).unwrap(),
        )
        .unwrap();
        tokens.push((name, token(d, Some(&key), None)));
    }
    let verifier = jwt::Verifier::new(
        &orgsplit::config::Jwt {
            hs256_secret_file: Some(secret),
            trust_store: Some(store),
            ..Default::default()
        },
        metrics::Counter::noop(),
    )
    .unwrap();
    let mut group = c.benchmark_group("authenticate");
    for (name, token) in &tokens {
        assert!(verifier.verify(token).is_ok(), "{name}");
        group.bench_function(format!("jwt-{name}"), |b| {
            b.iter(|| verifier.verify(black_box(token)).unwrap())
        });
    }
    let hash = basic::hash("a password").unwrap();
    let users = basic::Users::parse(&format!(
        "u: {{password_hash: '{hash}', allowance: [acme]}}\n"
    ))
    .unwrap();
    let user = users.get("u").unwrap();
    assert!(users.verify("u", b"a password").is_some());
    group.bench_function("basic-remembered", |b| {
        b.iter(|| assert!(user.remembered(black_box(b"a password"))))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
