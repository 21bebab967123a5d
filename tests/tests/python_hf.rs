//! Deploy from Python with the real transformers and torch: `tests/python/test_hf.py`
//! under pytest (in the environment of `tests/python/requirements-hf.txt`,
//! `ZOO_HF_PYTHON`) against a live zoo. Every Hugging Face architecture zoo runs
//! natively, built here at random with a fixed seed, for each of its tasks
//! (text classification, token classification, feature extraction), compared
//! with transformers' own pipeline on the same texts; `torch.nn.Module`s scripted
//! and traced, compared with torch's forward; and the CLI predicting with a
//! DistilBERT pipeline deployed from Python.

use zoo_tests::{Server, models_cache, with_ort};

#[test]
fn transformers_and_torch_objects_deploy_from_python_with_their_frameworks_answers() {
    let python = std::env::var_os("ZOO_HF_PYTHON").map(std::path::PathBuf::from).filter(|p| p.is_file()).expect(
        "ZOO_HF_PYTHON must name the Python of tests/python/requirements-hf.txt's environment (scripts/test sets it)",
    );
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(with_ort());
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::process::Command::new(python)
        .args(["-m", "pytest", "-q", "-s", "-p", "no:cacheprovider"])
        .arg(zoo_tests::python_script("test_hf.py"))
        .env("PYTHONPATH", root.join("client/python"))
        .env("ZOO_URL", &s.url)
        .env("ZOO_API_KEY", &s.admin_key)
        .env("ZOO_CLI", zoo_tests::zoo_bin())
        .env("ZOO_CONFIG", &s.cli_config)
        .env("ZOO_TEST_MODELS", models_cache())
        .env("XDG_CONFIG_HOME", dir.path().join("no-login"))
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", dir.path().join("hf-home"))
        .output()
        .unwrap();
    let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{printed}");
    assert!(out.status.success() && printed.contains("33 passed"), "{printed}");
}
