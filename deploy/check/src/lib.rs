//! Offline schema check of Kubernetes manifests.
//!
//! Each YAML document is deserialized into its k8s-openapi type (chosen by
//! `apiVersion` and `kind`): a value of the wrong type fails there, with its
//! path. k8s-openapi ignores fields it does not know, so the typed value is
//! serialized again and compared with the document: whatever the document
//! has and the round trip lost is a field the API does not have (a misspelt
//! `hostPId`, a field at the wrong level), and is reported with its path.
//! Nothing here touches the network.

use std::fmt;

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::Value;

/// One finding in one document of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based index of the YAML document in its file.
    pub document: usize,
    /// `Kind/name` when the document got that far.
    pub object: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "document {}", self.document)?;
        if let Some(object) = &self.object {
            write!(f, " ({object})")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// What a clean file held: `Kind/name` of each object, in order.
pub type Objects = Vec<String>;

/// Checks every document of a multi-document YAML text.
pub fn check_str(text: &str) -> Result<Objects, Vec<Problem>> {
    let mut objects = Vec::new();
    let mut problems = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let document = i + 1;
        match check_document(doc) {
            Ok(Some(object)) => objects.push(object),
            Ok(None) => {} // an empty document (`---` alone)
            Err((object, messages)) => {
                problems.extend(messages.into_iter().map(|message| Problem {
                    document,
                    object: object.clone(),
                    message,
                }))
            }
        }
    }
    if problems.is_empty() && objects.is_empty() {
        problems.push(Problem {
            document: 0,
            object: None,
            message: "no Kubernetes object in this file".into(),
        });
    }
    if problems.is_empty() {
        Ok(objects)
    } else {
        Err(problems)
    }
}

type DocResult = Result<Option<String>, (Option<String>, Vec<String>)>;

fn check_document(doc: serde_yaml_ng::Deserializer<'_>) -> DocResult {
    // Through serde_yaml_ng's own Value first: it refuses duplicate keys,
    // which a conversion straight into JSON would silently let the last win.
    let yaml = serde_yaml_ng::Value::deserialize(doc)
        .map_err(|e| (None, vec![format!("not valid YAML: {e}")]))?;
    if yaml.is_null() {
        return Ok(None);
    }
    let value = serde_json::to_value(&yaml)
        .map_err(|e| (None, vec![format!("not representable as JSON: {e}")]))?;
    let Some(map) = value.as_object() else {
        return Err((None, vec!["a document must be a mapping".into()]));
    };
    let text = |key: &str| map.get(key).and_then(Value::as_str).unwrap_or("");
    let (api_version, kind) = (text("apiVersion"), text("kind"));
    let name = map
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str);
    let object = Some(format!("{kind}/{}", name.unwrap_or("?")));
    let mut messages = match check_as(api_version, kind, &value) {
        Some(messages) => messages,
        None => vec![format!(
            "apiVersion {api_version:?} kind {kind:?} is not one this check knows \
             (add it to KINDS in deploy/check/src/lib.rs)"
        )],
    };
    if name.is_none_or(str::is_empty) {
        messages.push("metadata.name is missing".into());
    }
    if messages.is_empty() {
        Ok(object)
    } else {
        Err((object, messages))
    }
}

/// The kinds this check can type, by `apiVersion` and `kind`: k8s-openapi
/// has no enum over all of them, so the ones deploy/ uses (and their usual
/// companions) are listed here.
macro_rules! kinds {
    ($($ty:ty),* $(,)?) => {
        fn check_as(api_version: &str, kind: &str, value: &Value) -> Option<Vec<String>> {
            use k8s_openapi::Resource;
            $(
                if api_version == <$ty as Resource>::API_VERSION && kind == <$ty as Resource>::KIND {
                    return Some(round_trip::<$ty>(value));
                }
            )*
            None
        }

        /// `apiVersion kind` of each kind [`check_str`] can check.
        pub const KINDS: &[(&str, &str)] = &[
            $((<$ty as k8s_openapi::Resource>::API_VERSION, <$ty as k8s_openapi::Resource>::KIND)),*
        ];
    };
}

