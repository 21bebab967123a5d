//! GGUF, llama.cpp's format: a header (`GGUF`, a version, two counts), typed
//! metadata (the architecture's hyper-parameters, the tokenizer's vocabulary and
//! merges, a chat template), a tensor table (name, dimensions, ggml type, offset)
//! and the aligned tensor data. Validation reads the header, the metadata and the
//! table through bounds checked against the file's size before anything is
//! allocated, then checks that every tensor lies inside the data section, aligned,
//! without overlapping another. The tensor data itself is never interpreted.
//!
//! The rules are ggml's own reader's (`gguf.cpp`), so that a file zoo accepts is
//! one llama.cpp reads: versions 2 and 3, no nested arrays, no duplicate keys or
//! tensor names, names shorter than 64 bytes, at most 4 dimensions, a row length
//! that is a whole number of blocks, a power-of-two `general.alignment`.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::{BufReader, Read};
use std::path::Path;

use zoo_api::{Format, GgufInfo, Signature, Task};

use crate::{Artifact, Engine, Error, Limits, Sniffed, Stored, UploadKind};

pub const MAGIC: &[u8; 4] = b"GGUF";
/// Longest tensor name (ggml's `GGML_MAX_NAME`, with its terminating zero).
pub const MAX_NAME: usize = 63;
/// Most dimensions of a tensor (ggml's `GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;
/// Most metadata entries, and the longest key.
pub const MAX_METADATA: u64 = 65_536;
pub const MAX_KEY: u64 = 65_536;
/// The longest string value (a chat template, a vocabulary entry).
pub const MAX_STRING: u64 = 16 * 1024 * 1024;
/// The alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

fn invalid(rule: &'static str, message: impl Into<String>) -> Error {
    Error::Invalid { format: Format::Gguf, rule, message: message.into() }
}

/// A ggml tensor type: its name, elements per block and bytes per block. Only
/// the types whose layout zoo knows (every one candle runs, and the plain
/// integer and float types); a file with another type is refused, since its
/// tensors' sizes cannot be checked.
pub fn ggml_type(id: u32) -> Option<(&'static str, u64, u64)> {
    Some(match id {
        0 => ("F32", 1, 4),
        1 => ("F16", 1, 2),
        2 => ("Q4_0", 32, 18),
        3 => ("Q4_1", 32, 20),
        6 => ("Q5_0", 32, 22),
        7 => ("Q5_1", 32, 24),
        8 => ("Q8_0", 32, 34),
        9 => ("Q8_1", 32, 36),
        10 => ("Q2_K", 256, 84),
        11 => ("Q3_K", 256, 110),
        12 => ("Q4_K", 256, 144),
        13 => ("Q5_K", 256, 176),
        14 => ("Q6_K", 256, 210),
        15 => ("Q8_K", 256, 292),
        24 => ("I8", 1, 1),
        25 => ("I16", 1, 2),
        26 => ("I32", 1, 4),
        27 => ("I64", 1, 8),
        28 => ("F64", 1, 8),
        30 => ("BF16", 1, 2),
        _ => return None,
    })
}

/// The architectures zoo generates text with (its Llama forward, which also runs
/// Mistral-style files written as `llama`, and Qwen2's biases and Qwen3's
/// query/key norms).
pub const ARCHITECTURES: &[&str] = &["llama", "qwen2", "qwen3"];

/// The tokenizers zoo rebuilds from GGUF metadata: byte-level BPE (`gpt2`) with
/// these pre-tokenizers (llama.cpp's `tokenizer.ggml.pre` names).
pub const PRE_TOKENIZERS: &[&str] = &["smollm", "gpt2", "default", "llama-bpe", "llama3", "qwen2"];

/// A metadata value, kept only where zoo reads it (the others are checked and skipped).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Uint(u64),
    Int(i64),
    Float(f64),
    Bool(bool),
    String(String),
    /// An array: its element type and length; strings kept for the keys zoo reads.
    Array {
        elem: u32,
        len: u64,
        strings: Vec<String>,
        numbers: Vec<i64>,
    },
}

impl Value {
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::Uint(v) => Some(v),
            Value::Int(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
}

/// One entry of the tensor table.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    /// From the start of the data section.
    pub offset: u64,
    pub size: u64,
}

