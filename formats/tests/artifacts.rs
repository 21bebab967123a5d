//! Validation against real ONNX files (fetched from PyPI by scripts/fetch-test-models)
//! and against broken variants built here.

use std::path::{Path, PathBuf};

use zoo_api::{DType, Dim, Task, ValueKind};
use zoo_formats::build;
use zoo_formats::hostile::{
    Expect, GOOD_TREE, NODE_DESCR, external_mlp, safetensors_file, sklearn_mlmodel, skops_tree, tar_of, tiny_mlp,
    zip_of, zip64,
};
use zoo_formats::{Error, Limits, inspect_upload};

/// The fetched-model cache; fails loudly when it is missing.
fn models() -> PathBuf {
    let dir = std::env::var_os("ZOO_TEST_MODELS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/zoo")))
        .expect("set ZOO_TEST_MODELS");
    assert!(
        dir.join("onnx/mul_1.onnx").is_file(),
        "test models missing in {}: run scripts/fetch-test-models (scripts/test does)",
        dir.display()
    );
    dir
}

fn shared_models() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/models");
    p.join("tiny/mlp.onnx").is_file().then_some(p)
}

fn inspect(path: &Path) -> Result<zoo_formats::Artifact, Error> {
    let work = tempfile::tempdir().unwrap();
    inspect_upload(path, work.path(), &Limits::default())
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn tiny_mlp_signature() {
    let tmp = tempfile::tempdir().unwrap();
    let path = match shared_models() {
        Some(p) => p.join("tiny/mlp.onnx"),
        None => {
            eprintln!("../shared/models absent: using the generated MLP");
            write(tmp.path(), "mlp.onnx", &tiny_mlp())
        }
    };
    let a = inspect(&path).unwrap();
    let sig = &a.signature;
    assert_eq!(a.task, Task::Tensor);
    assert_eq!(sig.inputs.len(), 1, "initializers are not inputs");
    assert_eq!(sig.inputs[0].dtype, DType::Float32);
    assert_eq!(sig.inputs[0].shape.as_ref().unwrap()[1], Dim::Fixed(4));
    assert!(matches!(sig.inputs[0].shape.as_ref().unwrap()[0], Dim::Symbolic(_)));
    assert_eq!(sig.outputs[0].shape.as_ref().unwrap()[1], Dim::Fixed(3));
    assert!(sig.onnx.as_ref().unwrap().operators.contains(&"MatMul".to_string()));
}

#[test]
fn onnxruntime_datasets() {
    let m = models();
    let mul = inspect(&m.join("onnx/mul_1.onnx")).unwrap().signature;
    assert_eq!(mul.inputs[0].name, "X");
    assert_eq!(mul.inputs[0].type_text, "tensor(float)[3,2]");
    assert_eq!(mul.outputs[0].name, "Y");

    let iris = inspect(&m.join("onnx/logreg_iris.onnx")).unwrap().signature;
    let probs = iris.outputs.iter().find(|o| o.kind == ValueKind::Sequence).expect("a ZipMap output");
    assert_eq!(probs.type_text, "seq(map(int64,tensor(float)))");
    assert_eq!(probs.dtype, DType::Float32);
    let onnx = iris.onnx.unwrap();
    assert!(onnx.opsets.iter().any(|o| o.domain == "ai.onnx.ml"));
    assert!(onnx.operators.iter().any(|o| o.starts_with("ai.onnx.ml:")));
}

#[test]
fn minilm_onnx_is_a_feature_extractor_with_its_tokenizer() {
    let m = models();
    let sig = inspect(&m.join("minilm-onnx/model.onnx")).unwrap().signature;
    let names: Vec<&str> = sig.inputs.iter().map(|i| i.name.as_str()).collect();
    assert!(names.contains(&"input_ids") && names.contains(&"attention_mask"), "{names:?}");
    assert!(sig.inputs.iter().all(|i| i.dtype == DType::Int64));
    assert_eq!(sig.outputs[0].shape.as_ref().unwrap().len(), 3);

    // As a bundle with the tokenizer and sentence-transformers configs.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(m.join("minilm-onnx/model.onnx"), dir.path().join("model.onnx")).unwrap();
    for f in ["tokenizer.json", "config.json", "modules.json", "sentence_bert_config.json", "1_Pooling/config.json"] {
        std::fs::create_dir_all(dir.path().join(f).parent().unwrap()).unwrap();
        std::fs::copy(m.join("minilm").join(f), dir.path().join(f)).unwrap();
    }
    let files = vec![zoo_api::BundleFile { path: "model.onnx".into(), size: 1 }];
    let a = zoo_formats::inspect_dir(dir.path(), files, &Limits::default()).unwrap();
    assert_eq!(a.task, Task::FeatureExtraction);
    let text = a.signature.text.unwrap();
    assert_eq!(text.pooling, "mean");
    assert!(text.normalize);
    assert_eq!(text.max_length, 256);
}

#[test]
fn truncated_and_random_files_are_refused() {
    let m = models();
    let tmp = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(m.join("onnx/logreg_iris.onnx")).unwrap();
    let cut = write(tmp.path(), "cut.onnx", &bytes[..bytes.len() / 2]);
    match inspect(&cut) {
        Err(Error::Invalid { rule, .. }) => assert_eq!(rule, "protobuf"),
        other => panic!("truncated file: {other:?}"),
    }
    let noise: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let random = write(tmp.path(), "random.bin", &noise);
    assert!(matches!(inspect(&random), Err(Error::UnknownFormat(_) | Error::Invalid { .. })));
    let empty = write(tmp.path(), "empty.onnx", b"");
    assert!(matches!(inspect(&empty), Err(Error::UnknownFormat(_))));
    let text = write(tmp.path(), "readme.txt", b"just some text, not a model at all, definitely");
    match inspect(&text) {
        // The answer names every kind of upload zoo takes, TorchScript and MLflow included.
        Err(Error::UnknownFormat(m)) => {
            for kind in ["ONNX", "TorchScript", "safetensors", "Hugging Face", "MLflow"] {
                assert!(m.contains(kind), "{m}");
            }
        }
        other => panic!("text file: {other:?}"),
    }
}

#[test]
fn graph_rules() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = build::mlp(&[0.5; 32], &[0.1; 8], &[0.25; 24], &[0.0; 3], 4, 8, 3);
    m.graph.as_mut().unwrap().node.remove(2); // Relu: h2 is now used but never produced
    let p = write(tmp.path(), "dangling.onnx", &build::encode(&m));
    let err = inspect(&p).unwrap_err().to_string();
    assert!(err.contains("'h2'"), "{err}");

    let mut m = build::mlp(&[0.5; 32], &[0.1; 8], &[0.25; 24], &[0.0; 3], 4, 8, 3);
    m.graph.as_mut().unwrap().initializer[0].raw_data = vec![0u8; 10].into();
    let p = write(tmp.path(), "short.onnx", &build::encode(&m));
    assert!(inspect(&p).unwrap_err().to_string().contains("has 10 bytes"));

    let mut m = build::mlp(&[0.5; 32], &[0.1; 8], &[0.25; 24], &[0.0; 3], 4, 8, 3);
    m.ir_version = 2;
    let p = write(tmp.path(), "ir.onnx", &build::encode(&m));
    assert!(inspect(&p).unwrap_err().to_string().contains("IR version 2"));
    // A newer IR version than today's runtimes read is valid ONNX: described, not refused.
    m.ir_version = 14;
    m.opset_import[0].version = 28;
    let p = write(tmp.path(), "ir14.onnx", &build::encode(&m));
    let onnx = inspect(&p).unwrap().signature.onnx.unwrap();
    assert_eq!((onnx.ir_version, onnx.opsets[0].version), (14, 28));

    let mut m = build::mlp(&[0.5; 32], &[0.1; 8], &[0.25; 24], &[0.0; 3], 4, 8, 3);
    m.opset_import.clear();
    let p = write(tmp.path(), "opset.onnx", &build::encode(&m));
    assert!(inspect(&p).unwrap_err().to_string().contains("operator set"));
}

