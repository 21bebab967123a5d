//! Models the end-to-end tests deploy: the shared real artifacts when they are
//! present, else equivalents built here, with their reference outputs.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use zoo_formats::build;

use crate::models_cache;

/// A tensor model with an input and the output it must produce.
pub struct TensorFixture {
    pub path: PathBuf,
    pub input_name: String,
    pub x: Value,
    pub y: Value,
    pub source: &'static str,
}

fn shared() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/models");
    p.is_dir().then_some(p)
}

/// The tiny MLP: `../shared/models/tiny` with `mlp_expected.json`, or a generated MLP
/// whose reference output is computed here in plain Rust.
pub fn tiny_mlp(dir: &Path) -> TensorFixture {
    if let Some(s) = shared()
        && s.join("tiny/mlp.onnx").is_file()
    {
        let expected: Value =
            serde_json::from_str(&std::fs::read_to_string(s.join("tiny/mlp_expected.json")).unwrap()).unwrap();
        return TensorFixture {
            path: s.join("tiny/mlp.onnx"),
            input_name: "x".into(),
            x: expected["x"].clone(),
            y: expected["y"].clone(),
            source: "../shared/models/tiny/mlp.onnx",
        };
    }
    let (i, h, o) = (4usize, 8usize, 3usize);
    let w1: Vec<f32> = (0..i * h).map(|k| ((k * 7 % 11) as f32 - 5.0) / 10.0).collect();
    let b1: Vec<f32> = (0..h).map(|k| (k as f32 - 3.0) / 20.0).collect();
    let w2: Vec<f32> = (0..h * o).map(|k| ((k * 5 % 13) as f32 - 6.0) / 8.0).collect();
    let b2: Vec<f32> = vec![0.1, -0.2, 0.3];
    let x = [[1.0f32, 2.0, 3.0, 4.0], [-1.0, 0.5, 0.0, 2.0]];
    let y: Vec<Vec<f32>> = x
        .iter()
        .map(|row| {
            let hid: Vec<f32> =
                (0..h).map(|j| ((0..i).map(|k| row[k] * w1[k * h + j]).sum::<f32>() + b1[j]).max(0.0)).collect();
            (0..o).map(|j| (0..h).map(|k| hid[k] * w2[k * o + j]).sum::<f32>() + b2[j]).collect()
        })
        .collect();
    let path = dir.join("mlp.onnx");
    std::fs::write(&path, build::encode(&build::mlp(&w1, &b1, &w2, &b2, i as i64, h as i64, o as i64))).unwrap();
    TensorFixture { path, input_name: "x".into(), x: json!(x), y: json!(y), source: "generated MLP" }
}

/// A text-classifier bundle and sentences with the label each must get.
pub struct TextFixture {
    pub dir: PathBuf,
    pub cases: Vec<(&'static str, &'static str, f32)>,
    pub source: String,
}

/// `ZOO_TEXT_CLASSIFIER_DIR` (the shared MiniLM sentiment classifier) when set;
/// otherwise a bag-of-words classifier built here over the real MiniLM tokenizer.
pub fn text_classifier(dir: &Path) -> TextFixture {
    if let Some(d) = std::env::var_os("ZOO_TEXT_CLASSIFIER_DIR") {
        let d = PathBuf::from(d);
        assert!(d.join("model.onnx").is_file(), "ZOO_TEXT_CLASSIFIER_DIR={} has no model.onnx", d.display());
        return TextFixture {
            cases: vec![
                ("This movie was absolutely wonderful!", "POSITIVE", 0.983),
                ("A dull, lifeless and boring film.", "NEGATIVE", 0.927),
                ("good job", "POSITIVE", 0.999),
                ("I hate waiting in line.", "NEGATIVE", 0.977),
            ],
            source: format!("ZOO_TEXT_CLASSIFIER_DIR={}", d.display()),
            dir: d,
        };
    }
    let tokenizer_path = models_cache().join("minilm/tokenizer.json");
    let tok = tokenizers::Tokenizer::from_file(&tokenizer_path).expect("tokenizer");
    let vocab = tok.get_vocab_size(true) as i64;
    let mut w = vec![0f32; (vocab * 2) as usize];
    let mut set = |word: &str, neg: f32, pos: f32| {
        let id = tok.token_to_id(word).unwrap_or_else(|| panic!("'{word}' not in the vocabulary")) as usize;
        w[id * 2] = neg;
        w[id * 2 + 1] = pos;
    };
    for word in ["good", "great", "wonderful", "love", "excellent"] {
        set(word, -1.0, 2.0);
    }
    for word in ["bad", "hate", "boring", "dull", "awful"] {
        set(word, 1.5, -1.0);
    }
    let bundle = dir.join("bow-classifier");
    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::write(bundle.join("model.onnx"), build::encode(&build::bag_of_words_classifier(&w, vocab, 2))).unwrap();
    std::fs::copy(&tokenizer_path, bundle.join("tokenizer.json")).unwrap();
    std::fs::write(
        bundle.join("config.json"),
        r#"{"id2label": {"0": "NEGATIVE", "1": "POSITIVE"}, "max_position_embeddings": 512}"#,
    )
    .unwrap();
    // logits are sums of word weights: "good job" = (-1, 2) -> softmax 0.9526;
    // "I hate waiting in line." = (1.5, -1) -> 0.9241; "a dull and boring film" = (3, -2) -> 0.9933.
    TextFixture {
        dir: bundle,
        cases: vec![
            ("good job", "POSITIVE", 0.9526),
            ("I hate waiting in line.", "NEGATIVE", 0.9241),
            ("A dull and boring film", "NEGATIVE", 0.9933),
            ("great, wonderful!", "POSITIVE", 0.9975),
        ],
        source: "a bag-of-words classifier built by the test over the MiniLM tokenizer".into(),
    }
}

