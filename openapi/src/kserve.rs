//! The KServe v2 / Open Inference Protocol REST messages, as the specification
//! names them, so that existing clients (`tritonclient`, KServe's) work with zoo.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use crate::DType;

/// `GET /v2`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct V2ServerMetadata {
    pub name: String,
    pub version: String,
    /// Protocol extensions zoo implements (`binary_tensor_data`).
    pub extensions: Vec<String>,
}

/// `GET /v2/health/live`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct V2Live {
    pub live: bool,
}

/// `GET /v2/health/ready` and the model readiness routes.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct V2Ready {
    pub ready: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// One input or output of a model's metadata.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct V2TensorMetadata {
    pub name: String,
    /// `FP32`, `INT64`, `BYTES`, `BOOL`, ...
    pub datatype: String,
    /// Dimensions; -1 for a variable one.
    pub shape: Vec<i64>,
}

/// `GET /v2/models/{name}[/versions/{version}]`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct V2ModelMetadata {
    pub name: String,
    /// Ready versions, newest first.
    pub versions: Vec<String>,
    /// The format and runtime, e.g. `onnx_ort`, `torchscript_torch`.
    pub platform: String,
    pub inputs: Vec<V2TensorMetadata>,
    pub outputs: Vec<V2TensorMetadata>,
}

/// The parameters zoo reads or writes (the protocol allows others; zoo ignores
/// them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct V2Parameters {
    /// Bytes of the binary part that hold this tensor (binary tensor data extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary_data_size: Option<u64>,
    /// Return this output in the binary part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary_data: Option<bool>,
    /// Return every output in the binary part (request parameter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary_data_output: Option<bool>,
}

/// A tensor of an inference request or response. `data` is flat or nested (row
/// major); with the binary extension it is absent and `parameters.binary_data_size`
/// says how many bytes of the binary part it takes.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct V2Tensor {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<V2Parameters>,
    /// The elements as JSON (kept as text until the datatype is known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub data: Option<Box<RawValue>>,
}

/// An output the client asks for.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct V2RequestedOutput {
    pub name: String,
    /// `binary_data: true` returns this output in the binary part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<V2Parameters>,
}

/// `POST /v2/models/{name}[/versions/{version}]/infer`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct V2InferRequest {
    /// Echoed in the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `binary_data_output: true` returns every output in the binary part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<V2Parameters>,
    pub inputs: Vec<V2Tensor>,
    /// The outputs to return (all by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Vec<V2RequestedOutput>>,
}

/// The answer of an inference request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct V2InferResponse {
    pub model_name: String,
    pub model_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<V2Parameters>,
    pub outputs: Vec<V2Tensor>,
}

/// An error of the v2 routes, as the protocol has it: `{"error": "message"}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct V2Error {
    pub error: String,
}

/// The protocol's name of an element type.
pub fn datatype(d: DType) -> &'static str {
    match d {
        DType::Bool => "BOOL",
        DType::Uint8 => "UINT8",
        DType::Uint16 => "UINT16",
        DType::Uint32 => "UINT32",
        DType::Uint64 => "UINT64",
        DType::Int8 => "INT8",
        DType::Int16 => "INT16",
        DType::Int32 => "INT32",
        DType::Int64 => "INT64",
        DType::Float16 => "FP16",
        DType::Bfloat16 => "BF16",
        DType::Float32 => "FP32",
        DType::Float64 => "FP64",
        DType::String => "BYTES",
        DType::Complex64 | DType::Complex128 | DType::Other => "FP32",
    }
}

/// The element type of a protocol name.
pub fn parse_datatype(s: &str) -> Option<DType> {
    Some(match s {
        "BOOL" => DType::Bool,
        "UINT8" => DType::Uint8,
        "UINT16" => DType::Uint16,
        "UINT32" => DType::Uint32,
        "UINT64" => DType::Uint64,
        "INT8" => DType::Int8,
        "INT16" => DType::Int16,
        "INT32" => DType::Int32,
        "INT64" => DType::Int64,
        "FP16" => DType::Float16,
        "BF16" => DType::Bfloat16,
        "FP32" => DType::Float32,
        "FP64" => DType::Float64,
        "BYTES" => DType::String,
        _ => return None,
    })
}

/// The header that gives the length of the JSON part of a binary request or response.
pub const HEADER_CONTENT_LENGTH: &str = "inference-header-content-length";