#[test]
fn external_data_stays_inside_the_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let weights = vec![0u8; 128];

    let ok = write(
        tmp.path(),
        "ok.tar",
        &tar_of(&[("model.onnx", &external_mlp("weights.bin")), ("weights.bin", &weights)]),
    );
    let a = inspect(&ok).unwrap();
    assert_eq!(a.signature.onnx.unwrap().external_data, vec!["weights.bin".to_string()]);
    assert!(a.signature.bundle);

    for evil in ["../../etc/passwd", "/etc/passwd", "sub/../../x.bin"] {
        let p =
            write(tmp.path(), "evil.tar", &tar_of(&[("model.onnx", &external_mlp(evil)), ("weights.bin", &weights)]));
        let err = inspect(&p).unwrap_err().to_string();
        assert!(err.contains("outside the bundle"), "{evil}: {err}");
    }
    let missing = write(tmp.path(), "missing.tar", &tar_of(&[("model.onnx", &external_mlp("nope.bin"))]));
    assert!(inspect(&missing).unwrap_err().to_string().contains("not in the bundle"));
    let short =
        write(tmp.path(), "short.tar", &tar_of(&[("model.onnx", &external_mlp("w.bin")), ("w.bin", &[0u8; 16])]));
    assert!(inspect(&short).unwrap_err().to_string().contains("which has 16 bytes"));

    // A single file may not point at external data at all.
    let single = write(tmp.path(), "single.onnx", &external_mlp("weights.bin"));
    assert!(inspect(&single).unwrap_err().to_string().contains("single file"));
}

#[test]
fn hostile_archives_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_mlp();
    let slip = write(tmp.path(), "slip.tar", &tar_of(&[("model.onnx", &model), ("../escape.txt", b"x")]));
    assert!(inspect(&slip).unwrap_err().to_string().contains("outside the bundle"));
    assert!(!tmp.path().join("escape.txt").exists());

    let abs = write(tmp.path(), "abs.tar", &tar_of(&[("/tmp/zoo-abs.txt", b"x")]));
    assert!(inspect(&abs).unwrap_err().to_string().contains("outside the bundle"));

    let dup = write(tmp.path(), "dup.tar", &tar_of(&[("model.onnx", &model), ("model.onnx", &model)]));
    assert!(inspect(&dup).unwrap_err().to_string().contains("twice"));

    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "model.onnx", "/etc/passwd").unwrap();
    let link = write(tmp.path(), "link.tar", &b.into_inner().unwrap());
    assert!(inspect(&link).unwrap_err().to_string().contains("symbolic link"));

    let many: Vec<(String, Vec<u8>)> = (0..20).map(|i| (format!("f{i}.txt"), vec![1u8])).collect();
    let refs: Vec<(&str, &[u8])> = many.iter().map(|(n, d)| (n.as_str(), d.as_slice())).collect();
    let p = write(tmp.path(), "many.tar", &tar_of(&refs));
    let limits = Limits { max_bundle_files: 10, ..Default::default() };
    let work = tempfile::tempdir().unwrap();
    assert!(inspect_upload(&p, work.path(), &limits).unwrap_err().to_string().contains("more than 10 members"));

    let big = write(tmp.path(), "big.tar", &tar_of(&[("model.onnx", &model)]));
    let limits = Limits { max_bundle_size: 10, ..Default::default() };
    let work = tempfile::tempdir().unwrap();
    assert!(matches!(inspect_upload(&big, work.path(), &limits), Err(Error::TooLarge { .. })));
}

