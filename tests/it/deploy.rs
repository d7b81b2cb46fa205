//! `deploy/` as kustomize renders, for every overlay, into valid
//! Kubernetes objects (checked field by field against the typed structs)
//! that say what an operator needs: RBAC that only reads Namespaces,
//! hardened pods, a config orgsplit accepts whose change rolls the pods,
//! and each overlay's own part. Rendering uses `kubectl kustomize`, as an
//! operator's `kubectl apply -k` does.

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    autoscaling::v2::HorizontalPodAutoscaler,
    core::v1 as core,
    policy::v1::PodDisruptionBudget,
    rbac::v1 as rbac,
};
use serde_json::{json, Value};

const OVERLAYS: [&str; 4] = ["cluster", "sidecar", "monitoring", "gateway"];

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// kubectl; its absence fails the test unless skipping was asked for.
fn kubectl() -> Option<PathBuf> {
    let found = which("kubectl");
    if found.is_none() {
        // Never a silent skip: only when asked for (ORGSPLIT_TEST_SKIP_MISSING=1).
        if !std::env::var("ORGSPLIT_TEST_SKIP_MISSING").is_ok_and(|v| v == "1") {
            panic!("kubectl is missing; scripts/test installs it (or set ORGSPLIT_TEST_SKIP_MISSING=1 to skip these tests)");
        }
        eprintln!("SKIPPED: kubectl not installed");
    }
    found
}

/// `kubectl kustomize <dir>`: the objects `kubectl apply -k <dir>` applies.
fn render_dir(kubectl: &Path, dir: &Path) -> Vec<Value> {
    let text = common::stdout_of(
        std::process::Command::new(kubectl)
            .arg("kustomize")
            .arg(dir),
    );
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn render(kubectl: &Path, overlay: &str) -> Vec<Value> {
    render_dir(kubectl, &deploy_dir().join("overlays").join(overlay))
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn kinds(docs: &[Value]) -> Vec<String> {
    let mut k: Vec<String> = docs
        .iter()
        .map(|d| d["kind"].as_str().unwrap().to_string())
        .collect();
    k.sort();
    k.dedup();
    k
}

/// Every field of `original` survives a round trip through the typed
/// struct: a misspelt or misplaced field would be dropped by serde.
fn assert_round_trips<T: serde::de::DeserializeOwned + serde::Serialize>(
    file: &str,
    original: &Value,
) -> T {
    let typed: T = serde_json::from_value(original.clone())
        .unwrap_or_else(|e| panic!("{file}: {} does not parse: {e}", original["kind"]));
    let back = serde_json::to_value(&typed).unwrap();
    covered(file, "", original, &back);
    typed
}

fn covered(file: &str, path: &str, want: &Value, got: &Value) {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, v) in w {
                match g.get(k) {
                    Some(gv) => covered(file, &format!("{path}.{k}"), v, gv),
                    None if v.is_null() => {}
                    None => panic!("{file}: unknown field {path}.{k}"),
                }
            }
        }
        (Value::Array(w), Value::Array(g)) => {
            assert_eq!(w.len(), g.len(), "{file}: {path}");
            for (i, (a, b)) in w.iter().zip(g).enumerate() {
                covered(file, &format!("{path}[{i}]"), a, b);
            }
        }
        (w, g) => assert!(
            w == g || w.to_string().trim_matches('"') == g.to_string().trim_matches('"'),
            "{file}: {path}: {w} became {g}"
        ),
    }
}

