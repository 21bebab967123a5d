//! MLflow bundles: a directory with an `MLmodel` YAML file naming the model's
//! flavors. zoo reads the YAML as data (size-limited; no tags, anchors or aliases,
//! so no alias bombs), checks that every path it names stays inside the bundle,
//! and serves the flavors whose files it can run without Python (`onnx`,
//! `transformers` with safetensors weights, `sklearn` saved with skops).
//! `loader_module`s are never imported and pickles never loaded.

use std::collections::BTreeMap;
use std::path::Path;

use serde_yaml::Value;
use zoo_api::{BundleFile, Format, MlflowInfo, Signature, Task};

use crate::bundle::{read_small, safe_relative};
use crate::{Artifact, BundleKind, Engine, Error, Limits};

/// A directory with an `MLmodel` file.
pub const BUNDLE: BundleKind = BundleKind {
    accepted: "a tar bundle of an MLflow model directory (MLmodel and its files)",
    claims: |files| files.iter().any(|f| f.path == "MLmodel"),
    inspect: inspect_bundle,
};

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

/// The flavor zoo serves a bundle with, and the file its runtime loads.
pub struct Served {
    /// `onnx`, `transformers` or `sklearn`.
    pub flavor: &'static str,
    /// The model file (or the weights of a transformers model), relative to the bundle.
    pub model_file: String,
    /// `tokenizer.json` of a transformers model, relative to the bundle.
    pub tokenizer: Option<String>,
}

/// The flavor zoo serves this bundle with, or why none can be served (with what to
/// do instead). Prefers ONNX, then transformers (safetensors), then skops.
fn choose(dir: &Path, flavors: &BTreeMap<String, Value>) -> Result<Result<Served, String>, Error> {
    if let Some(f) = flavors.get("onnx") {
        let data = str_of(f, "data").ok_or_else(|| invalid("flavors", "flavor onnx has no data file"))?;
        let model_file = bundle_path(dir, "onnx", "data", data)?;
        return Ok(Ok(Served { flavor: "onnx", model_file, tokenizer: None }));
    }
    if let Some(f) = flavors.get("transformers") {
        return transformers(dir, f);
    }
    if let Some(sk) = flavors.get("sklearn") {
        let serialization = str_of(sk, "serialization_format").unwrap_or("pickle");
        if serialization != "skops" {
            return Ok(Err(format!(
                "flavor sklearn is stored as {serialization}, which zoo never loads (a pickle runs code); \
                 log the model with serialization_format=\"skops\", or with mlflow.onnx (via skl2onnx), to serve it"
            )));
        }
        let predict_fn = flavors.get("python_function").and_then(|f| str_of(f, "predict_fn")).unwrap_or("predict");
        if !matches!(predict_fn, "predict" | "predict_proba") {
            return Ok(Err(format!(
                "flavor sklearn with predict_fn {predict_fn}: zoo serves predict and predict_proba"
            )));
        }
        let file =
            str_of(sk, "pickled_model").ok_or_else(|| invalid("flavors", "flavor sklearn names no model file"))?;
        let model_file = bundle_path(dir, "sklearn", "pickled_model", file)?;
        return Ok(Ok(Served { flavor: "sklearn", model_file, tokenizer: None }));
    }
    let list = flavors.keys().map(String::as_str).collect::<Vec<_>>().join(", ");
    Ok(Err(format!(
        "flavors [{list}] need Python to run (zoo never imports a loader_module or loads a pickle); \
         log the model with mlflow.onnx, mlflow.transformers (safetensors) or mlflow.sklearn (skops) to serve it"
    )))
}

