//! The `tensor` task: JSON nested arrays <-> typed tensors, checked against the
//! signature (names, dtypes, ranks, fixed dimensions).

use ndarray::{ArrayD, IxDyn};
use serde_json::{Map, Value};
use zoo_api::{DType, Dim, TensorSpec, ValueKind};

use crate::error::{Error, Result};
use crate::runtime::{Tensor, Tensors};

/// Limits on what one request may ask for.
#[derive(Debug, Clone, Copy)]
pub struct TensorLimits {
    /// Most elements across all inputs of one request.
    pub max_elements: usize,
    /// Deepest nesting of arrays.
    pub max_rank: usize,
    /// `null` in a float input is a missing value (NaN), as MLflow reads DataFrames.
    pub null_is_nan: bool,
}

impl Default for TensorLimits {
    fn default() -> Self {
        TensorLimits { max_elements: 16 * 1024 * 1024, max_rank: 8, null_is_nan: false }
    }
}

/// Parse `{"inputs": {...}}` (or a bare array for single-input models) into tensors
/// in signature order.
pub fn parse_inputs(inputs: &Value, specs: &[TensorSpec], limits: TensorLimits) -> Result<Tensors> {
    let named: Vec<(&TensorSpec, &Value)> = match inputs {
        Value::Object(map) => {
            for key in map.keys() {
                if !specs.iter().any(|s| &s.name == key) {
                    return Err(Error::InvalidInput(format!(
                        "unknown input '{key}'; the model takes: {}",
                        names(specs)
                    )));
                }
            }
            specs
                .iter()
                .filter_map(|s| match map.get(&s.name) {
                    Some(v) => Some(Ok((s, v))),
                    None if s.optional => None,
                    None => Some(Err(Error::InvalidInput(format!(
                        "missing input '{}' ({}); the model takes: {}",
                        s.name,
                        s.type_text,
                        names(specs)
                    )))),
                })
                .collect::<Result<_>>()?
        }
        Value::Array(_) if specs.len() == 1 => vec![(&specs[0], inputs)],
        _ => {
            return Err(Error::InvalidInput(format!(
                "\"inputs\" must be an object mapping input names to nested arrays; the model takes: {}",
                names(specs)
            )));
        }
    };
    let mut budget = limits.max_elements;
    named.into_iter().map(|(spec, v)| Ok((spec.name.clone(), parse_one(v, spec, limits, &mut budget)?))).collect()
}

fn names(specs: &[TensorSpec]) -> String {
    specs.iter().map(|s| format!("{} {}", s.name, s.type_text)).collect::<Vec<_>>().join(", ")
}

/// The element type of one input: the signature's, or the one a typed value
/// `{"dtype": "int64", "data": [...]}` names where the signature names none (a
/// TorchScript `Tensor`, which is float32 unless the request says otherwise).
fn typed<'a>(v: &'a Value, spec: &TensorSpec) -> Result<(&'a Value, DType)> {
    let name = &spec.name;
    let Value::Object(o) = v else {
        return Ok((v, if spec.dtype == DType::Other { DType::Float32 } else { spec.dtype }));
    };
    let data = o.get("data").ok_or_else(|| {
        Error::InvalidInput(format!("input '{name}': a typed value is {{\"dtype\": \"...\", \"data\": [...]}}"))
    })?;
    if let Some(k) = o.keys().find(|k| *k != "data" && *k != "dtype") {
        return Err(Error::InvalidInput(format!("input '{name}': unknown field '{k}' in a typed value")));
    }
    let Some(given) = o.get("dtype") else { return typed(data, spec) };
    let dtype = given.as_str().and_then(DType::parse).filter(|d| *d != DType::Other).ok_or_else(|| {
        Error::InvalidInput(format!(
            "input '{name}': unknown dtype {given}; use float32, float64, int64, int32, bool, ..."
        ))
    })?;
    if spec.dtype != DType::Other && spec.dtype != dtype {
        return Err(Error::InvalidInput(format!(
            "input '{name}' is {} ({}), not {}",
            spec.dtype.as_str(),
            spec.type_text,
            dtype.as_str()
        )));
    }
    Ok((data, dtype))
}

