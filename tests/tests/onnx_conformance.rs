//! ONNX as the runtime reads it: the IR versions and opsets zoo serves are the
//! ones its ONNX Runtime loads (checked against the library itself), newer ones
//! are stored and described; and the ONNX backend node test suite, run through
//! zoo's KServe v2 and v1 routes, answers as ONNX Runtime itself does.

use serde_json::{Value, json};
use zoo_server::runtime::{RunLimits, Runtime};
use zoo_tests::{Server, ok, python_script, test_python, with_ort};

fn mlp(ir: i64, opset: i64) -> Vec<u8> {
    let mut m = zoo_formats::build::mlp(&[0.5; 32], &[0.1; 8], &[0.25; 24], &[0.0; 3], 4, 8, 3);
    m.ir_version = ir;
    m.opset_import[0].version = opset;
    zoo_formats::build::encode(&m)
}

#[test]
fn the_version_table_is_what_onnx_runtime_loads() {
    let rt = zoo_tests::ort_in_process();
    let dir = tempfile::tempdir().unwrap();
    let limits = RunLimits { timeout: std::time::Duration::from_secs(10), max_output_bytes: u64::MAX };
    let load = |ir: i64, opset: i64| {
        let path = dir.path().join(format!("m-{ir}-{opset}.onnx"));
        std::fs::write(&path, mlp(ir, opset)).unwrap();
        let sig = zoo_formats::onnx::inspect(std::fs::read(&path).unwrap().into(), None, &Default::default()).unwrap();
        (rt.load(&path, &sig, &limits).map(|_| ()).map_err(|e| e.to_string()), zoo_server::runtime::ort::beyond(&sig))
    };
    let (max_ir, max_opset) = (zoo_server::runtime::ort::MAX_IR_VERSION, zoo_server::runtime::ort::MAX_DEFAULT_OPSET);
    let (loaded, beyond) = load(max_ir, max_opset);
    assert!(loaded.is_ok() && beyond.is_none(), "IR {max_ir} / opset {max_opset}: {loaded:?} {beyond:?}");
    let (loaded, beyond) = load(max_ir + 1, max_opset);
    println!("IR {}: {loaded:?}", max_ir + 1);
    assert!(loaded.unwrap_err().contains("IR version") && beyond.is_some());
    let (loaded, beyond) = load(max_ir, max_opset + 1);
    println!("opset {}: {loaded:?}", max_opset + 1);
    assert!(loaded.is_err() && beyond.is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn newer_onnx_files_are_stored_and_described_not_refused() {
    let s = Server::start_with(with_ort());
    let http = reqwest::Client::new();
    let put = |name: &str, body: Vec<u8>| {
        http.put(s.at(&format!("/v1/models/{name}/versions/1"))).bearer_auth(&s.admin_key).body(body).send()
    };
    let info: Value = put("current", mlp(13, 26)).await.unwrap().json().await.unwrap();
    assert_eq!(info["servable"], true, "{info}");
    for (name, ir, opset, says) in [("ir14", 14, 26, "IR version 14"), ("opset27", 13, 27, "opset 27")] {
        let r = put(name, mlp(ir, opset)).await.unwrap();
        assert_eq!(r.status(), 201);
        let info: Value = r.json().await.unwrap();
        assert_eq!(info["servable"], false, "{info}");
        assert!(info["reason"].as_str().unwrap().contains(says), "{info}");
        assert_eq!(info["signature"]["onnx"]["ir_version"], json!(ir));
    }
    let r = put("ancient", mlp(2, 26)).await.unwrap();
    assert_eq!(r.status(), 422);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_onnx_node_suite_answers_like_onnx_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = with_ort();
    // Models answer one request at a time, as ONNX Runtime called directly does.
    // Some node tests hold 10 000 rows in one input (Mish).
    opts.args.extend(["--max-batch-size", "1", "--max-batch-items", "100000"].map(String::from));
    // 1 884 deploys: the log keeps warnings only.
    opts.env.push(("RUST_LOG".into(), "warn".into()));
    let s = Server::start_with(opts);
    let out = dir.path().join("node-suite.json");
    let status = std::process::Command::new(test_python())
        .arg(python_script("onnx_node_suite.py"))
        .arg(&s.url)
        .arg(&s.admin_key)
        .arg(&out)
        .status()
        .unwrap();
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let c = &summary["counts"];
    println!("onnx {} / onnxruntime {}: {c}", summary["onnx"], summary["onnxruntime"]);
    println!("excluded (no wire representation): {}", summary["excluded"]);
    assert!(status.success(), "zoo answered differently: {}", summary["failures"]);
    assert!(c["representable"].as_u64().unwrap() > 1000, "too few tests ran: {c}");
    assert_eq!(c["zoo_v2_equal"], c["representable"], "{c}");
    assert_eq!(c["zoo_v1_equal"], c["v1_checked"], "{c}");
    assert_eq!(c["beyond_runtime_stored_not_servable"], c["beyond_runtime"], "{c}");
    // Nothing of the suite is left behind.
    let list = ok(&s.cli(&["models", "list", "-o", "json"]));
    let list: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list["models"].as_array().map_or(0, Vec::len), 0, "{list}");
}
