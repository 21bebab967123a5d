//! ONNX validation and signature extraction.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;

use prost::Message;
use prost::bytes::Bytes;
use zoo_api::{BundleFile, DType, Dim, Format, OnnxInfo, Opset, Signature, TensorSpec, ValueKind};

use crate::onnx_proto::{
    AttributeProto, GraphProto, ModelProto, SparseTensorProto, TensorProto, TypeProto, ValueInfoProto, data_type,
    tensor_shape_proto, type_proto,
};
use crate::{
    Artifact, BundleKind, Engine, Error, Limits, Sniffed, Stored, Upload, UploadKind, bundle_model_file, derive_task,
    read_limited, unknown_format,
};

/// The oldest IR version zoo reads (ONNX 1.0). Newer versions than a runtime
/// reads are stored and described, and not served by that runtime (the server
/// decides: `zoo_server::runtime::ort::MAX_IR_VERSION`).
const MIN_IR_VERSION: i64 = 3;

fn invalid(rule: &'static str, message: impl Into<String>) -> Error {
    Error::Invalid { format: Format::Onnx, rule, message: message.into() }
}

/// Does this look like an ONNX model? (decodes as a ModelProto with a graph and an
/// IR version). Cheap enough for sniffing: callers pass the whole file.
pub fn looks_like_onnx(bytes: &[u8]) -> bool {
    match ModelProto::decode(bytes) {
        Ok(m) => m.ir_version > 0 && m.graph.is_some(),
        Err(_) => false,
    }
}

/// Validate an ONNX model and derive its signature.
///
/// `bundle_dir` is the directory of the bundle the file came from, if any: external
/// tensor data must be a file inside it. A single uploaded file may not reference
/// external data at all.
pub fn inspect(bytes: Bytes, bundle_dir: Option<&Path>, limits: &Limits) -> Result<Signature, Error> {
    if bytes.len() as u64 > limits.max_onnx_size {
        return Err(Error::TooLarge {
            what: "ONNX file".into(),
            size: bytes.len() as u64,
            limit: limits.max_onnx_size,
        });
    }
    let model = ModelProto::decode(bytes)
        .map_err(|e| invalid("protobuf", format!("not a valid ONNX protobuf (truncated or corrupt?): {e}")))?;

    if model.ir_version < MIN_IR_VERSION {
        return Err(invalid(
            "ir_version",
            format!(
                "IR version {} is older than any ONNX release (zoo reads {MIN_IR_VERSION} and later)",
                model.ir_version
            ),
        ));
    }
    if model.opset_import.is_empty() {
        return Err(invalid("opset", "the model imports no operator set (opset_import is empty)"));
    }
    let mut opsets = Vec::new();
    for o in &model.opset_import {
        if o.version < 1 {
            return Err(invalid("opset", format!("opset version {} of domain '{}' is invalid", o.version, o.domain)));
        }
        opsets.push(Opset { domain: o.domain.clone(), version: o.version });
    }
    let graph = model.graph.as_ref().ok_or_else(|| invalid("graph", "the model has no graph"))?;
    if graph.output.is_empty() {
        return Err(invalid("graph", "the graph declares no outputs"));
    }

    let mut external = BTreeSet::new();
    check_graph_tensors(graph, bundle_dir, &mut external)?;
    // Functions' nodes carry tensors in their attributes like the graph's do.
    for f in &model.functions {
        for a in f.node.iter().flat_map(|n| &n.attribute).chain(&f.attribute_proto) {
            check_attribute_tensors(a, bundle_dir, &mut external)?;
        }
    }
    check_references(graph)?;

    let initializers: HashSet<&str> = graph
        .initializer
        .iter()
        .map(|t| t.name.as_str())
        .chain(graph.sparse_initializer.iter().filter_map(|s| s.values.as_ref()).map(|t| t.name.as_str()))
        .collect();
    let inputs = graph
        .input
        .iter()
        .filter(|i| !initializers.contains(i.name.as_str()))
        .map(|v| spec(v, "input"))
        .collect::<Result<Vec<_>, _>>()?;
    let outputs = graph.output.iter().map(|v| spec(v, "output")).collect::<Result<Vec<_>, _>>()?;

    let mut operators = BTreeSet::new();
    collect_ops(graph, &mut operators);

    Ok(Signature {
        bundle: bundle_dir.is_some(),
        inputs,
        outputs,
        onnx: Some(OnnxInfo {
            ir_version: model.ir_version,
            opsets,
            producer_name: model.producer_name.clone(),
            producer_version: model.producer_version.clone(),
            graph_name: graph.name.clone(),
            node_count: graph.node.len(),
            operators: operators.into_iter().collect(),
            external_data: external.into_iter().collect(),
            metadata: model.metadata_props.iter().map(|p| (p.key.clone(), p.value.clone())).collect::<BTreeMap<_, _>>(),
        }),
        ..Signature::empty(Format::Onnx, bundle_dir.is_some())
    })
}

