//! The OpenAPI 3.1 document of one model version, generated from its signature,
//! task and limits: the request schema names its real inputs with their dtypes
//! and shapes (fixed dimensions as minItems/maxItems, symbolic ones described), a
//! classifier's labels are an enum in the response, and the example request comes
//! from the signature or the bundle's own input example.

use serde_json::{Map, Value, json};
use zoo_api::{Signature, VersionInfo};

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
        let cell = super::task::kind(info.task).mlflow_cell();
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
    super::task::kind(info.task).openapi(info)
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
    let mut request_content = Map::new();
    request_content.insert(
        "application/json".into(),
        json!({"schema": {"$ref": "#/components/schemas/PredictRequest"}, "example": example}),
    );
    if info.signature.mlflow.is_none() {
        request_content.extend(super::task::kind(info.task).request_media(info));
    }
    let error = |what: &str| json!({"description": what, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let operation = |summary: String, id: String| {
        json!({
            "summary": summary,
            "operationId": id,
            "tags": ["predict"],
            "requestBody": {"required": true, "content": request_content},
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
