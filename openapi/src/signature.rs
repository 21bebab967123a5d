//! The signature of a model version: what it takes and what it returns, derived
//! from the artifact itself by `zoo-formats`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Artifact format of a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Onnx,
    Torchscript,
    Safetensors,
    Mlflow,
    /// llama.cpp's GGUF: a language model's (usually quantized) weights with its
    /// tokenizer and chat template in the metadata.
    Gguf,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Onnx => "onnx",
            Format::Torchscript => "torchscript",
            Format::Safetensors => "safetensors",
            Format::Mlflow => "mlflow",
            Format::Gguf => "gguf",
        }
    }

    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "onnx" => Some(Format::Onnx),
            "torchscript" => Some(Format::Torchscript),
            "safetensors" => Some(Format::Safetensors),
            "mlflow" => Some(Format::Mlflow),
            "gguf" => Some(Format::Gguf),
            _ => None,
        }
    }
}

/// What a version does, which decides the shape of its predict request and response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    /// Named tensors in, named tensors out.
    Tensor,
    /// Text in, labels with scores out.
    TextClassification,
    /// Text in, one embedding vector per text out.
    FeatureExtraction,
    /// Text in, the entities found in it out (named-entity recognition).
    TokenClassification,
    /// An image (JPEG or PNG) in, labels with scores out.
    ImageClassification,
    /// A prompt (or a chat) in, the text the model continues it with out.
    TextGeneration,
}

impl Task {
    /// Every task, in the order the catalogue and the CLI list them.
    pub const ALL: [Task; 6] = [
        Task::Tensor,
        Task::TextClassification,
        Task::FeatureExtraction,
        Task::TokenClassification,
        Task::ImageClassification,
        Task::TextGeneration,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Task::Tensor => "tensor",
            Task::TextClassification => "text-classification",
            Task::FeatureExtraction => "feature-extraction",
            Task::TokenClassification => "token-classification",
            Task::ImageClassification => "image-classification",
            Task::TextGeneration => "text-generation",
        }
    }

    /// Whether a version of this task with `signature` takes a bare text
    /// (`{"inputs": "a text"}`, `zoo predict NAME "a text"`, the catalogue's text box).
    /// Text tasks do, except MLflow bundles, which answer in MLflow's own shape and
    /// are shown with MLflow's request formats.
    pub fn takes_text(self, signature: &Signature) -> bool {
        matches!(
            self,
            Task::TextClassification | Task::FeatureExtraction | Task::TokenClassification | Task::TextGeneration
        ) && signature.mlflow.is_none()
    }

    /// Whether a version of this task with `signature` takes an image (a JPEG or
    /// PNG as the body, in a form, or base64 in JSON; `zoo predict NAME --file`,
    /// the catalogue's file picker). MLflow bundles take MLflow's formats.
    pub fn takes_image(self, signature: &Signature) -> bool {
        self == Task::ImageClassification && signature.mlflow.is_none()
    }

    pub fn parse(s: &str) -> Option<Task> {
        Task::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// Element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DType {
    Float32,
    Float64,
    Float16,
    Bfloat16,
    Int8,
    Int16,
    Int32,
    Int64,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Bool,
    String,
    Complex64,
    Complex128,
    /// A type zoo does not name (for example the 8- and 4-bit float types).
    Other,
}

impl DType {
    pub fn as_str(self) -> &'static str {
        match self {
            DType::Float32 => "float32",
            DType::Float64 => "float64",
            DType::Float16 => "float16",
            DType::Bfloat16 => "bfloat16",
            DType::Int8 => "int8",
            DType::Int16 => "int16",
            DType::Int32 => "int32",
            DType::Int64 => "int64",
            DType::Uint8 => "uint8",
            DType::Uint16 => "uint16",
            DType::Uint32 => "uint32",
            DType::Uint64 => "uint64",
            DType::Bool => "bool",
            DType::String => "string",
            DType::Complex64 => "complex64",
            DType::Complex128 => "complex128",
            DType::Other => "other",
        }
    }

    /// The type named by `as_str`.
    pub fn parse(s: &str) -> Option<DType> {
        const ALL: [DType; 17] = [
            DType::Float32,
            DType::Float64,
            DType::Float16,
            DType::Bfloat16,
            DType::Int8,
            DType::Int16,
            DType::Int32,
            DType::Int64,
            DType::Uint8,
            DType::Uint16,
            DType::Uint32,
            DType::Uint64,
            DType::Bool,
            DType::String,
            DType::Complex64,
            DType::Complex128,
            DType::Other,
        ];
        ALL.into_iter().find(|d| d.as_str() == s)
    }
}

