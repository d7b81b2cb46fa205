//! The `orgsplit` binary's command line, as a user runs it.

use crate::common;

use std::process::Command;

use common::stdout_of;

fn orgsplit() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_orgsplit"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    // keep the caller's ORGSPLIT_* variables out of these tests
    for (k, _) in std::env::vars() {
        if k.starts_with("ORGSPLIT_") {
            c.env_remove(k);
        }
    }
    c
}

/// `orgsplit inspect` on `capture` with the example config; its stdout,
/// after checking it succeeded.
fn inspect(capture: impl AsRef<std::ffi::OsStr>) -> String {
    stdout_of(
        orgsplit()
            .args(["inspect", "--config", "fixtures/local.yaml"])
            .arg(capture),
    )
}

#[test]
fn check_config_prints_the_effective_config_of_the_readme_example() {
    let stdout = stdout_of(
        orgsplit()
            .args(["check-config", "--config", "fixtures/local.yaml"])
            .env("ORGSPLIT_UPSTREAM_TIMEOUT", "3s"),
    );
    assert!(
        stdout.contains("url: http://localhost:9009/api/v1/push"),
        "{stdout}"
    );
    assert!(
        stdout.contains("timeout: 3s"),
        "environment override shown: {stdout}"
    );
    assert!(stdout.contains("tenant_header: X-Scope-OrgID"), "{stdout}");
    assert!(stdout.contains("5 namespaces"), "{stdout}");
    assert!(stdout.contains("configuration is valid"), "{stdout}");
}

#[test]
fn unknown_keys_fail_naming_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "upstream:\n  url: http://x/api/v1/push\n  tenant_heder: X\nrouting: {unmapped: drop}\nlookup: {file: fixtures/namespaces.yaml}\n",
    )
    .unwrap();
    let out = orgsplit()
        .args(["check-config", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("tenant_heder"), "{stderr}");
    assert!(stderr.contains("bad.yaml"), "{stderr}");
}

#[test]
fn config_from_the_environment_variable() {
    let stdout = stdout_of(
        orgsplit()
            .arg("check-config")
            .env("ORGSPLIT_CONFIG", "fixtures/local.yaml")
            .env("ORGSPLIT_ROUTING_UNMAPPED", "reject"),
    );
    assert!(stdout.contains("unmapped: reject"), "{stdout}");
}

#[test]
fn a_missing_table_file_is_a_clear_error() {
    let out = orgsplit()
        .args([
            "check-config",
            "--config",
            "fixtures/local.yaml",
            "--lookup-file",
            "/nonexistent/ns.yaml",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("/nonexistent/ns.yaml"), "{stderr}");
}

#[test]
fn inspect_shows_the_split_of_a_capture_without_sending() {
    // fixtures/local.yaml points at an upstream that is not running: inspect
    // must not need it.
    let stdout = inspect("fixtures/requests/prometheus-2.42-series-2000.snappy");
    assert!(stdout.contains("2000 series"), "{stdout}");
    let row = |tenant: &str| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(tenant))
            .unwrap_or_else(|| panic!("no row for {tenant}:\n{stdout}"))
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    let (acme, globex, unassigned) = (row("acme"), row("globex"), row("unassigned"));
    assert_eq!(acme + globex + unassigned, 2000);
    assert!(stdout.contains("no_label"), "{stdout}");
    assert!(
        stdout.contains("job=\"platform\""),
        "an example is shown: {stdout}"
    );
}

#[test]
fn inspect_understands_remote_write_2_0_captures() {
    let stdout = inspect("fixtures/requests/rw2/prometheus-2.42-series-2000.v2.snappy");
    assert!(stdout.contains("remote write 2.0"), "{stdout}");
    assert!(stdout.contains("2000 series"), "{stdout}");
    // The same split as the 1.0 capture it was built from.
    let v1 = inspect("fixtures/requests/prometheus-2.42-series-2000.snappy");
    let rows = |text: &str| -> Vec<(String, String)> {
        text.lines()
            .filter(|l| {
                ["acme ", "globex ", "unassigned "]
                    .iter()
                    .any(|t| l.starts_with(t))
            })
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f[0].to_string(), f[1].to_string())
            })
            .collect()
    };
    assert_eq!(rows(&stdout), rows(&v1));
    assert!(stdout.contains("job=\"platform\""), "{stdout}");
}

#[test]
fn inspect_reads_stdin_and_rejects_garbage() {
    use std::io::Write;
    let mut child = orgsplit()
        .args(["inspect", "-c", "fixtures/local.yaml", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"not a capture")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("neither"));
}

#[test]
fn check_config_refuses_a_plaintext_users_file() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.yaml");
    std::fs::write(&users, "prom: {password: hunter2, allowance: [acme]}\n").unwrap();
    let out = orgsplit()
        .args(["check-config", "--config", "fixtures/local.yaml"])
        .env("ORGSPLIT_AUTH_BASIC_USERS_FILE", &users)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("plaintext"), "{stderr}");
}

