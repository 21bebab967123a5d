//! candle: Hugging Face encoders (BERT, DistilBERT, RoBERTa, XLM-RoBERTa, DeBERTa-v2/v3, ViT)
//! straight from `model.safetensors` + `config.json`, in pure Rust. Takes
//! `input_ids`, `attention_mask` (and BERT's `token_type_ids`) and returns
//! `last_hidden_state`, like an ONNX export of the same model, so the text tasks
//! work the same on both. A `*ForSequenceClassification` returns `logits` from its
//! head as transformers computes it (BERT: pooler + classifier; DistilBERT:
//! pre-classifier + ReLU + classifier; RoBERTa: dense + tanh + out_proj;
//! DeBERTa: its context pooler (dense + the configured activation) + classifier,
//! all on the first token); a `*ForTokenClassification` returns `logits` for every
//! token.
//!
//! ViT (`ViTModel`, `ViTForImageClassification`) takes `pixel_values` and returns
//! `last_hidden_state`, or the classifier's `logits` on the first token.
//!
//! DistilBERT is BERT without token types and pooler, with its layers named
//! differently: its weights are renamed onto candle's BERT (whose GELU is the
//! exact one transformers uses), with a zero token-type embedding.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor as CTensor};
use candle_nn::{Linear, Module, VarBuilder};
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use candle_transformers::models::debertav2::{Config as DebertaConfig, DebertaV2Model};
use candle_transformers::models::vit;
use candle_transformers::models::xlm_roberta::{Config as RobertaConfig, XLMRobertaModel};
use ndarray::{ArrayD, IxDyn};
use serde_json::{Value, json};
use zoo_api::Signature;
use zoo_formats::hf::{self, Architecture};

use super::{LoadedModel, RunLimits, Runtime, RuntimeError, Tensor, Tensors};

pub struct CandleRuntime;

fn load_err(message: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Load { runtime: "candle", message: message.to_string() }
}

impl Runtime for CandleRuntime {
    fn name(&self) -> &'static str {
        "candle"
    }

    #[allow(clippy::disallowed_methods, reason = "models load on a blocking thread (service::loader)")]
    fn load(
        &self,
        model: &Path,
        signature: &Signature,
        _limits: &RunLimits,
    ) -> Result<Box<dyn LoadedModel>, RuntimeError> {
        if signature.generates() {
            // The language model itself is loaded by its task's generator, which
            // runs it in its own engine (`generate.rs`): no tensors run here.
            return Ok(Box::new(super::generate::NoTensors));
        }
        let dir = model.parent().ok_or_else(|| load_err("the weights file has no directory"))?;
        let config_text =
            std::fs::read_to_string(dir.join("config.json")).map_err(|e| load_err(format!("config.json: {e}")))?;
        let config: Value =
            serde_json::from_str(&config_text).map_err(|e| load_err(format!("config.json is not JSON: {e}")))?;
        let model_type = config.get("model_type").and_then(Value::as_str).unwrap_or("");
        if model_type == "vit" {
            return Ok(Box::new(Vit::load(model, &config, signature)?));
        }
        let arch = hf::architecture(model_type)
            .ok_or_else(|| load_err(format!("model type '{model_type}' is not one candle runs here")))?;
        let device = Device::Cpu;
        let mut tensors = candle_core::safetensors::load(model, &device).map_err(load_err)?;
        let classifier = signature.outputs.first().is_some_and(|o| o.name == "logits");
        let token_level = classifier && signature.outputs[0].shape.as_ref().is_some_and(|s| s.len() == 3);
        let head = if !classifier {
            Head::None
        } else if token_level {
            Head::Token(linear(&tensors, "classifier")?)
        } else {
            match arch.model_type {
                "bert" => Head::Pooler(linear(&tensors, "bert.pooler.dense")?, linear(&tensors, "classifier")?),
                "distilbert" => {
                    Head::PreClassifier(linear(&tensors, "pre_classifier")?, linear(&tensors, "classifier")?)
                }
                "deberta-v2" => {
                    let act = config.get("pooler_hidden_act").and_then(Value::as_str).unwrap_or("gelu");
                    let act = Activation::parse(act)?;
                    Head::ContextPooler(linear(&tensors, "pooler.dense")?, act, linear(&tensors, "classifier")?)
                }
                _ => Head::Dense(linear(&tensors, "classifier.dense")?, linear(&tensors, "classifier.out_proj")?),
            }
        };
        // The encoder's weights without the task model's prefix.
        let prefix = format!("{}.", arch.prefix);
        if tensors.keys().any(|k| k.starts_with(&prefix)) {
            tensors =
                tensors.into_iter().filter_map(|(k, v)| k.strip_prefix(&prefix).map(|k| (k.to_string(), v))).collect();
        }
        let encoder = match arch.model_type {
            "bert" => {
                let cfg = bert_config(&config)?;
                let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
                Encoder::Bert(BertModel::load(vb, &cfg).map_err(load_err)?)
            }
            "distilbert" => {
                let cfg = distilbert_as_bert(&config)?;
                let tensors = distilbert_weights(tensors, cfg.hidden_size, &device)?;
                let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
                Encoder::Bert(BertModel::load(vb, &cfg).map_err(load_err)?)
            }
            "deberta-v2" => {
                let cfg = deberta_config(&config)?;
                let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
                Encoder::Deberta(Box::new(DebertaV2Model::load(vb, &cfg).map_err(load_err)?))
            }
            _ => {
                let cfg = roberta_config(&config, arch)?;
                let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
                Encoder::Roberta(XLMRobertaModel::new(&cfg, vb).map_err(load_err)?)
            }
        };
        Ok(Box::new(CandleEncoder { encoder, head, device }))
    }
}