/// Checks `doc` against the typed struct of its kind (a misspelt or
/// misplaced field fails).
fn check_typed(overlay: &str, doc: &Value) {
    let at = format!("{overlay}: {} {}", doc["kind"], doc["metadata"]["name"]);
    // kustomize wraps long base64 over lines, which the API server (Go's
    // decoder) skips and the typed struct does not.
    let mut doc = doc.clone();
    let secret = doc["kind"] == "Secret";
    if let Some(data) = doc["data"].as_object_mut().filter(|_| secret) {
        for v in data.values_mut() {
            *v = v.as_str().unwrap().replace(char::is_whitespace, "").into();
        }
    }
    let doc = &doc;
    match doc["kind"].as_str().unwrap_or_default() {
        "Namespace" => drop(assert_round_trips::<core::Namespace>(&at, doc)),
        "ServiceAccount" => drop(assert_round_trips::<core::ServiceAccount>(&at, doc)),
        "ConfigMap" => drop(assert_round_trips::<core::ConfigMap>(&at, doc)),
        "Secret" => drop(assert_round_trips::<core::Secret>(&at, doc)),
        "Service" => drop(assert_round_trips::<core::Service>(&at, doc)),
        "Deployment" => drop(assert_round_trips::<Deployment>(&at, doc)),
        "StatefulSet" => drop(assert_round_trips::<StatefulSet>(&at, doc)),
        "ClusterRole" => drop(assert_round_trips::<rbac::ClusterRole>(&at, doc)),
        "ClusterRoleBinding" => drop(assert_round_trips::<rbac::ClusterRoleBinding>(&at, doc)),
        "PodDisruptionBudget" => drop(assert_round_trips::<PodDisruptionBudget>(&at, doc)),
        "HorizontalPodAutoscaler" => drop(assert_round_trips::<HorizontalPodAutoscaler>(&at, doc)),
        "NetworkPolicy" => drop(assert_round_trips::<NetworkPolicy>(&at, doc)),
        // The Prometheus operator's CRDs: no typed structs here; their
        // shape is checked in `the_monitoring_overlay_watches_what_exists`.
        "ServiceMonitor" | "PrometheusRule" => {
            assert_eq!(doc["apiVersion"], "monitoring.coreos.com/v1", "{at}")
        }
        other => panic!("{at}: unexpected kind {other:?}"),
    }
}

#[test]
fn every_overlay_renders_to_valid_typed_objects() {
    let Some(kubectl) = kubectl() else { return };
    for overlay in OVERLAYS {
        let docs = render(&kubectl, overlay);
        for doc in &docs {
            check_typed(overlay, doc);
            // Every object says it belongs to orgsplit (or, in the sidecar
            // example, to the Prometheus it rides with).
            let name = &doc["metadata"]["labels"]["app.kubernetes.io/name"];
            assert!(
                name == "orgsplit" || name == "prometheus" || doc["kind"] == "Namespace",
                "{overlay}: {} {} has no app.kubernetes.io/name",
                doc["kind"],
                doc["metadata"]["name"]
            );
        }
        let want: &[&str] = match overlay {
            "sidecar" => &[
                "ClusterRole",
                "ClusterRoleBinding",
                "ConfigMap",
                "Deployment",
            ],
            _ => &[
                "ClusterRole",
                "ClusterRoleBinding",
                "ConfigMap",
                "Deployment",
                "HorizontalPodAutoscaler",
                "Namespace",
                "PodDisruptionBudget",
                "Service",
                "ServiceAccount",
            ],
        };
        let have = kinds(&docs);
        for k in want {
            assert!(
                have.iter().any(|h| h == k),
                "{overlay} lacks a {k}: {have:?}"
            );
        }
    }
}

/// The orgsplit container of a pod spec (a container or a native sidecar).
fn orgsplit_container(pod: &Value) -> &Value {
    pod["containers"]
        .as_array()
        .into_iter()
        .chain(pod["initContainers"].as_array())
        .flatten()
        .find(|c| c["name"] == "orgsplit")
        .expect("an orgsplit container")
}

/// Non-root, read-only root filesystem, no capabilities, no privilege
/// escalation, seccomp RuntimeDefault (on the pod or the container).
fn assert_hardened(at: &str, pod: &Value, c: &Value) {
    let either = |field: &str| {
        let v = &c["securityContext"][field];
        if v.is_null() {
            pod["securityContext"][field].clone()
        } else {
            v.clone()
        }
    };
    assert_eq!(either("runAsNonRoot"), true, "{at}");
    assert!(either("runAsUser").as_i64().is_some_and(|u| u > 0), "{at}");
    assert_eq!(either("seccompProfile")["type"], "RuntimeDefault", "{at}");
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{at}");
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{at}");
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{at}");
    assert!(sc["capabilities"]["add"].is_null(), "{at}");
    assert!(c["resources"]["requests"]["cpu"].is_string(), "{at}");
    assert!(c["resources"]["limits"]["memory"].is_string(), "{at}");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz", "{at}");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz", "{at}");
}

