//! Text tasks: tokenize with the bundle's `tokenizer.json`, pad per batch, and turn
//! logits into labels or hidden states into embeddings.

use std::path::Path;

use ndarray::{ArrayD, Axis, IxDyn};
use tokenizers::{Encoding, Tokenizer, TruncationParams};
use zoo_api::{DType, EffectiveServing, LabelScore, Signature, TextInfo};

use super::mlflow;
use super::request::{Inputs, RawPredict, refuse_mlflow_formats};
use crate::error::{Error, Result};
use crate::runtime::{Tensor, Tensors};

/// Tokenizer plus what the model's inputs and outputs are called.
pub struct TextPipeline {
    tokenizer: Tokenizer,
    info: TextInfo,
    pad_id: i64,
    /// (input name, dtype) in signature order; each is one of input_ids,
    /// attention_mask, token_type_ids.
    inputs: Vec<(String, DType)>,
    /// The output to post-process.
    output: String,
}

/// One tokenized batch, with the attention mask kept for pooling and the
/// tokenizer's encodings (tokens, offsets) for tasks that answer per token.
pub struct Encoded {
    pub inputs: Tensors,
    pub mask: ArrayD<i64>,
    pub encodings: Vec<Encoding>,
    pub texts: Vec<String>,
}

/// What a text task reads from the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reads {
    /// Logits `[batch, labels]`.
    Labels,
    /// Logits for every token, `[batch, sequence, labels]`.
    TokenLabels,
    /// Hidden states `[batch, sequence, hidden]` or embeddings `[batch, dim]`.
    Hidden,
}

impl TextPipeline {
    /// The text pipeline of a version of a text task (`labels`: the class names
    /// given at deploy, which replace the bundle's).
    pub fn for_version(dir: &Path, signature: &Signature, labels: &[String], reads: Reads) -> Result<TextPipeline> {
        let mut info: TextInfo = signature
            .text
            .clone()
            .ok_or_else(|| Error::NotServable("a text task needs a bundle with tokenizer.json".into()))?;
        if !labels.is_empty() {
            info.labels = labels.to_vec();
        }
        TextPipeline::load(dir, signature, info, reads)
    }

    /// Real tokens to warm the model up with, and to measure at load which batch
    /// sizes pay: a sentence of a typical review's length.
    pub fn warmup_inputs(&self) -> Option<Tensors> {
        self.encode(vec![WARMUP_TEXT.to_string()], usize::MAX).ok().map(|e| e.inputs)
    }

    /// What each token input is padded with when texts of different lengths share a batch.
    pub fn padding(&self) -> Vec<(String, i64)> {
        vec![
            ("input_ids".to_string(), self.pad_id),
            ("attention_mask".to_string(), 0),
            ("token_type_ids".to_string(), 0),
        ]
    }

    pub fn load(dir: &Path, signature: &Signature, info: TextInfo, reads: Reads) -> Result<TextPipeline> {
        let mut tokenizer = Tokenizer::from_file(dir.join(&info.tokenizer))
            .map_err(|e| Error::NotServable(format!("tokenizer.json cannot be loaded: {e}")))?;
        // The tokenizer's padding token, else its vocabulary's (RoBERTa pads with 1).
        let pad_id = tokenizer
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| ["[PAD]", "<pad>"].iter().find_map(|t| tokenizer.token_to_id(t)))
            .map_or(0, i64::from);
        // Padding is done per batch here; truncation to the model's length.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: info.max_length, ..Default::default() }))
            .map_err(|e| Error::NotServable(format!("tokenizer truncation: {e}")))?;
        let mut inputs = Vec::new();
        for i in &signature.inputs {
            match i.name.as_str() {
                "input_ids" | "attention_mask" | "token_type_ids" => inputs.push((i.name.clone(), i.dtype)),
                other => {
                    return Err(Error::NotServable(format!(
                        "text model input '{other}' is not one zoo can fill (input_ids, attention_mask, token_type_ids)"
                    )));
                }
            }
        }
        let output = pick_output(signature, reads)
            .ok_or_else(|| Error::NotServable("no output of the expected rank for this text task".into()))?;
        Ok(TextPipeline { tokenizer, info, pad_id, inputs, output })
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The model's output this task reads, as float32.
    pub fn read(&self, outputs: &Tensors) -> Result<ArrayD<f32>> {
        self.output(outputs)?
            .to_f32()
            .ok_or_else(|| Error::Inference(format!("'{}' is not floating point", self.output)))
    }

