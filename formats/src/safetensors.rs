//! safetensors: an 8-byte little-endian header length, a JSON header naming each
//! tensor's dtype, shape and byte range, then the tensor data. Validation reads
//! only the header and the file size; the data itself is never interpreted.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::Path;

use zoo_api::{Format, SafetensorsInfo, Signature, Task, WeightTensor};

use crate::{Artifact, Engine, Error, Limits, Sniffed, Stored, UploadKind};

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

/// The header as it is read: typed while parsing, so that a hostile header is
/// refused at its first wrong value instead of being built into a large JSON tree.
enum Entry {
    Metadata(BTreeMap<String, String>),
    Tensor(RawTensor),
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTensor {
    dtype: String,
    #[serde(deserialize_with = "bounded_shape")]
    shape: Vec<u64>,
    data_offsets: (u64, u64),
}

/// A shape of at most `MAX_RANK` dimensions, refused at the first extra one.
fn bounded_shape<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
    struct Dims;
    impl<'de> serde::de::Visitor<'de> for Dims {
        type Value = Vec<u64>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a list of at most {MAX_RANK} non-negative integers")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u64>, A::Error> {
            let mut dims = Vec::new();
            while let Some(d) = seq.next_element::<u64>()? {
                if dims.len() == MAX_RANK {
                    return Err(serde::de::Error::custom(format!("more than {MAX_RANK} dimensions")));
                }
                dims.push(d);
            }
            Ok(dims)
        }
    }
    d.deserialize_seq(Dims)
}

struct Header {
    entries: Vec<(String, Entry)>,
}

struct HeaderSeed(usize);

impl<'de> serde::de::DeserializeSeed<'de> for HeaderSeed {
    type Value = Header;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Header, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for HeaderSeed {
    type Value = Header;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object of tensor names")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Header, A::Error> {
        use serde::de::Error as _;
        let mut entries = Vec::new();
        let mut tensors = 0usize;
        while let Some(name) = map.next_key::<String>()? {
            if name == "__metadata__" {
                let m: BTreeMap<String, String> = map.next_value().map_err(|e| {
                    A::Error::custom(format!("metadata: __metadata__ must map strings to strings ({e})"))
                })?;
                entries.push((name, Entry::Metadata(m)));
                continue;
            }
            tensors += 1;
            if tensors > self.0 {
                return Err(A::Error::custom(format!("tensor_count: more than {} tensors", self.0)));
            }
            let t: RawTensor = map.next_value().map_err(|e| {
                A::Error::custom(format!(
                    "tensor: tensor '{name}' needs dtype, shape and data_offsets [begin, end] ({e})"
                ))
            })?;
            entries.push((name, Entry::Tensor(t)));
        }
        Ok(Header { entries })
    }
}

/// Most dimensions of a tensor.
const MAX_RANK: usize = 16;
/// Largest `__metadata__`, all keys and values together.
const MAX_METADATA: usize = 1024 * 1024;

/// Validate a header against the size of the data that follows it.
pub fn parse_header(header: &[u8], data_len: u64, limits: &Limits) -> Result<SafetensorsInfo, Error> {
    let text =
        std::str::from_utf8(header).map_err(|e| invalid("header_json", format!("the header is not UTF-8: {e}")))?;
    let text = text.trim_end_matches(' ');
    // Syntax first, without building anything; then the typed read.
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map_err(|e| invalid("header_json", format!("the header is not JSON: {e}")))?;
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = serde::de::DeserializeSeed::deserialize(HeaderSeed(limits.max_tensors), &mut de).and_then(|h| {
        de.end()?;
        Ok(h)
    });
    let header = parsed.map_err(|e| {
        let msg = e.to_string();
        match msg.split_once(": ") {
            Some(("tensor_count", rest)) => invalid("tensor_count", rest.to_string()),
            Some(("metadata", rest)) => invalid("metadata", rest.to_string()),
            Some(("tensor", rest)) => invalid("tensor", rest.to_string()),
            _ => invalid("header_json", format!("the header is not a valid safetensors header: {msg}")),
        }
    })?;
    let mut metadata = BTreeMap::new();
    let mut tensors: Vec<(u64, u64, WeightTensor)> = Vec::new();
    for (name, entry) in header.entries {
        match entry {
            Entry::Metadata(m) => {
                if m.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() > MAX_METADATA {
                    return Err(invalid("metadata", format!("__metadata__ is larger than {MAX_METADATA} bytes")));
                }
                metadata = m;
            }
            Entry::Tensor(t) => tensors.push(tensor(&name, t)?),
        }
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

fn tensor(name: &str, t: RawTensor) -> Result<(u64, u64, WeightTensor), Error> {
    let RawTensor { dtype, shape, data_offsets: (begin, end) } = t;
    let size =
        dtype_size(&dtype).ok_or_else(|| invalid("dtype", format!("tensor '{name}' has unknown dtype '{dtype}'")))?;
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
    Ok((begin, end, WeightTensor { name: name.to_string(), dtype, shape }))
}

/// A bare safetensors file: stored and catalogued with its tensor table (weights
/// alone cannot be served; a Hugging Face directory can, see `hf`).
pub const UPLOAD: UploadKind = UploadKind {
    stored: Some(Stored { format: Format::Safetensors, file_name: "model.safetensors", engine: Engine::Safetensors }),
    accepted: Some("a safetensors file (stored, not served alone)"),
    sniffed: Sniffed::Safetensors,
    inspect: |u| {
        let info = inspect(u.path, u.limits)?;
        Ok(Artifact {
            signature: Signature { safetensors: Some(info), ..Signature::empty(Format::Safetensors, false) },
            task: Task::Tensor,
            labels: vec![],
            model_path: u.path.to_path_buf(),
            bundle_dir: None,
        })
    },
};

#[cfg(test)]
mod tests {
    use serde_json::Value;

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
            "tensor"
        );
        assert_eq!(
            rule(serde_json::json!({"x": t("F32", serde_json::json!(vec![1; 17]), serde_json::json!([0, 4]))}), 4),
            "tensor",
            "at most 16 dimensions"
        );
        assert_eq!(
            rule(serde_json::json!({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "evil": 1}}), 4),
            "tensor"
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
