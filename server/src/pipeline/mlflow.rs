//! MLflow's scoring-server formats for MLflow versions: `dataframe_split`,
//! `dataframe_records`, `instances` and `inputs` in, `{"predictions": ...}` out,
//! mapped onto the model's named tensor inputs.

use serde_json::{Map, Value};
use zoo_api::{MlflowInfo, PredictRequest, TensorSpec};

use crate::error::{Error, Result};
use crate::runtime::Tensors;

use super::tensor::outputs_json;

fn bad(message: impl Into<String>) -> Error {
    Error::InvalidInput(message.into())
}

/// Column names of an MLflow column signature, in order.
fn signature_columns(info: &MlflowInfo) -> Option<Vec<String>> {
    let cols: Vec<String> = info
        .signature_inputs
        .as_ref()?
        .as_array()?
        .iter()
        .filter(|c| c.get("tensor-spec").is_none())
        .map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
        .collect::<Option<_>>()?;
    (!cols.is_empty()).then_some(cols)
}

/// Whether a request uses one of MLflow's DataFrame or TF-serving formats.
pub fn uses_mlflow_format(req: &PredictRequest) -> bool {
    req.dataframe_split.is_some() || req.dataframe_records.is_some() || req.instances.is_some()
}

/// The values of `column` in every row, shaped for `spec` (`[N]`, or `[N, 1]` for a
/// rank-2 input).
fn column(rows: &[Vec<Value>], idx: usize, spec: &TensorSpec) -> Value {
    let rank2 = spec.shape.as_ref().is_some_and(|s| s.len() == 2);
    let cell = |v: &Value| if rank2 && !v.is_array() { Value::Array(vec![v.clone()]) } else { v.clone() };
    Value::Array(rows.iter().map(|r| cell(&r[idx])).collect())
}

/// Rows of a table as inputs: one input takes the whole table as a matrix, its
/// columns in the order of the MLflow column signature when there is one (as MLflow
/// reorders them); several inputs take the column of their name.
fn table(columns: &[String], rows: Vec<Vec<Value>>, specs: &[TensorSpec], info: &MlflowInfo) -> Result<Value> {
    if let Some(r) = rows.iter().find(|r| r.len() != columns.len()) {
        return Err(bad(format!("a row has {} values for {} columns", r.len(), columns.len())));
    }
    if specs.len() == 1 {
        let Some(order) = signature_columns(info).filter(|o| o.as_slice() != columns) else {
            return Ok(Value::Array(rows.into_iter().map(Value::Array).collect()));
        };
        let idx = order
            .iter()
            .map(|c| columns.iter().position(|x| x == c).ok_or_else(|| bad(format!("column '{c}' is missing"))))
            .collect::<Result<Vec<_>>>()?;
        return Ok(Value::Array(
            rows.into_iter().map(|r| Value::Array(idx.iter().map(|&i| r[i].clone()).collect())).collect(),
        ));
    }
    let mut out = Map::new();
    for spec in specs {
        let idx = columns.iter().position(|c| c == &spec.name).ok_or_else(|| {
            bad(format!("no column '{}' for the model input of that name; columns: {}", spec.name, columns.join(", ")))
        })?;
        out.insert(spec.name.clone(), column(&rows, idx, spec));
    }
    Ok(Value::Object(out))
}

