//! KServe v2 / Open Inference Protocol: typed tensors in and out (JSON, flat or
//! nested, or the binary tensor data extension), on the same loaded versions and
//! batching as zoo's own predict routes. This file is the wire codec; what each
//! task takes and answers in the protocol is decided in `pipeline/task/`.

use std::sync::Arc;

use ndarray::{ArrayD, IxDyn};
use zoo_api::DType;
use zoo_api::kserve::{
    V2InferRequest, V2InferResponse, V2ModelMetadata, V2Parameters, V2Tensor, datatype, parse_datatype,
};

use super::Services;
use super::pool::LoadedVersion;
use crate::error::{Error, Result};
use crate::pipeline::json::{self, NestedError, NestedLimits};
use crate::pipeline::task;
use crate::registry::VersionRecord;
use crate::runtime::Tensor;

/// Most elements in one request's tensors together.
const MAX_ELEMENTS: usize = 16 * 1024 * 1024;

fn bad(m: impl Into<String>) -> Error {
    Error::InvalidInput(m.into())
}

impl Services {
    /// Metadata of a version, with every ready version of its model. Nothing is
    /// loaded: a key that may only read cannot make the server load models.
    pub async fn v2_metadata(&self, record: &VersionRecord) -> Result<V2ModelMetadata> {
        let versions = self.registry.list_versions(&record.model).await?.into_iter().map(|v| v.version).collect();
        let (inputs, outputs) = task::kind(record.task).v2_metadata(&record.signature, &record.labels);
        Ok(V2ModelMetadata {
            name: record.model.clone(),
            versions,
            platform: format!("{}_{}", record.signature.format.as_str(), record.runtime.as_deref().unwrap_or("none")),
            inputs,
            outputs,
        })
    }

    /// Run an inference request; `binary` is the binary part of the body. Returns
    /// the response and, for outputs asked in binary, their bytes in order.
    pub async fn v2_infer(
        &self,
        served: &Arc<LoadedVersion>,
        req: V2InferRequest,
        binary: &[u8],
    ) -> Result<(V2InferResponse, Vec<u8>)> {
        let p = &served.pipeline;
        let expected = p.v2_input_count(&served.signature);
        if req.inputs.len() > expected {
            return Err(bad(format!("{} inputs; the model takes {expected}", req.inputs.len())));
        }
        if let Some((i, t)) =
            req.inputs.iter().enumerate().find(|(i, t)| req.inputs[..*i].iter().any(|u| u.name == t.name))
        {
            return Err(bad(format!("input '{}' is given twice (at {i})", t.name)));
        }
        let mut offset = 0usize;
        let mut budget = MAX_ELEMENTS;
        let mut given = Vec::with_capacity(req.inputs.len());
        for t in &req.inputs {
            given.push((t.name.clone(), decode(t, binary, &mut offset, &mut budget)?));
        }
        if offset != binary.len() {
            return Err(bad(format!("{} bytes of binary data are not claimed by any input", binary.len() - offset)));
        }
        let inputs = p.v2_inputs(&served.signature, &served.effective, given)?;
        let (answer, done) = self.execute(served, inputs).await?;
        let outputs = p.v2_outputs(&answer, done.outputs)?;
        // The outputs asked for (all by default), in JSON or binary.
        let all_binary = req.parameters.as_ref().and_then(|p| p.binary_data_output).unwrap_or(false);
        let wanted: Vec<(String, bool)> = match &req.outputs {
            Some(list) => list
                .iter()
                .map(|o| (o.name.clone(), o.parameters.as_ref().and_then(|p| p.binary_data).unwrap_or(all_binary)))
                .collect(),
            None => outputs.iter().map(|(n, _)| (n.clone(), all_binary)).collect(),
        };
        let mut tensors = Vec::with_capacity(wanted.len());
        let mut bytes = Vec::new();
        for (name, as_binary) in wanted {
            let (_, t) = outputs.iter().find(|(n, _)| *n == name).ok_or_else(|| {
                let names: Vec<&str> = outputs.iter().map(|(n, _)| n.as_str()).collect();
                bad(format!("the model has no output '{name}'; it has: {}", names.join(", ")))
            })?;
            tensors.push(encode(&name, t, as_binary, &mut bytes));
        }
        let response = V2InferResponse {
            model_name: served.model.clone(),
            model_version: served.version.clone(),
            id: req.id,
            parameters: None,
            outputs: tensors,
        };
        Ok((response, bytes))
    }
}

