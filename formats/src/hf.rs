//! Hugging Face model directories: `config.json` + `model.safetensors` (+ a
//! tokenizer). zoo runs the model types it implements natively (with candle); the
//! others are stored with the reason. The weights are checked from the
//! safetensors header only; `config.json` is read as data.

use std::path::Path;

use zoo_api::{BundleFile, DType, Dim, Format, Signature, TensorSpec, ValueKind};

use crate::{Artifact, BundleKind, Error, Limits, bundle, derive_task_at, safetensors};

/// A directory without an ONNX file and with `model.safetensors`.
pub const BUNDLE: BundleKind = BundleKind {
    accepted: "a tar bundle of a Hugging Face model directory (config.json + model.safetensors + tokenizer.json)",
    claims: |files| {
        !files.iter().any(|f| f.path.ends_with(".onnx")) && files.iter().any(|f| f.path == "model.safetensors")
    },
    inspect: |dir, files, limits| inspect_dir_at(dir, dir, "tokenizer.json", files, limits),
};

/// Model types zoo runs natively from safetensors (with candle).
pub const NATIVE_MODEL_TYPES: &[&str] = &["bert"];

/// A Hugging Face directory: `config.json` + `model.safetensors` (+ a tokenizer) in
/// `model_dir`, the tokenizer at `tokenizer` (relative to the bundle `root`). A
/// BERT encoder takes token ids and returns its last hidden state, which the text
/// tasks pool like an ONNX export of the same model; a BERT sequence classifier
/// returns logits.
pub fn inspect_dir_at(
    root: &Path,
    model_dir: &Path,
    tokenizer: &str,
    files: Vec<BundleFile>,
    limits: &Limits,
) -> Result<Artifact, Error> {
    let dir = model_dir;
    let weights = dir.join("model.safetensors");
    let info = safetensors::inspect(&weights, limits)?;
    let config: serde_json::Value = match bundle::read_small(&dir.join("config.json"), limits.max_side_file)? {
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Invalid {
            format: Format::Safetensors,
            rule: "config",
            message: format!("config.json is not valid JSON: {e}"),
        })?,
        None => serde_json::Value::Null,
    };
    let model_type = config.get("model_type").and_then(serde_json::Value::as_str).unwrap_or("");
    let hidden = config.get("hidden_size").and_then(serde_json::Value::as_i64);
    if NATIVE_MODEL_TYPES.contains(&model_type) {
        let heads = config.get("num_attention_heads").and_then(serde_json::Value::as_i64).unwrap_or(0);
        if heads < 1 || hidden.is_none_or(|h| h < 1 || h % heads != 0) {
            return Err(Error::Invalid {
                format: Format::Safetensors,
                rule: "config",
                message: format!(
                    "config.json: hidden_size ({hidden:?}) must be a positive multiple of num_attention_heads ({heads})"
                ),
            });
        }
    }
    let (inputs, outputs) = if NATIVE_MODEL_TYPES.contains(&model_type) {
        let ids = |name: &str| TensorSpec {
            name: name.into(),
            kind: ValueKind::Tensor,
            dtype: DType::Int64,
            shape: Some(vec![Dim::Symbolic("batch".into()), Dim::Symbolic("sequence".into())]),
            type_text: "tensor(int64)[batch,sequence]".into(),
            doc: String::new(),
            optional: false,
        };
        let hidden_dim = hidden.map(Dim::Fixed).unwrap_or(Dim::Unknown(None));
        let out = match sequence_classifier(&config, &info)? {
            // BertForSequenceClassification: pooled [CLS] state -> logits.
            Some(labels) => TensorSpec {
                name: "logits".into(),
                kind: ValueKind::Tensor,
                dtype: DType::Float32,
                type_text: format!("tensor(float)[batch,{labels}]"),
                shape: Some(vec![Dim::Symbolic("batch".into()), Dim::Fixed(labels)]),
                doc: String::new(),
                optional: false,
            },
            None => TensorSpec {
                name: "last_hidden_state".into(),
                kind: ValueKind::Tensor,
                dtype: DType::Float32,
                type_text: format!("tensor(float)[batch,sequence,{hidden_dim}]"),
                shape: Some(vec![Dim::Symbolic("batch".into()), Dim::Symbolic("sequence".into()), hidden_dim]),
                doc: String::new(),
                optional: false,
            },
        };
        (vec![ids("input_ids"), ids("attention_mask"), ids("token_type_ids")], vec![out])
    } else {
        (vec![], vec![])
    };
    let mut signature =
        Signature { inputs, outputs, safetensors: Some(info), files, ..Signature::empty(Format::Safetensors, true) };
    let derived = derive_task_at(&signature, root, dir, tokenizer, limits)?;
    signature.text = derived.text;
    Ok(Artifact {
        signature,
        task: derived.task,
        labels: derived.labels,
        model_path: weights,
        bundle_dir: Some(root.to_path_buf()),
    })
}

/// The number of labels of a `BertForSequenceClassification` (its `classifier`
/// weights), or `None` for a plain encoder. Refuses a classifier without the
/// pooler or classifier weights it needs.
fn sequence_classifier(config: &serde_json::Value, info: &zoo_api::SafetensorsInfo) -> Result<Option<i64>, Error> {
    let is_classifier = config
        .get("architectures")
        .and_then(serde_json::Value::as_array)
        .is_some_and(|a| a.iter().any(|x| x.as_str() == Some("BertForSequenceClassification")));
    if !is_classifier {
        return Ok(None);
    }
    let missing = |what: &str| Error::Invalid {
        format: Format::Safetensors,
        rule: "weights",
        message: format!("a BertForSequenceClassification needs the {what} weights, which model.safetensors lacks"),
    };
    let find = |name: &str| info.tensors.iter().find(|t| t.name == name || t.name == format!("bert.{name}"));
    find("pooler.dense.weight").ok_or_else(|| missing("pooler.dense"))?;
    let classifier =
        info.tensors.iter().find(|t| t.name == "classifier.weight").ok_or_else(|| missing("classifier"))?;
    match classifier.shape.as_slice() {
        [labels, _] if *labels > 0 => Ok(Some(*labels as i64)),
        other => Err(Error::Invalid {
            format: Format::Safetensors,
            rule: "weights",
            message: format!("classifier.weight must be [labels, hidden], not {other:?}"),
        }),
    }
}
