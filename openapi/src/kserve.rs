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
    /// Protocol extensions zoo implements (`binary_tensor_data`, `generate`).
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

impl V2TensorMetadata {
    /// The metadata of a tensor of `dtype`, named by the protocol's datatype.
    pub fn new(name: &str, dtype: DType, shape: Vec<i64>) -> Self {
        V2TensorMetadata { name: name.into(), datatype: datatype(dtype).into(), shape }
    }
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

/// `POST /v2/models/{name}/generate` and `.../generate_stream` (Triton's generate
/// extension): the prompt as the model's `text_input`, generation settings in
/// `parameters`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct V2GenerateRequest {
    /// Echoed in the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The prompt, continued as it is (no chat template).
    pub text_input: String,
    #[serde(default)]
    pub parameters: Option<V2GenerateParameters>,
}

/// The generation settings of a generate request (the names of Triton's vLLM
/// and TensorRT-LLM backends). Greedy unless a `temperature` above 0 is given.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct V2GenerateParameters {
    /// Most tokens to generate (default 256, at most the model's context).
    #[serde(default, deserialize_with = "crate::openai::whole::u32")]
    #[schema(minimum = 1, maximum = 4294967295u32)]
    pub max_tokens: Option<u32>,
    /// 0 (greedy, the default) to 2.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 2)]
    pub temperature: Option<f64>,
    #[serde(default)]
    #[schema(exclusive_minimum = 0, maximum = 1)]
    pub top_p: Option<f64>,
    #[serde(default, deserialize_with = "crate::openai::whole::u32")]
    #[schema(minimum = 0, maximum = 4294967295u32)]
    pub top_k: Option<u32>,
    #[serde(default)]
    #[schema(exclusive_minimum = 0, maximum = 10)]
    pub repetition_penalty: Option<f64>,
    #[serde(default, deserialize_with = "crate::openai::whole::i64")]
    #[schema(minimum = -9223372036854775808i64, maximum = 9223372036854775807i64)]
    pub seed: Option<i64>,
    /// Strings that end the text (not included in it).
    #[serde(default)]
    pub stop: Option<crate::openai::Stop>,
    /// `generate` answers with the prompt followed by the generated text unless
    /// this is true; `generate_stream` sends only generated text.
    #[serde(default)]
    pub exclude_input_in_output: Option<bool>,
    /// Accepted for Triton's clients; the route decides (`generate_stream` streams).
    #[serde(default)]
    pub stream: Option<bool>,
}

/// The answer of `generate`, and each event of `generate_stream`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct V2GenerateResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub model_name: String,
    pub model_version: String,
    /// The text (in a stream: the next piece of it).
    pub text_output: String,
    /// Set on the last answer or event: `stop` (the model ended or a stop
    /// string came) or `length` (`max_tokens` or the context ran out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<u32>,
}