/// One dimension of a shape: a fixed size, a symbolic name (`batch`, `N`), or unknown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Dim {
    Fixed(i64),
    Symbolic(String),
    Unknown(Option<()>),
}

impl utoipa::PartialSchema for Dim {
    /// An integer (fixed), a string (symbolic) or null (unknown): disjoint types.
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{Object, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(Object::with_type(Type::Integer))
            .item(Object::with_type(Type::String))
            .item(Object::with_type(Type::Null))
            .description(Some(
                "One dimension of a shape: a fixed size, a symbolic name (`batch`, `N`), or null when unknown.",
            ))
            .into()
    }
}

impl ToSchema for Dim {}

impl Dim {
    pub fn fixed(&self) -> Option<i64> {
        match self {
            Dim::Fixed(n) => Some(*n),
            _ => None,
        }
    }
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Symbolic(s) => f.write_str(s),
            Dim::Unknown(_) => f.write_str("?"),
        }
    }
}

/// Kind of value an input or output carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ValueKind {
    Tensor,
    Sequence,
    Map,
    Optional,
    SparseTensor,
}

/// One named input or output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TensorSpec {
    pub name: String,
    pub kind: ValueKind,
    /// Element type (for sequences and maps, of the innermost tensor values).
    pub dtype: DType,
    /// Dimensions; absent when the rank is unknown.
    pub shape: Option<Vec<Dim>>,
    /// The full type as text, e.g. `tensor(float)[N,4]` or `seq(map(int64,tensor(float)))`.
    pub type_text: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub doc: String,
    /// The input may be left out (a TorchScript `Optional[...]` argument or one
    /// with a default value).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
}

impl TensorSpec {
    /// The leading dimension is symbolic or unknown, so requests may stack items.
    pub fn has_batch_dim(&self) -> bool {
        matches!(self.shape.as_deref(), Some([Dim::Symbolic(_) | Dim::Unknown(_), ..]))
    }
}

/// An operator set the model imports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Opset {
    /// Empty for the default `ai.onnx` domain.
    pub domain: String,
    pub version: i64,
}

/// ONNX-specific facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OnnxInfo {
    pub ir_version: i64,
    pub opsets: Vec<Opset>,
    pub producer_name: String,
    pub producer_version: String,
    pub graph_name: String,
    pub node_count: usize,
    /// Distinct operator types used by the graph (`domain:Op` outside the default domain).
    pub operators: Vec<String>,
    /// Files holding external tensor data, relative to the bundle.
    pub external_data: Vec<String>,
    /// `metadata_props` of the model.
    pub metadata: BTreeMap<String, String>,
}

/// One tensor of a safetensors weights file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WeightTensor {
    pub name: String,
    /// The safetensors dtype name: `F32`, `F16`, `BF16`, `I64`, ...
    pub dtype: String,
    pub shape: Vec<u64>,
}

/// safetensors-specific facts: the tensor table of the weights file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SafetensorsInfo {
    /// Tensors in the order of their data in the file.
    pub tensors: Vec<WeightTensor>,
    /// Elements in all tensors together.
    pub parameters: u64,
    /// `__metadata__` of the header.
    pub metadata: BTreeMap<String, String>,
}

