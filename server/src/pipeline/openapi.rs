//! The OpenAPI 3.1 document of one model version, generated from its signature,
//! task and limits: the request schema names its real inputs with their dtypes
//! and shapes (fixed dimensions as minItems/maxItems, symbolic ones described), a
//! classifier's labels are an enum in the response, and the example request comes
//! from the signature or the bundle's own input example.

use serde_json::{Map, Value, json};
use zoo_api::{DType, Dim, Signature, Task, TensorSpec, ValueKind, VersionInfo};

/// JSON Schema of one element of a tensor of `dtype`.
fn element(dtype: DType) -> Value {
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
fn nested(dims: &[Dim], leaf: Value, max_rows: u32, top: bool) -> Value {
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
fn tensor_schema(spec: &TensorSpec, max_rows: u32) -> Value {
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
fn example_value(spec: &TensorSpec) -> Value {
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

fn texts_schema(max_items: u32) -> Value {
    json!({
        "description": "a text, or a list of texts (one answer per text)",
        "oneOf": [
            {"type": "string"},
            {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": max_items}
        ]
    })
}

/// The request and response schemas and an example request of a version.
fn bodies(info: &VersionInfo, example: Option<Value>) -> (Value, Value, Value) {
    let sig: &Signature = &info.signature;
    let e = &info.effective;
    let max_rows = e.max_items;
    if let Some(m) = &sig.mlflow {
        let columns: Vec<String> = m
            .signature_inputs
            .as_ref()
            .and_then(Value::as_array)
            .map(|c| c.iter().filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string)).collect())
            .unwrap_or_default();
        let cell = match info.task {
            Task::TextClassification | Task::FeatureExtraction => json!({"type": "string"}),
            _ => json!({"type": ["number", "null"]}),
        };
        let width = if columns.is_empty() { Value::Null } else { columns.len().into() };
        let mut row = json!({"type": "array", "items": cell});
        if !columns.is_empty() {
            row["minItems"] = width.clone();
            row["maxItems"] = width;
        }
        let record = json!({"type": "object", "properties": columns.iter().map(|c| (c.clone(), cell.clone())).collect::<Map<_, _>>()});
        let request = json!({
            "description": "MLflow's scoring formats (as `mlflow models serve` takes them); send exactly one",
            "type": "object",
            "properties": {
                "dataframe_split": {"type": "object", "required": ["data"], "properties": {
                    "columns": {"type": "array", "items": {"type": "string", "enum": columns}},
                    "data": {"type": "array", "items": row, "minItems": 1, "maxItems": max_rows}
                }},
                "dataframe_records": {"type": "array", "items": record, "minItems": 1, "maxItems": max_rows},
                "instances": {"type": "array", "minItems": 1, "maxItems": max_rows},
                "inputs": {}
            }
        });
        let prediction = match &info.labels[..] {
            [] => json!({}),
            labels if sig.outputs.first().is_some_and(|o| o.name == "predictions") => {
                let as_json: Vec<Value> = sig
                    .skops
                    .as_ref()
                    .and_then(|s| s.classes.clone())
                    .unwrap_or_else(|| labels.iter().map(|l| Value::from(l.as_str())).collect());
                json!({"enum": as_json})
            }
            _ => json!({}),
        };
        let response = json!({
            "type": "object",
            "required": ["predictions"],
            "properties": {"predictions": {"type": "array", "items": prediction}}
        });
        let example = example.unwrap_or_else(
            || json!({"dataframe_split": {"columns": columns, "data": [vec![json!(0.0); columns.len()]]}}),
        );
        return (request, response, example);
    }
    match info.task {
        Task::TextClassification => {
            let label = json!({
                "type": "object",
                "required": ["label", "score"],
                "properties": {
                    "label": {"type": "string", "enum": info.labels},
                    "score": {"type": "number", "minimum": 0, "maximum": 1}
                }
            });
            let request = json!({
                "type": "object",
                "required": ["inputs"],
                "properties": {
                    "inputs": texts_schema(max_rows),
                    "top_k": {"type": "integer", "minimum": 1, "description": "how many labels to return per text (all by default)"}
                }
            });
            let response = json!({
                "description": "labels with scores, best first; a list of those for a list of texts",
                "oneOf": [
                    {"type": "array", "items": label},
                    {"type": "array", "items": {"type": "array", "items": label}}
                ]
            });
            (request, response, json!({"inputs": "zoo serves this model with no code"}))
        }
        Task::FeatureExtraction => {
            let dim = sig.outputs.first().and_then(|o| o.shape.as_ref()).and_then(|s| s.last()).and_then(Dim::fixed);
            let mut vector = json!({"type": "array", "items": {"type": "number"}});
            if let Some(d) = dim {
                vector["minItems"] = d.into();
                vector["maxItems"] = d.into();
            }
            let request = json!({
                "type": "object",
                "required": ["inputs"],
                "properties": {
                    "inputs": texts_schema(max_rows),
                    "normalize": {"type": "boolean", "description": "L2-normalise the embeddings (the model's own setting by default)"}
                }
            });
            let response = json!({
                "description": "one embedding per text",
                "oneOf": [vector.clone(), {"type": "array", "items": vector}]
            });
            (request, response, json!({"inputs": "zoo serves this model with no code"}))
        }
        Task::Tensor => {
            let properties: Map<String, Value> =
                sig.inputs.iter().map(|s| (s.name.clone(), tensor_schema(s, max_rows))).collect();
            let required: Vec<&str> = sig.inputs.iter().filter(|s| !s.optional).map(|s| s.name.as_str()).collect();
            let request = json!({
                "type": "object",
                "required": ["inputs"],
                "properties": {"inputs": {
                    "type": "object",
                    "required": required,
                    "additionalProperties": false,
                    "properties": properties
                }}
            });
            let outputs: Map<String, Value> = sig
                .outputs
                .iter()
                .map(|s| {
                    let schema = match &s.shape {
                        Some(dims) if s.kind == ValueKind::Tensor => nested(dims, element(s.dtype), u32::MAX, false),
                        _ => json!({}),
                    };
                    (s.name.clone(), schema)
                })
                .collect();
            let response = json!({
                "type": "object",
                "required": ["outputs"],
                "properties": {"outputs": {"type": "object", "properties": outputs}}
            });
            let example = json!({"inputs": sig.inputs.iter().filter(|s| !s.optional).map(|s| (s.name.clone(), example_value(s))).collect::<Map<_, _>>()});
            (request, response, example)
        }
    }
}

/// An example request body for a version (the bundle's own input example when given).
pub fn example(info: &VersionInfo, bundle_example: Option<Value>) -> Value {
    bodies(info, bundle_example).2
}

/// The OpenAPI 3.1 document of a version. `pinned`: document the version's own
/// route only; otherwise the model's default route too.
pub fn document(info: &VersionInfo, example: Option<Value>, pinned: bool) -> Value {
    let e = &info.effective;
    let (request, response, example) = bodies(info, example);
    let mut description = format!(
        "`{}` version `{}`: a {} {} served by {}.\n\n",
        info.model,
        info.version,
        info.format.as_str(),
        info.task.as_str(),
        info.runtime.as_deref().unwrap_or("no runtime")
    );
    if !info.servable {
        description
            .push_str(&format!("**Not servable**: {}\n\n", info.reason.as_deref().unwrap_or("no reason recorded")));
    }
    description.push_str(&format!(
        "Limits: at most {} texts or rows per request, {} tokens per text, a body of {} bytes, {} s per request, \
         outputs of {} bytes per run. Batching: {}.\n\nErrors are `{{\"error\": {{\"code\": \"...\", \"message\": \"...\"}}}}`.",
        e.max_items,
        e.max_tokens,
        e.max_body_bytes,
        e.timeout_secs,
        e.max_output_bytes,
        if e.batched && e.max_batch_size > 1 {
            format!("requests are merged into batches of up to {} rows", e.max_batch_size)
        } else {
            "each request runs alone".to_string()
        }
    ));
    let error = |what: &str| json!({"description": what, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let operation = |summary: String, id: String| {
        json!({
            "summary": summary,
            "operationId": id,
            "tags": ["predict"],
            "requestBody": {
                "required": true,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}, "example": example}}
            },
            "responses": {
                "200": {
                    "description": "the prediction",
                    "headers": {
                        "x-zoo-model-version": {"description": "the version that answered", "schema": {"type": "string"}},
                        "x-queue-time": {"description": "milliseconds in the model's queue", "schema": {"type": "string"}},
                        "x-inference-time": {"description": "milliseconds in the runtime", "schema": {"type": "string"}},
                        "x-batch-size": {"description": "rows of the batch it ran in", "schema": {"type": "integer"}}
                    },
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PredictResponse"}}}
                },
                "400": error("invalid_request or invalid_input: the body does not match the schema"),
                "401": error("unauthorized: no key, or an unknown, expired or revoked one"),
                "403": error("forbidden: the key lacks the predict scope or this model"),
                "404": error("model_not_found or version_not_found"),
                "408": error("timeout"),
                "409": error("not_servable"),
                "413": error("payload_too_large"),
                "415": error("unsupported_media_type"),
                "429": error("overloaded: retry after Retry-After seconds"),
                "500": error("inference_failed"),
                "503": error("unavailable")
            }
        })
    };
    let mut paths = Map::new();
    let id = info.model.replace(['.', '-'], "_");
    paths.insert(
        format!("/v1/models/{}/versions/{}/predict", info.model, info.version),
        json!({"post": operation(format!("Predict with version {}", info.version), format!("predict_{id}_version"))}),
    );
    if !pinned {
        paths.insert(
            format!("/v1/models/{}/predict", info.model),
            json!({"post": operation("Predict with the default version (alias production, else the newest)".into(), format!("predict_{id}"))}),
        );
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": format!("{} (zoo model)", info.model),
            "version": info.version,
            "description": description
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {"api_key": []}],
        "tags": [{"name": "predict", "description": "Predictions"}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "zk_<id>_<secret>"},
                "api_key": {"type": "apiKey", "in": "header", "name": "x-api-key"}
            },
            "schemas": {
                "PredictRequest": request,
                "PredictResponse": response,
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {
                            "code": {"type": "string", "enum": zoo_api::ErrorCode::ALL.iter().map(|c| c.as_str()).collect::<Vec<_>>()},
                            "message": {"type": "string"}
                        }
                    }}
                }
            }
        }
    })
}
