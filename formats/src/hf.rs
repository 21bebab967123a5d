//! Hugging Face model directories: `config.json` + `model.safetensors` (+ a
//! tokenizer). zoo runs the model types it implements natively (with candle); the
//! others are stored with the reason. The weights are checked from the
//! safetensors header only; `config.json` is read as data.

use std::path::Path;

use zoo_api::{BundleFile, DType, Dim, Format, Signature, TensorSpec, ValueKind};

use crate::{Artifact, BundleKind, Error, Limits, bundle, derive_task_at, safetensors};

/// A directory without an ONNX file and with `model.safetensors`.
pub const BUNDLE: BundleKind = BundleKind {
    accepted: "a tar bundle of a Hugging Face model directory (config.json + model.safetensors + tokenizer.json, or \
               preprocessor_config.json for an image model)",
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

/// Vision model types zoo runs natively (with candle): ViT, as an encoder
/// (`ViTModel`) or an image classifier (`ViTForImageClassification`).
pub const IMAGE_MODEL_TYPES: &[&str] = &["vit"];

/// The model types zoo runs natively, as a list for messages.
pub fn native_model_types() -> String {
    ARCHITECTURES
        .iter()
        .map(|a| a.model_type)
        .chain(IMAGE_MODEL_TYPES.iter().copied())
        .chain(crate::decoder::DECODER_TYPES.iter().copied())
        .collect::<Vec<_>>()
        .join(", ")
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
    if crate::decoder::is_decoder(&config) && root == dir {
        return crate::decoder::inspect(root, &config, info, files, &weights, limits);
    }
    let model_type = config.get("model_type").and_then(serde_json::Value::as_str).unwrap_or("");
    let (inputs, outputs) = match architecture(model_type) {
        Some(arch) => native_signature(arch, &config, &info)?,
        None if model_type == "vit" => vit_signature(&config, &info)?,
        None => (vec![], vec![]),
    };
    let mut signature =
        Signature { inputs, outputs, safetensors: Some(info), files, ..Signature::empty(Format::Safetensors, true) };
    let derived = derive_task_at(&signature, root, dir, tokenizer, limits)?;
    signature.text = derived.text;
    signature.image = derived.image;
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
    let tensor = spec;
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

/// A tensor of the signature of a natively run model.
fn spec(name: &str, dtype: DType, dims: Vec<Dim>) -> TensorSpec {
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
}

/// ViT's inputs and outputs: `pixel_values` `[batch, channels, size, size]` in;
/// `logits` `[batch, labels]` for a `ViTForImageClassification` (its classifier
/// weights checked), else `last_hidden_state` `[batch, patches + 1, hidden]`.
fn vit_signature(
    config: &serde_json::Value,
    info: &zoo_api::SafetensorsInfo,
) -> Result<(Vec<TensorSpec>, Vec<TensorSpec>), Error> {
    let bad = |message: String| Error::Invalid { format: Format::Safetensors, rule: "config", message };
    let num = |key: &str, default: i64| match config.get(key) {
        None | Some(serde_json::Value::Null) => Ok(default),
        Some(v) => v
            .as_i64()
            .filter(|n| *n > 0 && *n <= 1 << 16)
            .ok_or_else(|| bad(format!("config.json: {key} must be a positive whole number, not {v}"))),
    };
    let size = num("image_size", 224)?;
    let patch = num("patch_size", 16)?;
    let channels = num("num_channels", 3)?;
    let hidden = num("hidden_size", 768)?;
    let heads = num("num_attention_heads", 12)?;
    if size % patch != 0 || hidden % heads != 0 {
        return Err(bad(format!(
            "config.json: image_size ({size}) must be a multiple of patch_size ({patch}), and hidden_size \
             ({hidden}) of num_attention_heads ({heads})"
        )));
    }
    let sym = |s: &str| Dim::Symbolic(s.into());
    let inputs = vec![spec(
        "pixel_values",
        DType::Float32,
        vec![sym("batch"), Dim::Fixed(channels), Dim::Fixed(size), Dim::Fixed(size)],
    )];
    let classifier = config
        .get("architectures")
        .and_then(serde_json::Value::as_array)
        .is_some_and(|a| a.iter().any(|x| x.as_str().is_some_and(|x| x.ends_with("ForImageClassification"))));
    let out = if classifier {
        let weight = info.tensors.iter().find(|t| t.name == "classifier.weight").ok_or_else(|| Error::Invalid {
            format: Format::Safetensors,
            rule: "weights",
            message: "a ViTForImageClassification needs the classifier weights, which model.safetensors lacks".into(),
        })?;
        match weight.shape.as_slice() {
            [labels, h] if *labels > 0 && *h as i64 == hidden => {
                spec("logits", DType::Float32, vec![sym("batch"), Dim::Fixed(*labels as i64)])
            }
            other => {
                return Err(Error::Invalid {
                    format: Format::Safetensors,
                    rule: "weights",
                    message: format!("classifier.weight must be [labels, {hidden}], not {other:?}"),
                });
            }
        }
    } else {
        let tokens = (size / patch) * (size / patch) + 1;
        spec("last_hidden_state", DType::Float32, vec![sym("batch"), Dim::Fixed(tokens), Dim::Fixed(hidden)])
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
