//! Matrix products with Q4_1 weights (GGUF's 4-bit type with a per-block
//! minimum), the way ggml computes them: the activations quantized per row to
//! Q8_1, integer dot products per block of 32, scaled in f32.
//!
//! candle has no vectorized Q4_1 dot product (its `vec_dot` for Q4_1 is the
//! scalar reference, 77 % of a SmolLM2-135M Q4_1 decode step in a profile);
//! this one computes the same numbers (bit for bit: the integer part is exact
//! and the f32 part keeps candle's order of operations, see the test), with the
//! block scales converted to f32 once at load and ranges of output columns
//! spread over the cores on candle's own worker threads. On 2 cores it decodes
//! SmolLM2-135M Q4_1 about 2.8x as fast as candle's (README, Text generation).

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Result, Tensor};
use half::f16;

/// Weights per block.
const QK: usize = 32;

/// One block of one output column: scale, minimum and 32 4-bit values (low
/// nibbles are the first 16 weights, high nibbles the next 16).
#[derive(Clone, Copy)]
struct Block {
    d: f32,
    m: f32,
    qs: [u8; QK / 2],
}

/// One block of one activation row, quantized to 8 bits (Q8_1): scale, the
/// scale times the sum of the quants, and the quants.
#[derive(Clone, Copy)]
struct Act {
    d: f32,
    s: f32,
    qs: [i8; QK],
}

/// A Q4_1 weight matrix of `n` output columns over `k` inputs (GGUF's layout:
/// one row of blocks per output).
pub struct Q41Matrix {
    n: usize,
    k: usize,
    blocks: Vec<Block>,
}

impl Q41Matrix {
    /// The matrix of a Q4_1 tensor of shape (n, k); `None` for another type.
    pub fn from_qtensor(t: &QTensor) -> Result<Option<Q41Matrix>> {
        if t.dtype() != GgmlDType::Q4_1 {
            return Ok(None);
        }
        let (n, k) = t.shape().dims2()?;
        if k % QK != 0 {
            return Ok(None);
        }
        let data = t.data()?;
        let expected = n * (k / QK) * 20;
        if data.len() != expected {
            candle_core::bail!("Q4_1 tensor of {n}x{k} holds {} bytes, not {expected}", data.len());
        }
        let blocks = data
            .chunks_exact(20)
            .map(|b| {
                let mut qs = [0u8; QK / 2];
                qs.copy_from_slice(&b[4..20]);
                Block { d: f16::from_le_bytes([b[0], b[1]]).to_f32(), m: f16::from_le_bytes([b[2], b[3]]).to_f32(), qs }
            })
            .collect();
        Ok(Some(Q41Matrix { n, k, blocks }))
    }

    /// `x` (..., k) times the transposed weights: (..., n).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let Some((&k, lead)) = dims.split_last() else { candle_core::bail!("a scalar input to a Q4_1 matrix") };
        if k != self.k {
            candle_core::bail!("input of {k} features to a Q4_1 matrix of {}", self.k);
        }
        let m: usize = lead.iter().product();
        let xs = x.flatten_all()?.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?;
        let out = self.matmul(m, &xs);
        let mut shape = lead.to_vec();
        shape.push(self.n);
        Tensor::from_vec(out, shape, x.device())
    }

    fn matmul(&self, m: usize, xs: &[f32]) -> Vec<f32> {
        let kb = self.k / QK;
        let acts: Vec<Act> = xs.chunks_exact(QK).map(quantize_q8_1).collect();
        let n = self.n;
        // Ranges of output columns, on candle's own worker threads (a second
        // pool would fight it for the cores between the products).
        let tiles = std::sync::Mutex::new(Vec::new());
        candle_core::utils::barrier_pool().execute_chunked(n, |cols| {
            let width = cols.len();
            let mut tile = vec![0f32; m * width];
            for (i, c) in cols.clone().enumerate() {
                let w = &self.blocks[c * kb..(c + 1) * kb];
                for r in 0..m {
                    tile[r * width + i] = dot(w, &acts[r * kb..(r + 1) * kb]);
                }
            }
            tiles.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((cols.start, tile));
        });
        let mut out = vec![0f32; m * n];
        for (c0, tile) in tiles.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner) {
            let width = tile.len() / m.max(1);
            for r in 0..m {
                out[r * n + c0..r * n + c0 + width].copy_from_slice(&tile[r * width..(r + 1) * width]);
            }
        }
        out
    }
}

/// ggml's `quantize_row_q8_1` for one block, as candle computes it (`s` is the
/// f16 product of the f16 sum and the f16 scale).
fn quantize_q8_1(xs: &[f32]) -> Act {
    let amax = xs.iter().fold(0f32, |a, x| a.max(x.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0i8; QK];
    let mut sum = 0i32;
    for (q, x) in qs.iter_mut().zip(xs) {
        *q = f32::round(x * id) as i8;
        sum += i32::from(*q);
    }
    let d16 = f16::from_f32(d);
    Act { d: d16.to_f32(), s: (f16::from_f32(sum as f32) * d16).to_f32(), qs }
}

/// The Q4_1 x Q8_1 dot product of one column and one row, in candle's (and
/// ggml's reference) order of f32 operations.
fn dot(w: &[Block], a: &[Act]) -> f32 {
    let mut sumf = 0f32;
    for (w, a) in w.iter().zip(a) {
        let sumi = dot_quants(&w.qs, &a.qs);
        sumf += sumi as f32 * w.d * a.d + w.m * a.s;
    }
    sumf
}

/// The integer part, exact: 16 bytes of nibbles (the low ones are the first
/// 16 values) against 32 8-bit quants.
#[inline]
fn dot_quants(w: &[u8; QK / 2], a: &[i8; QK]) -> i32 {
    let (lo, hi) = a.split_at(QK / 2);
    let mut sum = 0i32;
    for j in 0..QK / 2 {
        sum += i32::from(i16::from(w[j] & 0x0F)) * i32::from(i16::from(lo[j]));
    }
    for j in 0..QK / 2 {
        sum += i32::from(i16::from(w[j] >> 4)) * i32::from(i16::from(hi[j]));
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_core::Module;
    use candle_core::quantized::QMatMul;

    fn random(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..len)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn equals_candles_q4_1_matmul_bit_for_bit() {
        let dev = Device::Cpu;
        for (n, k, m) in [(96, 576, 1), (70, 1536, 5), (33, 64, 17)] {
            let w = Tensor::from_vec(random(n * k, 7), (n, k), &dev).unwrap();
            let q = QTensor::quantize(&w, GgmlDType::Q4_1).unwrap();
            let ours = Q41Matrix::from_qtensor(&q).unwrap().expect("a Q4_1 matrix");
            let x = Tensor::from_vec(random(m * k, 11), (1, m, k), &dev).unwrap();
            let want = QMatMul::from_qtensor(q).unwrap().forward(&x).unwrap();
            let got = ours.forward(&x).unwrap();
            assert_eq!(got.dims(), want.dims());
            let (got, want) = (
                got.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                want.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            );
            assert_eq!(got, want, "{n}x{k}, {m} rows");
        }
    }

    #[test]
    fn other_types_are_left_to_candle() {
        let w = Tensor::zeros((8, 64), candle_core::DType::F32, &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
        assert!(Q41Matrix::from_qtensor(&q).unwrap().is_none());
    }
}
