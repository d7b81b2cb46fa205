//! The manifests in deploy/ are valid Kubernetes objects, say what the
//! operator needs (RBAC, probes, security), and carry a config orgsplit
//! accepts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::{
    apps::v1::Deployment, autoscaling::v2::HorizontalPodAutoscaler, core::v1 as core,
    policy::v1::PodDisruptionBudget, rbac::v1 as rbac,
};
use serde_json::{json, Value};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// Every YAML document under deploy/, with the file it came from.
fn documents() -> Vec<(String, Value)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&deploy_dir(), &mut files);
    files.sort();
    let mut docs = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v: Value = serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            if !v.is_null() {
                docs.push((f.display().to_string(), v));
            }
        }
    }
    docs
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

#[test]
fn manifests_are_valid_typed_objects() {
    let mut kinds = BTreeMap::new();
    for (file, doc) in documents() {
        let kind = doc["kind"].as_str().unwrap_or_default().to_string();
        *kinds.entry(kind.clone()).or_insert(0) += 1;
        match kind.as_str() {
            "Namespace" => drop(assert_round_trips::<core::Namespace>(&file, &doc)),
            "ServiceAccount" => drop(assert_round_trips::<core::ServiceAccount>(&file, &doc)),
            "ConfigMap" => drop(assert_round_trips::<core::ConfigMap>(&file, &doc)),
            "Service" => drop(assert_round_trips::<core::Service>(&file, &doc)),
            "Deployment" => drop(assert_round_trips::<Deployment>(&file, &doc)),
            "ClusterRole" => drop(assert_round_trips::<rbac::ClusterRole>(&file, &doc)),
            "ClusterRoleBinding" => {
                drop(assert_round_trips::<rbac::ClusterRoleBinding>(&file, &doc))
            }
            "PodDisruptionBudget" => drop(assert_round_trips::<PodDisruptionBudget>(&file, &doc)),
            "HorizontalPodAutoscaler" => {
                drop(assert_round_trips::<HorizontalPodAutoscaler>(&file, &doc))
            }
            "NetworkPolicy" => {
                let np = assert_round_trips::<NetworkPolicy>(&file, &doc);
                assert!(
                    file.contains("/examples/"),
                    "{file}: an example, not applied by default"
                );
                // It selects orgsplit's pods and admits only listed senders.
                let spec = np.spec.unwrap();
                assert_eq!(
                    spec.pod_selector.unwrap().match_labels.unwrap()["app.kubernetes.io/name"],
                    "orgsplit"
                );
                let rules = spec.ingress.unwrap();
                assert!(rules
                    .iter()
                    .all(|r| r.from.as_ref().is_some_and(|f| !f.is_empty())));
            }
            // CRDs of the Prometheus operator (deploy/monitoring/)
            "ServiceMonitor" | "PrometheusRule" => {
                assert!(
                    file.contains("/monitoring/"),
                    "{file}: CRD objects live in deploy/monitoring/"
                );
                assert_eq!(doc["apiVersion"], "monitoring.coreos.com/v1", "{file}");
            }
            // The remote_write snippet is a Prometheus config fragment.
            "" if doc.get("remote_write").is_some() => {}
            other => panic!("{file}: unexpected kind {other:?}"),
        }
    }
    for k in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
    ] {
        assert!(kinds.contains_key(k), "deploy/ lacks a {k}");
    }
}

fn find(kind: &str, name: &str) -> Value {
    documents()
        .into_iter()
        .find(|(f, d)| {
            d["kind"] == kind && d["metadata"]["name"] == name && !f.contains("/examples/")
        })
        .unwrap_or_else(|| panic!("no {kind} {name}"))
        .1
}

#[test]
fn rbac_grants_only_reading_namespaces() {
    let role = find("ClusterRole", "orgsplit");
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]}])
    );
    let binding = find("ClusterRoleBinding", "orgsplit");
    assert_eq!(binding["subjects"][0]["name"], "orgsplit");
    assert_eq!(binding["roleRef"]["name"], "orgsplit");
}

#[test]
fn deployment_is_production_shaped() {
    let d = find("Deployment", "orgsplit");
    assert_eq!(d["spec"]["replicas"], 2);
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "orgsplit");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let c = &pod["containers"][0];
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert!(c["resources"]["requests"]["cpu"].is_string());
    assert!(c["resources"]["requests"]["memory"].is_string());
    // the config it mounts is the ConfigMap's
    assert_eq!(pod["volumes"][0]["configMap"]["name"], "orgsplit");
}

#[test]
fn shipped_configs_are_accepted_by_orgsplit() {
    let dir = tempfile::tempdir().unwrap();
    for (file, doc) in documents() {
        if doc["kind"] != "ConfigMap" {
            continue;
        }
        for (key, text) in doc["data"].as_object().unwrap() {
            if key == "prometheus.yml" {
                continue;
            }
            let path = dir.path().join(key);
            std::fs::write(&path, text.as_str().unwrap()).unwrap();
            let config = orgsplit::config::Config::load(Some(&path), &Default::default())
                .unwrap_or_else(|e| panic!("{file} {key}: {e}"));
            assert!(config.lookup.kubernetes.is_some(), "{file} {key}");
        }
    }
}

/// `kubectl apply --dry-run=client -f deploy/`, against a discovery-only API
/// stand-in (kubectl needs discovery to map kinds to resources; without a
/// cluster it cannot run at all).
#[tokio::test]
async fn kubectl_client_dry_run_accepts_deploy() {
    let Some(kubectl) = which("kubectl") else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("kubectl is missing");
        }
        eprintln!("SKIPPED: kubectl not installed");
        return;
    };
    let addr = discovery_server().await;
    let out = tokio::process::Command::new(kubectl)
        .args(["apply", "--dry-run=client", "--validate=false", "-f"])
        .arg(deploy_dir())
        .arg(format!("--server=http://{addr}"))
        .env("KUBECONFIG", "/dev/null")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for want in [
        "deployment.apps/orgsplit created (dry run)",
        "clusterrole.rbac.authorization.k8s.io/orgsplit created (dry run)",
        "service/orgsplit created (dry run)",
        "poddisruptionbudget.policy/orgsplit created (dry run)",
    ] {
        assert!(stdout.contains(want), "{want} missing:\n{stdout}\n{stderr}");
    }
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
            vec![resource("deployments", "Deployment", true)],
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
