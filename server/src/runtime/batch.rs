//! Merging requests into one batch and splitting the outputs back: the tensor
//! arithmetic of dynamic batching.

use std::time::{Duration, Instant};

use ndarray::{ArrayD, Axis, IxDyn, Slice, concatenate};
use zoo_api::BatchRate;

use super::{LoadedModel, Tensor, Tensors};

/// Apply `$body` to the array inside any variant, rebuilding the same variant.
macro_rules! map_variant {
    ($t:expr, $a:ident => $body:expr) => {
        match $t {
            Tensor::F32($a) => Tensor::F32($body),
            Tensor::F64($a) => Tensor::F64($body),
            Tensor::I64($a) => Tensor::I64($body),
            Tensor::I32($a) => Tensor::I32($body),
            Tensor::I16($a) => Tensor::I16($body),
            Tensor::I8($a) => Tensor::I8($body),
            Tensor::U8($a) => Tensor::U8($body),
            Tensor::U16($a) => Tensor::U16($body),
            Tensor::U32($a) => Tensor::U32($body),
            Tensor::U64($a) => Tensor::U64($body),
            Tensor::F16($a) => Tensor::F16($body),
            Tensor::BF16($a) => Tensor::BF16($body),
            Tensor::Bool($a) => Tensor::Bool($body),
            Tensor::Str($a) => Tensor::Str($body),
        }
    };
}

impl Tensor {
    /// Rows `start..start + len` of the first axis.
    pub fn rows(&self, start: usize, len: usize) -> Tensor {
        map_variant!(self, a => a.slice_axis(Axis(0), Slice::from(start..start + len)).to_owned())
    }

    /// The first `len` entries of the second axis (undoing padding).
    pub fn narrow_axis1(&self, len: usize) -> Tensor {
        map_variant!(self, a => a.slice_axis(Axis(1), Slice::from(0..len)).to_owned())
    }
}

/// `a` padded along axis 1 to `len` with `value`.
fn pad_axis1<T: Clone>(a: &ArrayD<T>, len: usize, value: T) -> ArrayD<T> {
    let mut shape = a.shape().to_vec();
    if shape.len() < 2 || shape[1] >= len {
        return a.clone();
    }
    shape[1] = len;
    let mut out = ArrayD::from_elem(IxDyn(&shape), value);
    out.slice_axis_mut(Axis(1), Slice::from(0..a.shape()[1])).assign(a);
    out
}

/// Stack the tensors of one input along the first axis. With `pad`, tensors may
/// differ in their second axis (token sequences) and are padded to the longest
/// with that value; otherwise every axis but the first must match.
pub fn concat(parts: &[&Tensor], pad: Option<i64>) -> Result<Tensor, String> {
    let first = parts.first().ok_or("nothing to stack")?;
    let longest = parts.iter().map(|t| t.shape().get(1).copied().unwrap_or(0)).max().unwrap_or(0);
    macro_rules! stack {
        ($variant:ident, $pad:expr) => {{
            let arrays: Vec<ArrayD<_>> = parts
                .iter()
                .map(|t| match (t, $pad) {
                    (Tensor::$variant(a), Some(v)) => Ok(pad_axis1(a, longest, v)),
                    (Tensor::$variant(a), None) => Ok(a.clone()),
                    _ => Err("the requests' tensors differ in type".to_string()),
                })
                .collect::<Result<_, _>>()?;
            let views: Vec<_> = arrays.iter().map(|a| a.view()).collect();
            Tensor::$variant(concatenate(Axis(0), &views).map_err(|e| e.to_string())?)
        }};
    }
    Ok(match first {
        Tensor::I64(_) => stack!(I64, pad),
        Tensor::I32(_) => stack!(I32, pad.map(|v| v as i32)),
        Tensor::F32(_) => stack!(F32, None::<f32>),
        Tensor::F64(_) => stack!(F64, None::<f64>),
        Tensor::I16(_) => stack!(I16, None::<i16>),
        Tensor::I8(_) => stack!(I8, None::<i8>),
        Tensor::U8(_) => stack!(U8, None::<u8>),
        Tensor::U16(_) => stack!(U16, None::<u16>),
        Tensor::U32(_) => stack!(U32, None::<u32>),
        Tensor::U64(_) => stack!(U64, None::<u64>),
        Tensor::F16(_) => stack!(F16, None::<half::f16>),
        Tensor::BF16(_) => stack!(BF16, None::<half::bf16>),
        Tensor::Bool(_) => stack!(Bool, None::<bool>),
        Tensor::Str(_) => stack!(Str, None::<String>),
    })
}