#[test]
fn text_classifier_bundle_is_detected() {
    let m = models();
    let tmp = tempfile::tempdir().unwrap();
    let vocab = 30522i64;
    let model = build::encode(&build::bag_of_words_classifier(&vec![0.0; (vocab * 2) as usize], vocab, 2));
    let config = br#"{"id2label": {"0": "NEGATIVE", "1": "POSITIVE"}, "max_position_embeddings": 512}"#;
    let tokenizer = std::fs::read(m.join("minilm/tokenizer.json")).unwrap();
    let p = write(
        tmp.path(),
        "bow.tar",
        &tar_of(&[("model.onnx", &model), ("config.json", config), ("tokenizer.json", &tokenizer)]),
    );
    let a = inspect(&p).unwrap();
    assert_eq!(a.task, Task::TextClassification);
    assert_eq!(a.labels, ["NEGATIVE", "POSITIVE"]);
    let text = a.signature.text.unwrap();
    assert_eq!(text.max_length, 128, "the tokenizer's truncation length");

    let bad = write(
        tmp.path(),
        "badcfg.tar",
        &tar_of(&[("model.onnx", &model), ("config.json", b"{not json"), ("tokenizer.json", &tokenizer)]),
    );
    assert!(inspect(&bad).unwrap_err().to_string().contains("config.json is not valid JSON"));
}

/// A safetensors file from a header and the data after it.
#[test]
fn real_safetensors_weights_are_described() {
    let path = models().join("minilm/model.safetensors");
    let a = inspect(&path).unwrap();
    assert_eq!(a.signature.format, zoo_api::Format::Safetensors);
    assert_eq!(a.task, Task::Tensor);
    let info = a.signature.safetensors.clone().expect("a tensor table");
    // all-MiniLM-L6-v2: a 6-layer BERT with 384 hidden units, about 22.7M parameters.
    assert!(info.tensors.len() > 100, "{} tensors", info.tensors.len());
    assert!((22_000_000..23_500_000).contains(&info.parameters), "{} parameters", info.parameters);
    let emb = info.tensors.iter().find(|t| t.name.ends_with("word_embeddings.weight")).expect("word embeddings");
    assert_eq!((emb.dtype.as_str(), emb.shape.as_slice()), ("F32", &[30522u64, 384][..]));
    assert!(zoo_formats::never_servable(&a.signature).is_some(), "bare weights cannot be served");
}

#[test]
fn hostile_safetensors_are_refused_with_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let rule_of = |bytes: &[u8]| match inspect(&write(dir.path(), "w.safetensors", bytes)) {
        Err(Error::Invalid { format: zoo_api::Format::Safetensors, rule, .. }) => rule,
        other => panic!("expected an invalid safetensors file, got {:?}", other.map(|a| a.signature.format)),
    };
    let t = |dtype: &str, shape: &[u64], b: u64, e: u64| serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [b, e]});
    let good = safetensors_file(&serde_json::json!({"w": t("F32", &[2, 2], 0, 16)}), &[0u8; 16]);
    assert!(inspect(&write(dir.path(), "ok.safetensors", &good)).is_ok());

    // Truncated data, a header longer than the file, a header claiming 2^60 bytes.
    assert_eq!(rule_of(&good[..good.len() - 4]), "offsets");
    let mut long = good.clone();
    long[..8].copy_from_slice(&(good.len() as u64).to_le_bytes());
    assert_eq!(rule_of(&long), "header_length");
    let mut huge = good.clone();
    huge[..8].copy_from_slice(&(1u64 << 60).to_le_bytes());
    assert_eq!(rule_of(&huge), "header_length");
    // A header that is not JSON, an unknown dtype, overlapping tensors, a gap.
    let mut bad_json = safetensors_file(&serde_json::json!({"w": t("F32", &[1], 0, 4)}), &[0u8; 4]);
    bad_json[12] = b'!';
    assert_eq!(rule_of(&bad_json), "header_json");
    assert_eq!(rule_of(&safetensors_file(&serde_json::json!({"w": t("Q4", &[1], 0, 4)}), &[0u8; 4])), "dtype");
    let overlap = serde_json::json!({"a": t("F32", &[2], 0, 8), "b": t("F32", &[2], 4, 12)});
    assert_eq!(rule_of(&safetensors_file(&overlap, &[0u8; 12])), "overlap");
    let gap = serde_json::json!({"a": t("F32", &[1], 0, 4), "b": t("F32", &[1], 8, 12)});
    assert_eq!(rule_of(&safetensors_file(&gap, &[0u8; 12])), "coverage");
    assert_eq!(rule_of(&safetensors_file(&serde_json::json!({"w": t("F32", &[3], 0, 8)}), &[0u8; 8])), "shape");
}

/// An MLmodel for an `onnx` flavor logged by MLflow (the shape of what mlflow.onnx writes).
fn mlmodel_onnx(data: &str) -> String {
    format!(
        "flavors:\n  onnx:\n    code: null\n    data: {data}\n    onnx_version: 1.23.2\n  python_function:\n    data: {data}\n    \
         loader_module: mlflow.onnx\n    python_version: 3.11.7\nmlflow_version: 3.17.2\nsignature:\n  inputs: \
         '[{{\"type\": \"tensor\", \"tensor-spec\": {{\"dtype\": \"float32\", \"shape\": [-1, 4]}}, \"name\": \"x\"}}]'\n  \
         outputs: null\n"
    )
}

