//! Merging requests into one batch and splitting the outputs back: the tensor
//! arithmetic of dynamic batching.

use ndarray::{ArrayD, Axis, IxDyn, Slice, concatenate};

use super::{Tensor, Tensors};

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
}
