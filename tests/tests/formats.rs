//! End to end, each format served as its framework would answer: ONNX (ONNX
//! Runtime and tract), text models, safetensors (candle), MLflow bundles,
//! scikit-learn (skops) and TorchScript (libtorch), each compared with a reference.

use serde_json::{Value, json};
use zoo_tests::helpers::{audio_chunk, children_named, code, json_of, same_predictions, tmp};
use zoo_tests::{Options, Server, fixtures, max_abs_diff, ok, with_ort};

#[tokio::test(flavor = "multi_thread")]
async fn ort_and_tract_agree() {
    let dir = tmp();
    let fx = fixtures::tiny_mlp(dir.path());
    let s = Server::start_with(with_ort());
    let ready: Value = s.http().get(s.at("/readyz")).send().await.unwrap().json().await.unwrap();
    assert!(ready["runtimes"].as_array().unwrap().contains(&json!("ort")), "ONNX Runtime must be loaded: {ready}");
    let p = fx.path.to_str().unwrap();
    let a: Value = serde_json::from_str(&ok(&s.cli(&[
        "deploy",
        p,
        "--name",
        "m",
        "--version",
        "ort",
        "--runtime",
        "ort",
        "-o",
        "json",
    ])))
    .unwrap();
    let b: Value = serde_json::from_str(&ok(&s.cli(&[
        "deploy",
        p,
        "--name",
        "m",
        "--version",
        "tract",
        "--runtime",
        "tract",
        "-o",
        "json",
    ])))
    .unwrap();
    assert_eq!(a["runtime"], "ort");
    assert_eq!(b["runtime"], "tract");
    assert_eq!(a["sha256"], b["sha256"], "the same artifact");
    let mut outs = vec![];
    for v in ["ort", "tract"] {
        let r = s.client(&s.admin_key);
        let req =
            zoo_api::PredictRequest { inputs: json!({"x": fx.x}), top_k: None, normalize: None, ..Default::default() };
        outs.push(r.predict("m", Some(v), &req).await.unwrap().body["outputs"]["y"].clone());
    }
    let diff = max_abs_diff(&outs[0], &outs[1]);
    assert!(diff < 1e-4, "ort and tract differ by {diff}");
    assert!(max_abs_diff(&outs[1], &fx.y) < 1e-4);
    // Identical artifact, stored once.
    assert_eq!(std::fs::read_dir(s.data_dir.join("objects/blobs/sha256")).unwrap().count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn text_classifier_labels() {
    let dir = tmp();
    let fx = fixtures::text_classifier(dir.path());
    println!("text classifier: {}", fx.source);
    let s = Server::start_with(with_ort());
    let out = ok(&s.cli(&["deploy", fx.dir.to_str().unwrap(), "--name", "text-classifier", "--version", "1"]));
    assert!(out.contains("text-classification"), "{out}");

    // Scores are compared with the same runtime run here, one text at a time: the
    // shared classifier is int8, whose kernels differ from one CPU to the next
    // (0.927 on the CPU its documentation was made on, 0.934 on an AVX2-only EPYC).
    let texts: Vec<&str> = fx.cases.iter().map(|c| c.0).collect();
    let reference = zoo_tests::classify_in_process(&fx.dir, &texts);
    for ((text, label, documented), want) in fx.cases.iter().zip(&reference) {
        let out = ok(&s.cli(&["predict", "text-classifier", text, "-o", "json"]));
        let body: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(body[0]["label"], *label, "{text}: {body}");
        assert_eq!(body[0]["label"], want[0].label, "{text}: {body}");
        let got = body[0]["score"].as_f64().unwrap();
        println!("{text}: {label} {got:.4} (in-process {:.4}, documented {documented})", want[0].score);
        assert!((got - f64::from(want[0].score)).abs() < 1e-5, "{text}: score {got}, in-process {}", want[0].score);
        let sum: f64 = body.as_array().unwrap().iter().map(|l| l["score"].as_f64().unwrap()).sum();
        assert!((sum - 1.0).abs() < 1e-4);
    }
    // The CLI's text output shows the label.
    let out = ok(&s.cli(&["predict", "text-classifier", fx.cases[0].0]));
    assert!(out.starts_with(fx.cases[0].1), "{out}");

    // curl's default form Content-Type is accepted; a list gives one result per text.
    let texts: Vec<&str> = fx.cases.iter().map(|c| c.0).collect();
    let r = s
        .http()
        .post(s.at("/v1/models/text-classifier/predict"))
        .bearer_auth(&s.admin_key)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(json!({"inputs": texts, "top_k": 1}).to_string())
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(r).await;
    assert_eq!(status, 200, "{body}");
    let rows = body.as_array().unwrap();
    assert_eq!(rows.len(), fx.cases.len());
    for (row, (text, label, _)) in rows.iter().zip(&fx.cases) {
        assert_eq!(row.as_array().unwrap().len(), 1, "top_k=1");
        assert_eq!(row[0]["label"], *label, "{text} in a batch");
    }
    // A text far longer than the model takes is truncated, not refused.
    let long = "good ".repeat(3000);
    let out = ok(&s.cli(&["predict", "text-classifier", &long, "-o", "json"]));
    let body: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(body[0]["label"], "POSITIVE");

    // Wrong input shape for a text model.
    let r = s
        .http()
        .post(s.at("/v1/models/text-classifier/predict"))
        .bearer_auth(&s.admin_key)
        .json(&json!({"inputs": {"x": [1]}}))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(r).await;
    assert_eq!((status, code(&body)), (400, "invalid_input"));
}

#[tokio::test(flavor = "multi_thread")]
async fn minilm_embeddings() {
    let dir = tmp();
    let bundle = fixtures::minilm_bundle(dir.path());
    let s = Server::start_with(with_ort());
    let info: Value =
        serde_json::from_str(&ok(&s.cli(&["deploy", bundle.to_str().unwrap(), "--name", "minilm", "-o", "json"])))
            .unwrap();
    assert_eq!(info["task"], "feature-extraction");
    assert_eq!(info["version"], "1", "versions auto-increment from 1");
    let c = s.client(&s.admin_key);
    let req = zoo_api::PredictRequest {
        inputs: json!([
            "A man is eating food.",
            "A man is eating a piece of bread.",
            "The stock market fell sharply today."
        ]),
        top_k: None,
        normalize: None,
        ..Default::default()
    };
    let body = c.predict("minilm", None, &req).await.unwrap().body;
    let e: Vec<Vec<f64>> = serde_json::from_value(body).unwrap();
    assert_eq!(e.len(), 3);
    assert_eq!(e[0].len(), 384);
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    for v in &e {
        assert!((dot(v, v) - 1.0).abs() < 1e-3, "normalised by default (modules.json has Normalize)");
    }
    assert!(dot(&e[0], &e[1]) > dot(&e[0], &e[2]) + 0.2, "similar sentences are closer");
    // Padding per batch does not change an embedding.
    let one = c
        .predict(
            "minilm",
            None,
            &zoo_api::PredictRequest {
                inputs: json!("A man is eating food."),
                top_k: None,
                normalize: None,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .body;
    let one: Vec<f64> = serde_json::from_value(one).unwrap();
    assert!(one.iter().zip(&e[0]).all(|(a, b)| (a - b).abs() < 1e-4));
}

#[tokio::test(flavor = "multi_thread")]
async fn without_onnx_runtime_tract_serves() {
    let dir = tmp();
    let fx = fixtures::tiny_mlp(dir.path());
    let missing = dir.path().join("no-such-libonnxruntime.so");
    let opts = Options { env: vec![("ZOO_ORT_DYLIB".into(), missing.display().to_string())], ..Default::default() };
    let s = Server::start_with(opts);
    let ready: Value = s.http().get(s.at("/readyz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        ready["runtimes"],
        json!(["tract", "candle", "torch", "sklearn"]),
        "no ort, the others are there: {ready}"
    );
    let log = s.log();
    assert_eq!(log.matches("ONNX Runtime library not found").count(), 1, "said once at start: {log}");

    let info: Value =
        serde_json::from_str(&ok(&s.cli(&["deploy", fx.path.to_str().unwrap(), "--name", "mlp", "-o", "json"])))
            .unwrap();
    assert_eq!(info["runtime"], "tract");
    let req =
        zoo_api::PredictRequest { inputs: json!({"x": fx.x}), top_k: None, normalize: None, ..Default::default() };
    let p = s.client(&s.admin_key).predict("mlp", None, &req).await.unwrap();
    assert!(max_abs_diff(&p.body["outputs"]["y"], &fx.y) < 1e-4);

    // Asking for ort explicitly stores the version as not servable, with the reason.
    let out = ok(&s.cli(&["deploy", fx.path.to_str().unwrap(), "--name", "mlp", "--runtime", "ort", "-o", "json"]));
    let info: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(info["servable"], false);
    assert!(info["reason"].as_str().unwrap().contains("ONNX Runtime library not found"), "{info}");
    let r = s
        .http()
        .post(s.at("/v1/models/mlp/versions/2/predict"))
        .bearer_auth(&s.admin_key)
        .json(&json!({"inputs": {"x": fx.x}}))
        .send()
        .await
        .unwrap();
    let (st, body) = json_of(r).await;
    assert_eq!((st, code(&body)), (409, "not_servable"));
}

#[tokio::test(flavor = "multi_thread")]
async fn bare_safetensors_weights_are_stored_but_not_served() {
    let dir = tmp();
    let s = Server::start_with(with_ort());
    let weights = zoo_tests::models_cache().join("minilm/model.safetensors");
    let out = ok(&s.cli(&["deploy", weights.to_str().unwrap(), "--name", "minilm-weights", "-o", "json"]));
    let info: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(info["format"], "safetensors");
    assert_eq!(info["servable"], false);
    assert!(info["reason"].as_str().unwrap().contains("weights only"), "{info}");
    let tensors = info["signature"]["safetensors"]["tensors"].as_array().unwrap();
    assert!(tensors.iter().any(|t| t["name"].as_str().unwrap().ends_with("word_embeddings.weight")), "{info}");

    // Listed, downloadable byte for byte, and predict says why it cannot answer.
    let list: Value = serde_json::from_str(&ok(&s.cli(&["models", "list", "-o", "json"]))).unwrap();
    assert_eq!(list["models"][0]["format"], "safetensors");
    let pulled = dir.path().join("w.safetensors");
    ok(&s.cli(&["pull", "minilm-weights", "--version", "1", "-O", pulled.to_str().unwrap()]));
    assert_eq!(std::fs::read(&pulled).unwrap(), std::fs::read(&weights).unwrap());
    let r = s
        .http()
        .post(s.at("/v1/models/minilm-weights/predict"))
        .bearer_auth(&s.admin_key)
        .json(&json!({"inputs": {"x": [[1.0]]}}))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(r).await;
    assert_eq!((status, code(&body)), (409, "not_servable"), "{body}");

    // A hostile header: 422 naming the rule, and nothing stored.
    let header = br#"{"w":{"dtype":"F32","shape":[1000000],"data_offsets":[0,4000000]}}"#;
    let mut bad = (header.len() as u64).to_le_bytes().to_vec();
    bad.extend_from_slice(header);
    bad.extend_from_slice(&[0u8; 16]);
    let r = s.http().put(s.at("/v1/models/evil/versions/1")).bearer_auth(&s.admin_key).body(bad).send().await.unwrap();
    let (status, body) = json_of(r).await;
    assert_eq!((status, code(&body)), (422, "invalid_artifact"), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("(offsets)"), "{body}");
    let r = s.http().get(s.at("/v1/models/evil")).bearer_auth(&s.admin_key).send().await.unwrap();
    assert_eq!(r.status(), 404, "a refused upload leaves no model behind");
}

#[tokio::test(flavor = "multi_thread")]
async fn mlflow_bundles_onnx_served_pickles_refused() {
    let dir = tmp();
    let fx = fixtures::tiny_mlp(dir.path());
    let s = Server::start_with(with_ort());
    // An MLflow bundle as mlflow.onnx writes it, around the tiny MLP.
    let bundle = dir.path().join("mlflow-mlp");
    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::copy(&fx.path, bundle.join("model.onnx")).unwrap();
    std::fs::write(
        bundle.join("MLmodel"),
        "flavors:\n  onnx:\n    data: model.onnx\n    onnx_version: 1.23.2\n  python_function:\n    data: model.onnx\n    \
         loader_module: mlflow.onnx\nmlflow_version: 3.17.2\n",
    )
    .unwrap();
    let info: Value =
        serde_json::from_str(&ok(&s.cli(&["deploy", bundle.to_str().unwrap(), "--name", "mlflow-mlp", "-o", "json"])))
            .unwrap();
    assert_eq!((info["format"].as_str(), info["servable"].as_bool()), (Some("mlflow"), Some(true)), "{info}");
    assert_eq!(info["signature"]["mlflow"]["flavors"], json!(["onnx", "python_function"]));
    let r = s
        .http()
        .post(s.at("/v1/models/mlflow-mlp/predict"))
        .bearer_auth(&s.admin_key)
        .json(&json!({"inputs": {"x": fx.x}}))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(r).await;
    assert_eq!(status, 200, "{body}");
    assert!(max_abs_diff(&body["predictions"], &fx.y) < 1e-4, "MLflow versions answer like MLflow: {body}");

    // MLflow's scoring formats, answered like `mlflow models serve`.
    let post =
        |route: &'static str, body: Value| s.http().post(s.at(route)).bearer_auth(&s.admin_key).json(&body).send();
    let split = json!({"dataframe_split": {"columns": ["a", "b", "c", "d"], "data": fx.x}});
    let (status, body) = json_of(post("/v1/models/mlflow-mlp/predict", split.clone()).await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert!(max_abs_diff(&body["predictions"], &fx.y) < 1e-4, "{body}");
    let (status, body) =
        json_of(post("/v1/models/mlflow-mlp/predict", json!({"instances": fx.x})).await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert!(max_abs_diff(&body["predictions"], &fx.y) < 1e-4, "{body}");
    let records = json!({"dataframe_records": [{"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}]});
    let (status, body) = json_of(post("/v1/models/mlflow-mlp/predict", records).await.unwrap()).await;
    assert_eq!((status, code(&body)), (400, "invalid_input"), "no column signature to order records by: {body}");
    let both = json!({"inputs": fx.x, "instances": fx.x});
    let (status, body) = json_of(post("/v1/models/mlflow-mlp/predict", both).await.unwrap()).await;
    assert_eq!((status, code(&body)), (400, "invalid_input"), "{body}");
    ok(&s.cli(&["deploy", fx.path.to_str().unwrap(), "--name", "plain-mlp"]));
    let (status, body) = json_of(post("/v1/models/plain-mlp/predict", split).await.unwrap()).await;
    assert_eq!((status, code(&body)), (400, "invalid_input"), "MLflow formats are for MLflow versions: {body}");

    // A pickle flavor: stored and listed with the reason, never loaded.
    let pickled = dir.path().join("mlflow-pickle");
    std::fs::create_dir_all(&pickled).unwrap();
    std::fs::write(pickled.join("model.pkl"), b"\x80\x04 zoo never reads this").unwrap();
    std::fs::write(
        pickled.join("MLmodel"),
        "flavors:\n  sklearn:\n    pickled_model: model.pkl\n    serialization_format: cloudpickle\n  python_function:\n    \
         loader_module: mlflow.sklearn\n    model_path: model.pkl\n",
    )
    .unwrap();
    let info: Value =
        serde_json::from_str(&ok(&s.cli(&["deploy", pickled.to_str().unwrap(), "--name", "pickled", "-o", "json"])))
            .unwrap();
    assert_eq!(info["servable"], false);
    assert!(info["reason"].as_str().unwrap().contains("mlflow.onnx"), "{info}");

    // An MLmodel pointing out of the bundle: 422, nothing stored.
    let evil = dir.path().join("mlflow-evil");
    std::fs::create_dir_all(&evil).unwrap();
    std::fs::write(evil.join("MLmodel"), "flavors:\n  onnx:\n    data: ../../../etc/passwd\n").unwrap();
    let out = s.cli(&["deploy", evil.to_str().unwrap(), "--name", "evil"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid_artifact"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s.cli(&["models", "show", "evil"]).status.code(), Some(1));

    // The real iris bundle logged by MLflow, when ../shared is here.
    let iris = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/models/mlflow/iris-onnx");
    if iris.join("MLmodel").is_file() {
        ok(&s.cli(&["deploy", iris.to_str().unwrap(), "--name", "iris"]));
        let r = s
            .http()
            .post(s.at("/v1/models/iris/predict"))
            .bearer_auth(&s.admin_key)
            .json(&json!({"inputs": {"X": [[5.1, 3.5, 1.4, 0.2], [6.3, 3.4, 5.6, 2.4]]}}))
            .send()
            .await
            .unwrap();
        let (status, body) = json_of(r).await;
        assert_eq!(status, 200, "{body}");
        println!("iris-onnx: {body}");
        let labels: Vec<&Value> = body["predictions"].as_array().unwrap().iter().map(|p| &p["label"]).collect();
        assert_eq!(labels, [&json!(0), &json!(2)], "setosa, virginica: {body}");
        // MLflow's own serving example: one record per row with both outputs, the
        // same answers as the tensor route.
        let example: Value = serde_json::from_str(
            &std::fs::read_to_string(iris.join("../iris-sklearn/serving_input_example.json")).unwrap(),
        )
        .unwrap();
        let rows = example["dataframe_split"]["data"].clone();
        let (status, body) = json_of(post("/v1/models/iris/predict", example).await.unwrap()).await;
        assert_eq!(status, 200, "{body}");
        let (_, tensors) =
            json_of(post("/v1/models/iris/predict", json!({"inputs": {"X": rows}})).await.unwrap()).await;
        let predictions = body["predictions"].as_array().unwrap();
        assert_eq!(predictions.len(), 3, "{body}");
        for (i, p) in predictions.iter().enumerate() {
            assert_eq!(p["label"], tensors["predictions"][i]["label"], "{body}");
            assert!(max_abs_diff(&p["probabilities"], &tensors["predictions"][i]["probabilities"]) < 1e-6);
        }
        assert_eq!((predictions[0]["label"].as_i64(), predictions[2]["label"].as_i64()), (Some(2), Some(0)), "{body}");
    } else {
        println!("../shared/models/mlflow/iris-onnx absent: checked the generated bundles only");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn safetensors_bert_directory_served_with_candle_matches_onnx() {
    let dir = tmp();
    let s = Server::start_with(with_ort());
    let hf = fixtures::minilm_hf_dir(dir.path());
    let onnx = fixtures::minilm_bundle(dir.path());
    let info: Value =
        serde_json::from_str(&ok(&s.cli(&["deploy", hf.to_str().unwrap(), "--name", "minilm-st", "-o", "json"])))
            .unwrap();
    assert_eq!(
        (info["format"].as_str(), info["task"].as_str(), info["runtime"].as_str(), info["servable"].as_bool()),
        (Some("safetensors"), Some("feature-extraction"), Some("candle"), Some(true)),
        "{info}"
    );
    assert_eq!(info["signature"]["outputs"][0]["name"], "last_hidden_state");
    ok(&s.cli(&["deploy", onnx.to_str().unwrap(), "--name", "minilm-onnx"]));

    let texts = json!(["A man is eating food.", "The stock market fell sharply today.", "good job"]);
    let c = s.client(&s.admin_key);
    let req = zoo_api::PredictRequest { inputs: texts, ..Default::default() };
    let st: Vec<Vec<f64>> = serde_json::from_value(c.predict("minilm-st", None, &req).await.unwrap().body).unwrap();
    let ox: Vec<Vec<f64>> = serde_json::from_value(c.predict("minilm-onnx", None, &req).await.unwrap().body).unwrap();
    // The same model: fp32 weights through candle against the int8 ONNX export
    // through ONNX Runtime.
    for (a, b) in st.iter().zip(&ox) {
        assert_eq!(a.len(), 384);
        let cos = a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
        let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
        println!("candle vs ONNX int8: cosine {cos:.5}, max abs diff {diff:.5}");
        assert!(cos > 0.995, "candle and ONNX embeddings disagree: cosine {cos}");
    }

    // A safetensors directory of a model type zoo does not run: stored, not served.
    let other = dir.path().join("gpt");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::copy(hf.join("model.safetensors"), other.join("model.safetensors")).unwrap();
    std::fs::write(other.join("config.json"), r#"{"model_type": "gpt2"}"#).unwrap();
    let info: Value =
        serde_json::from_str(&ok(&s.cli(&["deploy", other.to_str().unwrap(), "--name", "gpt", "-o", "json"]))).unwrap();
    assert_eq!(info["servable"], false);
    assert!(info["reason"].as_str().unwrap().contains("bert"), "{info}");
}

#[tokio::test(flavor = "multi_thread")]
async fn safetensors_bert_sequence_classifier_served_as_text_classification() {
    let dir = tmp();
    let s = Server::start_with(with_ort());
    let (cls_dir, head) = fixtures::minilm_classifier_dir(dir.path());
    let reference = fixtures::minilm_cls_bundle(dir.path());
    let info: Value =
        serde_json::from_str(&ok(&s.cli(&["deploy", cls_dir.to_str().unwrap(), "--name", "minilm-cls", "-o", "json"])))
            .unwrap();
    assert_eq!(
        (info["format"].as_str(), info["task"].as_str(), info["runtime"].as_str(), info["servable"].as_bool()),
        (Some("safetensors"), Some("text-classification"), Some("candle"), Some(true)),
        "{info}"
    );
    assert_eq!(info["labels"], json!(["NEGATIVE", "POSITIVE"]));
    assert_eq!(info["signature"]["outputs"][0]["name"], "logits");
    assert_eq!(info["signature"]["outputs"][0]["shape"], json!(["batch", 2]));
    ok(&s.cli(&["deploy", reference.to_str().unwrap(), "--name", "minilm-cls-onnx"]));

    // Reference: the [CLS] state of the same encoder through ONNX Runtime (int8
    // export), then BERT's pooler and the classifier computed here.
    let texts = json!(["This movie was absolutely wonderful!", "A dull, lifeless and boring film.", "good job"]);
    let c = s.client(&s.admin_key);
    let req = zoo_api::PredictRequest { inputs: texts.clone(), top_k: Some(2), ..Default::default() };
    let got: Vec<Vec<zoo_api::LabelScore>> =
        serde_json::from_value(c.predict("minilm-cls", None, &req).await.unwrap().body).unwrap();
    let req = zoo_api::PredictRequest { inputs: texts, ..Default::default() };
    let cls: Vec<Vec<f64>> =
        serde_json::from_value(c.predict("minilm-cls-onnx", None, &req).await.unwrap().body).unwrap();
    for (scores, cls) in got.iter().zip(&cls) {
        let want = head.scores(cls);
        for (i, label) in head.labels.iter().enumerate() {
            let score = scores.iter().find(|l| l.label == *label).unwrap().score as f64;
            println!("{label}: candle {score:.4}, ONNX encoder + head {:.4}", want[i]);
            assert!((score - want[i]).abs() < 0.02, "{label}: {score} vs {}", want[i]);
        }
    }

    // A classifier whose head weights are missing is refused, naming them.
    let broken = dir.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    let tensors: Vec<_> = fixtures::read_safetensors(&cls_dir.join("model.safetensors"))
        .into_iter()
        .filter(|t| !t.name.starts_with("classifier."))
        .collect();
    fixtures::write_safetensors(&broken.join("model.safetensors"), &tensors);
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(cls_dir.join(f), broken.join(f)).unwrap();
    }
    let out = s.cli(&["deploy", broken.to_str().unwrap(), "--name", "broken"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid_artifact") && err.contains("classifier"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sklearn_skops_bundles_match_scikit_learn() {
    let s = Server::start_with(with_ort());
    let dir = fixtures::sklearn_bundles();
    let index: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(dir.join("index.json")).unwrap()).unwrap();
    let predict = |model: &str, body: &Value| {
        let (url, key, body) = (s.at(&format!("/v1/models/{model}/predict")), s.admin_key.clone(), body.clone());
        async move { json_of(reqwest::Client::new().post(url).bearer_auth(key).json(&body).send().await.unwrap()).await }
    };
    let (mut rows, mut requests, mut cases) = (0usize, 0usize, 0usize);
    for case in &index {
        let name = case["case"].as_str().unwrap();
        let expected: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(name).join("expected.json")).unwrap()).unwrap();
        let model = format!("sk-{}", name.replace('_', "-"));
        let info: Value = serde_json::from_str(&ok(&s.cli(&[
            "deploy",
            dir.join(name).to_str().unwrap(),
            "--name",
            &model,
            "-o",
            "json",
        ])))
        .unwrap();
        assert_eq!(info["format"], "mlflow", "{name}: {info}");
        if !expected["servable"].as_bool().unwrap() {
            let reason = info["reason"].as_str().unwrap_or_default();
            assert_eq!(info["servable"], false, "{name}: {info}");
            let why = if name.contains("pickle") { "never loads" } else { "KNeighborsClassifier" };
            assert!(reason.contains(why) && reason.contains("skl2onnx"), "{name}: {reason}");
            let (status, body) = predict(&model, &json!({"dataframe_split": {"columns": [], "data": [[]]}})).await;
            assert_eq!((status, code(&body)), (409, "not_servable"), "{body}");
            continue;
        }
        assert_eq!(
            (info["servable"].as_bool(), info["runtime"].as_str()),
            (Some(true), Some("sklearn")),
            "{name}: {info}"
        );
        if let Some(classes) = expected["classes"].as_array() {
            let labels: Vec<String> =
                classes.iter().map(|c| c.as_str().map_or_else(|| c.to_string(), str::to_string)).collect();
            assert_eq!(info["labels"], json!(labels), "{name}");
        }
        // float32 models: scikit-learn itself is not bit-stable across batch sizes.
        let tol = if expected["input_dtype"] == "float32" { 2e-6 } else { 1e-9 };
        let mut checks: Vec<(String, &Value)> =
            expected["row_sets"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), &v["serving"])).collect();
        if let Some(variants) = expected["serving_variants"].as_object() {
            checks.extend(variants.iter().map(|(k, v)| (k.clone(), v)));
        }
        for (what, serving) in checks {
            let (status, body) = predict(&model, &serving["request"]).await;
            requests += 1;
            if serving["status"] == 200 {
                assert_eq!(status, 200, "{name}/{what}: {body}");
                let want = &serving["response"]["predictions"];
                assert!(
                    same_predictions(&body["predictions"], want, tol),
                    "{name}/{what}: zoo {body} vs MLflow {want}"
                );
                rows += want.as_array().map_or(0, Vec::len);
            } else {
                assert_eq!(
                    (status, code(&body)),
                    (400, "invalid_input"),
                    "{name}/{what}: MLflow refused it too: {body}"
                );
            }
        }
        cases += 1;
    }
    println!(
        "{cases} scikit-learn models: {requests} requests, {rows} predictions equal to MLflow's and scikit-learn's"
    );
    assert!(cases >= 25 && rows > 500, "too little was compared: {cases} cases, {rows} rows");

    // The shared iris bundle (float32 StandardScaler + LogisticRegression), against
    // what MLflow serves for its own serving input example.
    let reference = dir.join("shared-iris-sklearn.json");
    let shared = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/models/mlflow/iris-sklearn");
    if shared.is_dir() {
        let want: Value = serde_json::from_str(&std::fs::read_to_string(&reference).unwrap()).unwrap();
        ok(&s.cli(&["deploy", shared.to_str().unwrap(), "--name", "iris-sklearn"]));
        let (status, body) = predict("iris-sklearn", &want["request"]).await;
        assert_eq!(status, 200, "{body}");
        println!("iris-sklearn: zoo {} vs MLflow {}", body["predictions"], want["response"]["predictions"]);
        assert!(same_predictions(&body["predictions"], &want["response"]["predictions"], 0.0));
    } else {
        println!("../shared/models/mlflow/iris-sklearn absent: checked the generated bundles only");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mlflow_transformers_flavor_served_through_safetensors() {
    let dir = tmp();
    let s = Server::start_with(with_ort());
    let (cls_dir, _) = fixtures::minilm_classifier_dir(dir.path());
    let bundle = fixtures::mlflow_transformers_bundle(dir.path(), &cls_dir, "text-classification");
    let info: Value =
        serde_json::from_str(&ok(&s.cli(&["deploy", bundle.to_str().unwrap(), "--name", "mlflow-cls", "-o", "json"])))
            .unwrap();
    assert_eq!(
        (info["format"].as_str(), info["task"].as_str(), info["runtime"].as_str(), info["servable"].as_bool()),
        (Some("mlflow"), Some("text-classification"), Some("candle"), Some(true)),
        "{info}"
    );
    assert_eq!(info["signature"]["mlflow"]["served_flavor"], "transformers");
    ok(&s.cli(&["deploy", cls_dir.to_str().unwrap(), "--name", "plain-cls"]));
    let texts = ["This movie was absolutely wonderful!", "A dull, lifeless and boring film."];
    let c = s.client(&s.admin_key);
    let req = zoo_api::PredictRequest { inputs: json!(texts), ..Default::default() };
    let plain: Vec<Vec<zoo_api::LabelScore>> =
        serde_json::from_value(c.predict("plain-cls", None, &req).await.unwrap().body).unwrap();
    // MLflow's request shapes, answered as mlflow models serve does: one
    // {label, score} record per row.
    for body in [
        json!({"inputs": texts}),
        json!({"instances": texts}),
        json!({"dataframe_split": {"columns": ["text"], "data": [[texts[0]], [texts[1]]]}}),
        json!({"dataframe_records": [{"text": texts[0]}, {"text": texts[1]}]}),
    ] {
        let r = s
            .http()
            .post(s.at("/v1/models/mlflow-cls/predict"))
            .bearer_auth(&s.admin_key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let (status, got) = json_of(r).await;
        assert_eq!(status, 200, "{body}: {got}");
        let predictions = got["predictions"].as_array().unwrap();
        assert_eq!(predictions.len(), 2, "{got}");
        for (p, want) in predictions.iter().zip(&plain) {
            assert_eq!(p["label"], want[0].label.as_str(), "{got}");
            assert!((p["score"].as_f64().unwrap() - want[0].score as f64).abs() < 1e-6);
        }
    }

    // Weights kept as a pickle are stored with the reason, never loaded.
    let pickled = dir.path().join("pickled");
    std::fs::create_dir_all(pickled.join("model")).unwrap();
    std::fs::copy(bundle.join("MLmodel"), pickled.join("MLmodel")).unwrap();
    std::fs::copy(bundle.join("model/config.json"), pickled.join("model/config.json")).unwrap();
    std::fs::write(pickled.join("model/pytorch_model.bin"), b"\x80\x02not loaded").unwrap();
    let info: Value =
        serde_json::from_str(&ok(&s.cli(&["deploy", pickled.to_str().unwrap(), "--name", "pickled", "-o", "json"])))
            .unwrap();
    assert_eq!(info["servable"], false);
    assert!(info["reason"].as_str().unwrap().contains("pytorch_model.bin"), "{info}");
}

#[tokio::test(flavor = "multi_thread")]
async fn torchscript_served_by_libtorch_matches_its_references() {
    let dir = tmp();
    let s = Server::start_with(with_ort());
    let predict = |model: &str, body: Value| {
        let (url, key) = (s.at(&format!("/v1/models/{model}/predict")), s.admin_key.clone());
        async move { json_of(reqwest::Client::new().post(url).bearer_auth(key).json(&body).send().await.unwrap()).await }
    };

    // MLPs: one traced by libtorch here (reference computed in Rust), and the
    // shared one made by PyTorch (reference computed by PyTorch).
    for (i, f) in fixtures::torch_mlps(dir.path()).iter().enumerate() {
        let name = format!("mlp-pt-{i}");
        let out = ok(&s.cli(&["deploy", f.path.to_str().unwrap(), "--name", &name]));
        assert!(out.contains("(torchscript file"), "the CLI says what it detected: {out}");
        let info: Value =
            serde_json::from_str(&ok(&s.cli(&["models", "show", &name, "--version", "1", "-o", "json"]))).unwrap();
        assert_eq!((info["runtime"].as_str(), info["servable"].as_bool()), (Some("torch"), Some(true)), "{info}");
        let input = info["signature"]["inputs"][0]["name"].as_str().unwrap().to_string();
        if !f.input_name.is_empty() {
            assert_eq!(input, f.input_name);
        }
        let (status, body) = predict(&name, json!({"inputs": {input: f.x}})).await;
        assert_eq!(status, 200, "{body}");
        let diff = max_abs_diff(&body["outputs"]["output_0"], &f.y);
        println!("{}: max abs diff {diff:e}", f.source);
        assert!(diff < 1e-5, "{}: {body} vs {}", f.source, f.y);
    }

    // Silero VAD: the TorchScript model against its ONNX export from the same
    // package, run by ONNX Runtime. The ONNX graph takes the 64 samples of context
    // that the TorchScript module keeps itself (zeros at the start) and the state.
    let cache = zoo_tests::models_cache();
    ok(&s.cli(&["deploy", cache.join("silero/silero_vad.jit").to_str().unwrap(), "--name", "silero-pt"]));
    ok(&s.cli(&["deploy", cache.join("silero/silero_vad.onnx").to_str().unwrap(), "--name", "silero-onnx"]));
    for chunk in [audio_chunk(), vec![0.0; 512], audio_chunk().iter().map(|v| v * 0.01).collect()] {
        let (status, pt) = predict("silero-pt", json!({"inputs": {"x": [chunk], "sr": 16000}})).await;
        assert_eq!(status, 200, "{pt}");
        let mut with_context = vec![0.0f32; 64];
        with_context.extend(&chunk);
        let state = vec![vec![vec![0.0f32; 128]; 1]; 2];
        let onnx_req = json!({"inputs": {"input": [with_context], "state": state, "sr": 16000}});
        let (status, onnx) = predict("silero-onnx", onnx_req).await;
        assert_eq!(status, 200, "{onnx}");
        let (p, q) =
            (pt["outputs"]["output_0"][0][0].as_f64().unwrap(), onnx["outputs"]["output"][0][0].as_f64().unwrap());
        println!("silero speech probability: TorchScript {p:.6}, ONNX Runtime {q:.6}");
        assert!((p - q).abs() < 1e-4, "TorchScript {p} vs ONNX {q}");
        // Requests are independent: the module's state is reset before each one.
        let (_, again) = predict("silero-pt", json!({"inputs": {"x": [chunk], "sr": 16000}})).await;
        assert_eq!(again["outputs"], pt["outputs"]);
    }

    // The model's own input check (a ValueError in its TorchScript code) is the
    // client's error, with the model's message; zoo's checks come first.
    let (status, body) = predict("silero-pt", json!({"inputs": {"x": [[0.0, 0.1]], "sr": 16000}})).await;
    assert_eq!((status, code(&body)), (400, "invalid_input"), "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("refused the input: ValueError: Input audio chunk is too short"),
        "{body}"
    );
    let (status, body) = predict("silero-pt", json!({"inputs": {"x": [vec![0.0; 600]], "sr": 16000}})).await;
    assert_eq!((status, code(&body)), (400, "invalid_input"), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("number of samples is 600"), "{body}");
    let (status, body) = predict("silero-pt", json!({"inputs": {"x": [[0.0]]}})).await;
    assert_eq!((status, code(&body)), (400, "invalid_input"), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("missing input 'sr'"), "{body}");
    let (status, body) = predict("silero-pt", json!({"inputs": {"x": [[0.0]], "sr": 1.5}})).await;
    assert_eq!((status, code(&body)), (400, "invalid_input"), "{body}");

    // One worker process per loaded version; one killed while idle is replaced on
    // the next request, which succeeds.
    let workers = children_named(s.pid(), zoo_torch::WORKER_BIN);
    assert_eq!(workers.len(), 3, "one worker per TorchScript version: {workers:?}");
    for w in &workers {
        std::process::Command::new("kill").arg("-KILL").arg(w.to_string()).status().unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let (status, body) = predict("silero-pt", json!({"inputs": {"x": [audio_chunk()], "sr": 16000}})).await;
    assert_eq!(status, 200, "a killed worker is restarted: {body}");
    assert!(!children_named(s.pid(), zoo_torch::WORKER_BIN).iter().any(|p| workers.contains(p)));

    // Deleting the version stops its worker.
    let before = children_named(s.pid(), zoo_torch::WORKER_BIN).len();
    ok(&s.cli(&["rm", "silero-pt", "--all"]));
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(children_named(s.pid(), zoo_torch::WORKER_BIN).len(), before - 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn torchscript_without_the_worker_is_stored_not_served() {
    let mut opts = with_ort();
    opts.env.push(("ZOO_TORCH_WORKER".into(), "/nonexistent/zoo-torch-worker".into()));
    let s = Server::start_with(opts);
    let jit = zoo_tests::models_cache().join("silero/silero_vad.jit");
    let out = ok(&s.cli(&["deploy", jit.to_str().unwrap(), "--name", "silero"]));
    assert!(out.contains("(torchscript file"), "the CLI says what it detected: {out}");
    assert!(out.contains("NOT servable") && out.contains("--features zoo-torch/torch"), "{out}");
    let info: Value =
        serde_json::from_str(&ok(&s.cli(&["models", "show", "silero", "--version", "1", "-o", "json"]))).unwrap();
    assert_eq!(info["format"], "torchscript");
    let inputs: Vec<(&str, &str)> = info["signature"]["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["name"].as_str().unwrap(), i["type_text"].as_str().unwrap()))
        .collect();
    assert_eq!(inputs, [("x", "Tensor"), ("sr", "int")], "{info}");
    let r = s
        .http()
        .post(s.at("/v1/models/silero/predict"))
        .bearer_auth(&s.admin_key)
        .json(&json!({"inputs": {"x": [[0.0]], "sr": 16000}}))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(r).await;
    assert_eq!((status, code(&body)), (409, "not_servable"), "{body}");
}
