//! A Llama decoder over GGUF weights (quantized as they are in the file) that
//! runs a step of several sequences at once: their new tokens go through every
//! weight matrix together, as the rows of one matrix product, so that each
//! quantized weight is read once per step rather than once per sequence (what
//! makes several streams cheaper than one after another), while each sequence
//! keeps its own key/value cache and position. The arithmetic is candle's
//! quantized Llama's (`candle_transformers::models::quantized_llama`), row by
//! row: a sequence decoded alone or with others gets the same logits. The same
//! forward runs Qwen2/Qwen3 GGUF files and Hugging Face decoder directories
//! (Llama, Mistral, Qwen2, Qwen3 safetensors, in float32).

use std::collections::HashMap;

use candle_core::quantized::{QMatMul, QTensor, gguf_file};
use candle_core::{DType, Device, Module, Result, Tensor};
use zoo_formats::decoder::{DecoderConfig, RopeScaling};

/// The longest context the rotary tables cover.
pub const MAX_CONTEXT: usize = 4096;

#[derive(Clone)]
struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    fn new(q: QTensor, eps: f32) -> Result<RmsNorm> {
        Ok(RmsNorm { weight: q.dequantize(&Device::Cpu)?, eps })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::rms_norm(x, &self.weight, self.eps)
    }
}

/// A weight matrix: Q4_1 through zoo's own kernel (candle's is the scalar
/// reference), any other GGUF type or a float matrix through candle.
enum Matrix {
    Candle(QMatMul),
    Q41(super::q4_1::Q41Matrix),
}