/// MLflow-specific facts, from the bundle's `MLmodel`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MlflowInfo {
    /// Flavors the bundle was logged with (`onnx`, `python_function`, `sklearn`, ...).
    pub flavors: Vec<String>,
    pub mlflow_version: Option<String>,
    /// The flavor zoo serves the bundle with: `onnx`, `transformers` or `sklearn` (skops).
    #[serde(default)]
    pub served_flavor: Option<String>,
    /// The file zoo serves (the `onnx` flavor's data, the transformers weights or
    /// the skops archive), relative to the bundle.
    pub model_file: Option<String>,
    /// The method MLflow's pyfunc calls (`python_function.predict_fn`): `predict`
    /// unless the model was logged with another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predict_fn: Option<String>,
    /// `tokenizer.json` of a transformers flavor, relative to the bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<String>,
    /// MLmodel `signature.inputs` (column or tensor specs), as MLflow wrote them.
    #[schema(value_type = Option<Object>)]
    pub signature_inputs: Option<serde_json::Value>,
    /// MLmodel `signature.outputs`.
    #[schema(value_type = Option<Object>)]
    pub signature_outputs: Option<serde_json::Value>,
    /// The serving input example in the bundle, if MLflow saved one.
    pub input_example: Option<String>,
    /// Why no runtime of zoo can serve these flavors, when none can.
    pub unservable_reason: Option<String>,
}

/// TorchScript-specific facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TorchscriptInfo {
    /// The archive's top-level folder (the saved module's name).
    pub archive_name: String,
    /// The TorchScript serialization version (`<name>/version`).
    pub version: Option<String>,
    /// The TorchScript code files the signature was read from.
    pub code_files: Vec<String>,
    /// Members of the zip archive.
    pub members: usize,
}

/// A scikit-learn model in the skops format (read as data: no pickle).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SkopsInfo {
    /// The estimator, e.g. `Pipeline(StandardScaler, LogisticRegression)`.
    pub estimator: String,
    /// `classifier` or `regressor`.
    pub kind: String,
    /// Number of input features.
    pub n_features: Option<u64>,
    /// Feature names the estimator was fitted with, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub feature_names: Vec<String>,
    /// Class labels of a classifier, in the order of its probabilities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub classes: Option<Vec<serde_json::Value>>,
    /// scikit-learn version the model was saved with.
    pub sklearn_version: Option<String>,
    /// Why zoo cannot run this estimator, when it cannot.
    pub unservable_reason: Option<String>,
}

/// A GGUF file's model, read from its metadata and tensor table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GgufInfo {
    /// The GGUF version (2 or 3).
    pub version: u32,
    /// `general.architecture`, e.g. `llama`, `qwen2`.
    pub architecture: String,
    /// `general.name`, when the file names its model.
    pub name: Option<String>,
    /// The most common quantization of its weight matrices, e.g. `Q4_1`.
    pub quantization: String,
    /// Parameters (elements of every tensor).
    pub parameters: u64,
    pub tensors: usize,
    /// Tokens of context the model was trained for (`<arch>.context_length`).
    pub context_length: Option<u64>,
    /// Tokens in the vocabulary (`tokenizer.ggml.tokens`).
    pub vocab_size: Option<u64>,
    /// `tokenizer.ggml.model` and `tokenizer.ggml.pre`: which tokenizer.
    pub tokenizer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_tokenizer: Option<String>,
    /// The chat template (`tokenizer.chat_template`, Jinja), when the file has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_template: Option<String>,
    /// Why zoo cannot run this model (its architecture, quantization or
    /// tokenizer), when it cannot; the file is stored and catalogued all the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unservable_reason: Option<String>,
}