    pub fn info(&self) -> &TextInfo {
        &self.info
    }

    /// What token sequences are padded with (input_ids; masks and types pad with 0).
    pub fn pad_id(&self) -> i64 {
        self.pad_id
    }

    /// Tokenize and pad a batch of texts into the model's inputs.
    /// Texts of more than `max_tokens` tokens (before truncation to the model's
    /// length) are refused.
    pub fn encode(&self, texts: Vec<String>, max_tokens: usize) -> Result<Encoded> {
        let enc = self
            .tokenizer
            .encode_batch(texts.iter().map(String::as_str).collect::<Vec<_>>(), true)
            .map_err(|e| Error::InvalidInput(format!("cannot tokenize the text: {e}")))?;
        for (i, e) in enc.iter().enumerate() {
            let total = e.len() + e.get_overflowing().iter().map(|o| o.len()).sum::<usize>();
            if total > max_tokens {
                return Err(Error::InvalidInput(format!(
                    "text {i} has {total} tokens, more than the limit of {max_tokens}; split it"
                )));
            }
        }
        let len = enc.iter().map(|e| e.len()).max().unwrap_or(0).max(1);
        let n = texts.len();
        let mut ids = ArrayD::<i64>::from_elem(IxDyn(&[n, len]), self.pad_id);
        let mut mask = ArrayD::<i64>::zeros(IxDyn(&[n, len]));
        let mut types = ArrayD::<i64>::zeros(IxDyn(&[n, len]));
        for (row, e) in enc.iter().enumerate() {
            for (col, ((id, m), t)) in e.get_ids().iter().zip(e.get_attention_mask()).zip(e.get_type_ids()).enumerate()
            {
                ids[[row, col]] = i64::from(*id);
                mask[[row, col]] = i64::from(*m);
                types[[row, col]] = i64::from(*t);
            }
        }
        let inputs = self
            .inputs
            .iter()
            .map(|(name, dtype)| {
                let a = match name.as_str() {
                    "input_ids" => &ids,
                    "attention_mask" => &mask,
                    _ => &types,
                };
                let t = match dtype {
                    DType::Int32 => Tensor::I32(a.mapv(|v| v as i32)),
                    _ => Tensor::I64(a.clone()),
                };
                (name.clone(), t)
            })
            .collect();
        Ok(Encoded { inputs, mask, encodings: enc, texts })
    }