impl Matrix {
    fn from_qtensor(t: QTensor) -> Result<Matrix> {
        Ok(match super::q4_1::Q41Matrix::from_qtensor(&t)? {
            Some(m) => Matrix::Q41(m),
            None => Matrix::Candle(QMatMul::from_qtensor(t)?),
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Matrix::Candle(w) => w.forward(x),
            Matrix::Q41(w) => w.forward(x),
        }
    }
}

/// A weight matrix (quantized, or float for a Hugging Face directory) and its
/// bias, when the model has one.
struct Linear {
    w: Matrix,
    b: Option<Tensor>,
}

impl Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.w.forward(x)?;
        match &self.b {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

struct Layer {
    wq: Linear,
    wk: Linear,
    wv: Linear,
    wo: Linear,
    gate: Linear,
    up: Linear,
    down: Linear,
    attn_norm: RmsNorm,
    ffn_norm: RmsNorm,
    /// Qwen3's norms of each head's queries and keys, before the rotation.
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
}

/// The weights, shared by every sequence.
pub struct Weights {
    embeddings: Tensor,
    layers: Vec<Layer>,
    norm: RmsNorm,
    output: Matrix,
    cos: Tensor,
    sin: Tensor,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
    /// The rotation pairs neighbouring dimensions (llama.cpp's Llama, whose
    /// converter permutes the query and key weights for it), not each
    /// dimension with the one half a head away (Hugging Face's, and Qwen's).
    interleaved: bool,
    /// The vocabulary's size (the logits' length).
    pub vocab: usize,
}

/// One sequence's keys and values, per layer (`[1, kv heads, positions, head dim]`).
#[derive(Default)]
pub struct Cache {
    layers: Vec<(Tensor, Tensor)>,
    /// Positions held.
    pub len: usize,
}

/// One sequence's part of a step: its new tokens and its cache.
pub struct Row<'a> {
    pub tokens: &'a [u32],
    pub cache: &'a mut Cache,
}

/// The rotary embedding's frequencies: `1 / base^(2i / dims)`, scaled as the
/// model was trained to extend its context.
pub fn rope_frequencies(dims: usize, base: f32, scaling: RopeScaling) -> Vec<f32> {
    (0..dims)
        .step_by(2)
        .map(|i| {
            let f = 1.0 / base.powf(i as f32 / dims as f32);
            match scaling {
                RopeScaling::None => f,
                RopeScaling::Linear(factor) => f / factor as f32,
                RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_context } => {
                    let (factor, low, high, original) =
                        (factor as f32, low_freq_factor as f32, high_freq_factor as f32, original_context as f32);
                    let wavelen = 2.0 * std::f32::consts::PI / f;
                    if wavelen < original / high {
                        f
                    } else if wavelen > original / low {
                        f / factor
                    } else {
                        let smooth = (original / wavelen - low) / (high - low);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                }
            }
        })
        .collect()
}

/// Cosine and sine tables of every position up to `MAX_CONTEXT`.
fn rotary_tables(frequencies: &[f32]) -> Result<(Tensor, Tensor)> {
    let dev = &Device::Cpu;
    let theta = Tensor::new(frequencies, dev)?;
    let positions = Tensor::arange(0, MAX_CONTEXT as u32, dev)?.to_dtype(DType::F32)?.reshape((MAX_CONTEXT, 1))?;
    let angles = positions.matmul(&theta.reshape((1, ()))?)?;
    Ok((angles.cos()?, angles.sin()?))
}

impl Weights {
    /// A GGUF file of one of `zoo_formats::gguf::ARCHITECTURES` (llama.cpp's
    /// tensor names; Qwen2 adds biases to the queries, keys and values, Qwen3
    /// norms them).
    pub fn from_gguf<R: std::io::Read + std::io::Seek>(ct: &gguf_file::Content, r: &mut R) -> Result<Weights> {
        let dev = &Device::Cpu;
        let arch =
            ct.metadata.get("general.architecture").and_then(|v| v.to_string().ok()).cloned().unwrap_or_default();
        if !zoo_formats::gguf::ARCHITECTURES.contains(&arch.as_str()) {
            candle_core::bail!("zoo runs the GGUF architectures {:?}, not '{arch}'", zoo_formats::gguf::ARCHITECTURES);
        }
        let md = |k: &str| {
            ct.metadata
                .get(&format!("{arch}.{k}"))
                .ok_or_else(|| candle_core::Error::Msg(format!("{arch}.{k} is missing")))
        };
        let n_head = md("attention.head_count")?.to_u32()? as usize;
        let n_kv_head = md("attention.head_count_kv").and_then(|v| v.to_u32()).map_or(n_head, |v| v as usize);
        let blocks = md("block_count")?.to_u32()? as usize;
        let dim = md("embedding_length")?.to_u32()? as usize;
        let eps = md("attention.layer_norm_rms_epsilon").and_then(|v| v.to_f32()).unwrap_or(1e-5);
        let base = md("rope.freq_base").and_then(|v| v.to_f32()).unwrap_or(10_000.0);
        if n_head == 0 || n_kv_head == 0 || !n_head.is_multiple_of(n_kv_head) {
            candle_core::bail!("heads ({n_head}, {n_kv_head} for keys) do not divide each other");
        }
        let head_dim = match md("attention.key_length").and_then(|v| v.to_u32()) {
            Ok(d) => d as usize,
            Err(_) if dim.is_multiple_of(n_head) => dim / n_head,
            Err(_) => candle_core::bail!("heads ({n_head}) do not divide the width {dim}"),
        };
        let rope_dim = md("rope.dimension_count").and_then(|v| v.to_u32()).map_or(head_dim, |v| v as usize);
        if rope_dim != head_dim || !head_dim.is_multiple_of(2) {
            candle_core::bail!(
                "zoo rotates whole heads: rope.dimension_count ({rope_dim}) must be the head size ({head_dim})"
            );
        }
        let scaling = match md("rope.scaling.type").and_then(|v| v.to_string().cloned()) {
            Ok(t) if t == "linear" => RopeScaling::Linear(f64::from(md("rope.scaling.factor")?.to_f32()?)),
            Ok(t) if t != "none" => candle_core::bail!("zoo does not scale rotary embeddings the '{t}' way"),
            _ => RopeScaling::None,
        };
        let mut frequencies = rope_frequencies(rope_dim, base, scaling);
        // Llama 3.1's scaling, as llama.cpp's converter stores it: a factor per frequency.
        if let Ok(factors) = ct.tensor(r, "rope_freqs.weight", dev) {
            let factors = factors.dequantize(dev)?.flatten_all()?.to_vec1::<f32>()?;
            if factors.len() != frequencies.len() {
                candle_core::bail!(
                    "rope_freqs.weight holds {} factors for {} frequencies",
                    factors.len(),
                    frequencies.len()
                );
            }
            for (f, k) in frequencies.iter_mut().zip(factors) {
                *f /= k;
            }
        }
        let (cos, sin) = rotary_tables(&frequencies)?;
        let embedded = ct.tensor(r, "token_embd.weight", dev)?;
        let embeddings = embedded.dequantize(dev)?;
        let vocab = embeddings.dim(0)?;
        let output = match ct.tensor(r, "output.weight", dev) {
            Ok(t) => t,
            Err(_) => embedded,
        };
        let mut layers = Vec::with_capacity(blocks);
        for i in 0..blocks {
            let mut t = |n: &str| ct.tensor(r, &format!("blk.{i}.{n}"), dev);
            let mut linear = |n: &str| -> Result<Linear> {
                let w = Matrix::from_qtensor(t(&format!("{n}.weight"))?)?;
                let b = t(&format!("{n}.bias")).ok().map(|b| b.dequantize(dev)).transpose()?;
                Ok(Linear { w, b })
            };
            let (wq, wk, wv, wo) = (linear("attn_q")?, linear("attn_k")?, linear("attn_v")?, linear("attn_output")?);
            let (gate, up, down) = (linear("ffn_gate")?, linear("ffn_up")?, linear("ffn_down")?);
            let mut t = |n: &str| ct.tensor(r, &format!("blk.{i}.{n}.weight"), dev);
            let (q_norm, k_norm) = if arch == "qwen3" {
                (Some(RmsNorm::new(t("attn_q_norm")?, eps)?), Some(RmsNorm::new(t("attn_k_norm")?, eps)?))
            } else {
                (None, None)
            };
            layers.push(Layer {
                wq,
                wk,
                wv,
                wo,
                gate,
                up,
                down,
                attn_norm: RmsNorm::new(t("attn_norm")?, eps)?,
                ffn_norm: RmsNorm::new(t("ffn_norm")?, eps)?,
                q_norm,
                k_norm,
            });
        }
        Ok(Weights {
            embeddings,
            layers,
            norm: RmsNorm::new(ct.tensor(r, "output_norm.weight", dev)?, eps)?,
            output: Matrix::from_qtensor(output)?,
            cos,
            sin,
            n_head,
            n_kv_head,
            head_dim,
            interleaved: arch == "llama",
            vocab,
        })
    }