/// One request tensor, from its JSON data or its slice of the binary part.
fn decode(t: &V2Tensor, binary: &[u8], offset: &mut usize, budget: &mut usize) -> Result<Tensor> {
    let name = &t.name;
    let dtype =
        parse_datatype(&t.datatype).ok_or_else(|| bad(format!("input '{name}': unknown datatype '{}'", t.datatype)))?;
    if t.shape.iter().any(|d| *d < 0) || t.shape.len() > 8 {
        return Err(bad(format!("input '{name}': shape {:?} must be at most 8 sizes >= 0", t.shape)));
    }
    let count =
        t.shape.iter().try_fold(1usize, |a, d| a.checked_mul(*d as usize)).filter(|c| *c <= *budget).ok_or_else(
            || bad(format!("input '{name}': shape {:?} has more elements than a request may carry", t.shape)),
        )?;
    *budget -= count;
    let shape = IxDyn(&t.shape.iter().map(|d| *d as usize).collect::<Vec<_>>());
    let binary_size = t.parameters.as_ref().and_then(|p| p.binary_data_size);
    let tensor = match (binary_size, &t.data) {
        (Some(size), None) => {
            let end = offset.checked_add(size as usize).filter(|e| *e <= binary.len()).ok_or_else(|| {
                bad(format!("input '{name}' claims {size} bytes of binary data, more than the body holds"))
            })?;
            let bytes = &binary[*offset..end];
            *offset = end;
            from_bytes(name, dtype, shape, count, bytes)?
        }
        (None, Some(data)) => {
            // Flat or nested: the elements in row-major order, `count` of them.
            let limits = NestedLimits { max_rank: 8, null_is_nan: false, expected: count };
            let parsed = json::tensor(data.get(), dtype, limits, count).map_err(|e| match e {
                NestedError::TooMany => {
                    bad(format!("input '{name}': shape {:?} needs {count} values, data has more", t.shape))
                }
                NestedError::Value(got) => bad(format!("input '{name}' is {}, but holds {got}", datatype(dtype))),
                NestedError::TooDeep(_) | NestedError::NotRectangular(_) => {
                    bad(format!("input '{name}': data must be a flat or nested array of {count} values"))
                }
                NestedError::Json(e) => Error::InvalidRequest(format!("input '{name}': data is not valid JSON: {e}")),
            })?;
            let got: usize = parsed.shape().iter().product();
            if got != count || parsed.shape().is_empty() {
                return Err(bad(format!("input '{name}': shape {:?} needs {count} values, data has {got}", t.shape)));
            }
            reshape(parsed, shape).map_err(|e| bad(format!("input '{name}': {e}")))?
        }
        (Some(_), Some(_)) => return Err(bad(format!("input '{name}' has both data and binary_data_size"))),
        (None, None) => return Err(bad(format!("input '{name}' has no data"))),
    };
    Ok(tensor)
}

/// The same elements in another shape of the same size.
fn reshape(t: Tensor, shape: IxDyn) -> std::result::Result<Tensor, ndarray::ShapeError> {
    macro_rules! re {
        ($($v:ident),*) => {
            match t {
                $(Tensor::$v(a) => Tensor::$v(a.into_shape_with_order(shape)?),)*
            }
        };
    }
    Ok(re!(F32, F64, I64, I32, I16, I8, U8, U16, U32, U64, F16, BF16, Bool, Str))
}

fn from_bytes(name: &str, dtype: DType, shape: IxDyn, count: usize, bytes: &[u8]) -> Result<Tensor> {
    if dtype == DType::String {
        // Each element: a 4-byte little-endian length, then that many bytes.
        let mut out = Vec::with_capacity(count);
        let mut i = 0usize;
        while i < bytes.len() {
            let len = bytes.get(i..i + 4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize);
            let end = len.and_then(|l| (i + 4).checked_add(l)).filter(|e| *e <= bytes.len());
            let Some(end) = end else { return Err(bad(format!("input '{name}': malformed BYTES element"))) };
            let s = std::str::from_utf8(&bytes[i + 4..end])
                .map_err(|_| bad(format!("input '{name}': a BYTES element is not UTF-8")))?;
            out.push(s.to_string());
            i = end;
        }
        if out.len() != count {
            return Err(bad(format!("input '{name}': {count} elements expected, the binary data holds {}", out.len())));
        }
        return Ok(Tensor::Str(ArrayD::from_shape_vec(shape, out).map_err(Error::internal)?));
    }
    let size = match dtype {
        DType::Float64 | DType::Int64 | DType::Uint64 => 8,
        DType::Float32 | DType::Int32 | DType::Uint32 => 4,
        DType::Int16 | DType::Uint16 | DType::Float16 | DType::Bfloat16 => 2,
        _ => 1,
    };
    if bytes.len() != count * size {
        return Err(bad(format!(
            "input '{name}': {count} {} elements are {} bytes, got {}",
            datatype(dtype),
            count * size,
            bytes.len()
        )));
    }
    macro_rules! le {
        ($variant:ident, $t:ty) => {{
            let vals: Vec<$t> =
                bytes.chunks_exact(size).map(|c| <$t>::from_le_bytes(c.try_into().expect("size"))).collect();
            Tensor::$variant(ArrayD::from_shape_vec(shape, vals).map_err(Error::internal)?)
        }};
    }
    Ok(match dtype {
        DType::Float32 => le!(F32, f32),
        DType::Float64 => le!(F64, f64),
        DType::Int64 => le!(I64, i64),
        DType::Int32 => le!(I32, i32),
        DType::Int16 => le!(I16, i16),
        DType::Int8 => le!(I8, i8),
        DType::Uint8 => le!(U8, u8),
        DType::Uint16 => le!(U16, u16),
        DType::Uint32 => le!(U32, u32),
        DType::Uint64 => le!(U64, u64),
        DType::Float16 => le!(F16, half::f16),
        DType::Bfloat16 => le!(BF16, half::bf16),
        DType::Bool => Tensor::Bool(
            ArrayD::from_shape_vec(shape, bytes.iter().map(|b| *b != 0).collect()).map_err(Error::internal)?,
        ),
        other => return Err(bad(format!("input '{name}': {} is not supported", datatype(other)))),
    })
}

