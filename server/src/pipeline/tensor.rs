//! The `tensor` task: JSON nested arrays <-> typed tensors, checked against the
//! signature (names, dtypes, ranks, fixed dimensions).

use std::collections::BTreeMap;

use ndarray::{ArrayD, IxDyn};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use zoo_api::{DType, Dim, TensorSpec, ValueKind};

use super::json::{self, NestedError, NestedLimits};
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
/// in signature order, straight from the request's JSON text.
pub fn parse_inputs(inputs: &RawValue, specs: &[TensorSpec], limits: TensorLimits) -> Result<Tensors> {
    let text = inputs.get().trim_start();
    let named: Vec<(&TensorSpec, &RawValue)> = if text.starts_with('{') {
        let map: BTreeMap<String, &RawValue> = serde_json::from_str(inputs.get())
            .map_err(|e| Error::InvalidInput(format!("\"inputs\" is not an object of named inputs: {e}")))?;
        for key in map.keys() {
            if !specs.iter().any(|s| &s.name == key) {
                return Err(Error::InvalidInput(format!("unknown input '{key}'; the model takes: {}", names(specs))));
            }
        }
        specs
            .iter()
            .filter_map(|s| match map.get(&s.name) {
                Some(v) => Some(Ok((s, *v))),
                None if s.optional => None,
                None => Some(Err(Error::InvalidInput(format!(
                    "missing input '{}' ({}); the model takes: {}",
                    s.name,
                    s.type_text,
                    names(specs)
                )))),
            })
            .collect::<Result<_>>()?
    } else if text.starts_with('[') && specs.len() == 1 {
        vec![(&specs[0], inputs)]
    } else {
        return Err(Error::InvalidInput(format!(
            "\"inputs\" must be an object mapping input names to nested arrays; the model takes: {}",
            names(specs)
        )));
    };
    let mut budget = limits.max_elements;
    named.into_iter().map(|(spec, v)| Ok((spec.name.clone(), parse_one(v, spec, limits, &mut budget)?))).collect()
}

fn names(specs: &[TensorSpec]) -> String {
    specs.iter().map(|s| format!("{} {}", s.name, s.type_text)).collect::<Vec<_>>().join(", ")
}

