//! MLflow bundles: a directory with an `MLmodel` YAML file naming the model's
//! flavors. zoo reads the YAML as data (size-limited; no tags, anchors or aliases,
//! so no alias bombs), checks that every path it names stays inside the bundle,
//! and serves the flavors whose files it can run without Python: `onnx` today.
//! `loader_module`s are never imported and pickles never loaded.

use std::collections::BTreeMap;
use std::path::Path;

use serde_yaml::Value;
use zoo_api::{Format, MlflowInfo};

use crate::Error;
use crate::bundle::{read_small, safe_relative};

/// The largest `MLmodel` file accepted.
pub const MAX_MLMODEL: u64 = 1024 * 1024;

fn invalid(rule: &'static str, message: impl Into<String>) -> Error {
    Error::Invalid { format: Format::Mlflow, rule, message: message.into() }
}

/// Refuse YAML features that turn a small file into a large value or into objects:
/// anchors (`&a`), aliases (`*a`), tags (`!x`) and merge keys (`<<`). Deliberately
/// blunt: any `&`, `*` or `!` where YAML could read one (line start, or after a
/// space, `:`, `-`, `[`, `{` or `,`) is refused, quoted or not, because telling
/// quotes apart needs the full YAML grammar. MLflow never writes them.
fn plain_yaml(text: &str) -> Result<(), Error> {
    for (n, line) in text.lines().enumerate() {
        let mut prev = ' ';
        for c in line.chars() {
            match c {
                '&' | '*' | '!' if matches!(prev, ' ' | '\t' | ':' | '-' | '[' | '{' | ',' | '?' | '|' | '>') => {
                    return Err(invalid(
                        "yaml",
                        format!("line {}: YAML anchors, aliases and tags are not accepted in MLmodel", n + 1),
                    ));
                }
                _ => {}
            }
            prev = c;
        }
        if line.trim_start().starts_with("<<") {
            return Err(invalid("yaml", format!("line {}: YAML merge keys are not accepted in MLmodel", n + 1)));
        }
    }
    Ok(())
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// A path the MLmodel names: relative, inside the bundle, and present.
fn bundle_path(dir: &Path, flavor: &str, key: &str, value: &str) -> Result<String, Error> {
    let rel = safe_relative(value)
        .ok_or_else(|| invalid("path", format!("flavor '{flavor}' {key} '{value}' points outside the bundle")))?;
    let full = dir.join(&rel);
    let meta = std::fs::symlink_metadata(&full)
        .map_err(|_| invalid("path", format!("flavor '{flavor}' {key} '{value}' is not in the bundle")))?;
    if meta.file_type().is_symlink() {
        return Err(invalid("path", format!("flavor '{flavor}' {key} '{value}' is a link")));
    }
    Ok(rel.to_string_lossy().into_owned())
}

/// Why a flavor cannot be served by zoo, with what to do instead.
fn refusal(flavors: &BTreeMap<String, Value>) -> String {
    let names: Vec<&str> = flavors.keys().map(String::as_str).collect();
    let list = names.join(", ");
    if let Some(sk) = flavors.get("sklearn") {
        let serialization = str_of(sk, "serialization_format").unwrap_or("pickle");
        if serialization != "skops" {
            return format!(
                "flavor sklearn is stored as {serialization}, which zoo never loads (a pickle runs code); \
                 log the model with mlflow.onnx (via skl2onnx) to serve it"
            );
        }
        return "flavor sklearn (skops) is stored and catalogued, but this server cannot run it yet; \
                log the model with mlflow.onnx (via skl2onnx) to serve it now"
            .into();
    }
    format!(
        "flavors [{list}] need Python to run (zoo never imports a loader_module or loads a pickle); \
         log the model with mlflow.onnx to serve it"
    )
}

/// Read and check the `MLmodel` of the bundle in `dir`.
pub fn inspect(dir: &Path) -> Result<MlflowInfo, Error> {
    let bytes = read_small(&dir.join("MLmodel"), MAX_MLMODEL)?
        .ok_or_else(|| invalid("mlmodel", "the bundle has no MLmodel file"))?;
    let text = String::from_utf8(bytes).map_err(|_| invalid("yaml", "MLmodel is not UTF-8"))?;
    plain_yaml(&text)?;
    let doc: Value =
        serde_yaml::from_str(&text).map_err(|e| invalid("yaml", format!("MLmodel is not valid YAML: {e}")))?;
    let flavors_value = doc.get("flavors").ok_or_else(|| invalid("flavors", "MLmodel has no flavors"))?;
    let Value::Mapping(map) = flavors_value else {
        return Err(invalid("flavors", "MLmodel flavors must be a mapping"));
    };
    let mut flavors = BTreeMap::new();
    for (k, v) in map {
        let name = k.as_str().ok_or_else(|| invalid("flavors", "a flavor name is not a string"))?;
        flavors.insert(name.to_string(), v.clone());
    }
    if flavors.is_empty() {
        return Err(invalid("flavors", "MLmodel names no flavor"));
    }
    // Every file a flavor names must stay inside the bundle.
    for (name, f) in &flavors {
        for key in ["data", "model_path", "pickled_model", "path"] {
            if let Some(p) = str_of(f, key) {
                bundle_path(dir, name, key, p)?;
            }
        }
    }
    let onnx_file = match flavors.get("onnx") {
        Some(f) => {
            let data = str_of(f, "data").ok_or_else(|| invalid("flavors", "flavor onnx has no data file"))?;
            Some(bundle_path(dir, "onnx", "data", data)?)
        }
        None => None,
    };
    let signature = |key: &str| -> Result<Option<serde_json::Value>, Error> {
        match doc.get("signature").and_then(|s| s.get(key)).and_then(Value::as_str) {
            None => Ok(None),
            Some(s) => serde_json::from_str(s)
                .map(Some)
                .map_err(|e| invalid("signature", format!("signature {key} is not valid JSON: {e}"))),
        }
    };
    let input_example = match doc.get("saved_input_example_info").and_then(|i| str_of(i, "serving_input_path")) {
        Some(p) => Some(bundle_path(dir, "saved_input_example_info", "serving_input_path", p)?),
        None => None,
    };
    let reason = onnx_file.is_none().then(|| refusal(&flavors));
    Ok(MlflowInfo {
        flavors: flavors.keys().cloned().collect(),
        mlflow_version: str_of(&doc, "mlflow_version").map(str::to_string),
        model_file: onnx_file,
        signature_inputs: signature("inputs")?,
        signature_outputs: signature("outputs")?,
        input_example,
        unservable_reason: reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_bombs_and_tags_are_refused() {
        assert!(plain_yaml("a: &x [1, 2]\nb: [*x, *x]").is_err());
        assert!(plain_yaml("a: !!python/object:os.system ls").is_err());
        assert!(plain_yaml("<<: {a: 1}").is_err());
        assert!(plain_yaml("a: [it's, &x [0, 0]]\nb: [it's, *x, *x]").is_err(), "quotes do not hide an anchor");
        assert!(plain_yaml("a: \"a\\\\\" &x [0]").is_err());
        assert!(plain_yaml("a: R&D\nb: \"*ok*\"\nc: x&y\nd: Hello!").is_ok());
    }
}
