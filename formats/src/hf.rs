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

/// A Hugging Face encoder architecture zoo runs natively (with candle): where its
/// config keeps its sizes, what its task models prefix their weights with, what it
/// takes, and the weights of its sequence-classification head.
#[derive(Debug, Clone, Copy)]
pub struct Architecture {
    /// `model_type` in config.json.
    pub model_type: &'static str,
    /// Config keys of the hidden size and the number of attention heads.
    pub hidden_key: &'static str,
    pub heads_key: &'static str,
    /// The weights' prefix in `*ForSequenceClassification` / `*ForTokenClassification`.
    pub prefix: &'static str,
    /// Whether the model takes `token_type_ids`.
    pub token_types: bool,
    /// The sequence-classification head's layers (the last one gives the logits).
    pub sequence_head: &'static [&'static str],
    /// How many position embeddings the model reserves before the first token
    /// (RoBERTa's count from `pad_token_id + 1`).
    pub position_offset: u64,
}

/// Model types zoo runs natively from safetensors (with candle).
pub const ARCHITECTURES: &[Architecture] = &[
    Architecture {
        model_type: "bert",
        hidden_key: "hidden_size",
        heads_key: "num_attention_heads",
        prefix: "bert",
        token_types: true,
        sequence_head: &["bert.pooler.dense", "classifier"],
        position_offset: 0,
    },
    Architecture {
        model_type: "distilbert",
        hidden_key: "dim",
        heads_key: "n_heads",
        prefix: "distilbert",
        token_types: false,
        sequence_head: &["pre_classifier", "classifier"],
        position_offset: 0,
    },
    Architecture {
        model_type: "roberta",
        hidden_key: "hidden_size",
        heads_key: "num_attention_heads",
        prefix: "roberta",
        token_types: false,
        sequence_head: &["classifier.dense", "classifier.out_proj"],
        position_offset: 2,
    },
    Architecture {
        model_type: "xlm-roberta",
        hidden_key: "hidden_size",
        heads_key: "num_attention_heads",
        prefix: "roberta",
        token_types: false,
        sequence_head: &["classifier.dense", "classifier.out_proj"],
        position_offset: 2,
    },
    Architecture {
        model_type: "deberta-v2",
        hidden_key: "hidden_size",
        heads_key: "num_attention_heads",
        prefix: "deberta",
        token_types: false,
        sequence_head: &["pooler.dense", "classifier"],
        position_offset: 0,
    },
];

/// The model types zoo runs natively, as a list for messages.
pub fn native_model_types() -> String {
    ARCHITECTURES.iter().map(|a| a.model_type).collect::<Vec<_>>().join(", ")
}

/// The architecture of a `model_type`, if zoo runs it natively.
pub fn architecture(model_type: &str) -> Option<&'static Architecture> {
    ARCHITECTURES.iter().find(|a| a.model_type == model_type)
}

/// What a Hugging Face model directory's weights compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// The encoder alone: `last_hidden_state`.
    Encoder,
    /// `*ForSequenceClassification`: `logits` `[batch, labels]`.
    Sequence(i64),
    /// `*ForTokenClassification`: `logits` `[batch, sequence, labels]`.
    Token(i64),
}

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
    let (inputs, outputs) = match architecture(model_type) {
        Some(arch) => native_signature(arch, &config, &info)?,
        None => (vec![], vec![]),
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

/// The inputs and outputs of a natively run architecture: token ids (and types
/// for BERT) in; the last hidden state, or logits for a classifier, out.
fn native_signature(
    arch: &Architecture,
    config: &serde_json::Value,
    info: &zoo_api::SafetensorsInfo,
) -> Result<(Vec<TensorSpec>, Vec<TensorSpec>), Error> {
    let hidden = config.get(arch.hidden_key).and_then(serde_json::Value::as_i64);
    let heads = config.get(arch.heads_key).and_then(serde_json::Value::as_i64).unwrap_or(0);
    if heads < 1 || hidden.is_none_or(|h| h < 1 || h % heads != 0) {
        return Err(Error::Invalid {
            format: Format::Safetensors,
            rule: "config",
            message: format!(
                "config.json: {} ({hidden:?}) must be a positive multiple of {} ({heads})",
                arch.hidden_key, arch.heads_key
            ),
        });
    }
    let tensor = |name: &str, dtype: DType, dims: Vec<Dim>| {
        let text: Vec<String> = dims.iter().map(ToString::to_string).collect();
        let ty = if dtype == DType::Int64 { "int64" } else { "float" };
        TensorSpec {
            name: name.into(),
            kind: ValueKind::Tensor,
            dtype,
            type_text: format!("tensor({ty})[{}]", text.join(",")),
            shape: Some(dims),
            doc: String::new(),
            optional: false,
        }
    };
    let sym = |s: &str| Dim::Symbolic(s.into());
    let ids = |name: &str| tensor(name, DType::Int64, vec![sym("batch"), sym("sequence")]);
    let mut inputs = vec![ids("input_ids"), ids("attention_mask")];
    if arch.token_types {
        inputs.push(ids("token_type_ids"));
    }
    let out = match head(arch, config, info)? {
        Head::Sequence(labels) => tensor("logits", DType::Float32, vec![sym("batch"), Dim::Fixed(labels)]),
        Head::Token(labels) => {
            tensor("logits", DType::Float32, vec![sym("batch"), sym("sequence"), Dim::Fixed(labels)])
        }
        Head::Encoder => tensor(
            "last_hidden_state",
            DType::Float32,
            vec![sym("batch"), sym("sequence"), hidden.map(Dim::Fixed).unwrap_or(Dim::Unknown(None))],
        ),
    };
    Ok((inputs, vec![out]))
}

/// What the weights compute, from config.json's `architectures` (a
/// `*ForSequenceClassification` or `*ForTokenClassification`); refuses a
/// classifier without the head weights it needs.
pub fn head(arch: &Architecture, config: &serde_json::Value, info: &zoo_api::SafetensorsInfo) -> Result<Head, Error> {
    let named = |suffix: &str| {
        config
            .get("architectures")
            .and_then(serde_json::Value::as_array)
            .and_then(|a| a.iter().filter_map(serde_json::Value::as_str).find(|x| x.ends_with(suffix)))
            .map(str::to_string)
    };
    let (class, layers): (String, &[&str]) = if let Some(c) = named("ForSequenceClassification") {
        (c, arch.sequence_head)
    } else if let Some(c) = named("ForTokenClassification") {
        (c, &["classifier"])
    } else {
        return Ok(Head::Encoder);
    };
    let find = |name: &str| info.tensors.iter().find(|t| t.name == name);
    let mut last = None;
    for layer in layers {
        let weight = format!("{layer}.weight");
        let t = find(&weight).ok_or_else(|| Error::Invalid {
            format: Format::Safetensors,
            rule: "weights",
            message: format!("a {class} needs the {layer} weights, which model.safetensors lacks"),
        })?;
        last = Some(t);
    }
    let labels = match last.map(|t| t.shape.as_slice()) {
        Some([labels, _]) if *labels > 0 => *labels as i64,
        other => {
            return Err(Error::Invalid {
                format: Format::Safetensors,
                rule: "weights",
                message: format!("{}.weight must be [labels, hidden], not {other:?}", layers[layers.len() - 1]),
            });
        }
    };
    Ok(if layers == ["classifier"] { Head::Token(labels) } else { Head::Sequence(labels) })
}