/// The element type of one input and its data: the signature's type, or the one
/// a typed value `{"dtype": "int64", "data": [...]}` names where the signature
/// names none (a TorchScript `Tensor`, which is float32 unless the request says
/// otherwise).
fn typed<'a>(v: &'a RawValue, spec: &TensorSpec) -> Result<(&'a RawValue, DType)> {
    let name = &spec.name;
    if !v.get().trim_start().starts_with('{') {
        return Ok((v, if spec.dtype == DType::Other { DType::Float32 } else { spec.dtype }));
    }
    let o: BTreeMap<String, &'a RawValue> = serde_json::from_str(v.get())
        .map_err(|e| Error::InvalidInput(format!("input '{name}': a typed value is not valid: {e}")))?;
    let data = *o.get("data").ok_or_else(|| {
        Error::InvalidInput(format!("input '{name}': a typed value is {{\"dtype\": \"...\", \"data\": [...]}}"))
    })?;
    if let Some(k) = o.keys().find(|k| *k != "data" && *k != "dtype") {
        return Err(Error::InvalidInput(format!("input '{name}': unknown field '{k}' in a typed value")));
    }
    let Some(given) = o.get("dtype") else { return typed(data, spec) };
    let dtype = serde_json::from_str::<String>(given.get())
        .ok()
        .and_then(|d| DType::parse(&d))
        .filter(|d| *d != DType::Other)
        .ok_or_else(|| {
            Error::InvalidInput(format!(
                "input '{name}': unknown dtype {}; use float32, float64, int64, int32, bool, ...",
                given.get()
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

fn parse_one(v: &RawValue, spec: &TensorSpec, limits: TensorLimits, budget: &mut usize) -> Result<Tensor> {
    let name = &spec.name;
    if spec.kind != ValueKind::Tensor {
        return Err(Error::InvalidInput(format!(
            "input '{name}' is a {}, which zoo cannot build from JSON",
            spec.type_text
        )));
    }
    let (v, dtype) = typed(v, spec)?;
    let nested = NestedLimits { max_rank: limits.max_rank, null_is_nan: limits.null_is_nan, expected: 0 };
    let t = json::tensor(v.get(), dtype, nested, *budget).map_err(|e| match e {
        NestedError::TooDeep(max) => Error::InvalidInput(format!("input '{name}' is nested deeper than {max} levels")),
        NestedError::NotRectangular(why) => Error::InvalidInput(format!("input '{name}' is not rectangular: {why}")),
        NestedError::TooMany => {
            Error::InvalidInput(format!("input '{name}' has more elements than a request may carry"))
        }
        NestedError::Value(got) => {
            Error::InvalidInput(format!("input '{name}' expects {} values, got {got}", dtype.as_str()))
        }
        NestedError::Json(e) => Error::InvalidRequest(format!("input '{name}' is not valid JSON: {e}")),
    })?;
    *budget -= t.shape().iter().product::<usize>();
    let shape = t.shape();
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
        for (i, (d, got)) in expected.iter().zip(shape).enumerate() {
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
    Ok(t)
}

/// Output tensors as `{"name": nested array}`, each written as JSON text.
pub fn outputs_json(outputs: &Tensors) -> BTreeMap<String, Box<RawValue>> {
    outputs.iter().map(|(n, t)| (n.clone(), json::raw(&json::Nested(t)))).collect()
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
                DType::Float16 => Tensor::F16(ArrayD::from_elem(shape, half::f16::ZERO)),
                DType::Bfloat16 => Tensor::BF16(ArrayD::from_elem(shape, half::bf16::ZERO)),
                DType::Bool => Tensor::Bool(ArrayD::from_elem(shape, false)),
                DType::String => Tensor::Str(ArrayD::from_elem(shape, String::new())),
                _ => return None,
            };
            Some((s.name.clone(), t))
        })
        .collect()
}

// --- The JSON Schema of tensors (each version's OpenAPI document) ---

/// JSON Schema of one element of a tensor of `dtype`.
pub(crate) fn element(dtype: DType) -> Value {
    let int = |min: i64, max: i128| json!({"type": "integer", "minimum": min, "maximum": max});
    match dtype {
        DType::Float32 | DType::Float64 | DType::Float16 | DType::Bfloat16 => json!({"type": "number"}),
        DType::Int8 => int(i8::MIN.into(), i8::MAX.into()),
        DType::Int16 => int(i16::MIN.into(), i16::MAX.into()),
        DType::Int32 => int(i32::MIN.into(), i32::MAX.into()),
        DType::Int64 => json!({"type": "integer"}),
        DType::Uint8 => int(0, u8::MAX.into()),
        DType::Uint16 => int(0, u16::MAX.into()),
        DType::Uint32 => int(0, u32::MAX.into()),
        DType::Uint64 => json!({"type": "integer", "minimum": 0}),
        DType::Bool => json!({"type": "boolean"}),
        DType::String => json!({"type": "string"}),
        DType::Complex64 | DType::Complex128 | DType::Other => json!({"type": "number"}),
    }
}

/// Nested arrays for `dims` around `leaf`; the leading dimension takes at most
/// `max_rows` rows.
pub(crate) fn nested(dims: &[Dim], leaf: Value, max_rows: u32, top: bool) -> Value {
    let Some((first, rest)) = dims.split_first() else { return leaf };
    let mut s = Map::new();
    s.insert("type".into(), "array".into());
    s.insert("items".into(), nested(rest, leaf, max_rows, false));
    match first {
        Dim::Fixed(n) => {
            s.insert("minItems".into(), (*n).into());
            s.insert("maxItems".into(), (*n).into());
        }
        Dim::Symbolic(name) => {
            s.insert("description".into(), format!("symbolic dimension '{name}'").into());
            s.insert("minItems".into(), 1.into());
            if top {
                s.insert("maxItems".into(), max_rows.into());
            }
        }
        Dim::Unknown(_) => {
            s.insert("description".into(), "a dimension of any size".into());
        }
    }
    Value::Object(s)
}

/// The schema of one input value.
pub(crate) fn tensor_schema(spec: &TensorSpec, max_rows: u32) -> Value {
    let mut schema = match &spec.shape {
        Some(dims) if spec.kind == ValueKind::Tensor => nested(dims, element(spec.dtype), max_rows, true),
        _ => json!({
            "description": "a tensor of any shape as nested arrays of numbers (float32), or {\"dtype\": \"int64\", \"data\": [...]} to name its type",
            "anyOf": [
                {"type": "array"},
                {"type": "number"},
                {"type": "object", "required": ["data"], "additionalProperties": false, "properties": {
                    "dtype": {"type": "string", "enum": ["float32", "float64", "int64", "int32", "int16", "int8", "uint8", "bool"]},
                    "data": {}
                }}
            ]
        }),
    };
    if let Value::Object(m) = &mut schema {
        let mut doc = format!("{} ({})", spec.name, spec.type_text);
        if !spec.doc.is_empty() {
            doc.push_str(": ");
            doc.push_str(&spec.doc);
        }
        m.insert("title".into(), doc.into());
    }
    schema
}

/// An example value for a spec: zeros, symbolic dimensions 1.
pub(crate) fn example_value(spec: &TensorSpec) -> Value {
    let zero = match spec.dtype {
        DType::Bool => json!(false),
        DType::String => json!(""),
        DType::Float32 | DType::Float64 | DType::Float16 | DType::Bfloat16 | DType::Other => json!(0.0),
        _ => json!(0),
    };
    match &spec.shape {
        Some(dims) => dims.iter().rev().fold(zero, |acc, d| {
            let n = d.fixed().map_or(1, |n| n.clamp(1, 64) as usize);
            Value::Array(vec![acc; n])
        }),
        None => json!([[0.0]]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn raw(v: Value) -> Box<RawValue> {
        serde_json::value::to_raw_value(&v).unwrap()
    }

    fn parse(v: Value, specs: &[TensorSpec], lim: TensorLimits) -> Result<Tensors> {
        parse_inputs(&raw(v), specs, lim)
    }

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
        let t = parse(json!({"X": [[1, 2], [3, 4.5]]}), &specs, TensorLimits::default()).unwrap();
        assert_eq!(t[0].1.shape(), &[2, 2]);
        let bare = parse(json!([[1, 2]]), &specs, TensorLimits::default()).unwrap();
        assert_eq!(bare[0].1.shape(), &[1, 2]);
        let out: Value = serde_json::from_str(outputs_json(&t)["X"].get()).unwrap();
        assert_eq!(out, json!([[1.0, 2.0], [3.0, 4.5]]));
    }

    #[test]
    fn names_the_bad_input() {
        let specs = vec![spec("X", DType::Float32, vec![Dim::Symbolic("N".into()), Dim::Fixed(2)])];
        let lim = TensorLimits::default();
        let msg = |v: Value| parse(v, &specs, lim).unwrap_err().to_string();
        assert!(msg(json!({"Y": [[1, 2]]})).contains("unknown input 'Y'"));
        assert!(msg(json!({})).contains("missing input 'X'"));
        assert!(msg(json!({"X": [[1, 2, 3]]})).contains("dimension 1 must be 2"));
        assert!(msg(json!({"X": [1, 2]})).contains("must have 2 dimensions"));
        assert!(msg(json!({"X": [[1, 2], [3]]})).contains("not rectangular"));
        assert!(msg(json!({"X": [["a", 2]]})).contains("expects float32"));
        let ints = vec![spec("ids", DType::Int64, vec![Dim::Unknown(None)])];
        assert!(parse(json!({"ids": [1.5]}), &ints, lim).unwrap_err().to_string().contains("int64"));
    }

    #[test]
    fn untyped_tensors_default_to_float32_and_typed_values_name_theirs() {
        let mut any = spec("x", DType::Other, vec![]);
        any.shape = None;
        let mut sr = spec("sr", DType::Int64, vec![]);
        sr.optional = true;
        let specs = vec![any, sr];
        let lim = TensorLimits::default();
        let t = parse(json!({"x": [[1, 2]]}), &specs, lim).unwrap();
        assert_eq!(t.len(), 1, "the optional input was left out");
        assert_eq!(t[0].1.dtype(), DType::Float32);
        let t = parse(json!({"x": {"dtype": "int64", "data": [[1, 2]]}, "sr": 16000}), &specs, lim).unwrap();
        assert_eq!(t[0].1.dtype(), DType::Int64);
        assert_eq!(t[1].1.shape(), &[] as &[usize]);
        let msg = |v: Value| parse(v, &specs, lim).unwrap_err().to_string();
        assert!(msg(json!({"x": {"dtype": "int9", "data": [1]}})).contains("unknown dtype"));
        assert!(msg(json!({"x": {"data": [1], "shape": [1]}})).contains("unknown field 'shape'"));
        assert!(msg(json!({"x": [1], "sr": {"dtype": "float32", "data": 1.5}})).contains("is int64"));
        assert!(msg(json!({"x": [1], "sr": [16000]})).contains("must have 0 dimensions"));
    }

    #[test]
    fn element_budget_is_enforced() {
        let specs = vec![spec("X", DType::Float32, vec![Dim::Unknown(None)])];
        let lim = TensorLimits { max_elements: 3, ..Default::default() };
        assert!(parse(json!({"X": [1, 2, 3, 4]}), &specs, lim).is_err());
        assert!(parse(json!({"X": [1, 2, 3]}), &specs, lim).is_ok());
    }
}