kinds! {
    k8s_openapi::api::core::v1::Namespace,
    k8s_openapi::api::core::v1::ServiceAccount,
    k8s_openapi::api::core::v1::ConfigMap,
    k8s_openapi::api::core::v1::Service,
    k8s_openapi::api::apps::v1::DaemonSet,
    k8s_openapi::api::rbac::v1::ClusterRole,
    k8s_openapi::api::rbac::v1::ClusterRoleBinding,
    k8s_openapi::api::networking::v1::NetworkPolicy,
    k8s_openapi::api::scheduling::v1::PriorityClass,
}

/// Type errors from deserializing `value` as `T`, else the fields the round
/// trip through `T` lost or changed.
fn round_trip<T: DeserializeOwned + Serialize>(value: &Value) -> Vec<String> {
    let typed: T = match serde_path_to_error::deserialize(value.clone()) {
        Ok(typed) => typed,
        Err(e) => {
            let path = e.path().to_string();
            return vec![format!("{path}: {}", e.into_inner())];
        }
    };
    let back = match serde_json::to_value(&typed) {
        Ok(back) => back,
        Err(e) => return vec![format!("cannot serialize the typed object again: {e}")],
    };
    let mut out = Vec::new();
    diff("", value, Some(&back), &mut out);
    out
}

/// Compares the document (`orig`) with its round trip (`back`), recording
/// what the round trip lost or changed.
fn diff(path: &str, orig: &Value, back: Option<&Value>, out: &mut Vec<String>) {
    let Some(back) = back else {
        // An explicit null is the same as no field at all to the API server.
        if !orig.is_null() {
            out.push(format!("{}: unknown field", display(path)));
        }
        return;
    };
    match (orig, back) {
        (Value::Object(o), Value::Object(b)) => {
            for (key, v) in o {
                let sub = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                diff(&sub, v, b.get(key), out);
            }
        }
        (Value::Array(o), Value::Array(b)) if o.len() == b.len() => {
            for (i, (v, w)) in o.iter().zip(b).enumerate() {
                diff(&format!("{path}[{i}]"), v, Some(w), out);
            }
        }
        (o, b) if o == b => {}
        // Quantities and int-or-strings written as numbers read back as text.
        (Value::Number(n), Value::String(s)) if n.to_string() == *s => {}
        (o, b) => out.push(format!("{}: {o} reads back as {b}", display(path))),
    }
}

fn display(path: &str) -> &str {
    if path.is_empty() {
        "(document)"
    } else {
        path
    }
}

/// Checks that a PrometheusRule (`monitoring.coreos.com/v1`) holds exactly
/// the rule groups of a plain Prometheus rules file: the two copies deploy/
/// ships must not drift apart. Returns the number of rules.
pub fn same_rules(prometheus_rule: &str, rules_file: &str) -> Result<usize, String> {
    let parse = |what: &str, text: &str| -> Result<Value, String> {
        let yaml: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(text).map_err(|e| format!("{what}: not valid YAML: {e}"))?;
        serde_json::to_value(&yaml).map_err(|e| format!("{what}: not representable as JSON: {e}"))
    };
    let object = parse("the PrometheusRule", prometheus_rule)?;
    let plain = parse("the rules file", rules_file)?;
    if object["apiVersion"] != "monitoring.coreos.com/v1" || object["kind"] != "PrometheusRule" {
        return Err(format!(
            "not a monitoring.coreos.com/v1 PrometheusRule: apiVersion {} kind {}",
            object["apiVersion"], object["kind"]
        ));
    }
    if object["metadata"]["name"]
        .as_str()
        .is_none_or(str::is_empty)
    {
        return Err("the PrometheusRule has no metadata.name".into());
    }
    let groups = plain["groups"]
        .as_array()
        .ok_or("the rules file has no groups")?;
    if object["spec"]["groups"] != plain["groups"] {
        let names = |v: &Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .map(|r| {
                    r["alert"]
                        .as_str()
                        .or(r["record"].as_str())
                        .unwrap_or("?")
                        .to_string()
                })
                .collect()
        };
        return Err(format!(
            "spec.groups differ from the rules file's groups (rules {:?} against {:?}; \
             every field counts)",
            names(&object["spec"]["groups"]),
            names(&plain["groups"])
        ));
    }
    Ok(groups
        .iter()
        .map(|g| g["rules"].as_array().map_or(0, Vec::len))
        .sum())
}

