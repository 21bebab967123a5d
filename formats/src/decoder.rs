//! Hugging Face decoder directories (`*ForCausalLM` of the Llama, Mistral, Qwen2
//! and Qwen3 families): `config.json` read as data into the one description of
//! the model that the server builds its weights from, every weight the config
//! implies checked in the safetensors header (names and shapes), the tokenizer
//! files found. The chat template is kept as text; the server compiles it.

use std::path::Path;

use serde_json::Value;
use zoo_api::{BundleFile, DecoderInfo, Format, SafetensorsInfo, Signature, Task};

use crate::bundle::read_small;
use crate::{Artifact, Error, Limits};

/// The `model_type`s zoo generates with (its own Llama forward, `runtime/llama.rs`).
pub const DECODER_TYPES: &[&str] = &["llama", "mistral", "qwen2", "qwen3"];

/// Largest sizes a config may give (far above any model a CPU serves; they keep
/// the arithmetic on them in range).
const MAX_LAYERS: u64 = 1024;
const MAX_WIDTH: u64 = 1 << 17;
const MAX_VOCAB: u64 = 1 << 22;

/// How the rotary embedding's frequencies are scaled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    None,
    /// Positions divided by the factor.
    Linear(f64),
    /// Llama 3.1's: long wavelengths divided by the factor, short ones kept, a
    /// smooth blend between.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_context: f64,
    },
}

/// A decoder's shape and arithmetic, from config.json.
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderConfig {
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    /// The output layer is the embedding (no `lm_head.weight`).
    pub tie_word_embeddings: bool,
    /// Qwen3's RMS norms of each head's queries and keys.
    pub qk_norm: bool,
    /// Positions the model was trained for; a sliding window in use lowers it
    /// (within the window, attention over all positions is the same).
    pub context: Option<usize>,
    /// Token ids that end a generation, from config.json (generation_config.json's win).
    pub eos_token_ids: Vec<u32>,
}

fn invalid(message: String) -> Error {
    Error::Invalid { format: Format::Safetensors, rule: "config", message }
}

/// `eos_token_id`: a number or a list of them.
pub fn token_ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().and_then(|n| u32::try_from(n).ok()).into_iter().collect(),
        Some(Value::Array(a)) => a.iter().filter_map(|n| n.as_u64().and_then(|n| u32::try_from(n).ok())).collect(),
        _ => vec![],
    }
}