/// A `name.weight` + `name.bias` linear layer, as float32.
fn linear(tensors: &HashMap<String, CTensor>, name: &str) -> Result<Linear, RuntimeError> {
    let get = |suffix: &str| {
        tensors
            .get(&format!("{name}.{suffix}"))
            .ok_or_else(|| load_err(format!("{name}.{suffix} is missing")))?
            .to_dtype(DType::F32)
            .map_err(load_err)
    };
    Ok(Linear::new(get("weight")?, Some(get("bias")?)))
}

/// A config with transformers' defaults for what it leaves out.
fn with_defaults(config: &Value, defaults: Value) -> Value {
    let mut merged = defaults;
    if let (Some(m), Some(c)) = (merged.as_object_mut(), config.as_object()) {
        for (k, v) in c {
            if !v.is_null() {
                m.insert(k.clone(), v.clone());
            }
        }
    }
    merged
}

fn encoder_defaults() -> Value {
    json!({
        "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": 512, "type_vocab_size": 2, "initializer_range": 0.02,
        "layer_norm_eps": 1e-12, "pad_token_id": 0, "position_embedding_type": "absolute",
        "classifier_dropout": null
    })
}

fn bert_config(config: &Value) -> Result<BertConfig, RuntimeError> {
    serde_json::from_value(with_defaults(config, encoder_defaults()))
        .map_err(|e| load_err(format!("config.json is not a BERT config: {e}")))
}

/// A DistilBERT config as the BERT config of the same network.
fn distilbert_as_bert(config: &Value) -> Result<BertConfig, RuntimeError> {
    let get = |k: &str| config.get(k).cloned().unwrap_or(Value::Null);
    let mapped = json!({
        "vocab_size": get("vocab_size"),
        "hidden_size": get("dim"),
        "num_hidden_layers": get("n_layers"),
        "num_attention_heads": get("n_heads"),
        "intermediate_size": get("hidden_dim"),
        "hidden_act": config.get("activation").cloned().unwrap_or(json!("gelu")),
        "max_position_embeddings": get("max_position_embeddings"),
        "pad_token_id": get("pad_token_id"),
        "type_vocab_size": 1,
        "layer_norm_eps": 1e-12,
        "model_type": "bert",
    });
    serde_json::from_value(with_defaults(&mapped, encoder_defaults()))
        .map_err(|e| load_err(format!("config.json is not a DistilBERT config: {e}")))
}

