//! MLflow's scoring-server formats for MLflow versions: `dataframe_split`,
//! `dataframe_records`, `instances` and `inputs` in, `{"predictions": ...}` out,
//! mapped onto the model's named tensor inputs.

use serde_json::{Map, Value};
use zoo_api::{MlflowInfo, PredictRequest, TensorSpec};

use crate::error::{Error, Result};
use crate::runtime::Tensors;

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
        return table(&columns, record_rows(records, &columns)?, specs, info);
    }
    let columns = signature_columns(info).filter(|_| specs.len() == 1);
    if let Some(instances) = &req.instances {
        let items = instances.as_array().ok_or_else(|| bad("instances must be a list"))?;
        if items.first().is_some_and(Value::is_object) {
            // Records of a column signature, or one object of named inputs per row.
            if let Some(columns) = columns {
                return table(&columns, record_rows(items, &columns)?, specs, info);
            }
            let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
            let rows = record_rows(items, &names)?;
            let mut out = Map::new();
            for (idx, spec) in specs.iter().enumerate() {
                out.insert(spec.name.clone(), Value::Array(rows.iter().map(|r| r[idx].clone()).collect()));
            }
            return Ok(Value::Object(out));
        }
        return Ok(instances.clone());
    }
    // Columnar inputs of a column signature: {"column": [values], ...}.
    if let (Value::Object(map), Some(columns)) = (&req.inputs, columns)
        && !map.contains_key(&specs[0].name)
    {
        let column = |c: &String| {
            map.get(c)
                .and_then(Value::as_array)
                .ok_or_else(|| bad(format!("inputs has no column '{c}' (a list of values)")))
        };
        let n = column(&columns[0])?.len();
        let cols = columns.iter().map(column).collect::<Result<Vec<_>>>()?;
        if cols.iter().any(|c| c.len() != n) {
            return Err(bad("the columns of inputs have different lengths"));
        }
        let rows = (0..n).map(|i| cols.iter().map(|c| c[i].clone()).collect()).collect();
        return table(&columns, rows, specs, info);
    }
    Ok(req.inputs.clone())
}

/// The values of `columns` in each `{column: value}` record (other keys ignored).
fn record_rows(records: &[Value], columns: &[String]) -> Result<Vec<Vec<Value>>> {
    records
        .iter()
        .map(|r| {
            columns
                .iter()
                .map(|c| r.get(c).cloned().ok_or_else(|| bad(format!("a record has no column '{c}'"))))
                .collect::<Result<Vec<_>>>()
        })
        .collect()
}

/// The texts of an MLflow request to a transformers version: `inputs` (a string or
/// a list of strings), `instances` (a list of strings), or a DataFrame with one
/// text column (`dataframe_split` or `dataframe_records`). Always a batch, as
/// MLflow answers one prediction per row.
pub fn request_texts(req: &PredictRequest) -> Result<Vec<String>> {
    let strings = |v: &Value, what: &str| -> Result<Vec<String>> {
        match v {
            Value::String(s) => Ok(vec![s.clone()]),
            Value::Array(items) => items
                .iter()
                .map(|i| match i {
                    Value::String(s) => Ok(s.clone()),
                    // A row of a DataFrame with one column.
                    Value::Array(row) if row.len() == 1 && row[0].is_string() => {
                        Ok(row[0].as_str().unwrap_or_default().to_string())
                    }
                    Value::Object(rec) if rec.len() == 1 && rec.values().all(Value::is_string) => {
                        Ok(rec.values().next().and_then(Value::as_str).unwrap_or_default().to_string())
                    }
                    _ => Err(bad(format!("{what} must hold texts (one text column)"))),
                })
                .collect(),
            _ => Err(bad(format!("{what} must be a text or a list of texts"))),
        }
    };
    let texts = match (&req.dataframe_split, &req.dataframe_records, &req.instances) {
        (Some(split), None, None) => {
            if split.get("columns").and_then(Value::as_array).is_some_and(|c| c.len() != 1) {
                return Err(bad("dataframe_split must have one text column"));
            }
            strings(split.get("data").unwrap_or(&Value::Null), "dataframe_split data")?
        }
        (None, Some(records), None) => strings(records, "dataframe_records")?,
        (None, None, Some(instances)) if req.inputs.is_null() => strings(instances, "instances")?,
        (None, None, None) if !req.inputs.is_null() => strings(&req.inputs, "inputs")?,
        _ => return Err(bad("send one of inputs, dataframe_split, dataframe_records or instances")),
    };
    if texts.is_empty() {
        return Err(bad("the request holds no text"));
    }
    Ok(texts)
}

/// `{"predictions": ...}`: the one output's values, or one record per row of
/// several outputs that share their first dimension (as MLflow's DataFrames do),
/// written as JSON text.
pub fn predictions(outputs: &Tensors) -> Box<serde_json::value::RawValue> {
    use super::json::{Nested, Records, raw};
    if let [(_, t)] = outputs.as_slice() {
        return raw(&Nested(t));
    }
    let rows: Vec<Option<usize>> =
        outputs.iter().map(|(_, t)| if t.shape().is_empty() { None } else { Some(t.shape()[0]) }).collect();
    match rows.split_first() {
        Some((Some(n), rest)) if rest.iter().all(|m| *m == Some(*n)) => raw(&Records { outputs, rows: *n }),
        _ => raw(&outputs.iter().map(|(k, t)| (k.as_str(), Nested(t))).collect::<std::collections::BTreeMap<_, _>>()),
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
            optional: false,
        }
    }

    fn info(columns: Option<Value>) -> MlflowInfo {
        MlflowInfo {
            flavors: vec!["onnx".into()],
            mlflow_version: None,
            served_flavor: Some("onnx".into()),
            model_file: Some("model.onnx".into()),
            tokenizer: None,
            predict_fn: None,
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