/// The MiniLM int8 ONNX export with its tokenizer and sentence-transformers config:
/// a feature-extraction bundle.
pub fn minilm_bundle(dir: &Path) -> PathBuf {
    let m = models_cache();
    let b = dir.join("minilm");
    std::fs::create_dir_all(b.join("1_Pooling")).unwrap();
    std::fs::copy(m.join("minilm-onnx/model.onnx"), b.join("model.onnx")).unwrap();
    for f in ["tokenizer.json", "config.json", "modules.json", "sentence_bert_config.json", "1_Pooling/config.json"] {
        std::fs::copy(m.join("minilm").join(f), b.join(f)).unwrap();
    }
    b
}

/// all-MiniLM-L6-v2 as its Hugging Face directory: `model.safetensors` (fp32),
/// `config.json`, the tokenizer and the sentence-transformers pooling config.
pub fn minilm_hf_dir(dir: &Path) -> PathBuf {
    let m = models_cache();
    let b = dir.join("minilm-hf");
    std::fs::create_dir_all(b.join("1_Pooling")).unwrap();
    for f in [
        "model.safetensors",
        "tokenizer.json",
        "config.json",
        "modules.json",
        "sentence_bert_config.json",
        "1_Pooling/config.json",
    ] {
        std::fs::copy(m.join("minilm").join(f), b.join(f)).unwrap();
    }
    b
}

/// A valid bundle of about `size` bytes: a tiny MLP whose first weight is external
/// data at the start of a large `weights.bin` (the rest is padding zoo must carry).
pub fn large_bundle(dir: &Path, size: u64) -> PathBuf {
    use std::io::Write;
    use zoo_formats::onnx_proto::StringStringEntryProto;
    let b = dir.join("large");
    std::fs::create_dir_all(&b).unwrap();
    let mut m = build::mlp(&[0.5; 32], &[0.1; 8], &[0.25; 24], &[0.0; 3], 4, 8, 3);
    let w = &mut m.graph.as_mut().unwrap().initializer[0];
    w.raw_data = Default::default();
    w.data_location = 1;
    w.external_data = vec![
        StringStringEntryProto { key: "location".into(), value: "weights.bin".into() },
        StringStringEntryProto { key: "offset".into(), value: "0".into() },
        StringStringEntryProto { key: "length".into(), value: "128".into() },
    ];
    std::fs::write(b.join("model.onnx"), build::encode(&m)).unwrap();
    let mut f = std::io::BufWriter::new(std::fs::File::create(b.join("weights.bin")).unwrap());
    let mut chunk = vec![0u8; 1 << 20];
    for (i, c) in chunk.iter_mut().enumerate().skip(128) {
        *c = (i % 253) as u8;
    }
    let first: Vec<u8> = 0.5f32.to_le_bytes().repeat(32);
    chunk[..128].copy_from_slice(&first);
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n]).unwrap();
        chunk[..128].fill(7);
        left -= n as u64;
    }
    f.flush().unwrap();
    b
}