/// DistilBERT's weights under BERT's names (its blocks are BERT's post-norm
/// blocks), with a zero token-type embedding.
fn distilbert_weights(
    tensors: HashMap<String, CTensor>,
    hidden: usize,
    device: &Device,
) -> Result<HashMap<String, CTensor>, RuntimeError> {
    const RENAMES: [(&str, &str); 8] = [
        ("attention.q_lin.", "attention.self.query."),
        ("attention.k_lin.", "attention.self.key."),
        ("attention.v_lin.", "attention.self.value."),
        ("attention.out_lin.", "attention.output.dense."),
        ("sa_layer_norm.", "attention.output.LayerNorm."),
        ("ffn.lin1.", "intermediate.dense."),
        ("ffn.lin2.", "output.dense."),
        ("output_layer_norm.", "output.LayerNorm."),
    ];
    let mut out = HashMap::with_capacity(tensors.len() + 1);
    for (name, t) in tensors {
        let renamed = match name.strip_prefix("transformer.layer.") {
            Some(rest) => {
                let (index, part) = rest.split_once('.').unwrap_or((rest, ""));
                let part = RENAMES
                    .iter()
                    .find_map(|(from, to)| part.strip_prefix(from).map(|p| format!("{to}{p}")))
                    .unwrap_or_else(|| part.to_string());
                format!("encoder.layer.{index}.{part}")
            }
            None => name,
        };
        out.insert(renamed, t);
    }
    let zeros = CTensor::zeros((1, hidden), DType::F32, device).map_err(load_err)?;
    out.insert("embeddings.token_type_embeddings.weight".into(), zeros);
    Ok(out)
}

fn roberta_config(config: &Value, arch: &Architecture) -> Result<RobertaConfig, RuntimeError> {
    let defaults =
        with_defaults(&json!({"layer_norm_eps": 1e-5, "pad_token_id": 1, "type_vocab_size": 1}), encoder_defaults());
    serde_json::from_value(with_defaults(config, defaults))
        .map_err(|e| load_err(format!("config.json is not a {} config: {e}", arch.model_type)))
}

fn deberta_config(config: &Value) -> Result<DebertaConfig, RuntimeError> {
    // transformers' DebertaV2Config defaults, for what a saved config leaves out.
    let defaults = json!({
        "layer_norm_eps": 1e-7, "type_vocab_size": 0, "relative_attention": false,
        "max_relative_positions": -1, "position_biased_input": true, "pos_att_type": [],
        "pooler_hidden_act": "gelu", "pooler_dropout": 0.0
    });
    let mut merged = with_defaults(config, with_defaults(&defaults, encoder_defaults()));
    if merged.get("pooler_hidden_size").is_none_or(Value::is_null) {
        merged["pooler_hidden_size"] = merged["hidden_size"].clone();
    }
    serde_json::from_value(merged).map_err(|e| load_err(format!("config.json is not a DeBERTa-v2 config: {e}")))
}

/// The activation of DeBERTa's context pooler (`pooler_hidden_act`).
#[derive(Clone, Copy)]
enum Activation {
    Gelu,
    GeluTanh,
    Relu,
    Tanh,
}

impl Activation {
    fn parse(name: &str) -> Result<Activation, RuntimeError> {
        Ok(match name {
            "gelu" => Activation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            "tanh" => Activation::Tanh,
            other => return Err(load_err(format!("pooler_hidden_act '{other}' is not one zoo runs"))),
        })
    }

    fn apply(self, x: &CTensor) -> candle_core::Result<CTensor> {
        match self {
            Activation::Gelu => x.gelu_erf(),
            Activation::GeluTanh => x.gelu(),
            Activation::Relu => x.relu(),
            Activation::Tanh => x.tanh(),
        }
    }
}

enum Encoder {
    Bert(BertModel),
    Roberta(XLMRobertaModel),
    Deberta(Box<DebertaV2Model>),
}