    fn output<'a>(&self, outputs: &'a Tensors) -> Result<&'a Tensor> {
        outputs
            .iter()
            .find(|(n, _)| *n == self.output)
            .map(|(_, t)| t)
            .ok_or_else(|| Error::Inference(format!("the model returned no '{}' output", self.output)))
    }

    /// Softmax over logits `[batch, labels]` (sigmoid for one logit), labels sorted by score.
    pub fn classify(&self, outputs: &Tensors, top_k: Option<usize>) -> Result<Vec<Vec<LabelScore>>> {
        let logits =
            self.output(outputs)?.to_f32().ok_or_else(|| Error::Inference("logits are not floating point".into()))?;
        super::scores::classify(&logits, &self.info.labels, top_k)
    }

    /// Pool hidden states `[batch, seq, hidden]` (or take `[batch, dim]` as is).
    pub fn embed(&self, outputs: &Tensors, mask: &ArrayD<i64>, normalize: bool) -> Result<Vec<Vec<f32>>> {
        let hidden = self
            .output(outputs)?
            .to_f32()
            .ok_or_else(|| Error::Inference("hidden states are not floating point".into()))?;
        let mut out: Vec<Vec<f32>> = match hidden.ndim() {
            2 => hidden.axis_iter(Axis(0)).map(|r| r.iter().copied().collect()).collect(),
            3 => hidden
                .axis_iter(Axis(0))
                .enumerate()
                .map(|(b, tokens)| {
                    let dim = tokens.shape()[1];
                    let mut acc = vec![0f32; dim];
                    let mut count = 0f32;
                    for (t, tok) in tokens.axis_iter(Axis(0)).enumerate() {
                        let keep = mask.get([b, t]).copied().unwrap_or(0) != 0;
                        match self.info.pooling.as_str() {
                            "cls" if t == 0 => acc.iter_mut().zip(tok.iter()).for_each(|(a, v)| *a = *v),
                            "max" if keep => acc
                                .iter_mut()
                                .zip(tok.iter())
                                .for_each(|(a, v)| *a = if count == 0.0 { *v } else { a.max(*v) }),
                            "mean" if keep => acc.iter_mut().zip(tok.iter()).for_each(|(a, v)| *a += v),
                            _ => {}
                        }
                        if keep {
                            count += 1.0;
                        }
                    }
                    if self.info.pooling == "mean" && count > 0.0 {
                        acc.iter_mut().for_each(|a| *a /= count);
                    }
                    acc
                })
                .collect(),
            _ => return Err(Error::Inference(format!("hidden states have shape {:?}", hidden.shape()))),
        };
        if normalize {
            for v in &mut out {
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                v.iter_mut().for_each(|x| *x /= norm);
            }
        }
        Ok(out)
    }
}

fn pick_output(sig: &Signature, reads: Reads) -> Option<String> {
    let (preferred, ranks): (&[&str], &[usize]) = match reads {
        Reads::Labels => (&["logits"], &[2]),
        Reads::TokenLabels => (&["logits"], &[3]),
        Reads::Hidden => (&["last_hidden_state", "sentence_embedding", "embeddings"], &[3, 2]),
    };
    let rank_ok = |o: &zoo_api::TensorSpec| o.shape.as_ref().is_some_and(|s| ranks.contains(&s.len()));
    sig.outputs
        .iter()
        .find(|o| preferred.contains(&o.name.as_str()) && rank_ok(o))
        .or_else(|| sig.outputs.iter().find(|o| rank_ok(o)))
        .map(|o| o.name.clone())
}

/// The texts of a v1 request to a text version: `{"inputs": "a text"}` or a list
/// of texts, or for an MLflow version MLflow's formats (always answered as a list).
pub fn request_texts(signature: &Signature, limits: &EffectiveServing, req: &RawPredict<'_>) -> Result<Inputs> {
    refuse_mlflow_formats(signature, req)?;
    let max_items = limits.max_items as usize;
    let max_bytes = (limits.max_tokens as usize).saturating_mul(BYTES_PER_TOKEN);
    match (&signature.mlflow, req.inputs) {
        (Some(_), _) => {
            let texts = mlflow::request_texts(&req.to_tree()?)?;
            if texts.len() > max_items {
                return Err(Error::InvalidInput(format!("at most {max_items} texts per request, got {}", texts.len())));
            }
            if let Some((i, t)) = texts.iter().enumerate().find(|(_, t)| t.len() > max_bytes) {
                return Err(Error::InvalidInput(too_long(i, t.len(), max_bytes)));
            }
            Ok(Inputs::Texts { texts, many: true })
        }
        (None, Some(raw)) => {
            let (texts, many) = parse_texts(raw, max_items, max_bytes)?;
            Ok(Inputs::Texts { texts, many })
        }
        (None, None) => Err(Error::InvalidInput("the request needs \"inputs\"".into())),
    }
}