/// The ConfigMap a pod mounts at `mount`, from the rendered documents.
fn mounted_config<'a>(docs: &'a [Value], pod: &Value, c: &Value, mount: &str) -> &'a Value {
    let volume = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == mount)
        .unwrap_or_else(|| panic!("nothing mounted at {mount}"))["name"]
        .clone();
    let cm = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == volume)
        .unwrap()["configMap"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    find(docs, "ConfigMap", &cm)
}

#[test]
fn the_cluster_overlay_runs_two_hardened_replicas_that_only_read_namespaces() {
    let Some(kubectl) = kubectl() else { return };
    let docs = render(&kubectl, "cluster");
    let d = find(&docs, "Deployment", "orgsplit");
    assert_eq!(d["metadata"]["namespace"], "orgsplit");
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
    let pod = &d["spec"]["template"]["spec"];
    let c = orgsplit_container(pod);
    assert_hardened("cluster", pod, c);
    let config = load_config(
        mounted_config(&docs, pod, c, "/etc/orgsplit")["data"]["config.yaml"]
            .as_str()
            .unwrap(),
    );
    let needed = config.shutdown.grace_period + config.upstream.timeout;
    assert!(
        pod["terminationGracePeriodSeconds"].as_u64().unwrap() > needed.as_secs(),
        "in-flight pushes finish before the kubelet kills the pod ({needed:?})"
    );
    assert!(c["image"]
        .as_str()
        .unwrap()
        .starts_with("ghcr.io/orgsplit/orgsplit:"));
    assert_eq!(pod["serviceAccountName"], "orgsplit");
    find(&docs, "ServiceAccount", "orgsplit");

    // RBAC: namespaces, read only, bound to that service account.
    let role = find(&docs, "ClusterRole", "orgsplit");
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]}])
    );
    let binding = find(&docs, "ClusterRoleBinding", "orgsplit");
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "orgsplit", "namespace": "orgsplit"}])
    );
    assert_eq!(binding["roleRef"]["name"], "orgsplit");
    // No other rules anywhere.
    let roles: Vec<_> = docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role")
        .collect();
    assert_eq!(roles.len(), 1);

    // Two stay up through drains; the autoscaler starts at two, on CPU.
    let pdb = find(&docs, "PodDisruptionBudget", "orgsplit");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    let hpa = find(&docs, "HorizontalPodAutoscaler", "orgsplit");
    assert_eq!(hpa["spec"]["minReplicas"], 2);
    assert_eq!(hpa["spec"]["metrics"][0]["resource"]["name"], "cpu");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "orgsplit");

    // The Service reaches the pods by their labels and named port.
    let svc = find(&docs, "Service", "orgsplit");
    let labels = &d["spec"]["template"]["metadata"]["labels"];
    for (k, v) in svc["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&labels[k], v, "Service selector {k}");
    }
    let port = &svc["spec"]["ports"][0]["targetPort"];
    assert!(c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| &p["name"] == port));

    // The config is a hashed ConfigMap the pod mounts, and orgsplit takes it.
    let cm = mounted_config(&docs, pod, c, "/etc/orgsplit");
    let name = cm["metadata"]["name"].as_str().unwrap();
    assert!(
        name.starts_with("orgsplit-") && name.len() > "orgsplit-".len(),
        "{name}"
    );
    let config = load_config(cm["data"]["config.yaml"].as_str().unwrap());
    assert!(config.lookup.kubernetes.is_some());
    assert_eq!(
        config.listen.port(),
        c["ports"][0]["containerPort"].as_u64().unwrap() as u16
    );
}

fn load_config(text: &str) -> orgsplit::config::Config {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, text).unwrap();
    orgsplit::config::Config::load(Some(&path), &Default::default())
        .unwrap_or_else(|e| panic!("orgsplit refuses the shipped config: {e}\n{text}"))
}