#[test]
fn mlflow_onnx_bundles_are_served_as_onnx() {
    let tmp = tempfile::tempdir().unwrap();
    let p = write(
        tmp.path(),
        "b.tar",
        &tar_of(&[("MLmodel", mlmodel_onnx("model.onnx").as_bytes()), ("model.onnx", &tiny_mlp())]),
    );
    let a = inspect(&p).unwrap();
    assert_eq!(a.signature.format, zoo_api::Format::Mlflow);
    assert_eq!(a.signature.inputs[0].name, "x", "inputs come from the ONNX graph");
    let m = a.signature.mlflow.clone().unwrap();
    assert_eq!(m.flavors, ["onnx", "python_function"]);
    assert_eq!(m.model_file.as_deref(), Some("model.onnx"));
    assert_eq!(m.signature_inputs.unwrap()[0]["tensor-spec"]["shape"], serde_json::json!([-1, 4]));
    assert_eq!(zoo_formats::never_servable(&a.signature), None);
    assert_eq!(zoo_formats::bundle_model_path(&a.signature).unwrap(), "model.onnx");

    // The real MLflow bundles, when ../shared is here.
    if let Some(shared) = shared_models() {
        let dir = shared.join("mlflow/iris-onnx");
        let files = vec![zoo_api::BundleFile { path: "MLmodel".into(), size: 0 }];
        let a = zoo_formats::inspect_dir(&dir, files.clone(), &Limits::default()).unwrap();
        assert_eq!(a.signature.inputs[0].name, "X");
        let a = zoo_formats::inspect_dir(&shared.join("mlflow/iris-sklearn"), files, &Limits::default()).unwrap();
        assert_eq!(zoo_formats::never_servable(&a.signature), None, "a skops pipeline zoo runs natively");
        assert_eq!(zoo_formats::engine(&a.signature), Some(zoo_formats::Engine::Skops));
        let sk = a.signature.skops.clone().unwrap();
        assert_eq!(sk.estimator, "Pipeline(StandardScaler, LogisticRegression)");
        assert_eq!((sk.kind.as_str(), sk.n_features), ("classifier", Some(4)));
        assert_eq!(a.labels, ["0", "1", "2"]);
        assert_eq!(a.signature.inputs[0].dtype, zoo_api::DType::Float32, "MLflow signature type float");
        assert_eq!(a.signature.mlflow.unwrap().input_example.as_deref(), Some("serving_input_example.json"));
    }
}

#[test]
fn hostile_mlflow_bundles_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mlp = tiny_mlp();
    let rule_of = |mlmodel: &str| {
        let p = write(tmp.path(), "b.tar", &tar_of(&[("MLmodel", mlmodel.as_bytes()), ("model.onnx", &mlp)]));
        match inspect(&p) {
            Err(Error::Invalid { format: zoo_api::Format::Mlflow, rule, .. }) => rule,
            other => panic!("expected an invalid MLflow bundle, got {:?}", other.map(|a| a.signature.format)),
        }
    };
    assert_eq!(rule_of(&mlmodel_onnx("../../etc/passwd")), "path");
    assert_eq!(rule_of(&mlmodel_onnx("/etc/passwd")), "path");
    assert_eq!(rule_of(&mlmodel_onnx("missing.onnx")), "path");
    let bomb =
        "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b]\nflavors: {}\n";
    assert_eq!(rule_of(bomb), "yaml");
    assert_eq!(rule_of("flavors:\n  onnx: !!python/object/apply:os.system [ls]\n"), "yaml");
    assert_eq!(rule_of("flavors: [1, 2\n"), "yaml");
    assert_eq!(rule_of("mlflow_version: 3\n"), "flavors");
    assert_eq!(rule_of("flavors:\n  onnx: {}\n"), "flavors");
    let huge = format!("flavors: {{}}\n# {}\n", "x".repeat(2 * 1024 * 1024));
    let p = write(tmp.path(), "big.tar", &tar_of(&[("MLmodel", huge.as_bytes())]));
    assert!(matches!(inspect(&p), Err(Error::TooLarge { .. })));

    // A pickled scikit-learn model is stored and catalogued, never loaded.
    let pickle = "flavors:\n  sklearn:\n    pickled_model: model.pkl\n    serialization_format: cloudpickle\n  \
                  python_function:\n    loader_module: mlflow.sklearn\n    model_path: model.pkl\n";
    let p =
        write(tmp.path(), "p.tar", &tar_of(&[("MLmodel", pickle.as_bytes()), ("model.pkl", b"\x80\x04not loaded")]));
    let a = inspect(&p).unwrap();
    let why = zoo_formats::never_servable(&a.signature).unwrap();
    assert!(why.contains("cloudpickle") && why.contains("never loads"), "{why}");
}