    /// A Hugging Face decoder directory's weights (`model.safetensors`, any
    /// float type, computed in float32), as its config describes them (checked
    /// at deploy by `zoo_formats::decoder`).
    pub fn from_safetensors(path: &std::path::Path, cfg: &DecoderConfig) -> Result<Weights> {
        let dev = &Device::Cpu;
        let mut tensors = candle_core::safetensors::load(path, dev)?;
        let t = &mut tensors;
        let take = |t: &mut HashMap<String, Tensor>, name: &str| -> Result<Option<Tensor>> {
            t.remove(name).map(|t| t.to_dtype(DType::F32)).transpose()
        };
        let need = |t: &mut HashMap<String, Tensor>, name: &str| {
            take(t, name)?.ok_or_else(|| candle_core::Error::Msg(format!("{name} is missing")))
        };
        let eps = cfg.rms_norm_eps as f32;
        let norm = |w: Tensor| RmsNorm { weight: w, eps };
        let embeddings = need(t, "model.embed_tokens.weight")?;
        let mut layers = Vec::with_capacity(cfg.layers);
        for i in 0..cfg.layers {
            let p = format!("model.layers.{i}");
            let mut linear = |n: &str| -> Result<Linear> {
                let w = Matrix::Candle(QMatMul::Tensor(need(t, &format!("{p}.{n}.weight"))?));
                Ok(Linear { w, b: take(t, &format!("{p}.{n}.bias"))? })
            };
            let (wq, wk, wv, wo) = (
                linear("self_attn.q_proj")?,
                linear("self_attn.k_proj")?,
                linear("self_attn.v_proj")?,
                linear("self_attn.o_proj")?,
            );
            let (gate, up, down) = (linear("mlp.gate_proj")?, linear("mlp.up_proj")?, linear("mlp.down_proj")?);
            let (q_norm, k_norm) = if cfg.qk_norm {
                (
                    Some(norm(need(t, &format!("{p}.self_attn.q_norm.weight"))?)),
                    Some(norm(need(t, &format!("{p}.self_attn.k_norm.weight"))?)),
                )
            } else {
                (None, None)
            };
            layers.push(Layer {
                wq,
                wk,
                wv,
                wo,
                gate,
                up,
                down,
                attn_norm: norm(need(t, &format!("{p}.input_layernorm.weight"))?),
                ffn_norm: norm(need(t, &format!("{p}.post_attention_layernorm.weight"))?),
                q_norm,
                k_norm,
            });
        }
        let output = match take(t, "lm_head.weight")? {
            Some(w) if !cfg.tie_word_embeddings => w,
            _ => embeddings.clone(),
        };
        let (cos, sin) = rotary_tables(&rope_frequencies(cfg.head_dim, cfg.rope_theta as f32, cfg.rope_scaling))?;
        Ok(Weights {
            vocab: embeddings.dim(0)?,
            embeddings,
            layers,
            norm: norm(need(t, "model.norm.weight")?),
            output: Matrix::Candle(QMatMul::Tensor(output)),
            cos,
            sin,
            n_head: cfg.heads,
            n_kv_head: cfg.kv_heads,
            head_dim: cfg.head_dim,
            interleaved: false,
        })
    }

