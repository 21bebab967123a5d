//! TorchScript for zoo: the wire protocol between the server and `zoo-torch-worker`.
//!
//! The server never links libtorch. It starts one worker process per loaded
//! TorchScript version and talks to it over a Unix socket that it hands the worker
//! as its stdin, so a model that prints (TorchScript has `print`) cannot corrupt
//! the stream: the worker's stdout and stderr are only logs. A worker that crashes
//! takes down one model's process, never the server, and a server without libtorch
//! still starts and says why TorchScript versions are not servable.
//!
//! Every message is one frame: a `u32` (LE) header length, the JSON header, a `u64`
//! (LE) payload length, then the payload: the raw little-endian bytes of the
//! tensors that the header describes by offset and length.
//!
//! This crate holds no libtorch code; the worker binary (feature `torch`) does.
//! The worker confines itself before it opens a model: see [`sandbox`].

use std::io::{Read, Write};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Largest JSON header of a frame.
pub const MAX_HEADER: usize = 16 * 1024 * 1024;
/// Largest payload of a request frame (the server's inputs); replies are bounded
/// by the version's output limit.
pub const MAX_PAYLOAD: u64 = 8 * 1024 * 1024 * 1024;

pub mod sandbox;
/// The libtorch version the worker is built against (tch 0.26).
pub const LIBTORCH_VERSION: &str = "2.13.0";
/// The worker's file name.
pub const WORKER_BIN: &str = "zoo-torch-worker";

/// Element types that cross the wire. Half-precision outputs are sent as `F32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DType {
    F32,
    F64,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }
}

/// A tensor on the wire: element type, shape and little-endian bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct WireTensor {
    pub dtype: DType,
    pub shape: Vec<u64>,
    pub data: Vec<u8>,
}

impl WireTensor {
    /// Elements, from the shape.
    pub fn numel(&self) -> Option<u64> {
        self.shape.iter().try_fold(1u64, |a, d| a.checked_mul(*d))
    }

    /// The single value of a one-element tensor, as i64 or f64 as its type allows.
    pub fn scalar(&self) -> Option<Scalar> {
        if self.numel() != Some(1) || self.data.len() != self.dtype.size() {
            return None;
        }
        let d = &self.data;
        Some(match self.dtype {
            DType::F32 => Scalar::Float(f32::from_le_bytes(d[..4].try_into().ok()?) as f64),
            DType::F64 => Scalar::Float(f64::from_le_bytes(d[..8].try_into().ok()?)),
            DType::I64 => Scalar::Int(i64::from_le_bytes(d[..8].try_into().ok()?)),
            DType::I32 => Scalar::Int(i32::from_le_bytes(d[..4].try_into().ok()?) as i64),
            DType::I16 => Scalar::Int(i16::from_le_bytes(d[..2].try_into().ok()?) as i64),
            DType::I8 => Scalar::Int(d[0] as i8 as i64),
            DType::U8 => Scalar::Int(d[0] as i64),
            DType::Bool => Scalar::Bool(d[0] != 0),
        })
    }
}

/// One value of a one-element tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scalar {
    Int(i64),
    Float(f64),
    Bool(bool),
}

/// Where a tensor's bytes are in the payload of its frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorHeader {
    pub dtype: DType,
    pub shape: Vec<u64>,
    pub offset: u64,
    pub len: u64,
}

/// One argument of the module's `forward`, as its TorchScript type names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arg {
    pub name: String,
    /// `Tensor`, `int`, `float`, `bool`, `List[int]`, `Optional[Tensor]`, ...
    pub ty: String,
    /// The argument has a default value: it may be left out when every argument
    /// after it is left out too (an `Optional` left out anywhere is `None`).
    #[serde(default)]
    pub has_default: bool,
}

/// Server -> worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// The first message: confine yourself with `sandbox`, then load this
    /// TorchScript file. Outputs larger than `max_output_bytes` are refused.
    Load { model: String, args: Vec<Arg>, threads: usize, sandbox: sandbox::Policy, max_output_bytes: u64 },
    /// Run `forward` on one input per argument (`None`: not given).
    Run { inputs: Vec<Option<TensorHeader>> },
}