/// The key requests must share to run in one batch: each input's name, type and
/// every axis after the first (the second too, unless it is padded).
pub fn compat_key(inputs: &Tensors, padded: &dyn Fn(&str) -> bool) -> Vec<(String, &'static str, Vec<usize>)> {
    inputs
        .iter()
        .map(|(name, t)| {
            let skip = if padded(name) { 2 } else { 1 };
            (name.clone(), t.dtype().as_str(), t.shape().iter().skip(skip).copied().collect())
        })
        .collect()
}

/// Measures how many rows per second a model runs at batch sizes 1, 2, 4, ...
/// and `max`, each batch its probe input (one row, as the warm-up has it)
/// repeated. One run per step, so that a host can measure between requests; the
/// sizes take turns (a round runs each once: one untimed round, then
/// `TIMED_ROUNDS` timed ones) and each keeps its fastest run, so that a moment of
/// a busy machine slows one run of every size rather than every run of one.
pub struct Measurer {
    probe: Tensors,
    pad: Vec<(String, i64)>,
    sizes: Vec<usize>,
    /// Fastest timed run of each size.
    best: Vec<Duration>,
    /// The round (0: untimed) and the size within it to run next.
    round: usize,
    at: usize,
    rates: Vec<BatchRate>,
}

/// The largest batch measured, in bytes of inputs.
const MEASURE_BYTES: u64 = 64 * 1024 * 1024;

/// Timed rounds (after one untimed).
const TIMED_ROUNDS: usize = 5;

impl Measurer {
    pub fn new(probe: Tensors, max: usize, pad: Vec<(String, i64)>) -> Measurer {
        let mut sizes: Vec<usize> =
            std::iter::successors(Some(1usize), |n| n.checked_mul(2)).take_while(|n| *n < max).collect();
        sizes.push(max.max(1));
        // Only sizes the probe's rows divide, and batches of at most MEASURE_BYTES
        // (a size given at deploy may be huge; larger batches are not measured).
        let rows = rows_of(&probe);
        let bytes_per_row = (probe.iter().map(|(_, t)| t.byte_size()).sum::<u64>() / rows as u64).max(1);
        sizes.retain(|n| n % rows == 0 && (*n as u64).saturating_mul(bytes_per_row) <= MEASURE_BYTES);
        let best = vec![Duration::MAX; sizes.len()];
        Measurer { probe, pad, sizes, best, round: 0, at: 0, rates: Vec::new() }
    }

    /// Make one run; `false` once every size is measured (a failed run drops its
    /// size and the larger ones).
    pub fn step(&mut self, model: &mut dyn LoadedModel) -> bool {
        if self.round > TIMED_ROUNDS || self.sizes.is_empty() {
            return false;
        }
        let n = self.sizes[self.at];
        let pad = |name: &str| self.pad.iter().find(|(p, _)| p == name).map(|(_, v)| *v);
        let ran = merge(&vec![&self.probe; n / rows_of(&self.probe)], &pad).ok().and_then(|batch| {
            let t = Instant::now();
            let ok = matches!(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model.run(batch))), Ok(Ok(_)));
            ok.then(|| t.elapsed())
        });
        match ran {
            Some(took) if self.round > 0 => self.best[self.at] = self.best[self.at].min(took),
            Some(_) => {}
            None => {
                self.sizes.truncate(self.at);
                self.best.truncate(self.at);
            }
        }
        self.at += 1;
        if self.at >= self.sizes.len() {
            (self.round, self.at) = (self.round + 1, 0);
        }
        if self.round > TIMED_ROUNDS || self.sizes.is_empty() {
            self.rates = self
                .sizes
                .iter()
                .zip(&self.best)
                .map(|(n, t)| BatchRate { batch: *n as u32, rows_per_s: *n as f64 / t.as_secs_f64().max(1e-9) })
                .collect();
            return false;
        }
        true
    }

    /// The rows per second of each size, once measured.
    pub fn rates(&self) -> &[BatchRate] {
        &self.rates
    }
}