/// Panel types the shipped dashboard may use (Grafana's core panels).
const PANEL_TYPES: &[&str] = &[
    "timeseries",
    "table",
    "stat",
    "gauge",
    "bargauge",
    "text",
    "row",
];
/// Variables Grafana itself provides to queries.
const GRAFANA_VARIABLES: &[&str] = &["__rate_interval", "__interval", "__range", "__range_s"];

/// The `$name` and `${name}` variables a query uses.
fn variables(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find('$') {
        rest = &rest[i + 1..];
        let braced = rest.starts_with('{');
        let body = if braced { &rest[1..] } else { rest };
        let name: String = body
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.push(name);
        }
    }
    out
}

/// Checks a Grafana dashboard's JSON offline, against what Grafana needs of
/// it to load and draw: a title and uid, a schema version, panels with
/// unique ids, known types and grid positions inside the 24-column grid
/// that do not overlap, each drawn from the dashboard's Prometheus data
/// source variable with queries that use only variables the dashboard (or
/// Grafana) defines. Returns the number of panels.
pub fn check_dashboard(text: &str) -> Result<usize, Vec<String>> {
    let d: Value = serde_json::from_str(text).map_err(|e| vec![format!("not JSON: {e}")])?;
    let mut problems = Vec::new();
    for key in ["title", "uid"] {
        if d[key].as_str().is_none_or(str::is_empty) {
            problems.push(format!("{key} is missing"));
        }
    }
    if d["uid"].as_str().is_some_and(|u| u.len() > 40) {
        problems.push("uid is longer than Grafana's 40 characters".into());
    }
    if d["schemaVersion"].as_u64().is_none_or(|v| v < 36) {
        problems.push("schemaVersion must be 36 or later (Grafana 9+)".into());
    }
    let vars: Vec<&Value> = d["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let names: Vec<&str> = vars.iter().filter_map(|v| v["name"].as_str()).collect();
    let datasource = vars
        .iter()
        .find(|v| v["type"] == "datasource" && v["query"] == "prometheus")
        .and_then(|v| v["name"].as_str());
    let Some(datasource) = datasource else {
        problems.push("no Prometheus data source variable in templating.list".into());
        return Err(problems);
    };
    let ds_uid = format!("${{{datasource}}}");
    let panels = d["panels"].as_array().cloned().unwrap_or_default();
    if panels.is_empty() {
        problems.push("no panels".into());
    }
    let mut ids = std::collections::BTreeSet::new();
    let mut boxes: Vec<(String, [u64; 4])> = Vec::new();
    for p in &panels {
        let title = p["title"].as_str().unwrap_or("?").to_string();
        let at = |m: String| format!("panel {title:?}: {m}");
        match p["id"].as_u64() {
            Some(id) if id > 0 && ids.insert(id) => {}
            _ => problems.push(at("id missing, zero or repeated".into())),
        }
        if !p["type"].as_str().is_some_and(|t| PANEL_TYPES.contains(&t)) {
            problems.push(at(format!("type {} is not a core panel type", p["type"])));
        }
        let g = &p["gridPos"];
        match ["x", "y", "w", "h"].map(|k| g[k].as_u64()) {
            [Some(x), Some(y), Some(w), Some(h)] if w >= 1 && h >= 1 && x + w <= 24 => {
                for (other, [ox, oy, ow, oh]) in &boxes {
                    if x < ox + ow && *ox < x + w && y < oy + oh && *oy < y + h {
                        problems.push(at(format!("overlaps panel {other:?}")));
                    }
                }
                boxes.push((title.clone(), [x, y, w, h]));
            }
            _ => problems.push(at("gridPos must have x, y, w, h with x + w <= 24".into())),
        }
        if p["type"] == "row" || p["type"] == "text" {
            continue;
        }
        if p["datasource"]["uid"].as_str() != Some(ds_uid.as_str()) {
            problems.push(at(format!("datasource must be {ds_uid}")));
        }
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            problems.push(at("no queries".into()));
        }
        let mut refs = std::collections::BTreeSet::new();
        for t in &targets {
            if !t["refId"]
                .as_str()
                .is_some_and(|r| refs.insert(r.to_string()))
            {
                problems.push(at("a query's refId is missing or repeated".into()));
            }
            let Some(expr) = t["expr"].as_str().filter(|e| !e.trim().is_empty()) else {
                problems.push(at("a query has no expr".into()));
                continue;
            };
            for v in variables(expr) {
                if !names.contains(&v.as_str()) && !GRAFANA_VARIABLES.contains(&v.as_str()) {
                    problems.push(at(format!(
                        "query uses ${v}, which the dashboard does not define"
                    )));
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(panels.len())
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        check_str(text)
            .expect_err("should fail")
            .iter()
            .map(Problem::to_string)
            .collect()
    }

    const SA: &str = "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: a\n";

    #[test]
    fn a_prometheus_rule_must_hold_the_rules_files_groups() {
        let plain = "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up == 0\n";
        let rule = |expr: &str| {
            format!(
                "apiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\nmetadata:\n  name: n\n\
                 spec:\n  groups:\n    - name: g\n      rules:\n        - alert: A\n          expr: {expr}\n"
            )
        };
        assert_eq!(same_rules(&rule("up == 0"), plain), Ok(1));
        let drifted = same_rules(&rule("up == 1"), plain).unwrap_err();
        assert!(drifted.contains("differ"), "{drifted}");
        let wrong_kind = rule("up == 0").replace("PrometheusRule", "ConfigMap");
        assert!(same_rules(&wrong_kind, plain)
            .unwrap_err()
            .contains("not a monitoring"));
    }

    #[test]
    fn the_shipped_prometheus_rule_matches_the_rules_file() {
        let rule = include_str!("../../prometheus/prometheusrule.yaml");
        let plain = include_str!("../../prometheus/netprobe.rules.yml");
        assert_eq!(same_rules(rule, plain), Ok(6));
    }

    #[test]
    fn the_shipped_dashboard_passes() {
        let d = include_str!("../../grafana/netprobe-dashboard.json");
        assert_eq!(check_dashboard(d), Ok(11));
    }

    #[test]
    fn broken_dashboards_fail() {
        let good: Value =
            serde_json::from_str(include_str!("../../grafana/netprobe-dashboard.json")).unwrap();
        let broken = |f: &dyn Fn(&mut Value)| {
            let mut d = good.clone();
            f(&mut d);
            check_dashboard(&d.to_string()).unwrap_err().join("; ")
        };
        let e = broken(&|d| d["panels"][1]["gridPos"]["x"] = 6.into());
        assert!(e.contains("overlaps"), "{e}");
        let e = broken(&|d| d["panels"][1]["id"] = 1.into());
        assert!(e.contains("repeated"), "{e}");
        let e = broken(&|d| {
            d["panels"][0]["targets"][0]["expr"] = "rate(x{instance=~\"$node\"}[5m])".into()
        });
        assert!(e.contains("$node"), "{e}");
        let e = broken(&|d| d["panels"][0]["type"] = "graph-old".into());
        assert!(e.contains("core panel type"), "{e}");
        let e = broken(&|d| d["panels"][0]["datasource"]["uid"] = "prom-1".into());
        assert!(e.contains("datasource must be ${datasource}"), "{e}");
        let e = broken(&|d| d["panels"][0]["gridPos"]["w"] = 30.into());
        assert!(e.contains("x + w <= 24"), "{e}");
    }

    #[test]
    fn query_variables() {
        assert_eq!(
            variables("rate(a{i=~\"$instance\"}[$__rate_interval]) ${x}"),
            ["instance", "__rate_interval", "x"]
        );
    }

    #[test]
    fn a_clean_document_passes() {
        assert_eq!(check_str(SA).unwrap(), ["ServiceAccount/a"]);
    }

    #[test]
    fn empty_documents_are_skipped_but_a_file_needs_one_object() {
        assert_eq!(check_str(&format!("---\n{SA}---\n")).unwrap().len(), 1);
        assert_eq!(
            problems("---\n"),
            ["document 0: no Kubernetes object in this file"]
        );
    }

    #[test]
    fn an_unknown_field_is_reported_with_its_path() {
        let text = format!("{SA}automountServiceAccountTokn: false\n");
        assert_eq!(
            problems(&text),
            ["document 1 (ServiceAccount/a): automountServiceAccountTokn: unknown field"]
        );
        let nested = "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: a\n  lables: {}\n";
        assert_eq!(
            problems(nested),
            ["document 1 (ServiceAccount/a): metadata.lables: unknown field"]
        );
    }

    #[test]
    fn a_wrong_type_is_reported_with_its_path() {
        let text = format!("{SA}automountServiceAccountToken: maybe\n");
        let found = problems(&text);
        assert_eq!(found.len(), 1);
        assert!(
            found[0].starts_with(
                "document 1 (ServiceAccount/a): automountServiceAccountToken: invalid type: \
                 string \"maybe\", expected a boolean"
            ),
            "{found:?}"
        );
    }

    #[test]
    fn explicit_nulls_and_numeric_quantities_are_accepted() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n  labels: null\n";
        assert!(check_str(text).is_ok());
        let mut back = serde_json::json!({"memory": "64"});
        let mut out = Vec::new();
        diff(
            "",
            &serde_json::json!({"memory": 64}),
            Some(&back),
            &mut out,
        );
        assert!(out.is_empty(), "{out:?}");
        back["memory"] = "65".into();
        diff(
            "",
            &serde_json::json!({"memory": 64}),
            Some(&back),
            &mut out,
        );
        assert_eq!(out, ["memory: 64 reads back as \"65\""]);
    }

    #[test]
    fn unknown_kinds_missing_names_and_duplicate_keys_fail() {
        let found = problems("apiVersion: v1\nkind: Pods\nmetadata:\n  name: a\n");
        assert!(found[0].contains("kind \"Pods\" is not one this check knows"));
        let found = problems("apiVersion: v1\nkind: Namespace\nmetadata: {}\n");
        assert_eq!(
            found,
            ["document 1 (Namespace/?): metadata.name is missing"]
        );
        let found = problems("apiVersion: v1\nkind: Namespace\nkind: Namespace\n");
        assert!(found[0].contains("duplicate"), "{found:?}");
    }

    #[test]
    fn every_document_is_checked() {
        let text = format!("{SA}---\n{SA}bogus: 1\n---\n{SA}hostPID: true\n");
        assert_eq!(
            problems(&text),
            [
                "document 2 (ServiceAccount/a): bogus: unknown field",
                "document 3 (ServiceAccount/a): hostPID: unknown field",
            ]
        );
    }

    #[test]
    fn kinds_include_what_deploy_uses() {
        for kind in [
            ("v1", "Namespace"),
            ("v1", "ServiceAccount"),
            ("apps/v1", "DaemonSet"),
        ] {
            assert!(KINDS.contains(&kind), "{kind:?}");
        }
    }
}