/// A Hugging Face decoder directory's language model (`*ForCausalLM`), read
/// from its `config.json`, safetensors header and tokenizer files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DecoderInfo {
    /// `model_type` in config.json: `llama`, `mistral`, `qwen2` or `qwen3`.
    pub model_type: String,
    /// The weights' element type in model.safetensors (e.g. `BF16`); zoo computes in float32.
    pub dtype: String,
    /// Parameters (elements of every tensor).
    pub parameters: u64,
    pub layers: u64,
    pub hidden_size: u64,
    /// Tokens of context the model was trained for (`max_position_embeddings`).
    pub context_length: Option<u64>,
    /// Tokens in the vocabulary (the embedding's rows).
    pub vocab_size: u64,
    /// The chat template (tokenizer_config.json's `chat_template`, or
    /// chat_template.jinja), when the directory has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_template: Option<String>,
    /// Why zoo cannot run this model, when it cannot; the directory is stored and
    /// catalogued all the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unservable_reason: Option<String>,
}

/// A file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BundleFile {
    pub path: String,
    pub size: u64,
}

/// Text pre-processing facts of a bundle with a tokenizer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TextInfo {
    /// Tokens per text after truncation.
    pub max_length: usize,
    /// Class labels by index, from `config.json` `id2label`.
    pub labels: Vec<String>,
    /// Pooling for feature extraction: `mean`, `cls` or `max`.
    pub pooling: String,
    /// Whether embeddings are L2-normalised by default.
    pub normalize: bool,
    /// Path of `tokenizer.json` in the bundle.
    #[serde(default = "default_tokenizer")]
    pub tokenizer: String,
}

/// Image pre-processing facts of a bundle with `preprocessor_config.json`, as
/// transformers' image processor applies them: decode, convert to RGB, resize,
/// centre-crop, rescale, normalise, channels first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ImageInfo {
    /// The model's image input (`[batch, channels, height, width]`, float32).
    pub input: String,
    /// Height and width of the model's input.
    pub height: u32,
    pub width: u32,
    /// How an image is resized first (none: it must have the model's size).
    pub resize: Option<ImageResize>,
    /// The resampling filter: `nearest`, `bilinear` or `bicubic` (Pillow's).
    pub resample: String,
    /// A centre crop to `[height, width]` after the resize.
    pub crop: Option<[u32; 2]>,
    /// What pixel values (0..255) are multiplied by.
    pub rescale: Option<f64>,
    /// Per-channel mean and standard deviation subtracted and divided by.
    pub normalize: Option<ImageNormalize>,
    /// Class labels by index, from `config.json` `id2label`.
    pub labels: Vec<String>,
}

/// An image's resize: to a fixed size, or its shorter edge to a length (the
/// longer one kept in proportion).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImageResize {
    Exact { height: u32, width: u32 },
    ShortestEdge(u32),
}

/// Per-channel normalisation: `(x - mean) / std`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ImageNormalize {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

fn default_tokenizer() -> String {
    "tokenizer.json".into()
}

impl Signature {
    /// Tokens of context of a language model (GGUF or a Hugging Face decoder).
    pub fn context_length(&self) -> Option<u64> {
        self.gguf.as_ref().and_then(|g| g.context_length).or(self.decoder.as_ref().and_then(|d| d.context_length))
    }

    /// Whether this is a language model that zoo's generation engine runs.
    pub fn generates(&self) -> bool {
        self.gguf.is_some() || self.decoder.is_some()
    }

    /// A signature with no inputs, outputs or format details yet.
    pub fn empty(format: Format, bundle: bool) -> Signature {
        Signature {
            format,
            bundle,
            inputs: vec![],
            outputs: vec![],
            onnx: None,
            safetensors: None,
            mlflow: None,
            torchscript: None,
            skops: None,
            text: None,
            image: None,
            gguf: None,
            decoder: None,
            files: vec![],
        }
    }
}

/// What a version takes and returns, derived from the artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Signature {
    pub format: Format,
    /// The artifact is a bundle (an archive of several files).
    pub bundle: bool,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onnx: Option<OnnxInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safetensors: Option<SafetensorsInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlflow: Option<MlflowInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torchscript: Option<TorchscriptInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skops: Option<SkopsInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gguf: Option<GgufInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoder: Option<DecoderInfo>,
    /// Files of a bundle, with their sizes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<BundleFile>,
}
