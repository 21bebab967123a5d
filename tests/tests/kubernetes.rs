//! The Helm chart (`deploy/helm/zoo`) and the plain manifests rendered from it
//! (`deploy/kubernetes/zoo.yaml`): `tests/python/check_kubernetes.py`, in the
//! environment of `tests/python/requirements-kubernetes.txt` (`ZOO_K8S_PYTHON`:
//! the official helm binary and kubernetes-validate), lints and renders the
//! chart with its defaults and with every option, validates every object
//! against the Kubernetes API schemas, checks that the settings, probes and
//! ports are the real binary's, and starts this build of `zoo serve` with the
//! ConfigMap's settings.

#[test]
fn chart_and_manifests_validate_and_agree_with_the_server() {
    let python = std::env::var_os("ZOO_K8S_PYTHON").map(std::path::PathBuf::from).filter(|p| p.is_file()).expect(
        "ZOO_K8S_PYTHON must name the Python of tests/python/requirements-kubernetes.txt's environment (scripts/test sets it)",
    );
    let out = std::process::Command::new(python)
        .arg(zoo_tests::python_script("check_kubernetes.py"))
        .arg(zoo_tests::zoo_bin())
        .output()
        .unwrap();
    let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{printed}");
    assert!(out.status.success() && printed.contains("kubernetes: all checks passed"), "{printed}");
}