impl DecoderConfig {
    /// Read a decoder's config.json. `Err(Invalid)`: the config contradicts
    /// itself or lacks a size; `Ok(Err(why))`: a well-formed config of
    /// something zoo does not compute (an activation, a rope scaling).
    pub fn parse(c: &Value) -> Result<std::result::Result<DecoderConfig, String>, Error> {
        let model_type = c.get("model_type").and_then(Value::as_str).unwrap_or_default().to_string();
        let size = |key: &str, max: u64| -> Result<Option<usize>, Error> {
            match c.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v.as_u64().filter(|n| (1..=max).contains(n)).map(|n| Some(n as usize)).ok_or_else(|| {
                    invalid(format!("config.json: {key} must be a whole number from 1 to {max}, not {v}"))
                }),
            }
        };
        let need = |key: &str, max: u64| -> Result<usize, Error> {
            size(key, max)?.ok_or_else(|| invalid(format!("config.json: a {model_type} decoder needs {key}")))
        };
        let vocab_size = need("vocab_size", MAX_VOCAB)?;
        let hidden_size = need("hidden_size", MAX_WIDTH)?;
        let intermediate_size = need("intermediate_size", MAX_WIDTH * 8)?;
        let layers = need("num_hidden_layers", MAX_LAYERS)?;
        let heads = need("num_attention_heads", MAX_WIDTH)?;
        let kv_heads = size("num_key_value_heads", MAX_WIDTH)?.unwrap_or(heads);
        let head_dim = match size("head_dim", MAX_WIDTH)? {
            Some(d) => d,
            None if hidden_size.is_multiple_of(heads) => hidden_size / heads,
            None => {
                return Err(invalid(format!(
                    "config.json: hidden_size ({hidden_size}) must be a multiple of num_attention_heads ({heads})"
                )));
            }
        };
        if !heads.is_multiple_of(kv_heads) || !head_dim.is_multiple_of(2) {
            return Err(invalid(format!(
                "config.json: num_attention_heads ({heads}) must be a multiple of num_key_value_heads ({kv_heads}), \
                 and head_dim ({head_dim}) even"
            )));
        }
        let float = |key: &str, default: f64| -> Result<f64, Error> {
            match c.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => v
                    .as_f64()
                    .filter(|x| x.is_finite() && *x > 0.0)
                    .ok_or_else(|| invalid(format!("config.json: {key} must be a positive number, not {v}"))),
            }
        };
        let rms_norm_eps = float("rms_norm_eps", 1e-6)?;
        // transformers 5 keeps the rotary settings in rope_parameters; earlier
        // versions in rope_theta and rope_scaling.
        let rope = c.get("rope_parameters").filter(|v| v.is_object());
        let rope_theta = match rope.and_then(|r| r.get("rope_theta")) {
            Some(v) => v.as_f64().filter(|x| x.is_finite() && *x > 0.0).ok_or_else(|| {
                invalid(format!("config.json: rope_parameters.rope_theta must be a positive number, not {v}"))
            })?,
            None => float("rope_theta", 10_000.0)?,
        };
        let scaling = rope.or(c.get("rope_scaling").filter(|v| v.is_object()));
        let context = size("max_position_embeddings", 1 << 24)?;
        let tie_word_embeddings = c.get("tie_word_embeddings").and_then(Value::as_bool).unwrap_or(false);
        let mut eos_token_ids = token_ids(c.get("eos_token_id"));
        eos_token_ids.retain(|id| (*id as usize) < vocab_size);
        let sliding = match model_type.as_str() {
            "mistral" => size("sliding_window", 1 << 24)?,
            // Qwen's configs name a window but use it only when asked.
            "qwen2" | "qwen3" if c.get("use_sliding_window").and_then(Value::as_bool) == Some(true) => {
                size("sliding_window", 1 << 24)?
            }
            _ => None,
        };
        let context = match (context, sliding) {
            (Some(c), Some(w)) => Some(c.min(w)),
            (c, w) => c.or(w),
        };
        let activation = c.get("hidden_act").and_then(Value::as_str).unwrap_or("silu");
        if activation != "silu" {
            return Ok(Err(format!("zoo's decoder computes the silu activation; this config's is '{activation}'")));
        }
        let rope_scaling = match scaling {
            None => RopeScaling::None,
            Some(s) => {
                let kind = s.get("rope_type").or(s.get("type")).and_then(Value::as_str).unwrap_or("default");
                let num = |key: &str| -> Result<f64, Error> {
                    s.get(key).and_then(Value::as_f64).filter(|x| x.is_finite() && *x > 0.0).ok_or_else(|| {
                        invalid(format!("config.json: the {kind} rope scaling needs {key}, a positive number"))
                    })
                };
                match kind {
                    "default" => RopeScaling::None,
                    "linear" => RopeScaling::Linear(num("factor")?),
                    "llama3" => {
                        let (low, high) = (num("low_freq_factor")?, num("high_freq_factor")?);
                        if high <= low {
                            return Err(invalid(format!(
                                "config.json: the llama3 rope scaling's high_freq_factor ({high}) must exceed its \
                                 low_freq_factor ({low})"
                            )));
                        }
                        RopeScaling::Llama3 {
                            factor: num("factor")?,
                            low_freq_factor: low,
                            high_freq_factor: high,
                            original_context: num("original_max_position_embeddings")?,
                        }
                    }
                    other => {
                        return Ok(Err(format!(
                            "zoo scales rotary embeddings the linear and llama3 ways; this config asks for '{other}'"
                        )));
                    }
                }
            }
        };
        Ok(Ok(DecoderConfig {
            qk_norm: model_type == "qwen3",
            model_type,
            vocab_size,
            hidden_size,
            intermediate_size,
            layers,
            heads,
            kv_heads,
            head_dim,
            rms_norm_eps,
            rope_theta,
            rope_scaling,
            tie_word_embeddings,
            context,
            eos_token_ids,
        }))
    }

    /// Every weight the model reads, with its shape and whether it must be
    /// there (biases are optional: Qwen2 has them, Llama may).
    pub fn weights(&self) -> Vec<(String, Vec<u64>, bool)> {
        let (v, h, i) = (self.vocab_size as u64, self.hidden_size as u64, self.intermediate_size as u64);
        let (q, kv, hd) =
            ((self.heads * self.head_dim) as u64, (self.kv_heads * self.head_dim) as u64, self.head_dim as u64);
        let mut w = vec![("model.embed_tokens.weight".to_string(), vec![v, h], true)];
        for l in 0..self.layers {
            let p = format!("model.layers.{l}");
            for (name, out, inp) in [
                ("self_attn.q_proj", q, h),
                ("self_attn.k_proj", kv, h),
                ("self_attn.v_proj", kv, h),
                ("self_attn.o_proj", h, q),
            ] {
                w.push((format!("{p}.{name}.weight"), vec![out, inp], true));
                w.push((format!("{p}.{name}.bias"), vec![out], false));
            }
            for (name, out, inp) in [("mlp.gate_proj", i, h), ("mlp.up_proj", i, h), ("mlp.down_proj", h, i)] {
                w.push((format!("{p}.{name}.weight"), vec![out, inp], true));
                w.push((format!("{p}.{name}.bias"), vec![out], false));
            }
            w.push((format!("{p}.input_layernorm.weight"), vec![h], true));
            w.push((format!("{p}.post_attention_layernorm.weight"), vec![h], true));
            if self.qk_norm {
                w.push((format!("{p}.self_attn.q_norm.weight"), vec![hd], true));
                w.push((format!("{p}.self_attn.k_norm.weight"), vec![hd], true));
            }
        }
        w.push(("model.norm.weight".into(), vec![h], true));
        w.push(("lm_head.weight".into(), vec![v, h], !self.tie_word_embeddings));
        w
    }
}

