//! The shipped manifests pass; broken ones (fixtures, and the shipped
//! DaemonSet with one mistake put in) fail with the expected messages, so
//! that the check cannot silently pass everything.

use std::{fs, path::PathBuf};

use deploy_check::check_str;
use serde::Deserialize;

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn yaml_files(dir: PathBuf) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    files
}

/// The problems found in `text`, one line each; panics if there are none.
fn problems(what: &str, text: &str) -> Vec<String> {
    match check_str(text) {
        Ok(objects) => panic!("{what} passed the check ({objects:?}) but must fail"),
        Err(problems) => problems.iter().map(ToString::to_string).collect(),
    }
}

fn assert_reported(what: &str, found: &[String], expected: &str) {
    assert!(
        found.iter().any(|p| p.contains(expected)),
        "{what}: expected a problem containing {expected:?}, found:\n  {}",
        found.join("\n  ")
    );
}

#[test]
fn shipped_manifests_pass() {
    let files = yaml_files(deploy_dir().join("kubernetes"));
    assert!(!files.is_empty(), "no manifest in deploy/kubernetes");
    for file in files {
        let text = fs::read_to_string(&file).unwrap();
        if let Err(problems) = check_str(&text) {
            let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
            panic!("{}:\n  {}", file.display(), lines.join("\n  "));
        }
    }
}

#[test]
fn every_negative_fixture_fails_as_it_says() {
    let files = yaml_files(deploy_dir().join("check/tests/fixtures"));
    assert!(files.len() >= 6, "negative fixtures missing: {files:?}");
    for file in files {
        let what = file.display().to_string();
        let text = fs::read_to_string(&file).unwrap();
        let expected: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        assert!(!expected.is_empty(), "{what} has no `# expect:` line");
        let found = problems(&what, &text);
        for e in expected {
            assert_reported(&what, &found, e);
        }
    }
}

/// The shipped DaemonSet with `from` replaced by `to` (which must be there).
fn shipped_with(from: &str, to: &str) -> String {
    let path = deploy_dir().join("kubernetes/daemonset.yaml");
    let text = fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "daemonset.yaml no longer has {from:?}");
    text.replacen(from, to, 1)
}

#[test]
fn shipped_daemonset_with_a_misspelt_field_fails() {
    for (from, to, expected) in [
        (
            "hostPID: true",
            "hostPId: true",
            "(DaemonSet/netprobe): spec.template.spec.hostPId: unknown field",
        ),
        (
            "readOnlyRootFilesystem: true",
            "readOnlyRootFileSystem: true",
            "spec.template.spec.containers[0].securityContext.readOnlyRootFileSystem: \
             unknown field",
        ),
        (
            "mountPropagation: HostToContainer",
            "propagation: HostToContainer",
            "spec.template.spec.containers[0].volumeMounts[3].propagation: unknown field",
        ),
        (
            // One level too deep: a pod field written into the container.
            "imagePullPolicy: IfNotPresent",
            "imagePullPolicy: IfNotPresent\n          hostPID: true",
            "spec.template.spec.containers[0].hostPID: unknown field",
        ),
        (
            // A key given twice: YAML parsers differ on which one wins.
            "terminationGracePeriodSeconds: 10",
            "terminationGracePeriodSeconds: 10\n      terminationGracePeriodSeconds: 30",
            "document 3: not valid YAML: spec.template.spec: duplicate entry with key \
             \"terminationGracePeriodSeconds\"",
        ),
    ] {
        let found = problems(to, &shipped_with(from, to));
        assert_reported(to, &found, expected);
    }
}

#[test]
fn shipped_daemonset_with_a_wrong_type_fails() {
    for (from, to, expected) in [
        (
            "hostPID: true",
            "hostPID: \"yes\"",
            "spec.template.spec.hostPID: invalid type: string \"yes\", expected a boolean",
        ),
        (
            "containerPort: 9464",
            "containerPort: \"9464\"",
            "containerPort: invalid type: string \"9464\", expected i32",
        ),
        (
            "tolerations:\n        - operator: Exists",
            "tolerations:\n        operator: Exists",
            "spec.template.spec.tolerations: invalid type: map, expected a sequence",
        ),
        (
            "automountServiceAccountToken: false",
            "automountServiceAccountToken: 0",
            "(ServiceAccount/netprobe): automountServiceAccountToken: invalid type: integer `0`, \
             expected a boolean",
        ),
    ] {
        let found = problems(to, &shipped_with(from, to));
        assert_reported(to, &found, expected);
    }
}

/// `KEY=CAP_A CAP_B` of the systemd unit, as Kubernetes spells them, sorted.
fn unit_capabilities(unit: &str, key: &str) -> Vec<String> {
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("netprobe.service has no {key}"));
    let mut caps: Vec<String> = line
        .split_whitespace()
        .map(|c| c.strip_prefix("CAP_").expect("CAP_ prefix").to_string())
        .collect();
    caps.sort();
    caps
}

#[test]
fn capabilities_match_the_systemd_unit() {
    let unit = fs::read_to_string(deploy_dir().join("systemd/netprobe.service")).unwrap();
    let bounding = unit_capabilities(&unit, "CapabilityBoundingSet=");
    assert_eq!(bounding, unit_capabilities(&unit, "AmbientCapabilities="));
    let text = fs::read_to_string(deploy_dir().join("kubernetes/daemonset.yaml")).unwrap();
    let daemonset = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| serde_json::Value::deserialize(doc).unwrap())
        .find(|v| v["kind"] == "DaemonSet")
        .expect("a DaemonSet");
    let caps =
        &daemonset["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"];
    let strings = |v: &serde_json::Value| -> Vec<String> {
        let mut s: Vec<String> = v
            .as_array()
            .expect("a list")
            .iter()
            .map(|c| c.as_str().expect("a string").to_string())
            .collect();
        s.sort();
        s
    };
    assert_eq!(strings(&caps["add"]), bounding);
    assert_eq!(strings(&caps["drop"]), ["ALL"]);
}