#[test]
fn hf_bert_directory_is_a_feature_extractor() {
    let tmp = tempfile::tempdir().unwrap();
    let m = models().join("minilm");
    let dir = tmp.path().join("hf");
    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    let names = ["model.safetensors", "config.json", "tokenizer.json", "modules.json", "1_Pooling/config.json"];
    for f in names {
        std::fs::copy(m.join(f), dir.join(f)).unwrap();
    }
    let files: Vec<zoo_api::BundleFile> =
        names.iter().map(|f| zoo_api::BundleFile { path: f.to_string(), size: 0 }).collect();
    let a = zoo_formats::inspect_dir(&dir, files.clone(), &Limits::default()).unwrap();
    assert_eq!((a.signature.format, a.task), (zoo_api::Format::Safetensors, Task::FeatureExtraction));
    let names: Vec<&str> = a.signature.inputs.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["input_ids", "attention_mask", "token_type_ids"]);
    assert_eq!(a.signature.outputs[0].shape.as_ref().unwrap()[2], Dim::Fixed(384));
    assert_eq!(a.signature.text.as_ref().unwrap().pooling, "mean");
    assert_eq!(zoo_formats::never_servable(&a.signature), None);
    assert_eq!(zoo_formats::bundle_model_path(&a.signature).unwrap(), "model.safetensors");

    // A config that would divide by zero in the encoder is refused up front.
    let good_config = std::fs::read(dir.join("config.json")).unwrap();
    std::fs::write(dir.join("config.json"), r#"{"model_type": "bert", "hidden_size": 384, "num_attention_heads": 0}"#)
        .unwrap();
    assert!(matches!(
        zoo_formats::inspect_dir(&dir, files.clone(), &Limits::default()),
        Err(Error::Invalid { rule: "config", .. })
    ));
    std::fs::write(dir.join("config.json"), good_config).unwrap();

    // Without its tokenizer the encoder cannot take text.
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    let a = zoo_formats::inspect_dir(&dir, files, &Limits::default()).unwrap();
    assert!(zoo_formats::never_servable(&a.signature).unwrap().contains("tokenizer.json"));
}

/// A safetensors file of zero-filled float32 tensors of these shapes.
fn zero_safetensors(tensors: &[(&str, &[usize])]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut at = 0usize;
    for (name, shape) in tensors {
        let n = shape.iter().product::<usize>() * 4;
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [at, at + n]}),
        );
        at += n;
    }
    let mut h = serde_json::Value::Object(header).to_string().into_bytes();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.resize(out.len() + at, 0);
    out
}

#[test]
fn hf_architectures_are_described_by_their_config_and_head() {
    let tmp = tempfile::tempdir().unwrap();
    let tokenizer = models().join("minilm/tokenizer.json");
    let dir_with = |name: &str, config: serde_json::Value, tensors: &[(&str, &[usize])]| {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        std::fs::write(dir.join("model.safetensors"), zero_safetensors(tensors)).unwrap();
        std::fs::copy(&tokenizer, dir.join("tokenizer.json")).unwrap();
        let files = ["config.json", "model.safetensors", "tokenizer.json"]
            .map(|f| zoo_api::BundleFile { path: f.into(), size: 0 })
            .to_vec();
        zoo_formats::inspect_dir(&dir, files, &Limits::default())
    };
    let ner_labels = serde_json::json!({"0": "O", "1": "B-PER", "2": "I-PER"});

    // DistilBERT token classifier: no token types; logits for every token.
    let a = dir_with(
        "distilbert",
        serde_json::json!({"model_type": "distilbert", "dim": 32, "n_heads": 4, "id2label": ner_labels,
                           "architectures": ["DistilBertForTokenClassification"]}),
        &[("distilbert.embeddings.word_embeddings.weight", &[10, 32]), ("classifier.weight", &[3, 32])],
    )
    .unwrap();
    assert_eq!(a.task, Task::TokenClassification);
    assert_eq!(a.labels, ["O", "B-PER", "I-PER"]);
    let inputs: Vec<&str> = a.signature.inputs.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(inputs, ["input_ids", "attention_mask"]);
    assert_eq!(a.signature.outputs[0].type_text, "tensor(float)[batch,sequence,3]");
    assert_eq!(zoo_formats::never_servable(&a.signature), None);

    // RoBERTa sequence classifier: its head is dense + out_proj; its positions
    // start after the padding index, so 66 position embeddings hold 64 tokens.
    let roberta = |tensors: &[(&str, &[usize])]| {
        dir_with(
            "roberta",
            serde_json::json!({"model_type": "roberta", "hidden_size": 32, "num_attention_heads": 4,
                               "max_position_embeddings": 66, "pad_token_id": 1,
                               "id2label": {"0": "NEGATIVE", "1": "POSITIVE"},
                               "architectures": ["RobertaForSequenceClassification"]}),
            tensors,
        )
    };
    let a = roberta(&[("classifier.dense.weight", &[32, 32]), ("classifier.out_proj.weight", &[2, 32])]).unwrap();
    assert_eq!(a.task, Task::TextClassification);
    assert_eq!(a.signature.outputs[0].type_text, "tensor(float)[batch,2]");
    assert_eq!(a.signature.text.as_ref().unwrap().max_length, 64);
    match roberta(&[("classifier.dense.weight", &[32, 32])]) {
        Err(Error::Invalid { rule: "weights", message, .. }) => {
            assert!(message.contains("RobertaForSequenceClassification") && message.contains("classifier.out_proj"))
        }
        other => panic!("a classifier without its output layer must be refused: {other:?}"),
    }

    // A DistilBERT config whose sizes do not divide is refused with its own keys.
    match dir_with("bad", serde_json::json!({"model_type": "distilbert", "dim": 30, "n_heads": 4}), &[("x", &[1])]) {
        Err(Error::Invalid { rule: "config", message, .. }) => {
            assert!(message.contains("dim") && message.contains("n_heads"))
        }
        other => panic!("{other:?}"),
    }

    // A model type zoo does not run is stored with the reason, naming those it runs.
    let a = dir_with("gpt2", serde_json::json!({"model_type": "gpt2"}), &[("x", &[1])]).unwrap();
    let why = zoo_formats::never_servable(&a.signature).unwrap();
    assert!(why.contains("distilbert") && why.contains("xlm-roberta") && why.contains("deberta-v2"), "{why}");
}