fn collect_ops(graph: &GraphProto, out: &mut BTreeSet<String>) {
    for n in &graph.node {
        if n.domain.is_empty() || n.domain == "ai.onnx" {
            out.insert(n.op_type.clone());
        } else {
            out.insert(format!("{}:{}", n.domain, n.op_type));
        }
        for a in &n.attribute {
            for g in a.g.iter().map(|g| g.as_ref()).chain(a.graphs.iter()) {
                collect_ops(g, out);
            }
        }
    }
}

/// Every node input of the top-level graph is produced by something, and every
/// output is produced. (Subgraphs may use outer names, so they are not checked here.)
fn check_references(graph: &GraphProto) -> Result<(), Error> {
    let mut known: HashSet<&str> = HashSet::new();
    known.extend(graph.input.iter().map(|v| v.name.as_str()));
    known.extend(graph.initializer.iter().map(|t| t.name.as_str()));
    known.extend(graph.sparse_initializer.iter().filter_map(|s| s.values.as_ref()).map(|t| t.name.as_str()));
    for n in &graph.node {
        for i in &n.input {
            if !i.is_empty() && !known.contains(i.as_str()) {
                let node = if n.name.is_empty() { n.op_type.as_str() } else { n.name.as_str() };
                return Err(invalid(
                    "graph",
                    format!("node '{node}' uses '{i}', which no input, initializer or earlier node produces"),
                ));
            }
        }
        known.extend(n.output.iter().map(|s| s.as_str()));
    }
    for o in &graph.output {
        if !known.contains(o.name.as_str()) {
            return Err(invalid("graph", format!("graph output '{}' is produced by no node", o.name)));
        }
    }
    Ok(())
}

fn check_graph_tensors(
    graph: &GraphProto,
    bundle_dir: Option<&Path>,
    external: &mut BTreeSet<String>,
) -> Result<(), Error> {
    for t in &graph.initializer {
        check_tensor(t, bundle_dir, external)?;
    }
    for s in &graph.sparse_initializer {
        check_sparse(s, bundle_dir, external)?;
    }
    for a in graph.node.iter().flat_map(|n| &n.attribute) {
        check_attribute_tensors(a, bundle_dir, external)?;
    }
    Ok(())
}

/// The tensors an attribute holds (dense, sparse, and those of its subgraphs).
fn check_attribute_tensors(
    a: &AttributeProto,
    bundle_dir: Option<&Path>,
    external: &mut BTreeSet<String>,
) -> Result<(), Error> {
    for t in a.t.iter().chain(a.tensors.iter()) {
        check_tensor(t, bundle_dir, external)?;
    }
    for s in a.sparse_tensor.iter().chain(a.sparse_tensors.iter()) {
        check_sparse(s, bundle_dir, external)?;
    }
    for g in a.g.iter().map(|g| g.as_ref()).chain(a.graphs.iter()) {
        check_graph_tensors(g, bundle_dir, external)?;
    }
    Ok(())
}

/// A sparse tensor: its values and indices are tensors under the same rules.
fn check_sparse(
    s: &SparseTensorProto,
    bundle_dir: Option<&Path>,
    external: &mut BTreeSet<String>,
) -> Result<(), Error> {
    let name = s.values.as_ref().map_or("", |v| v.name.as_str());
    if s.dims.iter().any(|d| *d < 0) {
        return Err(invalid("tensor", format!("sparse tensor '{name}' has a negative dimension {:?}", s.dims)));
    }
    let values = s.values.as_ref().ok_or_else(|| invalid("tensor", "a sparse tensor has no values"))?;
    check_tensor(values, bundle_dir, external)?;
    if let Some(indices) = &s.indices {
        check_tensor(indices, bundle_dir, external)?;
    }
    Ok(())
}

fn elem_size(dt: i32) -> Option<u64> {
    Some(match dt {
        data_type::FLOAT | data_type::INT32 | data_type::UINT32 => 4,
        data_type::UINT8 | data_type::INT8 | data_type::BOOL => 1,
        data_type::UINT16 | data_type::INT16 | data_type::FLOAT16 | data_type::BFLOAT16 => 2,
        data_type::INT64 | data_type::DOUBLE | data_type::UINT64 | data_type::COMPLEX64 => 8,
        data_type::COMPLEX128 => 16,
        _ => return None,
    })
}