/// MLflow's transformers flavor: `<model_binary>/` with `config.json` and
/// `model.safetensors`, and the tokenizer under `components/tokenizer/`.
fn transformers(dir: &Path, f: &Value) -> Result<Result<Served, String>, Error> {
    let framework = str_of(f, "framework").unwrap_or("pt");
    if framework != "pt" {
        return Ok(Err(format!(
            "flavor transformers with framework {framework}: zoo runs PyTorch-framework (pt) weights in safetensors"
        )));
    }
    let binary = str_of(f, "model_binary").unwrap_or("model");
    let model_dir = bundle_path(dir, "transformers", "model_binary", binary)?;
    let weights = format!("{model_dir}/model.safetensors");
    if !dir.join(&weights).is_file() {
        let pickled = dir.join(&model_dir).join("pytorch_model.bin").exists();
        return Ok(Err(if pickled {
            format!(
                "flavor transformers keeps its weights in {model_dir}/pytorch_model.bin, a pickle zoo never loads; \
                 save them as safetensors (save_pretrained(safe_serialization=True), the default since transformers 4.35)"
            )
        } else {
            format!(
                "flavor transformers: {model_dir}/model.safetensors is missing (sharded or other weights are not served); \
                 save the model as one model.safetensors"
            )
        }));
    }
    let tokenizer = "components/tokenizer/tokenizer.json";
    let tokenizer = [tokenizer.to_string(), format!("{model_dir}/tokenizer.json")]
        .into_iter()
        .find(|t| std::fs::symlink_metadata(dir.join(t)).is_ok_and(|m| m.is_file()));
    Ok(Ok(Served { flavor: "transformers", model_file: weights, tokenizer }))
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
    let served = choose(dir, &flavors)?;
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
    let (served, reason) = match served {
        Ok(s) => (Some(s), None),
        Err(why) => (None, Some(why)),
    };
    Ok(MlflowInfo {
        flavors: flavors.keys().cloned().collect(),
        mlflow_version: str_of(&doc, "mlflow_version").map(str::to_string),
        served_flavor: served.as_ref().map(|s| s.flavor.to_string()),
        predict_fn: flavors.get("python_function").and_then(|f| str_of(f, "predict_fn")).map(str::to_string),
        tokenizer: served.as_ref().and_then(|s| s.tokenizer.clone()),
        model_file: served.map(|s| s.model_file),
        signature_inputs: signature("inputs")?,
        signature_outputs: signature("outputs")?,
        input_example,
        unservable_reason: reason,
    })
}

/// An MLflow bundle, validated and described through the flavor zoo serves it
/// with (`onnx`, `transformers` with safetensors weights, `sklearn` with skops);
/// other flavors are stored and catalogued, with the reason zoo cannot serve them.
pub fn inspect_bundle(dir: &Path, files: Vec<BundleFile>, limits: &Limits) -> Result<Artifact, Error> {
    let info = inspect(dir)?;
    let model_path = dir.join(info.model_file.as_deref().unwrap_or("MLmodel"));
    let (mut signature, task, labels) = match info.served_flavor.as_deref() {
        Some("onnx") => {
            let bytes = crate::read_limited(&model_path, limits.max_onnx_size, "model file")?;
            (crate::onnx::inspect(bytes, Some(dir), limits)?, Task::Tensor, vec![])
        }
        Some("transformers") => {
            let model_dir = model_path.parent().unwrap_or(dir);
            let tokenizer = info.tokenizer.as_deref().unwrap_or("components/tokenizer/tokenizer.json");
            let a = crate::hf::inspect_dir_at(dir, model_dir, tokenizer, vec![], limits)?;
            (a.signature, a.task, a.labels)
        }
        Some("sklearn") => {
            let model = crate::skops::inspect(&model_path, limits)?;
            let signature = crate::skops::signature(&model, &info);
            let labels = model
                .classes
                .iter()
                .flatten()
                .map(|c| c.as_str().map_or_else(|| c.to_string(), str::to_string))
                .collect();
            (Signature { skops: Some(model), ..signature }, Task::Tensor, labels)
        }
        _ => (Signature::empty(Format::Mlflow, true), Task::Tensor, vec![]),
    };
    signature.format = Format::Mlflow;
    signature.bundle = true;
    signature.files = files;
    signature.mlflow = Some(info);
    Ok(Artifact { signature, task, labels, model_path, bundle_dir: Some(dir.to_path_buf()) })
}

/// What loads an MLflow bundle: the engine of the flavor zoo serves it with.
pub fn engine(m: &MlflowInfo) -> Option<Engine> {
    match m.served_flavor.as_deref() {
        Some("onnx") => Some(Engine::Onnx),
        Some("transformers") => Some(Engine::Safetensors),
        Some("sklearn") => Some(Engine::Skops),
        // Versions stored before served_flavor was recorded.
        None if m.model_file.as_deref().is_some_and(|f| f.ends_with(".onnx")) => Some(Engine::Onnx),
        _ => None,
    }
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