/// Why the worker refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// libtorch could not load the module (or the sandbox could not be applied).
    Load,
    /// The inputs do not fit the module's arguments (the client's fault).
    Input,
    /// `forward` raised.
    Run,
}

/// Worker -> server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    /// The module is loaded. `stateful`: it has `reset_states()`, which the worker
    /// calls before every request so that requests stay independent.
    Loaded {
        stateful: bool,
        libtorch: String,
        /// The protections in force in this worker.
        sandbox: sandbox::Report,
    },
    Outputs {
        outputs: Vec<(String, TensorHeader)>,
    },
    Failed {
        kind: FailureKind,
        message: String,
    },
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The other side closed the stream before a frame started.
    #[error("the stream ended")]
    Closed,
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A payload larger than the reader accepts; nothing of it was read.
    #[error("a payload of {len} bytes is larger than the limit of {limit} bytes")]
    TooLarge { len: u64, limit: u64 },
}

/// Write one frame: `header`, then the payload made of `parts` in order.
pub fn write_frame<W: Write, H: Serialize>(w: &mut W, header: &H, parts: &[&[u8]]) -> Result<(), ProtocolError> {
    let json = serde_json::to_vec(header).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    if json.len() > MAX_HEADER {
        return Err(ProtocolError::Malformed(format!("a header of {} bytes is over the limit", json.len())));
    }
    let payload: u64 = parts.iter().map(|p| p.len() as u64).sum();
    w.write_all(&(json.len() as u32).to_le_bytes())?;
    w.write_all(&json)?;
    w.write_all(&payload.to_le_bytes())?;
    for p in parts {
        w.write_all(p)?;
    }
    w.flush()?;
    Ok(())
}

/// Read one frame: its header and its payload of at most `max_payload` bytes (a
/// larger one is refused before any of it is read: the stream is then unusable).
pub fn read_frame<R: Read, H: DeserializeOwned>(r: &mut R, max_payload: u64) -> Result<(H, Vec<u8>), ProtocolError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(ProtocolError::Closed),
        other => other?,
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_HEADER {
        return Err(ProtocolError::Malformed(format!("a header of {len} bytes is over the limit")));
    }
    let mut json = vec![0u8; len];
    r.read_exact(&mut json)?;
    let header = serde_json::from_slice(&json).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    let mut plen = [0u8; 8];
    r.read_exact(&mut plen)?;
    let plen = u64::from_le_bytes(plen);
    if plen > max_payload.min(MAX_PAYLOAD) {
        return Err(ProtocolError::TooLarge { len: plen, limit: max_payload.min(MAX_PAYLOAD) });
    }
    let mut payload = Vec::with_capacity(plen.min(64 << 20) as usize);
    r.take(plen).read_to_end(&mut payload)?;
    if payload.len() as u64 != plen {
        return Err(ProtocolError::Malformed("the payload ends early".into()));
    }
    Ok((header, payload))
}

/// Lay tensors out in one payload: their headers (in order) and the bytes.
pub fn pack<'a>(
    tensors: impl IntoIterator<Item = Option<&'a WireTensor>>,
) -> (Vec<Option<TensorHeader>>, Vec<&'a [u8]>) {
    let mut offset = 0u64;
    let mut headers = Vec::new();
    let mut parts = Vec::new();
    for t in tensors {
        headers.push(t.map(|t| {
            let h = TensorHeader { dtype: t.dtype, shape: t.shape.clone(), offset, len: t.data.len() as u64 };
            offset += t.data.len() as u64;
            parts.push(t.data.as_slice());
            h
        }));
    }
    (headers, parts)
}

/// The tensor a header describes, checked against the payload and its own shape.
pub fn unpack(h: &TensorHeader, payload: &[u8]) -> Result<WireTensor, ProtocolError> {
    let bad = |m: &str| ProtocolError::Malformed(m.to_string());
    let numel = h.shape.iter().try_fold(1u64, |a, d| a.checked_mul(*d)).ok_or_else(|| bad("shape overflows"))?;
    let want = numel.checked_mul(h.dtype.size() as u64).ok_or_else(|| bad("shape overflows"))?;
    if want != h.len {
        return Err(bad("a tensor's byte length does not match its shape"));
    }
    let end = h
        .offset
        .checked_add(h.len)
        .filter(|e| *e <= payload.len() as u64)
        .ok_or_else(|| bad("a tensor lies outside the payload"))?;
    Ok(WireTensor { dtype: h.dtype, shape: h.shape.clone(), data: payload[h.offset as usize..end as usize].to_vec() })
}

