//! safetensors: an 8-byte little-endian header length, a JSON header naming each
//! tensor's dtype, shape and byte range, then the tensor data. Validation reads
//! only the header and the file size; the data itself is never interpreted.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::Path;

use serde_json::Value;
use zoo_api::{Format, SafetensorsInfo, WeightTensor};

use crate::{Error, Limits};

/// The largest header the format allows (the reference implementation's limit).
pub const MAX_HEADER: u64 = 100 * 1024 * 1024;

fn invalid(rule: &'static str, message: impl Into<String>) -> Error {
    Error::Invalid { format: Format::Safetensors, rule, message: message.into() }
}

/// Bytes per element of a safetensors dtype, or `None` for a dtype zoo does not know.
pub fn dtype_size(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" => 1,
        "I16" | "U16" | "F16" | "BF16" => 2,
        "I32" | "U32" | "F32" => 4,
        "I64" | "U64" | "F64" => 8,
        _ => return None,
    })
}

/// Validate a safetensors file and describe its tensors.
pub fn inspect(path: &Path, limits: &Limits) -> Result<SafetensorsInfo, Error> {
    let file_size = fs::metadata(path)?.len();
    let mut f = fs::File::open(path)?;
    if file_size < 8 {
        return Err(invalid(
            "header_length",
            format!("the file is {file_size} bytes: too short for the 8-byte header length"),
        ));
    }
    let mut len = [0u8; 8];
    f.read_exact(&mut len)?;
    let header_len = u64::from_le_bytes(len);
    if header_len > MAX_HEADER {
        return Err(invalid(
            "header_length",
            format!("the header claims {header_len} bytes; at most {MAX_HEADER} are allowed"),
        ));
    }
    if 8 + header_len > file_size {
        return Err(invalid(
            "header_length",
            format!("the header claims {header_len} bytes but the file has only {} after the length", file_size - 8),
        ));
    }
    let mut header = vec![0u8; header_len as usize];
    f.read_exact(&mut header)?;
    parse_header(&header, file_size - 8 - header_len, limits)
}

/// Validate a header against the size of the data that follows it.
pub fn parse_header(header: &[u8], data_len: u64, limits: &Limits) -> Result<SafetensorsInfo, Error> {
    let text =
        std::str::from_utf8(header).map_err(|e| invalid("header_json", format!("the header is not UTF-8: {e}")))?;
    let value: Value = serde_json::from_str(text.trim_end_matches(' '))
        .map_err(|e| invalid("header_json", format!("the header is not JSON: {e}")))?;
    let Value::Object(entries) = value else {
        return Err(invalid("header_json", "the header must be a JSON object of tensor names"));
    };
    let mut metadata = BTreeMap::new();
    let mut tensors: Vec<(u64, u64, WeightTensor)> = Vec::with_capacity(entries.len().min(limits.max_tensors));
    for (name, entry) in entries {
        if name == "__metadata__" {
            let Value::Object(m) = entry else {
                return Err(invalid("metadata", "__metadata__ must be an object of strings"));
            };
            for (k, v) in m {
                let Value::String(v) = v else {
                    return Err(invalid("metadata", format!("__metadata__ value of '{k}' is not a string")));
                };
                metadata.insert(k, v);
            }
            continue;
        }
        if tensors.len() == limits.max_tensors {
            return Err(invalid("tensor_count", format!("more than {} tensors", limits.max_tensors)));
        }
        tensors.push(tensor(&name, &entry)?);
    }
    tensors.sort_by_key(|(begin, end, _)| (*begin, *end));
    let mut next = 0u64;
    let mut parameters = 0u64;
    for (begin, end, t) in &tensors {
        if *end > data_len {
            return Err(invalid(
                "offsets",
                format!("tensor '{}' ends at byte {end} but the data has only {data_len} bytes", t.name),
            ));
        }
        if *begin < next {
            return Err(invalid(
                "overlap",
                format!("tensor '{}' starts at byte {begin}, inside the tensor before it", t.name),
            ));
        }
        if *begin > next {
            return Err(invalid(
                "coverage",
                format!("bytes {next}..{begin} before tensor '{}' belong to no tensor", t.name),
            ));
        }
        next = *end;
        parameters = parameters.saturating_add(t.shape.iter().product::<u64>());
    }
    if next != data_len {
        return Err(invalid(
            "coverage",
            format!("bytes {next}..{data_len} at the end of the data belong to no tensor"),
        ));
    }
    Ok(SafetensorsInfo { tensors: tensors.into_iter().map(|(_, _, t)| t).collect(), parameters, metadata })
}

