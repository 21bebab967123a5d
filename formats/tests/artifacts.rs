//! Validation against real ONNX files (fetched from PyPI by scripts/fetch-test-models)
//! and against broken variants built here.

use std::path::{Path, PathBuf};

use zoo_api::{DType, Dim, Task, ValueKind};
use zoo_formats::build;
use zoo_formats::onnx_proto::StringStringEntryProto;
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

fn tiny_mlp() -> Vec<u8> {
    build::encode(&build::mlp(&[0.5; 32], &[0.1; 8], &[0.25; 24], &[0.0; 3], 4, 8, 3))
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
    assert!(matches!(inspect(&text), Err(Error::UnknownFormat(_))));
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
    m.ir_version = 99;
    let p = write(tmp.path(), "ir.onnx", &build::encode(&m));
    assert!(inspect(&p).unwrap_err().to_string().contains("IR version 99"));

    let mut m = build::mlp(&[0.5; 32], &[0.1; 8], &[0.25; 24], &[0.0; 3], 4, 8, 3);
    m.opset_import.clear();
    let p = write(tmp.path(), "opset.onnx", &build::encode(&m));
    assert!(inspect(&p).unwrap_err().to_string().contains("operator set"));
}

/// An MLP whose first weight lives in an external file named `location`.
fn external_mlp(location: &str) -> Vec<u8> {
    let mut m = build::mlp(&[0.5; 32], &[0.1; 8], &[0.25; 24], &[0.0; 3], 4, 8, 3);
    let w = &mut m.graph.as_mut().unwrap().initializer[0];
    w.raw_data = Default::default();
    w.data_location = 1;
    w.external_data = vec![
        StringStringEntryProto { key: "location".into(), value: location.into() },
        StringStringEntryProto { key: "offset".into(), value: "0".into() },
        StringStringEntryProto { key: "length".into(), value: "128".into() },
    ];
    build::encode(&m)
}

fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        // set_path refuses '..'; write the raw name like a hostile client would.
        let raw = &mut h.as_old_mut().name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
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
