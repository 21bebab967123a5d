//! The Python client (`client/python`, importable as `zoo`) against a live zoo:
//! `tests/python/test_client.py` under pytest, with ONNX Runtime's own answers as
//! the reference for the models it deploys, and `client_sklearn_check.py` with
//! scikit-learn's.

use zoo_tests::{Server, fixtures, with_ort};

#[test]
fn the_python_client_deploys_and_predicts() {
    let dir = tempfile::tempdir().unwrap();
    let tc = fixtures::text_classifier(dir.path());
    let s = Server::start_with(with_ort());
    let cases = serde_json::json!({
        "dir": tc.dir,
        "cases": tc.cases.iter().map(|c| [c.0, c.1]).collect::<Vec<_>>(),
    });
    let file = dir.path().join("cases.json");
    std::fs::write(&file, cases.to_string()).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::process::Command::new(zoo_tests::test_python())
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(zoo_tests::python_script("test_client.py"))
        .env("PYTHONPATH", root.join("client/python"))
        .env("ZOO_URL", &s.url)
        .env("ZOO_API_KEY", &s.admin_key)
        .env("ZOO_TEST_CASES", &file)
        .env_remove("ZOO_CONFIG")
        .env("XDG_CONFIG_HOME", dir.path().join("no-login"))
        .output()
        .unwrap();
    let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{printed}");
    assert!(out.status.success() && printed.contains("5 passed"), "{printed}");

    // Fitted scikit-learn objects, with scikit-learn itself as the reference (in
    // the environment that has it: scikit-learn, skops, mlflow).
    let sklearn_python = std::env::var_os("ZOO_SKLEARN_PYTHON")
        .map(std::path::PathBuf::from)
        .filter(|p| p.is_file())
        .expect("ZOO_SKLEARN_PYTHON must name the Python of scripts/make-sklearn-bundles' environment (scripts/test sets it)");
    let out = std::process::Command::new(sklearn_python)
        .arg(zoo_tests::python_script("client_sklearn_check.py"))
        .env("PYTHONPATH", root.join("client/python"))
        .env("ZOO_URL", &s.url)
        .env("ZOO_API_KEY", &s.admin_key)
        .env("XDG_CONFIG_HOME", dir.path().join("no-login"))
        .output()
        .unwrap();
    let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{printed}");
    assert!(out.status.success() && printed.contains("all checks passed"), "{printed}");
}