/// What follows the encoder.
enum Head {
    /// The last hidden state itself.
    None,
    /// BERT's pooler (dense + tanh on the first token), then the classifier.
    Pooler(Linear, Linear),
    /// DistilBERT's pre-classifier (dense + ReLU on the first token), then the classifier.
    PreClassifier(Linear, Linear),
    /// RoBERTa's head: dense + tanh on the first token, then out_proj.
    Dense(Linear, Linear),
    /// DeBERTa's context pooler (dense + activation on the first token), then the classifier.
    ContextPooler(Linear, Activation, Linear),
    /// A classifier on every token.
    Token(Linear),
}

struct CandleEncoder {
    encoder: Encoder,
    head: Head,
    device: Device,
}

impl CandleEncoder {
    /// A `[batch, sequence]` int64 input as a candle tensor.
    fn ids(&self, inputs: &Tensors, name: &str) -> Result<Option<CTensor>, RuntimeError> {
        let Some((_, t)) = inputs.iter().find(|(n, _)| n == name) else { return Ok(None) };
        let Tensor::I64(a) = t else {
            return Err(RuntimeError::Input(format!("input '{name}' must be int64")));
        };
        let &[b, s] = a.shape() else {
            return Err(RuntimeError::Input(format!("input '{name}' must be [batch, sequence], got {:?}", a.shape())));
        };
        let data: Vec<i64> = a.iter().copied().collect();
        CTensor::from_vec(data, (b, s), &self.device).map(Some).map_err(|e| RuntimeError::Run(e.to_string()))
    }
}

impl LoadedModel for CandleEncoder {
    fn run(&mut self, inputs: Tensors) -> Result<Tensors, RuntimeError> {
        let run = |e: candle_core::Error| RuntimeError::Run(e.to_string());
        let ids =
            self.ids(&inputs, "input_ids")?.ok_or_else(|| RuntimeError::Input("missing input 'input_ids'".into()))?;
        let types = match self.ids(&inputs, "token_type_ids")? {
            Some(t) => t,
            None => ids.zeros_like().map_err(run)?,
        };
        let mask = self.ids(&inputs, "attention_mask")?;
        let hidden = match &self.encoder {
            Encoder::Bert(m) => m.forward(&ids, &types, mask.as_ref()).map_err(run)?,
            Encoder::Roberta(m) => {
                let mask = match mask {
                    Some(m) => m,
                    None => ids.ones_like().map_err(run)?,
                };
                m.forward(&ids, &mask, &types, None, None, None).map_err(run)?
            }
            Encoder::Deberta(m) => m.forward(&ids, None, mask).map_err(run)?,
        };
        let first = || hidden.narrow(1, 0, 1).and_then(|t| t.squeeze(1)).map_err(run);
        let (name, out) = match &self.head {
            Head::None => ("last_hidden_state", hidden.clone()),
            Head::Pooler(pooler, classifier) | Head::Dense(pooler, classifier) => {
                let pooled = pooler.forward(&first()?).and_then(|t| t.tanh()).map_err(run)?;
                ("logits", classifier.forward(&pooled).map_err(run)?)
            }
            Head::PreClassifier(pre, classifier) => {
                let pooled = pre.forward(&first()?).and_then(|t| t.relu()).map_err(run)?;
                ("logits", classifier.forward(&pooled).map_err(run)?)
            }
            Head::ContextPooler(dense, act, classifier) => {
                let pooled = dense.forward(&first()?).and_then(|t| act.apply(&t)).map_err(run)?;
                ("logits", classifier.forward(&pooled).map_err(run)?)
            }
            Head::Token(classifier) => ("logits", classifier.forward(&hidden).map_err(run)?),
        };
        let shape = out.dims().to_vec();
        let values = out.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(run)?;
        let array = ArrayD::from_shape_vec(IxDyn(&shape), values).map_err(|e| RuntimeError::Run(e.to_string()))?;
        Ok(vec![(name.to_string(), Tensor::F32(array))])
    }
}