/// The texts of a v2 request to a text version: one BYTES input, 1 to
/// `max_items` texts, each within the bytes `max_tokens` allows.
pub fn v2_texts(given: Tensors, limits: &EffectiveServing) -> Result<Inputs> {
    let bad = |m: String| Error::InvalidInput(m);
    let max_items = limits.max_items as usize;
    let [(name, t)] = given.as_slice() else {
        return Err(bad("a text model takes one input: text (BYTES)".into()));
    };
    let Tensor::Str(a) = t else {
        return Err(bad(format!("input '{name}' must be BYTES (the texts)")));
    };
    let texts: Vec<String> = a.iter().cloned().collect();
    if texts.is_empty() || texts.len() > max_items {
        return Err(bad(format!("send 1 to {max_items} texts, got {}", texts.len())));
    }
    let max_bytes = (limits.max_tokens as usize).saturating_mul(BYTES_PER_TOKEN);
    if let Some((i, t)) = texts.iter().enumerate().find(|(_, t)| t.len() > max_bytes) {
        return Err(bad(too_long(i, t.len(), max_bytes)));
    }
    Ok(Inputs::Texts { texts, many: true })
}

fn too_long(i: usize, n: usize, max: usize) -> String {
    format!("text {i} is {n} bytes, more than the limit of {max} bytes per text; split it")
}

/// The JSON Schema of `inputs` for a text version: a text or a list of texts.
pub fn texts_schema(max_items: u32) -> serde_json::Value {
    serde_json::json!({
        "description": "a text, or a list of texts (one answer per text)",
        "oneOf": [
            {"type": "string"},
            {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": max_items}
        ]
    })
}

/// The example request of a text version.
pub fn example_request() -> serde_json::Value {
    serde_json::json!({"inputs": "zoo serves this model with no code"})
}

/// The text a text model warms up with.
const WARMUP_TEXT: &str = "zoo warms this model up with one sentence of an ordinary length before serving it";

/// Bytes a text may have per token of the token limit: longer texts are refused
/// before they are tokenized.
pub const BYTES_PER_TOKEN: usize = 16;

/// The texts of a request: one string (`many` false) or a list of 1 to
/// `max_items` strings, each at most `max_bytes` long, read from the request's
/// JSON text without holding more than those texts.
pub fn parse_texts(
    raw: &serde_json::value::RawValue,
    max_items: usize,
    max_bytes: usize,
) -> Result<(Vec<String>, bool)> {
    use serde::de::{Deserializer, SeqAccess, Visitor};

    struct Texts {
        max_items: usize,
        max_bytes: usize,
    }
    impl<'de> Visitor<'de> for Texts {
        type Value = (Vec<String>, bool);
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string or a list of strings")
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> std::result::Result<Self::Value, E> {
            if s.len() > self.max_bytes {
                return Err(E::custom(too_long(0, s.len(), self.max_bytes)));
            }
            Ok((vec![s.to_string()], false))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Self::Value, A::Error> {
            use serde::de::Error as _;
            let mut texts = Vec::new();
            while let Some(s) = seq.next_element::<String>()? {
                if texts.len() == self.max_items {
                    return Err(A::Error::custom(format!("at most {} texts per request", self.max_items)));
                }
                if s.len() > self.max_bytes {
                    return Err(A::Error::custom(too_long(texts.len(), s.len(), self.max_bytes)));
                }
                texts.push(s);
            }
            if texts.is_empty() {
                return Err(A::Error::custom("\"inputs\" is an empty list"));
            }
            Ok((texts, true))
        }
    }
    let mut de = serde_json::Deserializer::from_str(raw.get());
    de.deserialize_any(Texts { max_items, max_bytes }).map_err(|e| {
        let msg = e.to_string();
        let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
        let msg = if msg.starts_with("invalid type") {
            "\"inputs\" must be a string or a list of strings for a text model".to_string()
        } else {
            msg
        };
        Error::InvalidInput(msg)
    })
}