fn rows_of(t: &Tensors) -> usize {
    t.first().and_then(|(_, t)| t.shape().first().copied()).unwrap_or(1).max(1)
}

/// The batch size to cap a version at: the smallest whose rows per second are
/// within 5 % of the best measured (`None`: nothing measured).
pub fn cap(rates: &[BatchRate]) -> Option<u32> {
    let best = rates.iter().map(|r| r.rows_per_s).fold(0.0, f64::max);
    rates.iter().find(|r| r.rows_per_s >= 0.95 * best).map(|r| r.batch)
}

/// The length a request's padded inputs have (their second axis), if any are padded.
pub fn padded_len(inputs: &Tensors, padded: &dyn Fn(&str) -> bool) -> Option<usize> {
    inputs.iter().find(|(name, _)| padded(name)).and_then(|(_, t)| t.shape().get(1).copied())
}

/// Split requests that may share a batch into runs of similar length, so that
/// short texts are not padded to a long one: sorted by length, a run ends where
/// the next request is more than `ratio` times as long as the run's shortest.
/// Each run pays the model's fixed cost once more; padding costs every row.
pub fn by_length<T>(mut items: Vec<T>, len: impl Fn(&T) -> usize, ratio: f64) -> Vec<Vec<T>> {
    items.sort_by_key(&len);
    let mut runs: Vec<Vec<T>> = Vec::new();
    for item in items {
        let l = len(&item);
        match runs.last_mut() {
            Some(run) if l as f64 <= len(&run[0]).max(1) as f64 * ratio => run.push(item),
            _ => runs.push(vec![item]),
        }
    }
    runs
}

/// Merge the inputs of several requests (each `rows` long) into one batch.
pub fn merge(requests: &[&Tensors], pad: &dyn Fn(&str) -> Option<i64>) -> Result<Tensors, String> {
    let first = requests.first().ok_or("no request")?;
    first
        .iter()
        .map(|(name, _)| {
            let parts: Vec<&Tensor> = requests
                .iter()
                .map(|r| r.iter().find(|(n, _)| n == name).map(|(_, t)| t).ok_or("the requests' inputs differ"))
                .collect::<Result<_, _>>()?;
            Ok((name.clone(), concat(&parts, pad(name))?))
        })
        .collect()
}