fn parse_one(v: &Value, spec: &TensorSpec, limits: TensorLimits, budget: &mut usize) -> Result<Tensor> {
    let max_rank = limits.max_rank;
    let nan = |x: &Value| if limits.null_is_nan && x.is_null() { Some(f64::NAN) } else { None };
    let name = &spec.name;
    if spec.kind != ValueKind::Tensor {
        return Err(Error::InvalidInput(format!(
            "input '{name}' is a {}, which zoo cannot build from JSON",
            spec.type_text
        )));
    }
    let (v, dtype) = typed(v, spec)?;
    // Shape from the first element at each depth; every array is then checked.
    let mut shape = Vec::new();
    let mut cur = v;
    while let Value::Array(items) = cur {
        shape.push(items.len());
        if shape.len() > max_rank {
            return Err(Error::InvalidInput(format!("input '{name}' is nested deeper than {max_rank} levels")));
        }
        match items.first() {
            Some(first) => cur = first,
            None => break,
        }
    }
    let count = shape.iter().try_fold(1usize, |a, d| a.checked_mul(*d)).unwrap_or(usize::MAX);
    if count > *budget {
        return Err(Error::InvalidInput(format!("input '{name}' has more elements than a request may carry")));
    }
    *budget -= count;
    if let Some(expected) = &spec.shape {
        if expected.len() != shape.len() {
            return Err(Error::InvalidInput(format!(
                "input '{name}' must have {} dimensions ({}), got {} (shape {:?})",
                expected.len(),
                spec.type_text,
                shape.len(),
                shape
            )));
        }
        for (i, (d, got)) in expected.iter().zip(&shape).enumerate() {
            if let Dim::Fixed(n) = d
                && *n as usize != *got
            {
                return Err(Error::InvalidInput(format!(
                    "input '{name}' dimension {i} must be {n} ({}), got {got}",
                    spec.type_text
                )));
            }
        }
    }
    let mut flat = Vec::with_capacity(count);
    flatten(v, &shape, 0, &mut flat, name)?;
    let shape = IxDyn(&shape);
    macro_rules! build {
        ($t:ty, $variant:ident, $conv:expr) => {{
            let vals =
                flat.iter().map(|x| $conv(*x).ok_or_else(|| bad_value(name, dtype, x))).collect::<Result<Vec<$t>>>()?;
            Tensor::$variant(
                ArrayD::from_shape_vec(shape, vals).map_err(|e| Error::InvalidInput(format!("input '{name}': {e}")))?,
            )
        }};
    }
    Ok(match dtype {
        DType::Float32 => build!(f32, F32, |x: &Value| x
            .as_f64()
            .map(|f| f as f32)
            .filter(|f| f.is_finite())
            .or_else(|| nan(x).map(|f| f as f32))),
        DType::Float64 => build!(f64, F64, |x: &Value| x.as_f64().or_else(|| nan(x))),
        DType::Int64 => build!(i64, I64, |x: &Value| x.as_i64()),
        DType::Int32 => build!(i32, I32, |x: &Value| x.as_i64().and_then(|i| i32::try_from(i).ok())),
        DType::Int16 => build!(i16, I16, |x: &Value| x.as_i64().and_then(|i| i16::try_from(i).ok())),
        DType::Int8 => build!(i8, I8, |x: &Value| x.as_i64().and_then(|i| i8::try_from(i).ok())),
        DType::Uint8 => build!(u8, U8, |x: &Value| x.as_u64().and_then(|i| u8::try_from(i).ok())),
        DType::Uint16 => build!(u16, U16, |x: &Value| x.as_u64().and_then(|i| u16::try_from(i).ok())),
        DType::Uint32 => build!(u32, U32, |x: &Value| x.as_u64().and_then(|i| u32::try_from(i).ok())),
        DType::Uint64 => build!(u64, U64, |x: &Value| x.as_u64()),
        DType::Bool => build!(bool, Bool, |x: &Value| x
            .as_bool()
            .or_else(|| x.as_i64().filter(|i| *i == 0 || *i == 1).map(|i| i == 1))),
        DType::String => build!(String, Str, |x: &Value| x.as_str().map(str::to_string)),
        other => {
            return Err(Error::InvalidInput(format!(
                "input '{name}' has element type {}, which zoo cannot build from JSON",
                other.as_str()
            )));
        }
    })
}

