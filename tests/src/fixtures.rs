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

/// `zoo-torch-worker` next to the `zoo` binary (built with `--features zoo-torch/torch`).
pub fn torch_worker() -> PathBuf {
    let bin = crate::zoo_bin().with_file_name(zoo_torch::WORKER_BIN);
    assert!(
        bin.is_file(),
        "{} is not built: build with `cargo build --workspace --all-targets --features zoo-torch/torch` \
         (LIBTORCH from scripts/fetch-libtorch; scripts/test does both)",
        bin.display()
    );
    bin
}

/// TorchScript MLPs with inputs and the outputs they must produce: one traced by
/// libtorch here (`zoo-torch-worker example-mlp`), its reference computed in plain
/// Rust, and `../shared/models/tiny/mlp.pt` (made by PyTorch, with PyTorch's
/// outputs) when it is present.
pub fn torch_mlps(dir: &Path) -> Vec<TensorFixture> {
    let path = dir.join("example-mlp.pt");
    let out = std::process::Command::new(torch_worker()).arg("example-mlp").arg(&path).output().unwrap();
    assert!(out.status.success(), "example-mlp: {}", String::from_utf8_lossy(&out.stderr));
    let x = [[1.0f32, 2.0, 3.0, 4.0], [-1.0, 0.5, 0.0, 2.0], [0.25, -3.0, 1.5, 0.0]];
    let y: Vec<[f32; 3]> = x.iter().map(zoo_torch::example_mlp_forward).collect();
    let mut v = vec![TensorFixture {
        path,
        input_name: String::new(),
        x: json!(x),
        y: json!(y),
        source: "MLP traced by libtorch here",
    }];
    if let Some(s) = shared()
        && s.join("tiny/mlp.pt").is_file()
    {
        let expected: Value =
            serde_json::from_str(&std::fs::read_to_string(s.join("tiny/mlp_expected.json")).unwrap()).unwrap();
        v.push(TensorFixture {
            path: s.join("tiny/mlp.pt"),
            input_name: "x".into(),
            x: expected["x"].clone(),
            y: expected["y"].clone(),
            source: "../shared/models/tiny/mlp.pt",
        });
    } else {
        println!("../shared/models/tiny/mlp.pt absent: TorchScript checked on the traced MLP and Silero VAD");
    }
    v
}

/// One tensor of a safetensors file.
#[derive(Debug, Clone)]
pub struct StTensor {
    pub name: String,
    /// `F32`, `I64`, ...
    pub dtype: String,
    pub shape: Vec<u64>,
    pub data: Vec<u8>,
}

/// Read a safetensors file: its tensors, in the order of their data.
pub fn read_safetensors(path: &Path) -> Vec<StTensor> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    let mut v: Vec<(u64, StTensor)> = header
        .into_iter()
        .filter(|(k, _)| k != "__metadata__")
        .map(|(name, t)| {
            let off: Vec<u64> = serde_json::from_value(t["data_offsets"].clone()).unwrap();
            let shape: Vec<u64> = serde_json::from_value(t["shape"].clone()).unwrap();
            let dtype = t["dtype"].as_str().unwrap().to_string();
            (off[0], StTensor { name, dtype, shape, data: data[off[0] as usize..off[1] as usize].to_vec() })
        })
        .collect();
    v.sort_by_key(|t| t.0);
    v.into_iter().map(|(_, t)| t).collect()
}

/// Write tensors as a safetensors file.
pub fn write_safetensors(path: &Path, tensors: &[StTensor]) {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for t in tensors {
        let end = offset + t.data.len();
        header.insert(t.name.clone(), json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [offset, end]}));
        offset = end;
    }
    let mut h = serde_json::to_vec(&Value::Object(header)).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    for t in tensors {
        out.extend(&t.data);
    }
    std::fs::write(path, out).unwrap();
}

/// The head of a sequence classifier: pooler and classifier weights (row-major
/// `[out, in]`, as PyTorch stores a Linear).
pub struct ClassifierHead {
    pub pooler_w: Vec<f32>,
    pub pooler_b: Vec<f32>,
    pub classifier_w: Vec<f32>,
    pub classifier_b: Vec<f32>,
    pub labels: Vec<&'static str>,
}