/// An output tensor: its data as a flat JSON array, or appended to `binary`.
fn encode(name: &str, t: &Tensor, as_binary: bool, binary: &mut Vec<u8>) -> V2Tensor {
    let shape = t.shape().iter().map(|d| *d as i64).collect();
    let datatype = datatype(t.dtype()).to_string();
    if as_binary {
        let start = binary.len();
        macro_rules! put {
            ($a:expr) => {
                $a.iter().for_each(|v| binary.extend_from_slice(&v.to_le_bytes()))
            };
        }
        match t {
            Tensor::F32(a) => put!(a),
            Tensor::F64(a) => put!(a),
            Tensor::I64(a) => put!(a),
            Tensor::I32(a) => put!(a),
            Tensor::I16(a) => put!(a),
            Tensor::I8(a) => put!(a),
            Tensor::U8(a) => put!(a),
            Tensor::U16(a) => put!(a),
            Tensor::U32(a) => put!(a),
            Tensor::U64(a) => put!(a),
            Tensor::F16(a) => put!(a),
            Tensor::BF16(a) => put!(a),
            Tensor::Bool(a) => a.iter().for_each(|b| binary.push(u8::from(*b))),
            Tensor::Str(a) => a.iter().for_each(|s| {
                binary.extend_from_slice(&(s.len() as u32).to_le_bytes());
                binary.extend_from_slice(s.as_bytes());
            }),
        }
        let parameters = V2Parameters { binary_data_size: Some((binary.len() - start) as u64), ..Default::default() };
        return V2Tensor { name: name.into(), shape, datatype, parameters: Some(parameters), data: None };
    }
    V2Tensor { name: name.into(), shape, datatype, parameters: None, data: Some(json::raw(&json::Flat(t))) }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn tensor(v: Value) -> V2Tensor {
        serde_json::from_str(&v.to_string()).unwrap()
    }

    #[test]
    fn json_data_flat_or_nested_and_binary() {
        let (mut off, mut budget) = (0, MAX_ELEMENTS);
        let flat = decode(
            &tensor(json!({"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]})),
            &[],
            &mut off,
            &mut budget,
        )
        .unwrap();
        let nested = decode(
            &tensor(json!({"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4]]})),
            &[],
            &mut off,
            &mut budget,
        )
        .unwrap();
        assert_eq!(flat, nested);
        let bytes: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0].iter().flat_map(|f| f.to_le_bytes()).collect();
        let bin = decode(
            &tensor(json!({"name": "x", "shape": [2, 2], "datatype": "FP32", "parameters": {"binary_data_size": 16}})),
            &bytes,
            &mut off,
            &mut budget,
        )
        .unwrap();
        assert_eq!(bin, flat);
        assert_eq!(off, 16);
        let mut strings = Vec::new();
        for s in ["good", "job"] {
            strings.extend((s.len() as u32).to_le_bytes());
            strings.extend(s.as_bytes());
        }
        let mut off = 0;
        let t = decode(&tensor(json!({"name": "text", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": strings.len()}})), &strings, &mut off, &mut budget).unwrap();
        assert_eq!(t, Tensor::Str(ArrayD::from_shape_vec(IxDyn(&[2]), vec!["good".into(), "job".into()]).unwrap()));
        let mut out = Vec::new();
        let enc = encode("text", &t, true, &mut out);
        assert_eq!((out, enc.parameters.unwrap().binary_data_size), (strings.clone(), Some(strings.len() as u64)));
    }

    #[test]
    fn malformed_tensors_are_refused() {
        let (mut off, mut budget) = (0, MAX_ELEMENTS);
        let mut err = |v: Value, bin: &[u8]| decode(&tensor(v), bin, &mut off, &mut budget).unwrap_err().to_string();
        assert!(
            err(json!({"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2]}), &[]).contains("needs 3 values")
        );
        assert!(
            err(json!({"name": "x", "shape": [1], "datatype": "FP128", "data": [1]}), &[]).contains("unknown datatype")
        );
        assert!(err(json!({"name": "x", "shape": [1], "datatype": "INT8", "data": [300]}), &[]).contains("holds 300"));
        assert!(
            err(
                json!({"name": "x", "shape": [4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}),
                &[0u8; 8]
            )
            .contains("more than the body holds")
        );
        assert!(
            err(json!({"name": "x", "shape": [1000000, 1000000], "datatype": "FP32", "data": []}), &[])
                .contains("more elements")
        );
        assert!(err(json!({"name": "x", "shape": [-1], "datatype": "FP32", "data": []}), &[]).contains("sizes >= 0"));
    }
}