#[test]
fn a_config_change_rolls_the_pods() {
    let Some(kubectl) = kubectl() else { return };
    let copy = tempfile::tempdir().unwrap();
    copy_dir(&deploy_dir(), copy.path());
    let pod_template =
        |docs: &[Value]| find(docs, "Deployment", "orgsplit")["spec"]["template"].clone();
    let before = render_dir(&kubectl, &copy.path().join("overlays/cluster"));
    let config = copy.path().join("base/config.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("level: info", "level: debug")).unwrap();
    let after = render_dir(&kubectl, &copy.path().join("overlays/cluster"));
    // A new ConfigMap name, referenced by the pod template: a rollout.
    assert_ne!(pod_template(&before), pod_template(&after));
    let names = |docs: &[Value]| {
        docs.iter()
            .filter(|d| d["kind"] == "ConfigMap")
            .map(|d| d["metadata"]["name"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_ne!(names(&before), names(&after));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

#[test]
fn the_sidecar_overlay_adds_orgsplit_to_the_prometheus_pod() {
    let Some(kubectl) = kubectl() else { return };
    let docs = render(&kubectl, "sidecar");
    let prom = find(&docs, "Deployment", "prometheus");
    let pod = &prom["spec"]["template"]["spec"];
    let mut names: Vec<&str> = pod["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["orgsplit", "prometheus"]);
    let c = orgsplit_container(pod);
    assert_hardened("sidecar", pod, c);

    // Prometheus writes to the port the sidecar listens on.
    let cm = mounted_config(&docs, pod, c, "/etc/orgsplit");
    let config = load_config(cm["data"]["config.yaml"].as_str().unwrap());
    let port = config.listen.port();
    // On a stop both get SIGTERM: orgsplit serves its grace period while
    // Prometheus flushes, and the pod waits for it and the last pushes.
    let needed = config.shutdown.grace_period + config.upstream.timeout;
    assert!(
        pod["terminationGracePeriodSeconds"].as_u64().unwrap() > needed.as_secs(),
        "the pod outlives orgsplit's grace period plus upstream.timeout ({needed:?})"
    );
    let prom_c = pod["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "prometheus")
        .unwrap();
    let prom_cm = mounted_config(&docs, pod, prom_c, "/etc/prometheus");
    let prom_yml: Value =
        serde_yaml::from_str(prom_cm["data"]["prometheus.yml"].as_str().unwrap()).unwrap();
    assert_eq!(
        prom_yml["remote_write"][0]["url"],
        format!("http://localhost:{port}/api/v1/push")
    );
    assert!(
        pod["containers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["name"] != "orgsplit")
            .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
            .all(|p| p["containerPort"] != port),
        "no other container of the pod uses port {port}"
    );

    // The pod's service account may read namespaces, and only that.
    let sa = pod["serviceAccountName"].as_str().unwrap();
    let ns = prom["metadata"]["namespace"].as_str().unwrap();
    let binding = find(&docs, "ClusterRoleBinding", "orgsplit-sidecar");
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": sa, "namespace": ns}])
    );
    let role = find(&docs, "ClusterRole", "orgsplit-sidecar");
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]}])
    );
}

#[tokio::test]
async fn the_monitoring_overlay_watches_what_exists() {
    let Some(kubectl) = kubectl() else { return };
    let docs = render(&kubectl, "monitoring");
    let svc = find(&docs, "Service", "orgsplit");
    let sm = find(&docs, "ServiceMonitor", "orgsplit");
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(
            &svc["metadata"]["labels"][k], v,
            "ServiceMonitor selects the Service by {k}"
        );
    }
    let port = &sm["spec"]["endpoints"][0]["port"];
    assert!(svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| &p["name"] == port));
    assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");

    // Every orgsplit metric an alert uses is one orgsplit exposes.
    let dir = tempfile::tempdir().unwrap();
    let upstream = common::Upstream::start().await;
    common::write_table(dir.path(), common::TABLE);
    let o = common::Orgsplit::start(
        dir.path(),
        &common::config(dir.path(), &upstream.url(), "  unmapped: drop\n"),
    )
    .await;
    let page = o.metrics().await;
    let registered =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/metrics.rs"))
            .unwrap();
    let rule = find(&docs, "PrometheusRule", "orgsplit");
    let mut used = 0;
    for r in rule["spec"]["groups"][0]["rules"].as_array().unwrap() {
        let expr = r["expr"].as_str().unwrap();
        assert!(
            r["alert"].is_string() && r["labels"]["severity"].is_string(),
            "{r}"
        );
        for name in metric_names(expr)
            .into_iter()
            .filter(|n| n.starts_with("orgsplit_"))
        {
            used += 1;
            // Exposed now, or (counters labelled by what happened appear
            // only once it has) registered under that name.
            let exposed = page
                .lines()
                .any(|l| l.starts_with("# TYPE ") && l[7..].starts_with(&format!("{name} ")));
            assert!(
                exposed || registered.contains(&format!("\"{name}\"")),
                "alert {} uses {name}, which orgsplit does not expose",
                r["alert"]
            );
        }
    }
    assert!(used >= 5, "the rules use orgsplit's metrics");
}