impl ClassifierHead {
    /// Softmax scores from the [CLS] hidden state, as transformers computes them.
    pub fn scores(&self, cls: &[f64]) -> Vec<f64> {
        let hid = cls.len();
        let pooled: Vec<f64> = (0..hid)
            .map(|o| {
                let z: f64 = (0..hid).map(|i| self.pooler_w[o * hid + i] as f64 * cls[i]).sum::<f64>();
                (z + self.pooler_b[o] as f64).tanh()
            })
            .collect();
        let logits: Vec<f64> = (0..self.labels.len())
            .map(|o| {
                (0..hid).map(|i| self.classifier_w[o * hid + i] as f64 * pooled[i]).sum::<f64>()
                    + self.classifier_b[o] as f64
            })
            .collect();
        let max = logits.iter().cloned().fold(f64::MIN, f64::max);
        let exp: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
        let sum: f64 = exp.iter().sum();
        exp.iter().map(|e| e / sum).collect()
    }
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

/// all-MiniLM-L6-v2 as a `BertForSequenceClassification` in Hugging Face layout
/// (`bert.`-prefixed encoder and pooler, `classifier` weights made here), with
/// its head for computing reference scores.
pub fn minilm_classifier_dir(dir: &Path) -> (PathBuf, ClassifierHead) {
    let m = models_cache().join("minilm");
    let b = dir.join("minilm-cls");
    std::fs::create_dir_all(&b).unwrap();
    let mut tensors: Vec<StTensor> = read_safetensors(&m.join("model.safetensors"))
        .into_iter()
        .map(|t| StTensor { name: format!("bert.{}", t.name), ..t })
        .collect();
    let hid = 384;
    let classifier_w: Vec<f32> = (0..2 * hid).map(|i| ((i * 37 % 101) as f32 - 50.0) / 200.0).collect();
    let classifier_b = vec![0.05f32, -0.05];
    let bytes = |v: &[f32]| v.iter().flat_map(|f| f.to_le_bytes()).collect::<Vec<u8>>();
    let f32_tensor = |name: &str, shape: Vec<u64>, v: &[f32]| StTensor {
        name: name.into(),
        dtype: "F32".into(),
        shape,
        data: bytes(v),
    };
    tensors.push(f32_tensor("classifier.weight", vec![2, hid as u64], &classifier_w));
    tensors.push(f32_tensor("classifier.bias", vec![2], &classifier_b));
    let get = |name: &str| f32s(&tensors.iter().find(|t| t.name == name).unwrap().data);
    let head = ClassifierHead {
        pooler_w: get("bert.pooler.dense.weight"),
        pooler_b: get("bert.pooler.dense.bias"),
        classifier_w,
        classifier_b,
        labels: vec!["NEGATIVE", "POSITIVE"],
    };
    write_safetensors(&b.join("model.safetensors"), &tensors);
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(m.join("config.json")).unwrap()).unwrap();
    config["architectures"] = json!(["BertForSequenceClassification"]);
    config["id2label"] = json!({"0": "NEGATIVE", "1": "POSITIVE"});
    config["label2id"] = json!({"NEGATIVE": 0, "POSITIVE": 1});
    std::fs::write(b.join("config.json"), serde_json::to_string_pretty(&config).unwrap()).unwrap();
    std::fs::copy(m.join("tokenizer.json"), b.join("tokenizer.json")).unwrap();
    (b, head)
}

/// The MiniLM int8 ONNX export answering with its [CLS] hidden state (CLS pooling,
/// not normalised): the reference encoder for `minilm_classifier_dir`.
pub fn minilm_cls_bundle(dir: &Path) -> PathBuf {
    let b = minilm_bundle(&dir.join("cls"));
    std::fs::write(
        b.join("1_Pooling/config.json"),
        r#"{"word_embedding_dimension": 384, "pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false}"#,
    )
    .unwrap();
    std::fs::remove_file(b.join("modules.json")).unwrap();
    b
}

/// The scikit-learn (skops) MLflow bundles built by `scripts/make-sklearn-bundles`,
/// each with `expected.json` (scikit-learn's and MLflow's outputs).
pub fn sklearn_bundles() -> PathBuf {
    let dir = std::env::var_os("ZOO_SKLEARN_BUNDLES").map(PathBuf::from);
    match dir {
        Some(d) if d.join("index.json").is_file() => d,
        _ => panic!(
            "ZOO_SKLEARN_BUNDLES must name the output of scripts/make-sklearn-bundles (scripts/test sets it); \
             it installs scikit-learn, skops and MLflow from PyPI into a virtual environment in the cache"
        ),
    }
}