/// A validated GGUF file's header, metadata and tensor table.
#[derive(Debug, Clone)]
pub struct Content {
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Where the tensor data begins in the file.
    pub data_start: u64,
}

/// Metadata keys whose string arrays are kept (the tokenizer's); other arrays are
/// checked and skipped.
fn keeps_strings(key: &str) -> bool {
    matches!(key, "tokenizer.ggml.tokens" | "tokenizer.ggml.merges")
}

fn keeps_numbers(key: &str) -> bool {
    key == "tokenizer.ggml.token_type"
}

/// Reads through the file and counts what it read, refusing any length the rest
/// of the file cannot hold before allocating it.
struct Reader<R> {
    inner: R,
    pos: u64,
    size: u64,
}

impl<R: Read> Reader<R> {
    fn remaining(&self) -> u64 {
        self.size.saturating_sub(self.pos)
    }

    fn bytes<const N: usize>(&mut self, what: &str) -> Result<[u8; N], Error> {
        if self.remaining() < N as u64 {
            return Err(invalid("truncated", format!("the file ends inside {what} (at byte {})", self.pos)));
        }
        let mut b = [0u8; N];
        self.inner.read_exact(&mut b).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                invalid("truncated", format!("the file ends inside {what} (at byte {})", self.pos))
            }
            _ => Error::Io(e),
        })?;
        self.pos += N as u64;
        Ok(b)
    }

    fn u32(&mut self, what: &str) -> Result<u32, Error> {
        self.bytes::<4>(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64, Error> {
        self.bytes::<8>(what).map(u64::from_le_bytes)
    }

    /// Skip `n` bytes the caller has checked fit.
    fn skip(&mut self, n: u64, what: &str) -> Result<(), Error> {
        if self.remaining() < n {
            return Err(invalid("truncated", format!("the file ends inside {what} (at byte {})", self.pos)));
        }
        let copied = std::io::copy(&mut (&mut self.inner).take(n), &mut std::io::sink())?;
        if copied != n {
            return Err(invalid("truncated", format!("the file ends inside {what} (at byte {})", self.pos)));
        }
        self.pos += n;
        Ok(())
    }

    /// A string: its u64 length, then that many bytes. `keep`: return it (UTF-8
    /// checked), else skip it.
    fn string(&mut self, what: &str, max: u64, keep: bool) -> Result<Option<String>, Error> {
        let len = self.u64(what)?;
        if len > max {
            return Err(invalid("string_length", format!("{what} claims {len} bytes; at most {max} are allowed")));
        }
        if len > self.remaining() {
            return Err(invalid(
                "string_length",
                format!("{what} claims {len} bytes but only {} remain in the file", self.remaining()),
            ));
        }
        if !keep {
            self.skip(len, what)?;
            return Ok(None);
        }
        let mut b = vec![0u8; len as usize];
        self.inner.read_exact(&mut b)?;
        self.pos += len;
        String::from_utf8(b).map(Some).map_err(|_| invalid("utf8", format!("{what} is not UTF-8")))
    }
}

/// Bytes of one value of a fixed-size metadata type, `None` for string and array.
fn scalar_size(t: u32) -> Option<u64> {
    match t {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

fn scalar<R: Read>(r: &mut Reader<R>, t: u32, key: &str) -> Result<Value, Error> {
    let what = format!("the value of '{key}'");
    Ok(match t {
        0 => Value::Uint(r.bytes::<1>(&what)?[0] as u64),
        1 => Value::Int(r.bytes::<1>(&what)?[0] as i8 as i64),
        2 => Value::Uint(u16::from_le_bytes(r.bytes::<2>(&what)?) as u64),
        3 => Value::Int(i16::from_le_bytes(r.bytes::<2>(&what)?) as i64),
        4 => Value::Uint(r.u32(&what)? as u64),
        5 => Value::Int(i32::from_le_bytes(r.bytes::<4>(&what)?) as i64),
        6 => Value::Float(f32::from_le_bytes(r.bytes::<4>(&what)?) as f64),
        7 => match r.bytes::<1>(&what)?[0] {
            0 => Value::Bool(false),
            1 => Value::Bool(true),
            b => return Err(invalid("metadata_value", format!("'{key}' is a bool of value {b} (0 or 1 expected)"))),
        },
        10 => Value::Uint(r.u64(&what)?),
        11 => Value::Int(i64::from_le_bytes(r.bytes::<8>(&what)?)),
        12 => Value::Float(f64::from_le_bytes(r.bytes::<8>(&what)?)),
        _ => return Err(invalid("metadata_type", format!("'{key}' has the unknown value type {t}"))),
    })
}

fn value<R: Read>(r: &mut Reader<R>, t: u32, key: &str) -> Result<Value, Error> {
    match t {
        8 => Ok(Value::String(r.string(&format!("the value of '{key}'"), MAX_STRING, true)?.unwrap_or_default())),
        9 => {
            let elem = r.u32(&format!("the element type of '{key}'"))?;
            let len = r.u64(&format!("the length of '{key}'"))?;
            if elem == 9 {
                return Err(invalid(
                    "metadata_type",
                    format!("'{key}' is an array of arrays, which ggml does not read"),
                ));
            }
            // Each element takes at least its size (a string: its 8-byte length).
            let least = match elem {
                8 => 8,
                t => scalar_size(t)
                    .ok_or_else(|| invalid("metadata_type", format!("'{key}' is an array of the unknown type {t}")))?,
            };
            if len.checked_mul(least).is_none_or(|n| n > r.remaining()) {
                return Err(invalid(
                    "array_length",
                    format!("'{key}' claims {len} elements but only {} bytes remain in the file", r.remaining()),
                ));
            }
            let (mut strings, mut numbers) = (Vec::new(), Vec::new());
            if elem == 8 {
                let keep = keeps_strings(key);
                for i in 0..len {
                    let s = r.string(&format!("element {i} of '{key}'"), MAX_STRING, keep)?;
                    strings.extend(s);
                }
            } else if keeps_numbers(key) {
                for _ in 0..len {
                    match scalar(r, elem, key)? {
                        Value::Int(v) => numbers.push(v),
                        Value::Uint(v) => numbers.push(v as i64),
                        _ => {}
                    }
                }
            } else if elem == 7 {
                for _ in 0..len {
                    scalar(r, elem, key)?;
                }
            } else {
                r.skip(len * least, &format!("'{key}'"))?;
            }
            Ok(Value::Array { elem, len, strings, numbers })
        }
        t => scalar(r, t, key),
    }
}

/// Validate a GGUF stream of `file_size` bytes.
pub fn parse(reader: impl Read, file_size: u64, limits: &Limits) -> Result<Content, Error> {
    let mut r = Reader { inner: reader, pos: 0, size: file_size };
    let magic = r.bytes::<4>("the magic number")?;
    if &magic != MAGIC {
        return Err(invalid("magic", "the file does not start with 'GGUF'"));
    }
    let version = r.u32("the version")?;
    match version {
        2 | 3 => {}
        1 => {
            return Err(invalid(
                "version",
                "GGUF version 1 (2023, 32-bit counts) is not read; convert the file with a current llama.cpp",
            ));
        }
        v if v.swap_bytes() <= 3 => {
            return Err(invalid("version", "the file is big-endian GGUF; zoo reads little-endian files"));
        }
        v => return Err(invalid("version", format!("GGUF version {v} is unknown (2 and 3 are read)"))),
    }
    let n_tensors = r.u64("the tensor count")?;
    let n_kv = r.u64("the metadata count")?;
    if n_tensors > limits.max_tensors as u64 {
        return Err(invalid(
            "tensor_count",
            format!("the file claims {n_tensors} tensors; at most {} are allowed", limits.max_tensors),
        ));
    }
    if n_kv > MAX_METADATA {
        return Err(invalid(
            "metadata_count",
            format!("the file claims {n_kv} metadata entries; at most {MAX_METADATA} are allowed"),
        ));
    }
    let mut metadata = BTreeMap::new();
    for i in 0..n_kv {
        let key = r.string(&format!("metadata key {i}"), MAX_KEY, true)?.unwrap_or_default();
        if key.is_empty() {
            return Err(invalid("metadata_key", format!("metadata key {i} is empty")));
        }
        let t = r.u32(&format!("the type of '{key}'"))?;
        let v = value(&mut r, t, &key)?;
        if metadata.contains_key(&key) {
            return Err(invalid("metadata_key", format!("the key '{key}' appears twice")));
        }
        metadata.insert(key, v);
    }
    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(Value::Uint(a)) if a.is_power_of_two() => *a,
        Some(v) => {
            return Err(invalid("alignment", format!("general.alignment must be a power of two, not {v:?}")));
        }
    };
    let mut tensors = Vec::with_capacity(n_tensors.min(r.remaining() / 24) as usize);
    let mut names = HashSet::new();
    for i in 0..n_tensors {
        let name = r.string(&format!("the name of tensor {i}"), MAX_NAME as u64, true)?.unwrap_or_default();
        if name.len() > MAX_NAME {
            return Err(invalid("tensor_name", format!("tensor {i}'s name is longer than {MAX_NAME} bytes")));
        }
        if !names.insert(name.clone()) {
            return Err(invalid("tensor_name", format!("the tensor name '{name}' appears twice")));
        }
        let n_dims = r.u32(&format!("the rank of '{name}'"))?;
        if n_dims as usize > MAX_DIMS {
            return Err(invalid("tensor_dims", format!("'{name}' has {n_dims} dimensions; ggml allows {MAX_DIMS}")));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(r.u64(&format!("the dimensions of '{name}'"))?);
        }
        let t = r.u32(&format!("the type of '{name}'"))?;
        let offset = r.u64(&format!("the offset of '{name}'"))?;
        let (type_name, block, block_bytes) = ggml_type(t).ok_or_else(|| {
            invalid("tensor_type", format!("'{name}' has the ggml type {t}, which zoo does not know"))
        })?;
        let elements = dims
            .iter()
            .try_fold(1u64, |acc, d| acc.checked_mul(*d))
            .filter(|n| *n <= i64::MAX as u64)
            .ok_or_else(|| invalid("tensor_dims", format!("'{name}': dimensions {dims:?} overflow")))?;
        let row = dims.first().copied().unwrap_or(1);
        if row % block != 0 {
            return Err(invalid(
                "tensor_dims",
                format!("'{name}': a row of {row} elements is not a whole number of {type_name} blocks of {block}"),
            ));
        }
        let size = (elements / block)
            .checked_mul(block_bytes)
            .ok_or_else(|| invalid("tensor_dims", format!("'{name}': dimensions {dims:?} overflow")))?;
        if offset % alignment != 0 {
            return Err(invalid(
                "tensor_offset",
                format!("'{name}' starts at {offset}, which is not a multiple of the alignment {alignment}"),
            ));
        }
        tensors.push(TensorInfo { name, dims, ggml_type: t, offset, size });
    }
    let data_start = r.pos.div_ceil(alignment).saturating_mul(alignment);
    let data_len = file_size.saturating_sub(data_start);
    let mut spans: Vec<&TensorInfo> = tensors.iter().collect();
    spans.sort_by_key(|t| t.offset);
    let mut end = 0u64;
    let mut previous: Option<&str> = None;
    for t in spans {
        if t.offset < end {
            return Err(invalid("tensor_offset", format!("'{}' overlaps '{}'", t.name, previous.unwrap_or_default())));
        }
        end = t.offset.saturating_add(t.size);
        if end > data_len {
            return Err(invalid(
                "tensor_offset",
                format!(
                    "'{}' spans bytes {}..{end} of the data section, which holds only {data_len}",
                    t.name, t.offset
                ),
            ));
        }
        previous = Some(&t.name);
    }
    Ok(Content { version, metadata, tensors, alignment, data_start })
}

/// Validate a GGUF file and describe its model.
pub fn inspect(path: &Path, limits: &Limits) -> Result<GgufInfo, Error> {
    let size = fs::metadata(path)?.len();
    let content = parse(BufReader::with_capacity(1 << 16, fs::File::open(path)?), size, limits)?;
    describe(&content)
}

/// What the catalogue and the server need of a validated file.
pub fn describe(c: &Content) -> Result<GgufInfo, Error> {
    let text = |k: &str| c.metadata.get(k).and_then(Value::as_str).map(str::to_string);
    let architecture = text("general.architecture")
        .ok_or_else(|| invalid("architecture", "general.architecture is missing (or not a string)"))?;
    let context_length = c.metadata.get(&format!("{architecture}.context_length")).and_then(Value::as_u64);
    let mut by_type: BTreeMap<u32, u64> = BTreeMap::new();
    for t in c.tensors.iter().filter(|t| t.dims.len() >= 2) {
        *by_type.entry(t.ggml_type).or_default() += 1;
    }
    let quantization = by_type
        .iter()
        .max_by_key(|(_, n)| **n)
        .and_then(|(t, _)| ggml_type(*t))
        .map_or("F32", |(n, _, _)| n)
        .to_string();
    let vocab = match c.metadata.get("tokenizer.ggml.tokens") {
        Some(Value::Array { len, .. }) => Some(*len),
        _ => None,
    };
    let mut info = GgufInfo {
        version: c.version,
        architecture,
        name: text("general.name"),
        quantization,
        parameters: c.tensors.iter().fold(0u64, |a, t| a.saturating_add(t.dims.iter().product::<u64>())),
        tensors: c.tensors.len(),
        context_length,
        vocab_size: vocab,
        tokenizer: text("tokenizer.ggml.model"),
        pre_tokenizer: text("tokenizer.ggml.pre"),
        chat_template: text("tokenizer.chat_template"),
        unservable_reason: None,
    };
    info.unservable_reason = unservable(c, &info);
    Ok(info)
}

/// Why zoo's text generation cannot run a valid file, if it cannot.
fn unservable(c: &Content, info: &GgufInfo) -> Option<String> {
    if !ARCHITECTURES.contains(&info.architecture.as_str()) {
        return Some(format!(
            "zoo generates text with GGUF models of these architectures: {}; this one is '{}'",
            ARCHITECTURES.join(", "),
            info.architecture
        ));
    }
    match info.tokenizer.as_deref() {
        Some("gpt2") => {}
        Some(other) => {
            return Some(format!(
                "zoo rebuilds byte-level BPE tokenizers (tokenizer.ggml.model 'gpt2') from GGUF; this file's is '{other}'"
            ));
        }
        None => return Some("the file has no tokenizer (tokenizer.ggml.model)".into()),
    }
    let pre = info.pre_tokenizer.as_deref().unwrap_or("default");
    if !PRE_TOKENIZERS.contains(&pre) {
        return Some(format!(
            "zoo knows these pre-tokenizers (tokenizer.ggml.pre): {}; this file's is '{pre}'",
            PRE_TOKENIZERS.join(", ")
        ));
    }
    let has = |k: &str| matches!(c.metadata.get(k), Some(Value::Array { elem: 8, .. }));
    if !has("tokenizer.ggml.tokens") || !has("tokenizer.ggml.merges") {
        return Some("a BPE tokenizer needs tokenizer.ggml.tokens and tokenizer.ggml.merges (string arrays)".into());
    }
    for key in ["block_count", "embedding_length", "attention.head_count"] {
        if c.metadata.get(&format!("{}.{key}", info.architecture)).and_then(Value::as_u64).is_none() {
            return Some(format!("{}.{key} is missing", info.architecture));
        }
    }
    if let Some(t) = c.tensors.iter().find(|t| matches!(t.ggml_type, 24..=28)) {
        return Some(format!("candle does not run the tensor type of '{}'", t.name));
    }
    None
}

pub const UPLOAD: UploadKind = UploadKind {
    stored: Some(Stored { format: Format::Gguf, file_name: "model.gguf", engine: Engine::Gguf }),
    accepted: Some("a GGUF file"),
    sniffed: Sniffed::Gguf,
    inspect: |u| {
        let info = inspect(u.path, u.limits)?;
        Ok(Artifact {
            signature: Signature { gguf: Some(info), ..Signature::empty(Format::Gguf, false) },
            task: Task::TextGeneration,
            labels: vec![],
            model_path: u.path.to_path_buf(),
            bundle_dir: None,
        })
    },
};

/// Writes GGUF files, for the tests' fixtures and the hostile corpus.
#[cfg(feature = "fixtures")]
pub mod write {
    /// A metadata value to write.
    pub enum Meta<'a> {
        U32(u32),
        F32(f32),
        Bool(bool),
        Str(&'a str),
        Strs(Vec<String>),
        I32s(Vec<i32>),
    }

    pub fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }

    fn meta(out: &mut Vec<u8>, key: &str, v: &Meta<'_>) {
        string(out, key);
        match v {
            Meta::U32(x) => {
                out.extend_from_slice(&4u32.to_le_bytes());
                out.extend_from_slice(&x.to_le_bytes());
            }
            Meta::F32(x) => {
                out.extend_from_slice(&6u32.to_le_bytes());
                out.extend_from_slice(&x.to_le_bytes());
            }
            Meta::Bool(x) => {
                out.extend_from_slice(&7u32.to_le_bytes());
                out.push(*x as u8);
            }
            Meta::Str(s) => {
                out.extend_from_slice(&8u32.to_le_bytes());
                string(out, s);
            }
            Meta::Strs(v) => {
                out.extend_from_slice(&9u32.to_le_bytes());
                out.extend_from_slice(&8u32.to_le_bytes());
                out.extend_from_slice(&(v.len() as u64).to_le_bytes());
                for s in v {
                    string(out, s);
                }
            }
            Meta::I32s(v) => {
                out.extend_from_slice(&9u32.to_le_bytes());
                out.extend_from_slice(&5u32.to_le_bytes());
                out.extend_from_slice(&(v.len() as u64).to_le_bytes());
                for x in v {
                    out.extend_from_slice(&x.to_le_bytes());
                }
            }
        }
    }

    /// A GGUF v3 file of F32 tensors (`dims` ggml's order: the row length first).
    pub fn file(metadata: &[(&str, Meta<'_>)], tensors: &[(&str, Vec<u64>, Vec<f32>)]) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
        for (k, v) in metadata {
            meta(&mut out, k, v);
        }
        let mut offset = 0u64;
        for (name, dims, data) in tensors {
            string(&mut out, name);
            out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offset += (data.len() as u64 * 4).div_ceil(32) * 32;
        }
        while !out.len().is_multiple_of(32) {
            out.push(0);
        }
        for (_, _, data) in tensors {
            let start = out.len();
            for x in data {
                out.extend_from_slice(&x.to_le_bytes());
            }
            while !(out.len() - start).is_multiple_of(32) {
                out.push(0);
            }
        }
        out
    }

    /// A tiny Llama (random weights from a fixed seed) with a byte-level BPE
    /// tokenizer of the 256 byte symbols, a few merges and the ChatML specials: a
    /// real model candle runs, small enough for the tests.
    pub fn tiny_llama() -> Vec<u8> {
        let (dim, layers, heads, kv_heads, ff) = (32u64, 2, 4u64, 2u64, 64u64);
        let head_dim = dim / heads;
        let mut tokens: Vec<String> = vec!["<|endoftext|>".into(), "<|im_start|>".into(), "<|im_end|>".into()];
        tokens.extend(byte_symbols());
        let merges: Vec<String> = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r", "o n", "Ġ s"].map(String::from).to_vec();
        for m in &merges {
            tokens.push(m.replace(' ', ""));
        }
        let vocab = tokens.len() as u64;
        let mut types = vec![3i32; 3];
        types.extend(std::iter::repeat_n(1, tokens.len() - 3));
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rand = |n: u64| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.4
                })
                .collect()
        };
        let mut t: Vec<(String, Vec<u64>, Vec<f32>)> = vec![
            ("token_embd.weight".into(), vec![dim, vocab], rand(dim * vocab)),
            ("output_norm.weight".into(), vec![dim], vec![1.0; dim as usize]),
        ];
        for l in 0..layers {
            let p = format!("blk.{l}");
            t.push((format!("{p}.attn_norm.weight"), vec![dim], vec![1.0; dim as usize]));
            t.push((format!("{p}.ffn_norm.weight"), vec![dim], vec![1.0; dim as usize]));
            t.push((format!("{p}.attn_q.weight"), vec![dim, dim], rand(dim * dim)));
            t.push((format!("{p}.attn_k.weight"), vec![dim, kv_heads * head_dim], rand(dim * kv_heads * head_dim)));
            t.push((format!("{p}.attn_v.weight"), vec![dim, kv_heads * head_dim], rand(dim * kv_heads * head_dim)));
            t.push((format!("{p}.attn_output.weight"), vec![dim, dim], rand(dim * dim)));
            t.push((format!("{p}.ffn_gate.weight"), vec![dim, ff], rand(dim * ff)));
            t.push((format!("{p}.ffn_up.weight"), vec![dim, ff], rand(dim * ff)));
            t.push((format!("{p}.ffn_down.weight"), vec![ff, dim], rand(ff * dim)));
        }
        let tensors: Vec<(&str, Vec<u64>, Vec<f32>)> =
            t.iter().map(|(n, d, v)| (n.as_str(), d.clone(), v.clone())).collect();
        let template = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}\
                        {% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
        file(
            &[
                ("general.architecture", Meta::Str("llama")),
                ("general.name", Meta::Str("tiny-llama")),
                ("llama.block_count", Meta::U32(layers)),
                ("llama.context_length", Meta::U32(1024)),
                ("llama.embedding_length", Meta::U32(dim as u32)),
                ("llama.feed_forward_length", Meta::U32(ff as u32)),
                ("llama.attention.head_count", Meta::U32(heads as u32)),
                ("llama.attention.head_count_kv", Meta::U32(kv_heads as u32)),
                ("llama.rope.dimension_count", Meta::U32(head_dim as u32)),
                ("llama.attention.layer_norm_rms_epsilon", Meta::F32(1e-5)),
                ("tokenizer.ggml.model", Meta::Str("gpt2")),
                ("tokenizer.ggml.pre", Meta::Str("smollm")),
                ("tokenizer.ggml.tokens", Meta::Strs(tokens)),
                ("tokenizer.ggml.token_type", Meta::I32s(types)),
                ("tokenizer.ggml.merges", Meta::Strs(merges)),
                ("tokenizer.ggml.bos_token_id", Meta::U32(1)),
                ("tokenizer.ggml.eos_token_id", Meta::U32(2)),
                ("tokenizer.ggml.add_bos_token", Meta::Bool(false)),
                ("tokenizer.chat_template", Meta::Str(template)),
            ],
            &tensors,
        )
    }

    /// The 256 symbols byte-level BPE maps bytes to (GPT-2's table).
    pub fn byte_symbols() -> Vec<String> {
        let printable: Vec<u32> = (b'!' as u32..=b'~' as u32).chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
        let mut extra = 0;
        let mut symbols = vec![String::new(); 256];
        for b in 0..256u32 {
            let c = if printable.contains(&b) {
                b
            } else {
                extra += 1;
                255 + extra
            };
            symbols[b as usize] = char::from_u32(c).unwrap_or('?').to_string();
        }
        symbols
    }
}