/// Identifiers in a PromQL expression that look like metric names.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_braces = false;
    for ch in expr.chars().chain([' ']) {
        match ch {
            '{' => in_braces = true,
            '}' => in_braces = false,
            _ => {}
        }
        if ch.is_ascii_alphanumeric() || ch == '_' || ch == ':' {
            word.push(ch);
        } else {
            if !in_braces && ch != '=' && word.contains('_') {
                out.push(std::mem::take(&mut word));
            }
            word.clear();
        }
    }
    out
}

#[tokio::test]
async fn the_gateway_overlay_lets_nobody_in_until_credentials_are_added() {
    let Some(kubectl) = kubectl() else { return };
    let docs = render(&kubectl, "gateway");
    let d = find(&docs, "Deployment", "orgsplit");
    let pod = &d["spec"]["template"]["spec"];
    let c = orgsplit_container(pod);
    assert_hardened("gateway", pod, c);

    // The auth Secret is mounted where the config looks for it.
    let secret = find(&docs, "Secret", "orgsplit-auth");
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| {
            let v = pod["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == m["name"])
                .unwrap();
            v["secret"]["secretName"] == "orgsplit-auth"
        })
        .expect("the auth Secret is mounted");
    assert_eq!(mount["readOnly"], true);
    let at = mount["mountPath"].as_str().unwrap().to_string();
    let cm = mounted_config(&docs, pod, c, "/etc/orgsplit");
    let text = cm["data"]["config.yaml"].as_str().unwrap();
    let config = load_config(text);
    assert!(
        !config.auth.anonymous.enabled,
        "the gateway is not anonymous"
    );

    // Run orgsplit on that config with the Secret's files where the pod
    // has them (and a file table instead of the Kubernetes API).
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("auth");
    std::fs::create_dir(&files).unwrap();
    let data = secret["data"].as_object().unwrap();
    assert!(data.contains_key("jwks.json") && data.contains_key("users.yaml"));
    for (name, b64) in data {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap().replace(char::is_whitespace, ""))
            .unwrap();
        std::fs::write(files.join(name), bytes).unwrap();
    }
    let mut yaml: serde_yaml::Value =
        serde_yaml::from_str(&text.replace(&at, &files.display().to_string())).unwrap();
    common::write_table(dir.path(), common::TABLE);
    yaml["lookup"] = serde_yaml::from_str(&format!(
        "{{file: \"{}\"}}",
        dir.path().join("table.yaml").display()
    ))
    .unwrap();
    let upstream = common::Upstream::start().await;
    yaml["upstream"]["url"] = upstream.url().into();
    let o = common::Orgsplit::start(dir.path(), &serde_yaml::to_string(&yaml).unwrap()).await;
    let push = common::request(vec![common::series(
        &[("__name__", "up"), ("namespace", "shop-prod")],
        1.0,
        1,
    )]);
    let (status, headers, _) = o.push(&push).await;
    assert_eq!(status, 401);
    assert!(headers.contains_key("www-authenticate"));
    let r = common::client()
        .get(o.url("/prometheus/api/v1/query?query=up"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(upstream.received().is_empty());

    // Only labelled clients (and the monitoring namespace) reach the port.
    let np = find(&docs, "NetworkPolicy", "orgsplit-clients-only");
    assert_eq!(np["metadata"]["namespace"], d["metadata"]["namespace"]);
    assert_eq!(
        np["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
        "orgsplit"
    );
    let rules = np["spec"]["ingress"].as_array().unwrap();
    assert!(rules
        .iter()
        .all(|r| r["from"].as_array().is_some_and(|f| !f.is_empty())));
}

/// `kubectl apply --dry-run=client -k` of every overlay, against a
/// discovery-only API stand-in (kubectl needs discovery to map kinds to
/// resources; without a cluster it cannot run at all).
#[tokio::test]
async fn kubectl_client_dry_run_accepts_every_overlay() {
    let Some(kubectl) = kubectl() else { return };
    let addr = discovery_server().await;
    for overlay in OVERLAYS {
        let out = tokio::process::Command::new(&kubectl)
            .args(["apply", "--dry-run=client", "--validate=false", "-k"])
            .arg(deploy_dir().join("overlays").join(overlay))
            .arg(format!("--server=http://{addr}"))
            .env("KUBECONFIG", "/dev/null")
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{overlay}: {stdout}\n{stderr}");
        let want: &[&str] = match overlay {
            "sidecar" => &["deployment.apps/prometheus created (dry run)"],
            "monitoring" => &["servicemonitor.monitoring.coreos.com/orgsplit created (dry run)"],
            "gateway" => {
                &["networkpolicy.networking.k8s.io/orgsplit-clients-only created (dry run)"]
            }
            _ => &[
                "deployment.apps/orgsplit created (dry run)",
                "clusterrole.rbac.authorization.k8s.io/orgsplit created (dry run)",
                "service/orgsplit created (dry run)",
                "poddisruptionbudget.policy/orgsplit created (dry run)",
            ],
        };
        for w in want {
            assert!(
                stdout.contains(w),
                "{overlay}: {w} missing:\n{stdout}\n{stderr}"
            );
        }
    }
}

#[test]
fn the_remote_write_example_points_at_the_service() {
    let text = std::fs::read_to_string(deploy_dir().join("examples/prometheus-remote-write.yaml"))
        .unwrap();
    let v: Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(
        v["remote_write"][0]["url"],
        "http://orgsplit.orgsplit.svc:8080/api/v1/push"
    );
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|p| p.join(bin))
        .find(|p| p.is_file())
}

/// Serves the discovery documents for the kinds deploy/ uses, and 404 for
/// every object (so each is "created").
async fn discovery_server() -> std::net::SocketAddr {
    use axum::extract::Path as UrlPath;
    use axum::http::StatusCode;
    let resource = |name: &str, kind: &str, namespaced: bool| {
        json!({"name": name, "singularName": "", "namespaced": namespaced, "kind": kind,
               "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]})
    };
    let groups: Vec<(&str, &str, Vec<Value>)> = vec![
        (
            "apps",
            "v1",
            vec![
                resource("deployments", "Deployment", true),
                resource("statefulsets", "StatefulSet", true),
            ],
        ),
        (
            "networking.k8s.io",
            "v1",
            vec![resource("networkpolicies", "NetworkPolicy", true)],
        ),
        (
            "monitoring.coreos.com",
            "v1",
            vec![
                resource("servicemonitors", "ServiceMonitor", true),
                resource("prometheusrules", "PrometheusRule", true),
            ],
        ),
        (
            "rbac.authorization.k8s.io",
            "v1",
            vec![
                resource("clusterroles", "ClusterRole", false),
                resource("clusterrolebindings", "ClusterRoleBinding", false),
            ],
        ),
        (
            "policy",
            "v1",
            vec![resource(
                "poddisruptionbudgets",
                "PodDisruptionBudget",
                true,
            )],
        ),
        (
            "autoscaling",
            "v2",
            vec![resource(
                "horizontalpodautoscalers",
                "HorizontalPodAutoscaler",
                true,
            )],
        ),
    ];
    let core = json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1", "resources": [
        resource("namespaces", "Namespace", false),
        resource("configmaps", "ConfigMap", true),
        resource("services", "Service", true),
        resource("serviceaccounts", "ServiceAccount", true),
        resource("secrets", "Secret", true),
    ]});
    let group_list = json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups.iter().map(|(g, v, _)| {
        let gv = format!("{g}/{v}");
        json!({"name": g, "versions": [{"groupVersion": gv, "version": v}],
               "preferredVersion": {"groupVersion": gv, "version": v}})
    }).collect::<Vec<_>>()});
    let per_group: BTreeMap<String, Value> = groups
        .into_iter()
        .map(|(g, v, r)| {
            (
                format!("{g}/{v}"),
                json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{g}/{v}"), "resources": r}),
            )
        })
        .collect();
    let not_found = || {
        (
            StatusCode::NOT_FOUND,
            axum::Json(
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                              "reason": "NotFound", "code": 404, "message": "not found"}),
            ),
        )
    };
    let app = axum::Router::new()
        .route(
            "/version",
            axum::routing::get(|| async { axum::Json(json!({"major": "1", "minor": "32", "gitVersion": "v1.32.0"})) }),
        )
        .route(
            "/api",
            axum::routing::get(|| async {
                axum::Json(json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}))
            }),
        )
        .route("/api/v1", axum::routing::get(move || async move { axum::Json(core) }))
        .route("/apis", axum::routing::get(move || async move { axum::Json(group_list) }))
        .route(
            "/apis/{group}/{version}",
            axum::routing::get(move |UrlPath((g, v)): UrlPath<(String, String)>| {
                let found = per_group.get(&format!("{g}/{v}")).cloned();
                async move {
                    match found {
                        Some(doc) => axum::response::IntoResponse::into_response(axum::Json(doc)),
                        None => axum::response::IntoResponse::into_response(not_found()),
                    }
                }
            }),
        )
        .fallback(move || async move { not_found() });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[test]