const FORWARD: &[u8] = b"class M(Module):\n  def forward(self: __torch__.M,\n    x: Tensor) -> Tensor:\n    return x\n";

#[test]
fn torchscript_archives_are_described_without_loading_them() {
    // silero-vad's TorchScript model, from PyPI.
    let a = inspect(&models().join("silero/silero_vad.jit")).unwrap();
    assert_eq!(a.signature.format, zoo_api::Format::Torchscript);
    let ts = a.signature.torchscript.clone().unwrap();
    println!("silero_vad.jit: {} members, forward({:?})", ts.members, a.signature.inputs);
    let inputs: Vec<(&str, &str)> =
        a.signature.inputs.iter().map(|i| (i.name.as_str(), i.type_text.as_str())).collect();
    assert_eq!(inputs, [("x", "Tensor"), ("sr", "int")], "the saved module's forward, not a submodule's");
    assert_eq!(zoo_formats::never_servable(&a.signature), None, "servable where the runtime is");
    assert_eq!(zoo_formats::engine(&a.signature), Some(zoo_formats::Engine::Torchscript));
    if let Some(shared) = shared_models() {
        let a = inspect(&shared.join("tiny/mlp.pt")).unwrap();
        let inputs: Vec<(&str, &str)> =
            a.signature.inputs.iter().map(|i| (i.name.as_str(), i.type_text.as_str())).collect();
        assert_eq!(inputs, [("x", "Tensor")]);
        assert_eq!(a.signature.torchscript.unwrap().archive_name, "mlp");
    }
    let tmp = tempfile::tempdir().unwrap();
    let ok = zip_of(&[("m/data.pkl", b"\x80\x02"), ("m/code/__torch__.py", FORWARD), ("m/version", b"3\n")]);
    let a = inspect(&write(tmp.path(), "m.pt", &ok)).unwrap();
    assert_eq!(a.signature.torchscript.unwrap().version.as_deref(), Some("3"));
    // The same archive in zip64 form (as written for models over 4 GiB).
    let a = inspect(&write(tmp.path(), "m64.pt", &zip64(&ok))).unwrap();
    assert_eq!(a.signature.inputs[0].name, "x");
}

#[test]
fn hostile_torchscript_archives_are_refused_with_the_rule() {
    let tmp = tempfile::tempdir().unwrap();
    let rule_of = |bytes: &[u8]| match inspect(&write(tmp.path(), "x.pt", bytes)) {
        Err(Error::Invalid { format: zoo_api::Format::Torchscript, rule, .. }) => rule,
        other => panic!("expected an invalid TorchScript archive, got {:?}", other.map(|a| a.signature.format)),
    };
    let member = |name: &'static str, data: &'static [u8]| (name, data);
    let base = [member("m/data.pkl", b"\x80\x02"), member("m/code/__torch__.py", FORWARD), member("m/version", b"3")];
    let with = |extra: (&'static str, &'static [u8])| {
        let mut v = base.to_vec();
        v.push(extra);
        zip_of(&v)
    };
    assert_eq!(rule_of(&with(member("../../etc/cron.d/x", b"boom"))), "member_path");
    assert_eq!(rule_of(&with(member("/etc/passwd", b"boom"))), "member_path");
    assert_eq!(rule_of(&with(member("m/version", b"4"))), "duplicate_member");
    assert_eq!(rule_of(&with(member("other/file", b"x"))), "layout");
    let no_forward =
        zip_of(&[member("m/data.pkl", b""), member("m/code/__torch__.py", b"x = 1"), member("m/version", b"3")]);
    assert_eq!(rule_of(&no_forward), "code");
    let good = zip_of(&base);
    assert_eq!(rule_of(&good[..good.len() - 30]), "zip", "truncated");
    // A member claiming 4 GB from a few bytes: a zip bomb.
    let mut bomb = good.clone();
    let pos = bomb.windows(4).rposition(|w| w == [0x50, 0x4b, 0x01, 0x02]).unwrap();
    bomb[pos + 10] = 8; // deflate
    bomb[pos + 24..pos + 28].copy_from_slice(&4_000_000_000u32.to_le_bytes());
    assert_eq!(rule_of(&bomb), "compression_ratio");
    // Not TorchScript at all: an unknown format, not a broken model.
    let other = zip_of(&[member("readme.txt", b"hi")]);
    assert!(matches!(inspect(&write(tmp.path(), "o.zip", &other)), Err(Error::UnknownFormat(_))));
}