#[cfg(test)]
mod tests {
    use super::write::{Meta, file, tiny_llama};
    use super::*;

    fn parse_bytes(b: &[u8]) -> Result<Content, Error> {
        parse(b, b.len() as u64, &Limits::default())
    }

    fn rule(r: Result<Content, Error>) -> &'static str {
        match r {
            Err(Error::Invalid { format: Format::Gguf, rule, .. }) => rule,
            other => panic!("expected an invalid GGUF, got {other:?}"),
        }
    }

    #[test]
    fn the_tiny_llama_is_valid_and_described() {
        let b = tiny_llama();
        let c = parse_bytes(&b).unwrap();
        let info = describe(&c).unwrap();
        assert_eq!(info.architecture, "llama");
        assert_eq!(info.quantization, "F32");
        assert_eq!(info.context_length, Some(1024));
        assert_eq!(info.unservable_reason, None, "{info:?}");
        assert!(info.chat_template.is_some());
        assert_eq!(c.tensors.len(), 2 + 2 * 9);
    }

    #[test]
    fn every_truncation_is_refused_not_a_panic() {
        let b = tiny_llama();
        // Every cut inside the header, metadata and table; a few inside the data.
        let table_end = parse_bytes(&b).unwrap().data_start as usize;
        for n in (0..table_end).chain((table_end..b.len()).step_by(97)) {
            assert!(parse_bytes(&b[..n]).is_err(), "a file cut at {n} bytes was accepted");
        }
    }

    #[test]
    fn hostile_headers_name_their_rule() {
        let mut b = tiny_llama();
        b[4] = 1;
        assert_eq!(rule(parse_bytes(&b)), "version");
        let mut b = tiny_llama();
        b[4..8].copy_from_slice(&3u32.to_be_bytes());
        assert_eq!(rule(parse_bytes(&b)), "version");
        let mut b = tiny_llama();
        b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(rule(parse_bytes(&b)), "tensor_count");
        let mut b = tiny_llama();
        b[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert_eq!(rule(parse_bytes(&b)), "metadata_count");
        // The first key's length: larger than the file.
        let mut b = tiny_llama();
        b[24..32].copy_from_slice(&(1u64 << 20).to_le_bytes());
        assert_eq!(rule(parse_bytes(&b)), "string_length");
    }

    #[test]
    fn hostile_metadata_and_tables_name_their_rule() {
        let t = |dims: Vec<u64>| vec![("w", dims, vec![0.0f32; 8])];
        let arch = ("general.architecture", Meta::Str("llama"));
        // An array claiming more elements than the file holds.
        let mut b = file(&[arch, ("tokenizer.ggml.token_type", Meta::I32s(vec![1, 2]))], &t(vec![8]));
        let at = b.windows(8).rposition(|w| w == 2u64.to_le_bytes()).unwrap();
        b[at..at + 8].copy_from_slice(&(1u64 << 60).to_le_bytes());
        assert_eq!(rule(parse_bytes(&b)), "array_length");
        let dup = file(&[("a", Meta::U32(1)), ("a", Meta::U32(2))], &t(vec![8]));
        assert_eq!(rule(parse_bytes(&dup)), "metadata_key");
        let align = file(&[("general.alignment", Meta::U32(24))], &t(vec![8]));
        assert_eq!(rule(parse_bytes(&align)), "alignment");
        // A tensor larger than the data: its dimensions say 64 elements, 8 are there.
        let big = file(&[], &[("w", vec![64], vec![0.0; 8])]);
        assert_eq!(rule(parse_bytes(&big)), "tensor_offset");
        let rank = file(&[], &[("w", vec![1, 1, 1, 1, 8], vec![0.0; 8])]);
        assert_eq!(rule(parse_bytes(&rank)), "tensor_dims");
        let overflow = file(&[], &[("w", vec![u64::MAX / 2, 4], vec![0.0; 8])]);
        assert_eq!(rule(parse_bytes(&overflow)), "tensor_dims");
        let twice = file(&[], &[("w", vec![8], vec![0.0; 8]), ("w", vec![8], vec![0.0; 8])]);
        assert_eq!(rule(parse_bytes(&twice)), "tensor_name");
        // Two tensors at the same offset.
        let mut two = file(&[], &[("a", vec![8], vec![0.0; 8]), ("b", vec![8], vec![0.0; 8])]);
        let at = two.windows(8).rposition(|w| w == 32u64.to_le_bytes()).unwrap();
        two[at..at + 8].copy_from_slice(&0u64.to_le_bytes());
        assert_eq!(rule(parse_bytes(&two)), "tensor_offset");
        // An unknown ggml type (an IQ quantization zoo cannot size).
        let mut q = file(&[], &[("w", vec![8], vec![0.0; 8])]);
        let at = 24 + 9 + 4 + 8; // the header, the name, the rank, the one dimension
        q[at..at + 4].copy_from_slice(&19u32.to_le_bytes());
        assert_eq!(rule(parse_bytes(&q)), "tensor_type");
    }

    #[test]
    fn valid_files_zoo_cannot_run_say_why() {
        let b = file(&[("general.architecture", Meta::Str("mamba"))], &[("w", vec![8], vec![0.0; 8])]);
        let info = describe(&parse_bytes(&b).unwrap()).unwrap();
        assert!(info.unservable_reason.unwrap().contains("mamba"));
        let b = file(&[], &[("w", vec![8], vec![0.0; 8])]);
        assert!(matches!(describe(&parse_bytes(&b).unwrap()), Err(Error::Invalid { rule: "architecture", .. })));
    }
}