/// Split batch outputs back into one set per request, by their row counts. Fails
/// when an output has no batch axis of the batch's size (the model does not batch).
pub fn split(outputs: Tensors, rows: &[usize]) -> Result<Vec<Tensors>, String> {
    let total: usize = rows.iter().sum();
    for (name, t) in &outputs {
        if t.shape().first() != Some(&total) {
            return Err(format!("output '{name}' has shape {:?}, not {total} rows", t.shape()));
        }
    }
    let mut start = 0;
    Ok(rows
        .iter()
        .map(|&n| {
            let part = outputs.iter().map(|(name, t)| (name.clone(), t.rows(start, n))).collect();
            start += n;
            part
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(rows: &[&[i64]]) -> Tensor {
        let len = rows[0].len();
        Tensor::I64(ArrayD::from_shape_vec(IxDyn(&[rows.len(), len]), rows.concat()).unwrap())
    }

    #[test]
    fn token_batches_are_padded_and_split_back() {
        let a: Tensors = vec![("input_ids".into(), ids(&[&[101, 7, 102]]))];
        let b: Tensors = vec![("input_ids".into(), ids(&[&[101, 102], &[101, 9]]))];
        let pad = |n: &str| (n == "input_ids").then_some(0);
        let merged = merge(&[&a, &b], &pad).unwrap();
        assert_eq!(merged[0].1, ids(&[&[101, 7, 102], &[101, 102, 0], &[101, 9, 0]]));
        let parts = split(merged, &[1, 2]).unwrap();
        assert_eq!(parts[0][0].1, ids(&[&[101, 7, 102]]));
        assert_eq!(parts[1][0].1.narrow_axis1(2), ids(&[&[101, 102], &[101, 9]]));
    }

    #[test]
    fn mismatched_requests_are_not_merged() {
        let f = |n: usize| Tensor::F32(ArrayD::zeros(IxDyn(&[1, n])));
        let a: Tensors = vec![("x".into(), f(4))];
        let b: Tensors = vec![("x".into(), f(5))];
        let no_pad = |_: &str| None;
        assert_ne!(compat_key(&a, &|_| false), compat_key(&b, &|_| false));
        assert!(merge(&[&a, &b], &no_pad).is_err());
        // An output without the batch's rows cannot be split.
        assert!(split(vec![("y".into(), f(3))], &[1, 1]).is_err());
    }

    #[test]
    fn texts_of_similar_length_share_a_run() {
        let runs = by_length(vec![22, 6, 9, 8, 11, 10, 40, 6], |n| *n, 2.0);
        assert_eq!(runs, vec![vec![6, 6, 8, 9, 10, 11], vec![22, 40]]);
        assert_eq!(by_length(vec![5, 5, 5], |n| *n, 2.0), vec![vec![5, 5, 5]]);
        assert_eq!(by_length(Vec::<usize>::new(), |n| *n, 2.0), Vec::<Vec<usize>>::new());
    }

    #[test]
    fn a_version_is_capped_where_larger_batches_stop_paying() {
        let rate = |batch, rows_per_s| BatchRate { batch, rows_per_s };
        // Throughput that grows, then flattens, then falls (int8 kernels, padding).
        let rates = [rate(1, 300.0), rate(2, 520.0), rate(4, 800.0), rate(8, 960.0), rate(16, 990.0), rate(32, 700.0)];
        assert_eq!(cap(&rates), Some(8));
        // Batching never pays: one row at a time.
        assert_eq!(cap(&[rate(1, 300.0), rate(2, 250.0), rate(4, 200.0)]), Some(1));
        assert_eq!(cap(&[]), None);
    }

    /// Each run costs 2 ms, plus 1 ms per row beyond 4: batches pay up to 4 rows.
    struct Costly;

    impl LoadedModel for Costly {
        fn run(&mut self, inputs: Tensors) -> Result<Tensors, super::super::RuntimeError> {
            let rows = inputs[0].1.shape()[0];
            std::thread::sleep(Duration::from_millis(2 + rows.saturating_sub(4) as u64));
            Ok(inputs)
        }
    }

    #[test]
    fn measuring_runs_each_size_up_to_the_maximum() {
        let inputs = vec![("x".to_string(), Tensor::F32(ArrayD::zeros(IxDyn(&[1, 3]))))];
        let mut m = Measurer::new(inputs, 12, vec![]);
        let mut steps = 1;
        while m.step(&mut Costly) {
            steps += 1;
        }
        let rates = m.rates();
        assert_eq!(rates.iter().map(|r| r.batch).collect::<Vec<_>>(), [1, 2, 4, 8, 12]);
        assert_eq!(steps, 5 * (1 + TIMED_ROUNDS), "one untimed and five timed runs per size, one per step");
        // A run of one row takes at least 2 ms: at most 500 rows/s.
        assert!(rates[0].rows_per_s <= 500.0, "{rates:?}");
        assert!(rates[2].rows_per_s > rates[0].rows_per_s * 2.0, "{rates:?}");
        assert_eq!(cap(rates), Some(4), "{rates:?}");
    }

    #[test]
    fn huge_batch_sizes_are_not_measured() {
        // 4 MiB a row: at most 16 rows (64 MiB) are measured, whatever the maximum.
        let probe = vec![("x".to_string(), Tensor::F32(ArrayD::zeros(IxDyn(&[1, 1024 * 1024]))))];
        let m = Measurer::new(probe, 4_000_000_000, vec![]);
        assert_eq!(m.sizes, [1, 2, 4, 8, 16]);
    }
}