#[test]
fn skops_models_are_read_and_hostile_ones_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = |skops: &[u8]| {
        let p =
            write(tmp.path(), "sk.tar", &tar_of(&[("MLmodel", sklearn_mlmodel().as_bytes()), ("model.skops", skops)]));
        inspect(&p)
    };
    let a = bundle(&skops_tree(|_| {}, GOOD_TREE, NODE_DESCR)).unwrap();
    assert_eq!(zoo_formats::never_servable(&a.signature), None);
    let sk = a.signature.skops.clone().unwrap();
    assert_eq!(
        (sk.estimator.as_str(), sk.kind.as_str(), sk.n_features),
        ("DecisionTreeRegressor", "regressor", Some(2))
    );
    assert_eq!(a.signature.inputs[0].shape, Some(vec![zoo_api::Dim::Symbolic("batch".into()), zoo_api::Dim::Fixed(2)]));
    assert_eq!(a.signature.outputs[0].dtype, zoo_api::DType::Float64);

    let rule_of = |skops: Vec<u8>| match bundle(&skops) {
        Err(Error::Invalid { format: zoo_api::Format::Mlflow, rule, .. }) => rule,
        other => panic!("expected an invalid skops model, got {:?}", other.map(|a| a.signature.skops)),
    };
    // A child pointing back at its parent (a loop) or past the end, a feature the
    // model does not have: refused before anything could evaluate them.
    assert_eq!(
        rule_of(skops_tree(|_| {}, &[(1, 0, 0, 0.5), (-1, -1, -2, -2.0), (-1, -1, -2, -2.0)], NODE_DESCR)),
        "tree"
    );
    assert_eq!(
        rule_of(skops_tree(|_| {}, &[(1, 7, 0, 0.5), (-1, -1, -2, -2.0), (-1, -1, -2, -2.0)], NODE_DESCR)),
        "tree"
    );
    assert_eq!(
        rule_of(skops_tree(|_| {}, &[(1, 2, 5, 0.5), (-1, -1, -2, -2.0), (-1, -1, -2, -2.0)], NODE_DESCR)),
        "tree"
    );
    // Arrays: a path out of the archive, a missing file, a pickled object array.
    let file = |f: &'static str| {
        move |s: &mut serde_json::Value| {
            s["content"]["content"]["tree_"]["content"]["content"]["nodes"]["file"] = f.into()
        }
    };
    assert_eq!(rule_of(skops_tree(file("../../etc/passwd"), GOOD_TREE, NODE_DESCR)), "path");
    assert_eq!(rule_of(skops_tree(file("missing.npy"), GOOD_TREE, NODE_DESCR)), "schema");
    assert_eq!(rule_of(skops_tree(|_| {}, GOOD_TREE, "'|O'")), "dtype");
    // A protocol zoo does not know.
    assert_eq!(rule_of(skops_tree(|s| s["protocol"] = 99.into(), GOOD_TREE, NODE_DESCR)), "protocol");
    // Not JSON, or not skops at all.
    assert_eq!(rule_of(zip_of(&[("schema.json", b"{not json")])), "schema");
    assert_eq!(rule_of(zip_of(&[("other.txt", b"x")])), "schema");
    // An estimator zoo does not run is stored with the reason, its arrays unread.
    let a = bundle(&skops_tree(|s| s["__class__"] = "KNeighborsClassifier".into(), GOOD_TREE, "'|O'")).unwrap();
    let why = zoo_formats::never_servable(&a.signature).unwrap();
    assert!(why.contains("KNeighborsClassifier") && why.contains("skl2onnx"), "{why}");
    // Trees from before scikit-learn 1.4 stored counts: refused with the reason.
    let old = |s: &mut serde_json::Value| s["content"]["content"]["_sklearn_version"]["content"] = "\"1.3.2\"".into();
    let a = bundle(&skops_tree(old, GOOD_TREE, NODE_DESCR)).unwrap();
    assert!(zoo_formats::never_servable(&a.signature).unwrap().contains("1.3.2"));
}

#[test]
fn hostile_corpus_breaks_the_rules_it_names() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = zoo_formats::hostile::corpus();
    let mut wrong = Vec::new();
    for case in &corpus {
        let path = write(tmp.path(), "case", &case.bytes);
        let work = tmp.path().join(format!("work-{}", case.name));
        std::fs::create_dir(&work).unwrap();
        let got = inspect_upload(&path, &work, &Limits::default());
        match (case.expect, &got) {
            (Expect::Unknown, Err(Error::UnknownFormat(_))) => {}
            (Expect::Invalid { format: "bundle", rule }, Err(Error::InvalidBundle { rule: r, .. })) if *r == rule => {}
            (Expect::Invalid { format, rule }, Err(Error::Invalid { format: f, rule: r, .. }))
                if f.as_str() == format && *r == rule => {}
            (want, got) => wrong.push(format!(
                "{}: expected {want:?}, got {:?}",
                case.name,
                got.as_ref().map(|a| a.signature.format)
            )),
        }
        // Nothing escaped the work directory.
        for entry in std::fs::read_dir(tmp.path()).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            assert!(name == "case" || name.starts_with("work-"), "{}: {name} escaped", case.name);
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(corpus.len() >= 30, "{} cases", corpus.len());
}