fn check_tensor(t: &TensorProto, bundle_dir: Option<&Path>, external: &mut BTreeSet<String>) -> Result<(), Error> {
    if t.data_type <= 0 || t.data_type > data_type::MAX_KNOWN {
        return Err(invalid("tensor", format!("tensor '{}' has unknown data type {}", t.name, t.data_type)));
    }
    if t.dims.iter().any(|d| *d < 0) {
        return Err(invalid("tensor", format!("tensor '{}' has a negative dimension {:?}", t.name, t.dims)));
    }
    let count = t.dims.iter().try_fold(1u64, |acc, d| acc.checked_mul(*d as u64));
    let expected_bytes = count.zip(elem_size(t.data_type)).and_then(|(c, s)| c.checked_mul(s));

    if t.data_location == 1 || !t.external_data.is_empty() {
        let mut location = None;
        let mut offset = 0u64;
        let mut length = None;
        for e in &t.external_data {
            match e.key.as_str() {
                "location" => location = Some(e.value.as_str()),
                "offset" => {
                    offset = e.value.parse().map_err(|_| {
                        invalid("external_data", format!("tensor '{}': offset '{}' is not a number", t.name, e.value))
                    })?
                }
                "length" => {
                    length = Some(e.value.parse::<u64>().map_err(|_| {
                        invalid("external_data", format!("tensor '{}': length '{}' is not a number", t.name, e.value))
                    })?)
                }
                _ => {}
            }
        }
        let location = location.ok_or_else(|| {
            invalid("external_data", format!("tensor '{}' is external but names no location", t.name))
        })?;
        let Some(dir) = bundle_dir else {
            return Err(invalid(
                "external_data",
                format!(
                    "tensor '{}' keeps its data in '{location}', but a single file was uploaded: deploy the directory with the model and its data file",
                    t.name
                ),
            ));
        };
        let rel = crate::bundle::safe_relative(location).ok_or_else(|| {
            invalid("external_data", format!("tensor '{}' points outside the bundle: '{location}'", t.name))
        })?;
        let path = dir.join(&rel);
        let meta = std::fs::symlink_metadata(&path).map_err(|_| {
            invalid(
                "external_data",
                format!("tensor '{}' keeps its data in '{location}', which is not in the bundle", t.name),
            )
        })?;
        if !meta.is_file() {
            return Err(invalid(
                "external_data",
                format!("'{location}' (data of tensor '{}') is not a regular file", t.name),
            ));
        }
        let len = length.or(expected_bytes).unwrap_or(0);
        if offset.checked_add(len).is_none_or(|end| end > meta.len()) {
            return Err(invalid(
                "external_data",
                format!(
                    "tensor '{}' reads bytes {offset}..{} of '{location}', which has {} bytes",
                    t.name,
                    offset.saturating_add(len),
                    meta.len()
                ),
            ));
        }
        external.insert(rel.to_string_lossy().into_owned());
        return Ok(());
    }
    if !t.raw_data.is_empty()
        && let Some(expected) = expected_bytes
        && expected != t.raw_data.len() as u64
    {
        return Err(invalid(
            "tensor",
            format!(
                "tensor '{}' has {} bytes of data, but its shape {:?} needs {expected}",
                t.name,
                t.raw_data.len(),
                t.dims
            ),
        ));
    }
    Ok(())
}

pub(crate) fn dtype_of(elem: i32) -> DType {
    match elem {
        data_type::FLOAT => DType::Float32,
        data_type::UINT8 => DType::Uint8,
        data_type::INT8 => DType::Int8,
        data_type::UINT16 => DType::Uint16,
        data_type::INT16 => DType::Int16,
        data_type::INT32 => DType::Int32,
        data_type::INT64 => DType::Int64,
        data_type::STRING => DType::String,
        data_type::BOOL => DType::Bool,
        data_type::FLOAT16 => DType::Float16,
        data_type::DOUBLE => DType::Float64,
        data_type::UINT32 => DType::Uint32,
        data_type::UINT64 => DType::Uint64,
        data_type::COMPLEX64 => DType::Complex64,
        data_type::COMPLEX128 => DType::Complex128,
        data_type::BFLOAT16 => DType::Bfloat16,
        _ => DType::Other,
    }
}

fn onnx_type_name(elem: i32) -> &'static str {
    match elem {
        data_type::FLOAT => "float",
        data_type::DOUBLE => "double",
        data_type::FLOAT16 => "float16",
        data_type::BFLOAT16 => "bfloat16",
        _ => dtype_of(elem).as_str(),
    }
}

fn spec(v: &ValueInfoProto, role: &str) -> Result<TensorSpec, Error> {
    let ty = v.r#type.as_ref().ok_or_else(|| invalid("graph", format!("graph {role} '{}' has no type", v.name)))?;
    let (kind, dtype, shape, type_text) = describe(ty, &v.name, role)?;
    Ok(TensorSpec { name: v.name.clone(), kind, dtype, shape, type_text, doc: v.doc_string.clone(), optional: false })
}

type Described = (ValueKind, DType, Option<Vec<Dim>>, String);