/// An MLflow bundle of the transformers flavor (as `mlflow.transformers.save_model`
/// lays it out: weights and config in `model/`, the tokenizer in
/// `components/tokenizer/`) around a BERT directory.
pub fn mlflow_transformers_bundle(dir: &Path, hf: &Path, task: &str) -> PathBuf {
    let b = dir.join(format!("mlflow-transformers-{task}"));
    std::fs::create_dir_all(b.join("model")).unwrap();
    std::fs::create_dir_all(b.join("components/tokenizer")).unwrap();
    std::fs::copy(hf.join("model.safetensors"), b.join("model/model.safetensors")).unwrap();
    std::fs::copy(hf.join("config.json"), b.join("model/config.json")).unwrap();
    std::fs::copy(hf.join("tokenizer.json"), b.join("components/tokenizer/tokenizer.json")).unwrap();
    let mlmodel = format!(
        "flavors:\n  python_function:\n    env:\n      conda: conda.yaml\n      virtualenv: python_env.yaml\n    \
         loader_module: mlflow.transformers\n    python_version: 3.11.7\n  transformers:\n    code: null\n    \
         components:\n    - tokenizer\n    framework: pt\n    instance_type: TextClassificationPipeline\n    \
         model_binary: model\n    pipeline_model_type: BertForSequenceClassification\n    source_model_name: zoo-test\n    \
         task: {task}\n    tokenizer_type: BertTokenizerFast\n    torch_dtype: torch.float32\n    \
         transformers_version: 4.57.1\nmlflow_version: 3.17.2\nsignature:\n  inputs: '[{{\"type\": \"string\", \
         \"required\": true}}]'\n  outputs: null\n  params: null\n"
    );
    std::fs::write(b.join("MLmodel"), mlmodel).unwrap();
    b
}

/// A tiny `ViTForImageClassification` directory built here (8x8 images, 4x4
/// patches, hidden size 8, one layer, labels cat/dog/bird) with deterministic
/// weights, and ViT's `preprocessor_config.json`: an image model for the pages and
/// the API paths (its numbers against transformers are in tests/python/test_hf.py).
pub fn tiny_vit(dir: &Path) -> PathBuf {
    let b = dir.join("tiny-vit");
    std::fs::create_dir_all(&b).unwrap();
    let (h, inter, patch, size, labels) = (8u64, 16u64, 4u64, 8u64, 3u64);
    let tokens = (size / patch) * (size / patch) + 1;
    let mut seed = 0x9E37_79B9u32;
    let mut t = |name: &str, shape: &[u64], ones: bool| {
        let n: u64 = shape.iter().product();
        let data: Vec<u8> = (0..n)
            .flat_map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let v = if ones { 1.0f32 } else { (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5 };
                v.to_le_bytes()
            })
            .collect();
        StTensor { name: name.into(), dtype: "F32".into(), shape: shape.to_vec(), data }
    };
    let l = "vit.encoder.layer.0";
    let mut tensors = vec![
        t("vit.embeddings.cls_token", &[1, 1, h], false),
        t("vit.embeddings.position_embeddings", &[1, tokens, h], false),
        t("vit.embeddings.patch_embeddings.projection.weight", &[h, 3, patch, patch], false),
        t("vit.embeddings.patch_embeddings.projection.bias", &[h], false),
    ];
    for lin in
        ["attention.attention.query", "attention.attention.key", "attention.attention.value", "attention.output.dense"]
    {
        tensors.push(t(&format!("{l}.{lin}.weight"), &[h, h], false));
        tensors.push(t(&format!("{l}.{lin}.bias"), &[h], false));
    }
    tensors.push(t(&format!("{l}.intermediate.dense.weight"), &[inter, h], false));
    tensors.push(t(&format!("{l}.intermediate.dense.bias"), &[inter], false));
    tensors.push(t(&format!("{l}.output.dense.weight"), &[h, inter], false));
    tensors.push(t(&format!("{l}.output.dense.bias"), &[h], false));
    for norm in [format!("{l}.layernorm_before"), format!("{l}.layernorm_after"), "vit.layernorm".to_string()] {
        tensors.push(t(&format!("{norm}.weight"), &[h], true));
        tensors.push(t(&format!("{norm}.bias"), &[h], false));
    }
    tensors.push(t("classifier.weight", &[labels, h], false));
    tensors.push(t("classifier.bias", &[labels], false));
    write_safetensors(&b.join("model.safetensors"), &tensors);
    let config = json!({
        "model_type": "vit", "architectures": ["ViTForImageClassification"], "hidden_size": h,
        "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": inter, "hidden_act": "gelu",
        "layer_norm_eps": 1e-12, "image_size": size, "patch_size": patch, "num_channels": 3, "qkv_bias": true,
        "id2label": {"0": "cat", "1": "dog", "2": "bird"}, "label2id": {"cat": 0, "dog": 1, "bird": 2}
    });
    std::fs::write(b.join("config.json"), config.to_string()).unwrap();
    let processor = json!({
        "image_processor_type": "ViTImageProcessor", "do_resize": true, "size": {"height": size, "width": size},
        "resample": 2, "do_rescale": true, "rescale_factor": 1.0 / 255.0, "do_normalize": true,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]
    });
    std::fs::write(b.join("preprocessor_config.json"), processor.to_string()).unwrap();
    b
}