/// A ViT: the encoder with its final layer norm, and a classifier on the first
/// token for a `ViTForImageClassification`.
struct Vit {
    embeddings: vit::Embeddings,
    encoder: vit::Encoder,
    layernorm: candle_nn::LayerNorm,
    classifier: Option<Linear>,
    /// Channels and side of the images it takes.
    channels: usize,
    size: usize,
    device: Device,
}

impl Vit {
    fn load(model: &Path, config: &Value, signature: &Signature) -> Result<Vit, RuntimeError> {
        // transformers' ViTConfig defaults, for what a saved config leaves out.
        let defaults = json!({
            "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
            "hidden_act": "gelu", "layer_norm_eps": 1e-12, "image_size": 224, "patch_size": 16,
            "num_channels": 3, "qkv_bias": true
        });
        let cfg: vit::Config = serde_json::from_value(with_defaults(config, defaults))
            .map_err(|e| load_err(format!("config.json is not a ViT config: {e}")))?;
        let device = Device::Cpu;
        let tensors = candle_core::safetensors::load(model, &device).map_err(load_err)?;
        let classifier = if signature.outputs.first().is_some_and(|o| o.name == "logits") {
            Some(linear(&tensors, "classifier")?)
        } else {
            None
        };
        let prefixed = tensors.keys().any(|k| k.starts_with("vit."));
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
        let vb = if prefixed { vb.pp("vit") } else { vb };
        let embeddings = vit::Embeddings::new(&cfg, false, vb.pp("embeddings")).map_err(load_err)?;
        let encoder = vit::Encoder::new(&cfg, vb.pp("encoder")).map_err(load_err)?;
        let layernorm =
            candle_nn::layer_norm(cfg.hidden_size, cfg.layer_norm_eps, vb.pp("layernorm")).map_err(load_err)?;
        Ok(Vit { embeddings, encoder, layernorm, classifier, channels: cfg.num_channels, size: cfg.image_size, device })
    }
}

impl LoadedModel for Vit {
    fn run(&mut self, inputs: Tensors) -> Result<Tensors, RuntimeError> {
        let run = |e: candle_core::Error| RuntimeError::Run(e.to_string());
        let Some((_, t)) = inputs.iter().find(|(n, _)| n == "pixel_values") else {
            return Err(RuntimeError::Input("missing input 'pixel_values'".into()));
        };
        let Tensor::F32(a) = t else {
            return Err(RuntimeError::Input("input 'pixel_values' must be float32".into()));
        };
        let (c, s) = (self.channels, self.size);
        let &[b, ci, h, w] = a.shape() else {
            return Err(RuntimeError::Input(format!(
                "pixel_values must be [batch, {c}, {s}, {s}], got {:?}",
                a.shape()
            )));
        };
        if (ci, h, w) != (c, s, s) {
            return Err(RuntimeError::Input(format!(
                "pixel_values must be [batch, {c}, {s}, {s}], got {:?}",
                a.shape()
            )));
        }
        let data: Vec<f32> = a.iter().copied().collect();
        let x = CTensor::from_vec(data, (b, c, s, s), &self.device).map_err(run)?;
        let embedded = self.embeddings.forward(&x, None, false).map_err(run)?;
        let hidden = self.encoder.forward(&embedded).and_then(|h| h.apply(&self.layernorm)).map_err(run)?;
        let (name, out) = match &self.classifier {
            Some(classifier) => {
                let first = hidden.narrow(1, 0, 1).and_then(|t| t.squeeze(1)).map_err(run)?;
                ("logits", classifier.forward(&first).map_err(run)?)
            }
            None => ("last_hidden_state", hidden),
        };
        let shape = out.dims().to_vec();
        let values = out.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(run)?;
        let array = ArrayD::from_shape_vec(IxDyn(&shape), values).map_err(|e| RuntimeError::Run(e.to_string()))?;
        Ok(vec![(name.to_string(), Tensor::F32(array))])
    }
}