/// Whether a config.json is a decoder zoo generates with: one of its model types,
/// as a causal language model (or with no `architectures` at all).
pub fn is_decoder(config: &Value) -> bool {
    let model_type = config.get("model_type").and_then(Value::as_str).unwrap_or("");
    let causal = match config.get("architectures").and_then(Value::as_array) {
        None => true,
        Some(a) => a.iter().filter_map(Value::as_str).any(|x| x.ends_with("ForCausalLM")),
    };
    DECODER_TYPES.contains(&model_type) && causal
}

/// The chat template of a decoder directory: tokenizer_config.json's
/// `chat_template` (a string, or a list of named ones: the `default`), else
/// chat_template.jinja (where transformers 4.50 on saves it).
pub fn chat_template(dir: &Path, tokenizer_config: Option<&Value>, limits: &Limits) -> Result<Option<String>, Error> {
    let named = match tokenizer_config.and_then(|t| t.get("chat_template")) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Array(list)) => list
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .or(list.first())
            .and_then(|t| t.get("template").and_then(Value::as_str))
            .map(str::to_string),
        _ => None,
    };
    if named.is_some() {
        return Ok(named);
    }
    match read_small(&dir.join("chat_template.jinja"), limits.max_side_file)? {
        Some(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| Error::InvalidBundle { rule: "config", message: "chat_template.jinja is not UTF-8".into() }),
        None => Ok(None),
    }
}

fn json(dir: &Path, name: &str, limits: &Limits) -> Result<Option<Value>, Error> {
    match read_small(&dir.join(name), limits.max_side_file)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::InvalidBundle { rule: "config", message: format!("{name} is not valid JSON: {e}") }),
    }
}

/// Inspect a decoder directory: its config, every weight it implies, its
/// tokenizer files. A directory zoo cannot generate with (no tokenizer.json, an
/// activation or rope scaling it does not compute) is stored with the reason.
pub fn inspect(
    root: &Path,
    config: &Value,
    info: SafetensorsInfo,
    files: Vec<BundleFile>,
    weights: &Path,
    limits: &Limits,
) -> Result<Artifact, Error> {
    let model_type = config.get("model_type").and_then(Value::as_str).unwrap_or_default().to_string();
    let parsed = DecoderConfig::parse(config)?;
    let mut unservable = None;
    let (layers, hidden, context, vocab) = match &parsed {
        Ok(d) => {
            check_weights(d, &info)?;
            (d.layers as u64, d.hidden_size as u64, d.context.map(|c| c as u64), d.vocab_size as u64)
        }
        Err(why) => {
            unservable = Some(why.clone());
            let n = |k: &str| config.get(k).and_then(Value::as_u64).unwrap_or(0);
            let context = config.get("max_position_embeddings").and_then(Value::as_u64);
            (n("num_hidden_layers"), n("hidden_size"), context, n("vocab_size"))
        }
    };
    let has_tokenizer = std::fs::symlink_metadata(root.join("tokenizer.json")).is_ok_and(|m| m.is_file());
    if !has_tokenizer && unservable.is_none() {
        unservable = Some(
            "a decoder needs its tokenizer.json in the directory to be served (save a fast tokenizer with \
             save_pretrained)"
                .into(),
        );
    }
    let tokenizer_config = json(root, "tokenizer_config.json", limits)?;
    let chat_template = chat_template(root, tokenizer_config.as_ref(), limits)?;
    // generation_config.json, when present, must be JSON; the server reads its EOS.
    json(root, "generation_config.json", limits)?;
    let mut dtypes: Vec<(&str, usize)> = Vec::new();
    for t in &info.tensors {
        match dtypes.iter_mut().find(|(d, _)| *d == t.dtype) {
            Some((_, n)) => *n += 1,
            None => dtypes.push((&t.dtype, 1)),
        }
    }
    let dtype = dtypes.iter().max_by_key(|(_, n)| *n).map(|(d, _)| d.to_string()).unwrap_or_default();
    if let Some(t) = info.tensors.iter().find(|t| !matches!(t.dtype.as_str(), "F32" | "F16" | "BF16")) {
        unservable
            .get_or_insert(format!("zoo reads float32, float16 and bfloat16 weights; '{}' is {}", t.name, t.dtype));
    }
    let decoder = DecoderInfo {
        model_type,
        dtype,
        parameters: info.parameters,
        layers,
        hidden_size: hidden,
        context_length: context,
        vocab_size: vocab,
        chat_template,
        unservable_reason: unservable,
    };
    Ok(Artifact {
        signature: Signature {
            safetensors: Some(info),
            decoder: Some(decoder),
            files,
            ..Signature::empty(Format::Safetensors, true)
        },
        task: Task::TextGeneration,
        labels: vec![],
        model_path: weights.to_path_buf(),
        bundle_dir: Some(root.to_path_buf()),
    })
}