fn tensor(name: &str, entry: &Value) -> Result<(u64, u64, WeightTensor), Error> {
    let field = |key: &str| entry.get(key).ok_or_else(|| invalid("tensor", format!("tensor '{name}' has no '{key}'")));
    let dtype =
        field("dtype")?.as_str().ok_or_else(|| invalid("dtype", format!("tensor '{name}': dtype is not a string")))?;
    let size =
        dtype_size(dtype).ok_or_else(|| invalid("dtype", format!("tensor '{name}' has unknown dtype '{dtype}'")))?;
    let shape: Vec<u64> = field("shape")?
        .as_array()
        .and_then(|dims| dims.iter().map(Value::as_u64).collect())
        .ok_or_else(|| invalid("shape", format!("tensor '{name}': shape must be a list of non-negative integers")))?;
    let offsets: Vec<u64> = field("data_offsets")?
        .as_array()
        .and_then(|o| o.iter().map(Value::as_u64).collect())
        .filter(|o: &Vec<u64>| o.len() == 2)
        .ok_or_else(|| invalid("offsets", format!("tensor '{name}': data_offsets must be [begin, end]")))?;
    let (begin, end) = (offsets[0], offsets[1]);
    if end < begin {
        return Err(invalid("offsets", format!("tensor '{name}' ends (byte {end}) before it begins (byte {begin})")));
    }
    let bytes = shape
        .iter()
        .try_fold(size, |acc, d| acc.checked_mul(*d))
        .ok_or_else(|| invalid("shape", format!("tensor '{name}': shape {shape:?} overflows")))?;
    if bytes != end - begin {
        return Err(invalid(
            "shape",
            format!(
                "tensor '{name}': shape {shape:?} of {dtype} is {bytes} bytes, but its data_offsets span {}",
                end - begin
            ),
        ));
    }
    Ok((begin, end, WeightTensor { name: name.to_string(), dtype: dtype.to_string(), shape }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(v: Value) -> Vec<u8> {
        v.to_string().into_bytes()
    }

    #[test]
    fn accepts_a_well_formed_header() {
        let h = header(serde_json::json!({
            "__metadata__": {"format": "pt"},
            "b": {"dtype": "F32", "shape": [2], "data_offsets": [24, 32]},
            "a": {"dtype": "F16", "shape": [3, 4], "data_offsets": [0, 24]}
        }));
        let info = parse_header(&h, 32, &Limits::default()).unwrap();
        assert_eq!(info.tensors.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["a", "b"], "in data order");
        assert_eq!(info.parameters, 14);
        assert_eq!(info.metadata["format"], "pt");
    }

    #[test]
    fn names_the_rule_broken() {
        let rule = |v: Value, data_len: u64| match parse_header(&header(v), data_len, &Limits::default()) {
            Err(Error::Invalid { rule, .. }) => rule,
            other => panic!("expected an invalid header, got {other:?}"),
        };
        let t = |dtype: &str, shape: Value, offsets: Value| serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": offsets});
        assert_eq!(rule(serde_json::json!([1, 2]), 0), "header_json");
        assert_eq!(
            rule(serde_json::json!({"x": t("F33", serde_json::json!([1]), serde_json::json!([0, 4]))}), 4),
            "dtype"
        );
        assert_eq!(
            rule(serde_json::json!({"x": t("F32", serde_json::json!([2]), serde_json::json!([0, 4]))}), 4),
            "shape"
        );
        assert_eq!(
            rule(serde_json::json!({"x": t("F32", serde_json::json!([-1]), serde_json::json!([0, 4]))}), 4),
            "shape"
        );
        assert_eq!(
            rule(serde_json::json!({"x": t("F64", serde_json::json!([u64::MAX, 2]), serde_json::json!([0, 8]))}), 8),
            "shape"
        );
        assert_eq!(
            rule(serde_json::json!({"x": t("F32", serde_json::json!([1]), serde_json::json!([0, 4]))}), 2),
            "offsets"
        );
        assert_eq!(
            rule(serde_json::json!({"x": t("F32", serde_json::json!([1]), serde_json::json!([4, 0]))}), 4),
            "offsets"
        );
        assert_eq!(
            rule(
                serde_json::json!({
                    "x": t("F32", serde_json::json!([2]), serde_json::json!([0, 8])),
                    "y": t("F32", serde_json::json!([1]), serde_json::json!([4, 8]))
                }),
                8
            ),
            "overlap"
        );
        assert_eq!(
            rule(serde_json::json!({"x": t("F32", serde_json::json!([1]), serde_json::json!([4, 8]))}), 8),
            "coverage"
        );
        assert_eq!(
            rule(serde_json::json!({"x": t("F32", serde_json::json!([1]), serde_json::json!([0, 4]))}), 8),
            "coverage"
        );
        assert_eq!(rule(serde_json::json!({"__metadata__": {"k": 1}}), 0), "metadata");
        let many: serde_json::Map<String, Value> =
            (0..5).map(|i| (format!("t{i}"), t("U8", serde_json::json!([0]), serde_json::json!([0, 0])))).collect();
        let limits = Limits { max_tensors: 4, ..Limits::default() };
        assert!(matches!(
            parse_header(&header(Value::Object(many)), 0, &limits),
            Err(Error::Invalid { rule: "tensor_count", .. })
        ));
    }
}