/// The model inputs (in the shape `parse_inputs` takes) of an MLflow request.
pub fn request_inputs(req: &PredictRequest, specs: &[TensorSpec], info: &MlflowInfo) -> Result<Value> {
    let given = [
        !req.inputs.is_null(),
        req.dataframe_split.is_some(),
        req.dataframe_records.is_some(),
        req.instances.is_some(),
    ];
    match given.iter().filter(|g| **g).count() {
        1 => {}
        0 => return Err(bad("send one of inputs, dataframe_split, dataframe_records or instances")),
        _ => return Err(bad("send only one of inputs, dataframe_split, dataframe_records or instances")),
    }
    if let Some(split) = &req.dataframe_split {
        let rows: Vec<Vec<Value>> = split
            .get("data")
            .and_then(Value::as_array)
            .and_then(|d| d.iter().map(|r| r.as_array().cloned()).collect())
            .ok_or_else(|| bad("dataframe_split needs \"data\": a list of rows"))?;
        let columns: Vec<String> = match split.get("columns") {
            Some(c) => c
                .as_array()
                .and_then(|c| c.iter().map(|n| n.as_str().map(str::to_string)).collect())
                .ok_or_else(|| bad("dataframe_split \"columns\" must be a list of names"))?,
            None => signature_columns(info)
                .or_else(|| rows.first().map(|r| (0..r.len()).map(|i| i.to_string()).collect()))
                .unwrap_or_default(),
        };
        return table(&columns, rows, specs, info);
    }
    if let Some(records) = &req.dataframe_records {
        let records = records
            .as_array()
            .filter(|r| !r.is_empty())
            .ok_or_else(|| bad("dataframe_records must be a non-empty list of {column: value} objects"))?;
        let columns = match signature_columns(info) {
            Some(c) => c,
            None if specs.len() > 1 => specs.iter().map(|s| s.name.clone()).collect(),
            None => {
                return Err(bad(
                    "dataframe_records needs the column order of an MLflow column signature; send dataframe_split instead",
                ));
            }
        };
        let rows = records
            .iter()
            .map(|r| {
                columns
                    .iter()
                    .map(|c| r.get(c).cloned().ok_or_else(|| bad(format!("a record has no column '{c}'"))))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        return table(&columns, rows, specs, info);
    }
    if let Some(instances) = &req.instances {
        let items = instances.as_array().ok_or_else(|| bad("instances must be a list"))?;
        if items.first().is_some_and(Value::is_object) {
            let columns: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
            let rows = items
                .iter()
                .map(|i| {
                    columns
                        .iter()
                        .map(|c| i.get(c).cloned().ok_or_else(|| bad(format!("an instance has no input '{c}'"))))
                        .collect::<Result<Vec<_>>>()
                })
                .collect::<Result<Vec<_>>>()?;
            let mut out = Map::new();
            for (idx, spec) in specs.iter().enumerate() {
                out.insert(spec.name.clone(), Value::Array(rows.iter().map(|r| r[idx].clone()).collect()));
            }
            return Ok(Value::Object(out));
        }
        return Ok(instances.clone());
    }
    Ok(req.inputs.clone())
}

/// `{"predictions": ...}`: the one output's values, or one record per row of
/// several outputs that share their first dimension (as MLflow's DataFrames do).
pub fn predictions(outputs: &Tensors) -> Value {
    let mut named = outputs_json(outputs);
    if named.len() == 1 {
        return named.into_iter().next().map(|(_, v)| v).unwrap_or(Value::Null);
    }
    let rows = named.values().map(|v| v.as_array().map(Vec::len)).collect::<Option<Vec<_>>>();
    match rows.as_deref() {
        Some([n, rest @ ..]) if rest.iter().all(|m| m == n) => {
            let n = *n;
            let columns: Vec<(String, Vec<Value>)> = std::mem::take(&mut named)
                .into_iter()
                .map(|(k, v)| {
                    (
                        k,
                        match v {
                            Value::Array(a) => a,
                            _ => vec![],
                        },
                    )
                })
                .collect();
            Value::Array(
                (0..n)
                    .map(|i| Value::Object(columns.iter().map(|(k, v)| (k.clone(), v[i].clone())).collect()))
                    .collect(),
            )
        }
        _ => Value::Object(named),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use zoo_api::{DType, Dim, ValueKind};

    use super::*;

    fn spec(name: &str, rank: usize) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            kind: ValueKind::Tensor,
            dtype: DType::Float32,
            shape: Some(vec![Dim::Symbolic("N".into()); rank]),
            type_text: String::new(),
            doc: String::new(),
        }
    }

    fn info(columns: Option<Value>) -> MlflowInfo {
        MlflowInfo {
            flavors: vec!["onnx".into()],
            mlflow_version: None,
            model_file: Some("model.onnx".into()),
            signature_inputs: columns,
            signature_outputs: None,
            input_example: None,
            unservable_reason: None,
        }
    }

    #[test]
    fn dataframe_columns_follow_the_signature_order() {
        let sig = info(Some(json!([{"type": "float", "name": "a"}, {"type": "float", "name": "b"}])));
        let req = PredictRequest {
            dataframe_split: Some(json!({"columns": ["b", "a"], "data": [[2.0, 1.0], [4.0, 3.0]]})),
            ..Default::default()
        };
        assert_eq!(request_inputs(&req, &[spec("X", 2)], &sig).unwrap(), json!([[1.0, 2.0], [3.0, 4.0]]));
        let missing =
            PredictRequest { dataframe_split: Some(json!({"columns": ["b"], "data": [[2.0]]})), ..Default::default() };
        assert!(request_inputs(&missing, &[spec("X", 2)], &sig).is_err());
        // Several inputs take their own column; vectors are not wrapped again.
        let two = PredictRequest {
            dataframe_split: Some(json!({"columns": ["a", "b"], "data": [[1.0, [5.0, 6.0]]]})),
            ..Default::default()
        };
        assert_eq!(
            request_inputs(&two, &[spec("a", 2), spec("b", 2)], &info(None)).unwrap(),
            json!({"a": [[1.0]], "b": [[5.0, 6.0]]})
        );
    }
}