/// Every weight the config implies is in the file with its shape; nothing in
/// the file is unaccounted for.
fn check_weights(d: &DecoderConfig, info: &SafetensorsInfo) -> Result<(), Error> {
    let bad = |message: String| Error::Invalid { format: Format::Safetensors, rule: "weights", message };
    let expected = d.weights();
    for (name, shape, required) in &expected {
        match info.tensors.iter().find(|t| &t.name == name) {
            Some(t) if &t.shape != shape => {
                return Err(bad(format!(
                    "{name} must be {shape:?} for this config.json's {} model, not {:?}",
                    d.model_type, t.shape
                )));
            }
            None if *required => {
                return Err(bad(format!("model.safetensors lacks {name}, which a {} decoder needs", d.model_type)));
            }
            _ => {}
        }
    }
    // Rotary tables some exports keep are recomputed; anything else is a
    // weight this config does not explain.
    if let Some(t) = info
        .tensors
        .iter()
        .find(|t| !t.name.ends_with("rotary_emb.inv_freq") && !expected.iter().any(|(n, _, _)| *n == t.name))
    {
        return Err(bad(format!(
            "model.safetensors holds '{}', which this config.json's {} decoder does not use (a different \
             architecture, or more layers than num_hidden_layers)",
            t.name, d.model_type
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn llama() -> Value {
        json!({"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 100, "hidden_size": 16,
            "intermediate_size": 24, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "eos_token_id": [2, 7]})
    }

    #[test]
    fn configs_give_the_shapes_and_the_arithmetic() {
        let d = DecoderConfig::parse(&llama()).unwrap().unwrap();
        assert_eq!((d.head_dim, d.kv_heads, d.rope_theta, d.context), (4, 2, 10_000.0, Some(256)));
        assert_eq!(d.eos_token_ids, vec![2, 7]);
        let w = d.weights();
        assert!(w.contains(&("model.layers.1.self_attn.k_proj.weight".into(), vec![8, 16], true)));
        assert!(w.contains(&("lm_head.weight".into(), vec![100, 16], true)));
        let mut qwen3 = llama();
        qwen3["model_type"] = "qwen3".into();
        qwen3["head_dim"] = 8.into();
        qwen3["tie_word_embeddings"] = true.into();
        qwen3["rope_parameters"] = json!({"rope_type": "default", "rope_theta": 1_000_000.0});
        let d = DecoderConfig::parse(&qwen3).unwrap().unwrap();
        assert_eq!((d.head_dim, d.qk_norm, d.rope_theta), (8, true, 1_000_000.0));
        assert!(d.weights().contains(&("model.layers.0.self_attn.q_proj.weight".into(), vec![32, 16], true)));
        assert!(d.weights().contains(&("lm_head.weight".into(), vec![100, 16], false)));
        let mut mistral = llama();
        mistral["model_type"] = "mistral".into();
        mistral["sliding_window"] = 128.into();
        assert_eq!(DecoderConfig::parse(&mistral).unwrap().unwrap().context, Some(128), "within the window");
        let mut scaled = llama();
        scaled["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
        assert!(matches!(DecoderConfig::parse(&scaled).unwrap().unwrap().rope_scaling, RopeScaling::Llama3 { .. }));
    }

    #[test]
    fn what_zoo_does_not_compute_is_a_reason_and_contradictions_are_refused() {
        let mut yarn = llama();
        yarn["rope_scaling"] = json!({"rope_type": "yarn", "factor": 4.0});
        assert!(DecoderConfig::parse(&yarn).unwrap().unwrap_err().contains("yarn"));
        let mut gelu = llama();
        gelu["hidden_act"] = "gelu".into();
        assert!(DecoderConfig::parse(&gelu).unwrap().unwrap_err().contains("gelu"));
        for (key, value) in [("num_key_value_heads", json!(3)), ("hidden_size", json!(-1)), ("vocab_size", json!(null))]
        {
            let mut c = llama();
            c[key] = value;
            assert!(DecoderConfig::parse(&c).is_err(), "{key}");
        }
        let mut classifier = llama();
        classifier["architectures"] = json!(["LlamaForSequenceClassification"]);
        assert!(!is_decoder(&classifier) && is_decoder(&llama()));
    }
}