fn the_image_runs_as_the_user_the_manifests_expect() {
    let Some(kubectl) = kubectl() else { return };
    let dockerfile =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("cargo build --release --locked"));
    // The last stage's user: numeric (runAsNonRoot can only check a
    // number) and the one the pods run as.
    let runtime = dockerfile.rsplit("\nFROM ").next().unwrap();
    let user = runtime
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the runtime stage sets USER");
    let uid: i64 = user
        .split(':')
        .next()
        .unwrap()
        .trim()
        .parse()
        .expect("a numeric USER");
    assert_ne!(uid, 0);
    let docs = render(&kubectl, "cluster");
    let pod = &find(&docs, "Deployment", "orgsplit")["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsUser"], uid);
}

/// The Grafana dashboard ships as a ConfigMap Grafana's sidecar picks up,
/// every query in it is valid PromQL (`promtool`, from Debian's
/// prometheus package), and every orgsplit metric it reads is one a
/// running orgsplit exposes.
#[tokio::test]
async fn the_dashboard_is_valid_promql_over_metrics_orgsplit_exposes() {
    let Some(kubectl) = kubectl() else { return };
    let docs = render(&kubectl, "monitoring");
    let cm = find(&docs, "ConfigMap", "orgsplit-dashboard");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let dashboard: Value =
        serde_json::from_str(cm["data"]["orgsplit.json"].as_str().unwrap()).unwrap();
    assert_eq!(dashboard["uid"], "orgsplit");
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| {
            t["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "5m")
        })
        .collect();
    assert!(exprs.len() >= 20, "{} queries", exprs.len());

    // Valid PromQL: each query as a recording rule, checked by promtool.
    let Some(promtool) = common::prom::binary("promtool") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rules = json!({"groups": [{"name": "dashboard", "rules": exprs.iter().enumerate()
        .map(|(i, e)| json!({"record": format!("dashboard:query{i}"), "expr": e}))
        .collect::<Vec<_>>()}]});
    let path = dir.path().join("dashboard-rules.yaml");
    std::fs::write(&path, serde_yaml::to_string(&rules).unwrap()).unwrap();
    common::stdout_of(
        std::process::Command::new(promtool)
            .args(["check", "rules"])
            .arg(&path),
    );

    // Over metrics orgsplit exposes (per-tenant ones with metrics.per_tenant).
    let upstream = common::Upstream::start().await;
    common::write_table(dir.path(), common::TABLE);
    let o = common::Orgsplit::start(
        dir.path(),
        &format!(
            "{}metrics:\n  per_tenant: true\n",
            common::config(dir.path(), &upstream.url(), "  unmapped: drop\n")
        ),
    )
    .await;
    let (status, _, _) = o
        .push(&common::request(vec![common::series(
            &[("__name__", "up"), ("namespace", "shop-prod")],
            1.0,
            1,
        )]))
        .await;
    assert_eq!(status, 204);
    let (status, _, _) = o.push_raw(b"not snappy".to_vec()).await;
    assert_eq!(status, 400);
    let page = o.metrics().await;
    let registered =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/metrics.rs"))
            .unwrap();
    for expr in &exprs {
        for name in metric_names(expr)
            .into_iter()
            .filter(|n| n.starts_with("orgsplit_"))
        {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name);
            // Exposed now, or (counters labelled by what happened appear
            // only once it has) registered under that name.
            let exposed = page
                .lines()
                .any(|l| l.starts_with("# TYPE ") && l[7..].starts_with(&format!("{base} ")));
            assert!(
                exposed || registered.contains(&format!("\"{base}\"")),
                "the dashboard reads {name}, which orgsplit does not expose: {expr}"
            );
        }
    }
}