    /// Run one step of several sequences: each row's tokens at its cache's
    /// position (appended to its cache). Returns the logits after each row's
    /// last token.
    pub fn forward(&self, rows: &mut [Row<'_>]) -> Result<Vec<Vec<f32>>> {
        let dev = &Device::Cpu;
        let ids: Vec<u32> = rows.iter().flat_map(|r| r.tokens.iter().copied()).collect();
        if ids.is_empty() || rows.iter().any(|r| r.tokens.is_empty()) {
            candle_core::bail!("a row without tokens");
        }
        if rows.iter().any(|r| r.cache.len + r.tokens.len() > MAX_CONTEXT) {
            candle_core::bail!("more than {MAX_CONTEXT} positions");
        }
        let mut x = self.embeddings.index_select(&Tensor::new(ids.as_slice(), dev)?, 0)?;
        for (l, layer) in self.layers.iter().enumerate() {
            let h = layer.attn_norm.forward(&x)?;
            let (q, k, v) = (layer.wq.forward(&h)?, layer.wk.forward(&h)?, layer.wv.forward(&h)?);
            let mut outs = Vec::with_capacity(rows.len());
            let mut at = 0;
            for row in rows.iter_mut() {
                let n = row.tokens.len();
                outs.push(self.attend(l, &q.narrow(0, at, n)?, &k.narrow(0, at, n)?, &v.narrow(0, at, n)?, row)?);
                at += n;
            }
            let attended = Tensor::cat(&outs, 0)?;
            let x1 = (layer.wo.forward(&attended)? + &x)?;
            let h = layer.ffn_norm.forward(&x1)?;
            let act = (candle_nn::ops::silu(&layer.gate.forward(&h)?)? * layer.up.forward(&h)?)?;
            x = (layer.down.forward(&act)? + x1)?;
        }
        for row in rows.iter_mut() {
            row.cache.len += row.tokens.len();
        }
        // Each row's last position only.
        let mut last = Vec::with_capacity(rows.len());
        let mut at = 0;
        for row in rows.iter() {
            at += row.tokens.len();
            last.push(x.narrow(0, at - 1, 1)?);
        }
        let x = self.norm.forward(&Tensor::cat(&last, 0)?)?;
        self.output.forward(&x)?.to_dtype(DType::F32)?.to_vec2::<f32>()
    }

    /// Attention of one sequence's new positions (`[n, heads * head dim]` each)
    /// over its cache and themselves, causal; the cache takes the new keys and values.
    fn attend(&self, layer: usize, q: &Tensor, k: &Tensor, v: &Tensor, row: &mut Row<'_>) -> Result<Tensor> {
        let n = row.tokens.len();
        let past = row.cache.len;
        let (hd, nh, nkv) = (self.head_dim, self.n_head, self.n_kv_head);
        let shape = |t: &Tensor, heads: usize| t.reshape((1, n, heads, hd))?.transpose(1, 2)?.contiguous();
        let (cos, sin) = (self.cos.narrow(0, past, n)?, self.sin.narrow(0, past, n)?);
        let rotate = |t: Tensor, norm: Option<&RmsNorm>| -> Result<Tensor> {
            let t = match norm {
                Some(norm) => norm.forward(&t)?,
                None => t,
            };
            if self.interleaved {
                candle_nn::rotary_emb::rope_i(&t, &cos, &sin)
            } else {
                candle_nn::rotary_emb::rope(&t, &cos, &sin)
            }
        };
        let q = rotate(shape(q, nh)?, self.layers[layer].q_norm.as_ref())?;
        let k = rotate(shape(k, nkv)?, self.layers[layer].k_norm.as_ref())?;
        let v = shape(v, nkv)?;
        let (k, v) = match row.cache.layers.get(layer) {
            Some((kc, vc)) if past > 0 => (Tensor::cat(&[kc, &k], 2)?, Tensor::cat(&[vc, &v], 2)?),
            _ => (k, v),
        };
        if row.cache.layers.len() > layer {
            row.cache.layers[layer] = (k.clone(), v.clone());
        } else {
            row.cache.layers.push((k.clone(), v.clone()));
        }
        let k = candle_transformers::utils::repeat_kv(k, nh / nkv)?;
        let v = candle_transformers::utils::repeat_kv(v, nh / nkv)?;
        let mut att = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?;
        if n > 1 {
            // Position past + i sees the keys up to past + i.
            let total = past + n;
            let mask: Vec<u8> = (0..n).flat_map(|i| (0..total).map(move |j| u8::from(j > past + i))).collect();
            let mask = Tensor::from_slice(&mask, (n, total), &Device::Cpu)?.broadcast_as(att.shape())?;
            let neg = Tensor::new(f32::NEG_INFINITY, &Device::Cpu)?.broadcast_as(att.shape())?;
            att = mask.where_cond(&neg, &att)?;
        }
        let att = candle_nn::ops::softmax_last_dim(&att)?;
        let y = att.matmul(&v.contiguous()?)?;
        y.transpose(1, 2)?.reshape((n, nh * hd))
    }
}