/// Weights of the example MLP (4 -> 8 -> 3, ReLU): simple exact fractions, so a
/// test can compute the expected outputs by hand.
pub fn example_mlp_weights() -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let w1 = (0..32).map(|i| ((i * 7 % 11) as f32 - 5.0) / 8.0).collect(); // [8, 4]
    let b1 = (0..8).map(|i| (i as f32 - 3.0) / 16.0).collect();
    let w2 = (0..24).map(|i| ((i * 5 % 9) as f32 - 4.0) / 8.0).collect(); // [3, 8]
    let b2 = (0..3).map(|i| i as f32 / 4.0).collect();
    (w1, b1, w2, b2)
}

/// The example MLP's output for one row, computed without libtorch.
pub fn example_mlp_forward(x: &[f32; 4]) -> [f32; 3] {
    let (w1, b1, w2, b2) = example_mlp_weights();
    let hidden: Vec<f32> =
        (0..8).map(|j| (b1[j] + (0..4).map(|k| w1[j * 4 + k] * x[k]).sum::<f32>()).max(0.0)).collect();
    std::array::from_fn(|i| b2[i] + (0..8).map(|j| w2[i * 8 + j] * hidden[j]).sum::<f32>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_with_tensors() {
        let a = WireTensor {
            dtype: DType::F32,
            shape: vec![2],
            data: [1.5f32, -2.0].iter().flat_map(|f| f.to_le_bytes()).collect(),
        };
        let b = WireTensor { dtype: DType::I64, shape: vec![], data: 16000i64.to_le_bytes().to_vec() };
        let (headers, parts) = pack([Some(&a), None, Some(&b)]);
        let mut buf = Vec::new();
        write_frame(&mut buf, &Request::Run { inputs: headers }, &parts).unwrap();
        let (req, payload): (Request, Vec<u8>) = read_frame(&mut buf.as_slice(), MAX_PAYLOAD).unwrap();
        let Request::Run { inputs } = req else { panic!("not a run") };
        assert!(inputs[1].is_none());
        assert_eq!(unpack(inputs[0].as_ref().unwrap(), &payload).unwrap(), a);
        let sr = unpack(inputs[2].as_ref().unwrap(), &payload).unwrap();
        assert_eq!(sr.scalar(), Some(Scalar::Int(16000)));
    }

    #[test]
    fn hostile_frames_are_refused() {
        // An empty stream is a clean close; a header claiming 4 GiB is refused before
        // anything is allocated; a tensor pointing past the payload is refused.
        assert!(matches!(read_frame::<_, Request>(&mut [].as_slice(), MAX_PAYLOAD), Err(ProtocolError::Closed)));
        let huge = u32::MAX.to_le_bytes();
        assert!(matches!(
            read_frame::<_, Request>(&mut huge.as_slice(), MAX_PAYLOAD),
            Err(ProtocolError::Malformed(_))
        ));
        // A reply over the reader's limit is refused from its length alone.
        let mut frame = Vec::new();
        let reply = Reply::Failed { kind: FailureKind::Run, message: "x".into() };
        write_frame(&mut frame, &reply, &[&[0u8; 100]]).unwrap();
        let err = read_frame::<_, Reply>(&mut frame.as_slice(), 99).unwrap_err();
        assert!(matches!(err, ProtocolError::TooLarge { len: 100, limit: 99 }), "{err}");
        let h = TensorHeader { dtype: DType::F32, shape: vec![4], offset: 8, len: 16 };
        assert!(unpack(&h, &[0u8; 16]).is_err());
        let lying = TensorHeader { dtype: DType::F32, shape: vec![u64::MAX, 2], offset: 0, len: 0 };
        assert!(unpack(&lying, &[]).is_err());
        let short = TensorHeader { dtype: DType::F64, shape: vec![3], offset: 0, len: 16 };
        assert!(unpack(&short, &[0u8; 16]).is_err());
    }
}