fn bad_value(name: &str, dtype: DType, x: &Value) -> Error {
    Error::InvalidInput(format!("input '{name}' expects {} values, got {x}", dtype.as_str()))
}

fn flatten<'a>(v: &'a Value, shape: &[usize], depth: usize, out: &mut Vec<&'a Value>, name: &str) -> Result<()> {
    if depth == shape.len() {
        if v.is_array() {
            return Err(Error::InvalidInput(format!("input '{name}' is not rectangular: it nests deeper in places")));
        }
        out.push(v);
        return Ok(());
    }
    match v {
        Value::Array(items) if items.len() == shape[depth] => {
            for item in items {
                flatten(item, shape, depth + 1, out, name)?;
            }
            Ok(())
        }
        _ => Err(Error::InvalidInput(format!(
            "input '{name}' is not rectangular: expected an array of {} at depth {depth}",
            shape[depth]
        ))),
    }
}

/// Render output tensors as `{"name": nested array}`.
pub fn outputs_json(outputs: &Tensors) -> Map<String, Value> {
    outputs.iter().map(|(n, t)| (n.clone(), tensor_json(t))).collect()
}

/// A tensor as nested JSON arrays (non-finite floats become null).
pub fn tensor_json(t: &Tensor) -> Value {
    fn nest<T: Clone>(a: &ArrayD<T>, f: impl Fn(&T) -> Value + Copy) -> Value {
        fn rec<T>(data: &[T], shape: &[usize], f: impl Fn(&T) -> Value + Copy) -> Value {
            match shape {
                [] => data.first().map(f).unwrap_or(Value::Null),
                [_] => Value::Array(data.iter().map(f).collect()),
                [n, rest @ ..] => {
                    let stride: usize = rest.iter().product();
                    Value::Array((0..*n).map(|i| rec(&data[i * stride..(i + 1) * stride], rest, f)).collect())
                }
            }
        }
        let std = a.as_standard_layout();
        rec(std.as_slice().unwrap_or(&[]), a.shape(), f)
    }
    let float = |x: f64| serde_json::Number::from_f64(x).map(Value::Number).unwrap_or(Value::Null);
    match t {
        Tensor::F32(a) => nest(a, |x| float(*x as f64)),
        Tensor::F64(a) => nest(a, |x| float(*x)),
        Tensor::I64(a) => nest(a, |x| Value::from(*x)),
        Tensor::I32(a) => nest(a, |x| Value::from(*x)),
        Tensor::I16(a) => nest(a, |x| Value::from(*x)),
        Tensor::I8(a) => nest(a, |x| Value::from(*x)),
        Tensor::U8(a) => nest(a, |x| Value::from(*x)),
        Tensor::U16(a) => nest(a, |x| Value::from(*x)),
        Tensor::U32(a) => nest(a, |x| Value::from(*x)),
        Tensor::U64(a) => nest(a, |x| Value::from(*x)),
        Tensor::Bool(a) => nest(a, |x| Value::from(*x)),
        Tensor::Str(a) => nest(a, |x| Value::String(x.clone())),
    }
}