#[test]
fn a_vit_directory_with_its_preprocessor_is_an_image_classifier() {
    let tmp = tempfile::tempdir().unwrap();
    let dir_with = |name: &str, config: serde_json::Value, preprocessor: Option<serde_json::Value>| {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        std::fs::write(dir.join("model.safetensors"), zero_safetensors(&[("classifier.weight", &[3, 32])])).unwrap();
        let mut files = vec!["config.json", "model.safetensors"];
        if let Some(p) = preprocessor {
            std::fs::write(dir.join("preprocessor_config.json"), p.to_string()).unwrap();
            files.push("preprocessor_config.json");
        }
        let files = files.into_iter().map(|f| zoo_api::BundleFile { path: f.into(), size: 0 }).collect();
        zoo_formats::inspect_dir(&dir, files, &Limits::default())
    };
    let config = serde_json::json!({"model_type": "vit", "image_size": 64, "patch_size": 16, "hidden_size": 32,
                                    "num_attention_heads": 4, "architectures": ["ViTForImageClassification"],
                                    "id2label": {"0": "cat", "1": "dog", "2": "bird"}});
    let vit = serde_json::json!({"size": {"height": 64, "width": 64}, "resample": 2,
                                 "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]});
    let a = dir_with("vit", config.clone(), Some(vit.clone())).unwrap();
    assert_eq!(a.task, Task::ImageClassification);
    assert_eq!(a.labels, ["cat", "dog", "bird"]);
    assert_eq!(a.signature.inputs[0].type_text, "tensor(float)[batch,3,64,64]");
    assert_eq!(a.signature.outputs[0].type_text, "tensor(float)[batch,3]");
    let image = a.signature.image.as_ref().unwrap();
    assert_eq!((image.input.as_str(), image.height, image.width), ("pixel_values", 64, 64));
    assert_eq!(zoo_formats::never_servable(&a.signature), None);

    // Without its processor settings it is stored, and says what it lacks.
    let a = dir_with("bare", config.clone(), None).unwrap();
    assert!(zoo_formats::never_servable(&a.signature).unwrap().contains("preprocessor_config.json"));

    // A processor that makes another size than the model takes is refused at upload.
    let other = serde_json::json!({"size": {"height": 32, "width": 32}});
    match dir_with("mismatch", config, Some(other)) {
        Err(Error::InvalidBundle { rule: "preprocessor", message }) => {
            assert!(message.contains("height 32") && message.contains("takes 64"), "{message}")
        }
        other => panic!("a processor of the wrong size must be refused: {other:?}"),
    }
}

#[test]
fn decoder_directories_are_text_generators_checked_weight_by_weight() {
    let tmp = tempfile::tempdir().unwrap();
    let config = serde_json::json!({"model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"], "vocab_size": 50,
        "hidden_size": 8, "intermediate_size": 12, "num_hidden_layers": 1, "num_attention_heads": 2,
        "num_key_value_heads": 1, "head_dim": 8, "max_position_embeddings": 128, "tie_word_embeddings": true,
        "eos_token_id": 3});
    let weights = |drop: &str, extra: &[(&'static str, &'static [usize])]| {
        let mut t: Vec<(&str, &[usize])> = vec![
            ("model.embed_tokens.weight", &[50, 8]),
            ("model.layers.0.self_attn.q_proj.weight", &[16, 8]),
            ("model.layers.0.self_attn.k_proj.weight", &[8, 8]),
            ("model.layers.0.self_attn.v_proj.weight", &[8, 8]),
            ("model.layers.0.self_attn.o_proj.weight", &[8, 16]),
            ("model.layers.0.self_attn.q_norm.weight", &[8]),
            ("model.layers.0.self_attn.k_norm.weight", &[8]),
            ("model.layers.0.mlp.gate_proj.weight", &[12, 8]),
            ("model.layers.0.mlp.up_proj.weight", &[12, 8]),
            ("model.layers.0.mlp.down_proj.weight", &[8, 12]),
            ("model.layers.0.input_layernorm.weight", &[8]),
            ("model.layers.0.post_attention_layernorm.weight", &[8]),
            ("model.norm.weight", &[8]),
        ];
        t.retain(|(n, _)| *n != drop);
        t.extend_from_slice(extra);
        t
    };
    let dir_with = |name: &str, config: &serde_json::Value, tensors: &[(&str, &[usize])], side: &[(&str, &str)]| {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        std::fs::write(dir.join("model.safetensors"), zero_safetensors(tensors)).unwrap();
        let mut files = vec!["config.json", "model.safetensors"];
        for (f, text) in side {
            std::fs::write(dir.join(f), text).unwrap();
            files.push(f);
        }
        let files = files.into_iter().map(|f| zoo_api::BundleFile { path: f.into(), size: 0 }).collect();
        zoo_formats::inspect_dir(&dir, files, &Limits::default())
    };
    let side = [
        ("tokenizer.json", "{}"),
        ("tokenizer_config.json", r#"{"chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}"}"#),
    ];
    let a = dir_with("good", &config, &weights("", &[]), &side).unwrap();
    assert_eq!(a.task, Task::TextGeneration);
    let d = a.signature.decoder.as_ref().expect("a decoder");
    assert_eq!((d.model_type.as_str(), d.layers, d.context_length, d.dtype.as_str()), ("qwen3", 1, Some(128), "F32"));
    assert!(d.chat_template.as_deref().unwrap().contains("m.content"));
    assert_eq!(zoo_formats::never_servable(&a.signature), None);

    // A weight missing, or of another shape, or one the config does not explain.
    let refused = |tensors: &[(&str, &[usize])]| match dir_with("bad", &config, tensors, &side) {
        Err(Error::Invalid { rule: "weights", message, .. }) => message,
        other => panic!("{other:?}"),
    };
    assert!(refused(&weights("model.layers.0.self_attn.k_norm.weight", &[])).contains("k_norm"));
    let m = refused(&weights("model.norm.weight", &[("model.norm.weight", &[9])]));
    assert!(m.contains("model.norm.weight") && m.contains("[8]"), "{m}");
    assert!(refused(&weights("", &[("model.layers.1.mlp.up_proj.weight", &[12, 8])])).contains("layers.1"));

    // Without its tokenizer, or with a rope scaling zoo does not compute: stored, with the reason.
    let a = dir_with("no-tokenizer", &config, &weights("", &[]), &[]).unwrap();
    assert!(zoo_formats::never_servable(&a.signature).unwrap().contains("tokenizer.json"));
    let mut yarn = config.clone();
    yarn["rope_scaling"] = serde_json::json!({"rope_type": "yarn", "factor": 4.0});
    let a = dir_with("yarn", &yarn, &weights("", &[]), &side).unwrap();
    assert!(zoo_formats::never_servable(&a.signature).unwrap().contains("yarn"));
    // The template may come as chat_template.jinja (transformers 4.50 on).
    let a =
        dir_with("jinja", &config, &weights("", &[]), &[("tokenizer.json", "{}"), ("chat_template.jinja", "{{ x }}")])
            .unwrap();
    assert_eq!(a.signature.decoder.unwrap().chat_template.as_deref(), Some("{{ x }}"));
}