#[test]
fn keys_and_tokens_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pem");
    let store = dir.path().join("store");
    std::fs::create_dir(&store).unwrap();
    let run = |args: &[&str]| {
        let out = orgsplit().args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let k = key.to_str().unwrap();
    // No config is needed for these commands.
    let (code, kid, err) = run(&["keys", "create", k]);
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = run(&["keys", "create", k]);
    assert_eq!(code, Some(2), "overwrote an existing key");
    assert!(err.contains("exists"), "{err}");
    let (_, public, _) = run(&["keys", "public", k]);
    assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"), "{public}");
    std::fs::write(store.join("k.pub"), &public).unwrap();
    let (_, token, err) = run(&[
        "token",
        "create",
        "--key",
        k,
        "--tenant",
        "acme",
        "--expires",
        "1h",
    ]);
    assert!(token.matches('.').count() == 2, "{token} {err}");
    let s = store.to_str().unwrap();
    let (code, out, _) = run(&["token", "inspect", token.trim(), "--trust-store", s]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("\"tenant_id\": \"acme\""), "{out}");
    assert!(out.contains(kid.trim()), "{out}");
    // A token for another audience, and one the trust store does not
    // know: exit 1, and why.
    let (_, other, _) = run(&[
        "token",
        "create",
        "--key",
        k,
        "--organizations",
        "acme,shop-*",
        "--audience",
        "other",
    ]);
    let (code, out, _) = run(&[
        "token",
        "inspect",
        other.trim(),
        "--trust-store",
        s,
        "--audience",
        "orgsplit",
    ]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("aud"), "{out}");
    std::fs::remove_file(store.join("k.pub")).unwrap();
    let (code, out, _) = run(&["token", "inspect", token.trim(), "--trust-store", s]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("no key with its kid"), "{out}");
    let (code, _, err) = run(&["token", "create", "--key", k]);
    assert_ne!(code, Some(0), "a token for nobody: {err}");
}

#[test]
fn inspect_understands_loki_captures() {
    // A push captured from python-logging-loki 0.3.1 (three records, one
    // stream each, merged into one push).
    let stdout = inspect("fixtures/requests/loki/python-logging-loki-0.3.1.json");
    assert!(stdout.contains("Loki JSON"), "{stdout}");
    assert!(stdout.contains("3 streams, 3 entries"), "{stdout}");
    for tenant in ["acme", "globex", "unassigned"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(tenant) && l.ends_with(" 1")),
            "{tenant}: {stdout}"
        );
    }
    assert!(stdout.contains(r#""namespace":"kube-system""#), "{stdout}");
}

#[test]
fn inspect_reads_loki_protobuf_inside_gzip() {
    use orgsplit::formats::loki::pb;
    use prost::Message;
    use std::io::Write;
    let stream = |labels: &str, line: &str| pb::StreamAdapter {
        labels: labels.into(),
        entries: vec![pb::EntryAdapter {
            timestamp: Some(pb::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            line: line.into(),
            structured_metadata: vec![],
            parsed: vec![],
        }],
        hash: 0,
    };
    let req = pb::PushRequest {
        streams: vec![
            stream(r#"{namespace="shop-prod"}"#, "a"),
            stream(r#"{namespace="billing"}"#, "b"),
            stream(r#"{namespace="billing"}"#, "c"),
        ],
        format: String::new(),
    };
    let snappy = snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&snappy).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("push.gz");
    std::fs::write(&path, gz.finish().unwrap()).unwrap();
    let stdout = inspect(&path);
    assert!(stdout.contains("of gzip around"), "{stdout}");
    assert!(stdout.contains("Loki protobuf (snappy)"), "{stdout}");
    assert!(stdout.contains("3 streams, 3 entries"), "{stdout}");
    for (tenant, streams) in [("acme", 1), ("globex", 2)] {
        assert!(
            stdout.lines().any(|l| l.starts_with(tenant)
                && l.split_whitespace().nth(1) == Some(&streams.to_string())),
            "{tenant}: {stdout}"
        );
    }
}

#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    use std::io::Read;
    let mut child = orgsplit()
        .args(["--config", "fixtures/local.yaml", "--listen", "127.0.0.1:0"])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    // Read until the startup lines are in, then stop the server.
    let mut log = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&log).contains("orgsplit started") {
        assert!(std::time::Instant::now() < deadline, "no startup log");
        let n = stderr.read(&mut chunk).unwrap();
        assert!(n > 0, "orgsplit exited: {}", String::from_utf8_lossy(&log));
        log.extend_from_slice(&chunk[..n]);
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = String::from_utf8_lossy(&log);
    assert!(text.contains("INFO"), "{text}");
    assert!(
        !log.contains(&0x1b),
        "terminal escape codes in a piped log: {text:?}"
    );
}

#[test]
fn inspect_understands_otlp_captures() {
    // The namespace on each data point: split point by point.
    let stdout = inspect("fixtures/requests/otlp/python-sdk-1.45.2-metrics.bin");
    assert!(stdout.contains("OTLP metrics, protobuf"), "{stdout}");
    assert!(stdout.contains("request: 5 data points"), "{stdout}");
    for (tenant, points) in [
        ("acme", 1),
        ("globex", 1),
        ("platform", 1),
        ("unassigned", 2),
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(tenant) && l.ends_with(&format!(" {points}"))),
            "{tenant}: {stdout}"
        );
    }
    assert!(stdout.contains("no_organization"), "{stdout}");
    // The namespace on the resource: the resource goes whole.
    let stdout = inspect("fixtures/requests/otlp/python-sdk-1.45.2-traces.bin");
    assert!(stdout.contains("OTLP traces, protobuf"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("globex") && l.ends_with(" 3")),
        "{stdout}"
    );
    assert!(stdout.contains("every span has a tenant"), "{stdout}");
}