/// Inputs of the right types and shapes (symbolic dimensions set to 1), for warm-up.
pub fn example_inputs(specs: &[TensorSpec]) -> Option<Tensors> {
    specs
        .iter()
        .map(|s| {
            let shape: Vec<usize> = s
                .shape
                .as_ref()?
                .iter()
                .map(|d| match d {
                    Dim::Fixed(n) => *n as usize,
                    _ => 1,
                })
                .collect();
            let shape = IxDyn(&shape);
            let t = match s.dtype {
                DType::Float32 => Tensor::F32(ArrayD::zeros(shape)),
                DType::Float64 => Tensor::F64(ArrayD::zeros(shape)),
                DType::Int64 => Tensor::I64(ArrayD::zeros(shape)),
                DType::Int32 => Tensor::I32(ArrayD::zeros(shape)),
                DType::Int16 => Tensor::I16(ArrayD::zeros(shape)),
                DType::Int8 => Tensor::I8(ArrayD::zeros(shape)),
                DType::Uint8 => Tensor::U8(ArrayD::zeros(shape)),
                DType::Uint16 => Tensor::U16(ArrayD::zeros(shape)),
                DType::Uint32 => Tensor::U32(ArrayD::zeros(shape)),
                DType::Uint64 => Tensor::U64(ArrayD::zeros(shape)),
                DType::Bool => Tensor::Bool(ArrayD::from_elem(shape, false)),
                DType::String => Tensor::Str(ArrayD::from_elem(shape, String::new())),
                _ => return None,
            };
            Some((s.name.clone(), t))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(name: &str, dtype: DType, shape: Vec<Dim>) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            kind: ValueKind::Tensor,
            dtype,
            shape: Some(shape),
            type_text: format!("tensor({})", dtype.as_str()),
            doc: String::new(),
            optional: false,
        }
    }

    #[test]
    fn parses_named_and_bare_inputs() {
        let specs = vec![spec("X", DType::Float32, vec![Dim::Symbolic("N".into()), Dim::Fixed(2)])];
        let t = parse_inputs(&json!({"X": [[1, 2], [3, 4.5]]}), &specs, TensorLimits::default()).unwrap();
        assert_eq!(t[0].1.shape(), &[2, 2]);
        let bare = parse_inputs(&json!([[1, 2]]), &specs, TensorLimits::default()).unwrap();
        assert_eq!(bare[0].1.shape(), &[1, 2]);
        assert_eq!(tensor_json(&t[0].1), json!([[1.0, 2.0], [3.0, 4.5]]));
    }

    #[test]
    fn names_the_bad_input() {
        let specs = vec![spec("X", DType::Float32, vec![Dim::Symbolic("N".into()), Dim::Fixed(2)])];
        let lim = TensorLimits::default();
        let msg = |v: Value| parse_inputs(&v, &specs, lim).unwrap_err().to_string();
        assert!(msg(json!({"Y": [[1, 2]]})).contains("unknown input 'Y'"));
        assert!(msg(json!({})).contains("missing input 'X'"));
        assert!(msg(json!({"X": [[1, 2, 3]]})).contains("dimension 1 must be 2"));
        assert!(msg(json!({"X": [1, 2]})).contains("must have 2 dimensions"));
        assert!(msg(json!({"X": [[1, 2], [3]]})).contains("not rectangular"));
        assert!(msg(json!({"X": [["a", 2]]})).contains("expects float32"));
        let ints = vec![spec("ids", DType::Int64, vec![Dim::Unknown(None)])];
        assert!(parse_inputs(&json!({"ids": [1.5]}), &ints, lim).unwrap_err().to_string().contains("int64"));
    }

    #[test]
    fn untyped_tensors_default_to_float32_and_typed_values_name_theirs() {
        let mut any = spec("x", DType::Other, vec![]);
        any.shape = None;
        let mut sr = spec("sr", DType::Int64, vec![]);
        sr.optional = true;
        let specs = vec![any, sr];
        let lim = TensorLimits::default();
        let t = parse_inputs(&json!({"x": [[1, 2]]}), &specs, lim).unwrap();
        assert_eq!(t.len(), 1, "the optional input was left out");
        assert_eq!(t[0].1.dtype(), DType::Float32);
        let t = parse_inputs(&json!({"x": {"dtype": "int64", "data": [[1, 2]]}, "sr": 16000}), &specs, lim).unwrap();
        assert_eq!(t[0].1.dtype(), DType::Int64);
        assert_eq!(t[1].1.shape(), &[] as &[usize]);
        let msg = |v: Value| parse_inputs(&v, &specs, lim).unwrap_err().to_string();
        assert!(msg(json!({"x": {"dtype": "int9", "data": [1]}})).contains("unknown dtype"));
        assert!(msg(json!({"x": {"data": [1], "shape": [1]}})).contains("unknown field 'shape'"));
        assert!(msg(json!({"x": [1], "sr": {"dtype": "float32", "data": 1.5}})).contains("is int64"));
        assert!(msg(json!({"x": [1], "sr": [16000]})).contains("must have 0 dimensions"));
    }

    #[test]
    fn element_budget_is_enforced() {
        let specs = vec![spec("X", DType::Float32, vec![Dim::Unknown(None)])];
        let lim = TensorLimits { max_elements: 3, ..Default::default() };
        assert!(parse_inputs(&json!({"X": [1, 2, 3, 4]}), &specs, lim).is_err());
        assert!(parse_inputs(&json!({"X": [1, 2, 3]}), &specs, lim).is_ok());
    }
}
