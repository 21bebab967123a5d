//! What serves a stored version: the engine that loads it (its format, or an
//! MLflow bundle's served flavor), why nothing can, and which file it loads.

use zoo_api::{BundleFile, Format, Signature};

use crate::{Error, Stored, UPLOADS, native_model_types};

/// The name zoo gives a single-file artifact of this format in its local cache
/// (from its entry in `UPLOADS`).
pub fn single_file_name(format: Format) -> &'static str {
    stored(format).map_or("model", |s| s.file_name)
}

fn stored(format: Format) -> Option<Stored> {
    UPLOADS.iter().filter_map(|u| u.stored).find(|s| s.format == format)
}

/// The kind of model file a version's runtime loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Onnx,
    /// A Hugging Face directory (config.json + model.safetensors).
    Safetensors,
    Torchscript,
    /// A scikit-learn model in the skops format.
    Skops,
    /// A GGUF language model (candle's quantized runtimes).
    Gguf,
}

/// What loads this version: its format, or for an MLflow bundle the flavor zoo
/// serves it with. `None` when nothing can.
pub fn engine(signature: &Signature) -> Option<Engine> {
    match signature.format {
        Format::Mlflow => crate::mlflow::engine(signature.mlflow.as_ref()?),
        format => stored(format).map(|s| s.engine),
    }
}

/// Why a version cannot be served whatever runtimes the server has, if it cannot.
pub fn never_servable(signature: &Signature) -> Option<String> {
    if let Some(why) = signature.mlflow.as_ref().and_then(|m| m.unservable_reason.clone()) {
        return Some(why);
    }
    match engine(signature) {
        None => Some("no flavor of this bundle can be served".into()),
        Some(Engine::Safetensors) if !signature.bundle => Some(
            "a bare safetensors file holds weights only (no architecture, no tokenizer), so no runtime can run it; \
             it is stored and catalogued with its tensor table"
                .into(),
        ),
        Some(Engine::Safetensors) if signature.decoder.is_some() => {
            signature.decoder.as_ref().and_then(|d| d.unservable_reason.clone())
        }
        Some(Engine::Safetensors) if signature.inputs.is_empty() => Some(format!(
            "zoo runs safetensors directories of these model types natively: {}; this config.json names another \
             (export the model to ONNX to serve it)",
            native_model_types()
        )),
        Some(Engine::Safetensors) if signature.text.is_none() && signature.image.is_none() => {
            let image = signature.inputs.iter().any(|i| i.name == "pixel_values");
            Some(if image {
                "a safetensors image model needs its preprocessor_config.json in the directory to be served".into()
            } else {
                "a safetensors encoder needs its tokenizer.json in the directory to be served".into()
            })
        }
        Some(Engine::Skops) => signature.skops.as_ref().and_then(|m| m.unservable_reason.clone()),
        Some(Engine::Gguf) => signature.gguf.as_ref().and_then(|g| g.unservable_reason.clone()),
        _ => None,
    }
}

/// The file a runtime loads, relative to the bundle: the MLflow `onnx` flavor's
/// data, else the bundle's only `.onnx` file, or `model.onnx` among several.
pub fn bundle_model_path(signature: &Signature) -> Result<&str, Error> {
    if let Some(file) = signature.mlflow.as_ref().and_then(|m| m.model_file.as_deref()) {
        return Ok(file);
    }
    if signature.format == Format::Safetensors {
        return Ok("model.safetensors");
    }
    bundle_model_file(&signature.files)
}

/// The model file of a bundle: its only `.onnx` file, or `model.onnx` among several.
pub fn bundle_model_file(files: &[BundleFile]) -> Result<&str, Error> {
    let onnx_files: Vec<&BundleFile> = files.iter().filter(|f| f.path.ends_with(".onnx")).collect();
    match onnx_files.as_slice() {
        [] => Err(Error::UnknownFormat(format!(
            "the bundle has no model file zoo knows (expected model.onnx); it holds: {}",
            files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>().join(", ")
        ))),
        [one] => Ok(one.path.as_str()),
        many => {
            many.iter().find(|f| f.path == "model.onnx").map(|f| f.path.as_str()).ok_or_else(|| Error::InvalidBundle {
                rule: "model_file",
                message: format!(
                    "the bundle has several .onnx files and none is named model.onnx: {}",
                    many.iter().map(|f| f.path.as_str()).collect::<Vec<_>>().join(", ")
                ),
            })
        }
    }
}
