//! Tasks as data: a bundle with `tokenizer.json` (and `config.json` with `id2label`)
//! is a text model, one with `preprocessor_config.json` an image model (see
//! `image.rs`); everything else is a tensor model.

use std::path::Path;

use serde_json::Value;
use zoo_api::{ImageInfo, Signature, Task, TensorSpec, TextInfo};

use crate::bundle::read_small;
use crate::{Error, Limits};

/// The derived task of a version with its labels and text settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Derived {
    pub task: Task,
    pub labels: Vec<String>,
    pub text: Option<TextInfo>,
    pub image: Option<ImageInfo>,
}

/// Longest token sequence zoo feeds a text model when nothing in the bundle says.
const DEFAULT_MAX_LENGTH: usize = 512;

fn json(dir: &Path, name: &str, limits: &Limits) -> Result<Option<Value>, Error> {
    match read_small(&dir.join(name), limits.max_side_file)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::InvalidBundle { rule: "config", message: format!("{name} is not valid JSON: {e}") }),
    }
}

fn config_err(message: String) -> Error {
    Error::InvalidBundle { rule: "config", message }
}

/// Labels by index from `id2label` (`{"0": "NEGATIVE", "1": "POSITIVE"}`).
fn labels(config: &Value) -> Result<Vec<String>, Error> {
    let Some(map) = config.get("id2label").and_then(Value::as_object) else {
        return Ok(Vec::new());
    };
    let mut pairs = Vec::with_capacity(map.len());
    for (k, v) in map {
        let idx: usize =
            k.parse().map_err(|_| config_err(format!("config.json id2label key '{k}' is not an index")))?;
        let label = v.as_str().ok_or_else(|| config_err(format!("config.json id2label[{k}] is not a string")))?;
        pairs.push((idx, label.to_string()));
    }
    pairs.sort();
    if pairs.iter().enumerate().any(|(i, (idx, _))| i != *idx) {
        return Err(config_err("config.json id2label indices are not 0..n".into()));
    }
    Ok(pairs.into_iter().map(|(_, l)| l).collect())
}

fn rank(spec: &TensorSpec) -> Option<usize> {
    spec.shape.as_ref().map(Vec::len)
}

/// Decide the task of an artifact from its signature and side files.
pub fn derive_task(sig: &Signature, bundle_dir: Option<&Path>, limits: &Limits) -> Result<Derived, Error> {
    match bundle_dir {
        Some(dir) => derive_task_at(sig, dir, dir, "tokenizer.json", limits),
        None => Ok(Derived { task: Task::Tensor, labels: Vec::new(), text: None, image: None }),
    }
}

/// `derive_task` for a bundle whose model files (config.json, pooling configs) are
/// in `dir` and whose tokenizer is `tokenizer`, a path relative to the bundle's
/// `root` (MLflow's transformers flavor keeps them apart).
pub fn derive_task_at(
    sig: &Signature,
    root: &Path,
    dir: &Path,
    tokenizer: &str,
    limits: &Limits,
) -> Result<Derived, Error> {
    let tensor = Derived { task: Task::Tensor, labels: Vec::new(), text: None, image: None };
    let config = json(dir, "config.json", limits)?;
    let labels = match &config {
        Some(c) => labels(c)?,
        None => Vec::new(),
    };
    let classifier_of = |n: usize| {
        sig.outputs
            .iter()
            .any(|o| rank(o) == Some(2) && o.shape.as_ref().and_then(|s| s[1].fixed()).is_none_or(|v| v as usize == n))
    };
    // An ONNX export whose processor zoo does not apply stays a tensor model (it
    // takes its pixel values as they are); a safetensors ViT is served only with it.
    let image = match crate::image::image_info(sig, dir, &labels, limits) {
        Err(Error::InvalidBundle { rule: "preprocessor", .. }) if sig.format != zoo_api::Format::Safetensors => None,
        other => other?,
    };
    if let Some(image) = image {
        let task =
            if !labels.is_empty() && classifier_of(labels.len()) { Task::ImageClassification } else { Task::Tensor };
        return Ok(Derived { task, labels, text: None, image: Some(image) });
    }
    let tokenizer_path = root.join(tokenizer);
    let has_tokenizer = std::fs::symlink_metadata(&tokenizer_path).is_ok_and(|m| m.is_file());
    let takes_ids = sig.inputs.iter().any(|i| i.name == "input_ids");
    if !has_tokenizer || !takes_ids {
        return Ok(Derived { labels, ..tensor });
    }

    let max_length = max_length(dir, &tokenizer_path, config.as_ref(), limits)?;
    let pooling = match json(dir, "1_Pooling/config.json", limits)? {
        Some(p) if p.get("pooling_mode_cls_token").and_then(Value::as_bool) == Some(true) => "cls",
        Some(p) if p.get("pooling_mode_max_tokens").and_then(Value::as_bool) == Some(true) => "max",
        _ => "mean",
    };
    let normalize = json(dir, "modules.json", limits)?.is_some_and(|m| m.to_string().contains("models.Normalize"));
    let text = TextInfo {
        max_length,
        labels: labels.clone(),
        pooling: pooling.into(),
        normalize,
        tokenizer: tokenizer.to_string(),
    };

    let classifier = !labels.is_empty() && classifier_of(labels.len());
    // A token classifier (NER): logits for every token, `[batch, sequence, labels]`.
    let token_classifier = !labels.is_empty()
        && sig.outputs.iter().any(|o| {
            o.name == "logits"
                && rank(o) == Some(3)
                && o.shape.as_ref().and_then(|s| s[2].fixed()).is_none_or(|n| n as usize == labels.len())
        });
    let task = if classifier {
        Task::TextClassification
    } else if token_classifier {
        Task::TokenClassification
    } else if sig.outputs.iter().any(|o| matches!(rank(o), Some(2 | 3))) {
        Task::FeatureExtraction
    } else {
        return Ok(Derived { labels, ..tensor });
    };
    Ok(Derived { task, labels, text: Some(text), image: None })
}

fn max_length(dir: &Path, tokenizer: &Path, config: Option<&Value>, limits: &Limits) -> Result<usize, Error> {
    let st =
        json(dir, "sentence_bert_config.json", limits)?.and_then(|c| c.get("max_seq_length").and_then(Value::as_u64));
    let tok = read_small(tokenizer, limits.max_side_file)?
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|t| t.pointer("/truncation/max_length").and_then(Value::as_u64));
    // RoBERTa's positions start after its padding index: 514 embeddings hold 512 tokens.
    let offset = config
        .and_then(|c| c.get("model_type").and_then(Value::as_str))
        .and_then(crate::hf::architecture)
        .map_or(0, |a| a.position_offset);
    let model =
        config.and_then(|c| c.get("max_position_embeddings").and_then(Value::as_u64)).map(|m| m.saturating_sub(offset));
    let chosen = st.or(tok).unwrap_or(DEFAULT_MAX_LENGTH as u64);
    let cap = model.unwrap_or(DEFAULT_MAX_LENGTH as u64);
    Ok(chosen.min(cap).max(2) as usize)
}