fn describe(ty: &TypeProto, name: &str, role: &str) -> Result<Described, Error> {
    let inner = |t: &Option<Box<TypeProto>>| -> Result<Described, Error> {
        match t {
            Some(t) => describe(t, name, role),
            None => Err(invalid("graph", format!("graph {role} '{name}' has an incomplete type"))),
        }
    };
    match &ty.value {
        Some(type_proto::Value::TensorType(t)) | Some(type_proto::Value::SparseTensorType(t)) => {
            if t.elem_type <= 0 || t.elem_type > data_type::MAX_KNOWN {
                return Err(invalid(
                    "graph",
                    format!("graph {role} '{name}' has unknown element type {}", t.elem_type),
                ));
            }
            let shape = t.shape.as_ref().map(|s| {
                s.dim
                    .iter()
                    .map(|d| match &d.value {
                        Some(tensor_shape_proto::dimension::Value::DimValue(n)) if *n >= 0 => Dim::Fixed(*n),
                        Some(tensor_shape_proto::dimension::Value::DimParam(p)) if !p.is_empty() => {
                            Dim::Symbolic(p.clone())
                        }
                        _ => Dim::Unknown(None),
                    })
                    .collect::<Vec<_>>()
            });
            let sparse = matches!(ty.value, Some(type_proto::Value::SparseTensorType(_)));
            let dims = shape
                .as_ref()
                .map(|s| format!("[{}]", s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(",")))
                .unwrap_or_default();
            let text =
                format!("{}({}){dims}", if sparse { "sparse_tensor" } else { "tensor" }, onnx_type_name(t.elem_type));
            let kind = if sparse { ValueKind::SparseTensor } else { ValueKind::Tensor };
            Ok((kind, dtype_of(t.elem_type), shape, text))
        }
        Some(type_proto::Value::SequenceType(s)) => {
            let (_, dtype, _, text) = inner(&s.elem_type)?;
            Ok((ValueKind::Sequence, dtype, None, format!("seq({text})")))
        }
        Some(type_proto::Value::MapType(m)) => {
            let (_, dtype, _, text) = inner(&m.value_type)?;
            Ok((ValueKind::Map, dtype, None, format!("map({},{text})", onnx_type_name(m.key_type))))
        }
        Some(type_proto::Value::OptionalType(o)) => {
            let (_, dtype, shape, text) = inner(&o.elem_type)?;
            Ok((ValueKind::Optional, dtype, shape, format!("optional({text})")))
        }
        None => Err(invalid("graph", format!("graph {role} '{name}' has no type"))),
    }
}

/// Anything without another format's magic bytes may be ONNX (protobuf has none).
pub const UPLOAD: UploadKind = UploadKind {
    stored: Some(Stored { format: Format::Onnx, file_name: "model.onnx", engine: Engine::Onnx }),
    accepted: Some("an ONNX file (.onnx)"),
    sniffed: Sniffed::Other,
    inspect: inspect_upload,
};

/// Any other bundle: an ONNX model with its side files; tried last.
pub const BUNDLE: BundleKind = BundleKind {
    accepted: "a tar bundle of a model directory (model.onnx with optional tokenizer.json, config.json and external data)",
    claims: |_| true,
    inspect: inspect_dir,
};

fn inspect_upload(u: &Upload<'_>) -> Result<Artifact, Error> {
    let bytes = read_limited(u.path, u.limits.max_onnx_size, "model file")?;
    if !looks_like_onnx(&bytes) {
        // A protobuf that almost parses is far more likely a broken ONNX file.
        if !u.head.is_empty() && bytes.first() == Some(&0x08) {
            inspect(bytes.clone(), None, u.limits)?;
        }
        return Err(unknown_format(u.head.len()));
    }
    let signature = inspect(bytes, None, u.limits)?;
    let derived = derive_task(&signature, None, u.limits)?;
    Ok(Artifact {
        signature: Signature { text: derived.text, image: derived.image, ..signature },
        task: derived.task,
        labels: derived.labels,
        model_path: u.path.to_path_buf(),
        bundle_dir: None,
    })
}

fn inspect_dir(dir: &Path, files: Vec<BundleFile>, limits: &Limits) -> Result<Artifact, Error> {
    let model = bundle_model_file(&files)?.to_string();
    let model_path = dir.join(&model);
    let bytes = read_limited(&model_path, limits.max_onnx_size, "model file")?;
    let mut signature = inspect(bytes, Some(dir), limits)?;
    let derived = derive_task(&signature, Some(dir), limits)?;
    signature.bundle = true;
    signature.text = derived.text;
    signature.image = derived.image;
    signature.files = files;
    Ok(Artifact {
        signature,
        task: derived.task,
        labels: derived.labels,
        model_path,
        bundle_dir: Some(dir.to_path_buf()),
    })
}
