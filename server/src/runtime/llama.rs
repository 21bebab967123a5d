//! A Llama decoder over GGUF weights (quantized as they are in the file) that
//! runs a step of several sequences at once: their new tokens go through every
//! weight matrix together, as the rows of one matrix product, so that each
//! quantized weight is read once per step rather than once per sequence (what
//! makes several streams cheaper than one after another), while each sequence
//! keeps its own key/value cache and position. The arithmetic is candle's
//! quantized Llama's (`candle_transformers::models::quantized_llama`), row by
//! row: a sequence decoded alone or with others gets the same logits.

use candle_core::quantized::{QMatMul, QTensor, gguf_file};
use candle_core::{DType, Device, Module, Result, Tensor};

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

struct Layer {
    wq: QMatMul,
    wk: QMatMul,
    wv: QMatMul,
    wo: QMatMul,
    gate: QMatMul,
    up: QMatMul,
    down: QMatMul,
    attn_norm: RmsNorm,
    ffn_norm: RmsNorm,
}

/// The weights, shared by every sequence.
pub struct Weights {
    embeddings: Tensor,
    layers: Vec<Layer>,
    norm: RmsNorm,
    output: QMatMul,
    cos: Tensor,
    sin: Tensor,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
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

impl Weights {
    /// The `llama` architecture of a GGUF file (as llama.cpp names its tensors).
    pub fn from_gguf<R: std::io::Read + std::io::Seek>(ct: &gguf_file::Content, r: &mut R) -> Result<Weights> {
        let dev = &Device::Cpu;
        let md = |k: &str| {
            ct.metadata
                .get(&format!("llama.{k}"))
                .ok_or_else(|| candle_core::Error::Msg(format!("llama.{k} is missing")))
        };
        let n_head = md("attention.head_count")?.to_u32()? as usize;
        let n_kv_head = md("attention.head_count_kv").and_then(|v| v.to_u32()).map_or(n_head, |v| v as usize);
        let blocks = md("block_count")?.to_u32()? as usize;
        let dim = md("embedding_length")?.to_u32()? as usize;
        let rope_dim = md("rope.dimension_count")?.to_u32()? as usize;
        let eps = md("attention.layer_norm_rms_epsilon").and_then(|v| v.to_f32()).unwrap_or(1e-5);
        let base = md("rope.freq_base").and_then(|v| v.to_f32()).unwrap_or(10_000.0);
        if n_head == 0 || n_kv_head == 0 || !dim.is_multiple_of(n_head) || !n_head.is_multiple_of(n_kv_head) {
            candle_core::bail!("heads ({n_head}, {n_kv_head} for keys) do not divide the width {dim}");
        }
        let theta: Vec<f32> = (0..rope_dim).step_by(2).map(|i| 1.0 / base.powf(i as f32 / rope_dim as f32)).collect();
        let theta = Tensor::new(theta.as_slice(), dev)?;
        let positions = Tensor::arange(0, MAX_CONTEXT as u32, dev)?.to_dtype(DType::F32)?.reshape((MAX_CONTEXT, 1))?;
        let angles = positions.matmul(&theta.reshape((1, ()))?)?;
        let embedded = ct.tensor(r, "token_embd.weight", dev)?;
        let embeddings = embedded.dequantize(dev)?;
        let vocab = embeddings.dim(0)?;
        let output = match ct.tensor(r, "output.weight", dev) {
            Ok(t) => t,
            Err(_) => embedded,
        };
        let mut layers = Vec::with_capacity(blocks);
        for i in 0..blocks {
            let mut t = |n: &str| ct.tensor(r, &format!("blk.{i}.{n}.weight"), dev);
            layers.push(Layer {
                wq: QMatMul::from_qtensor(t("attn_q")?)?,
                wk: QMatMul::from_qtensor(t("attn_k")?)?,
                wv: QMatMul::from_qtensor(t("attn_v")?)?,
                wo: QMatMul::from_qtensor(t("attn_output")?)?,
                gate: QMatMul::from_qtensor(t("ffn_gate")?)?,
                up: QMatMul::from_qtensor(t("ffn_up")?)?,
                down: QMatMul::from_qtensor(t("ffn_down")?)?,
                attn_norm: RmsNorm::new(t("attn_norm")?, eps)?,
                ffn_norm: RmsNorm::new(t("ffn_norm")?, eps)?,
            });
        }
        Ok(Weights {
            embeddings,
            layers,
            norm: RmsNorm::new(ct.tensor(r, "output_norm.weight", dev)?, eps)?,
            output: QMatMul::from_qtensor(output)?,
            cos: angles.cos()?,
            sin: angles.sin()?,
            n_head,
            n_kv_head,
            head_dim: dim / n_head,
            vocab,
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
        let q = candle_nn::rotary_emb::rope_i(&shape(q, nh)?, &cos, &sin)?;
        let k = candle_nn::rotary_emb::rope_i(&shape(k, nkv)?, &cos, &sin)?;
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
