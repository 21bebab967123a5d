//! Image models: a bundle with `preprocessor_config.json` (transformers' image
//! processor settings) whose model takes one `[batch, channels, height, width]`
//! float input. The settings are read as data and checked at upload: only what
//! zoo applies exactly as transformers does is accepted.

use std::path::Path;

use serde_json::Value;
use zoo_api::{DType, Dim, ImageInfo, ImageNormalize, ImageResize, Signature, TensorSpec};

use crate::bundle::read_small;
use crate::{Error, Limits};

/// The file that makes a bundle an image model.
pub const PREPROCESSOR: &str = "preprocessor_config.json";

/// Largest height or width an image model may take (after its resize).
pub const MAX_MODEL_SIDE: u32 = 4096;

fn bad(message: String) -> Error {
    Error::InvalidBundle { rule: "preprocessor", message: format!("{PREPROCESSOR}: {message}") }
}

/// The model's image input: its only input, of rank 4 and a float type.
pub fn image_input(sig: &Signature) -> Option<&TensorSpec> {
    match sig.inputs.as_slice() {
        [one] if one.shape.as_ref().is_some_and(|s| s.len() == 4) && matches!(one.dtype, DType::Float32) => Some(one),
        _ => None,
    }
}

/// The image settings of a bundle in `dir`, if it has `preprocessor_config.json`
/// and a model that takes one image tensor. `labels`: from `config.json`.
pub fn image_info(sig: &Signature, dir: &Path, labels: &[String], limits: &Limits) -> Result<Option<ImageInfo>, Error> {
    let Some(bytes) = read_small(&dir.join(PREPROCESSOR), limits.max_side_file)? else {
        return Ok(None);
    };
    let Some(input) = image_input(sig) else {
        return Ok(None);
    };
    let config: Value = serde_json::from_slice(&bytes).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let mut info = parse(&config)?;
    info.input = input.name.clone();
    info.labels = labels.to_vec();
    let shape = input.shape.as_deref().unwrap_or_default();
    if let Dim::Fixed(c) = shape[1]
        && c != 3
    {
        return Err(bad(format!("the model's input '{}' takes {c} channels; zoo feeds images as RGB (3)", input.name)));
    }
    // The size the processor makes must be the model's, where the model fixes it.
    for (dim, made, what) in [(&shape[2], info.height, "height"), (&shape[3], info.width, "width")] {
        match dim {
            Dim::Fixed(n) if *n as u64 != u64::from(made) && made != 0 => {
                return Err(bad(format!(
                    "the processor makes images of {what} {made}, but the model's input '{}' takes {n}",
                    input.name
                )));
            }
            Dim::Fixed(n) if made == 0 => {
                let n = u32::try_from(*n).ok().filter(|n| (1..=MAX_MODEL_SIDE).contains(n)).ok_or_else(|| {
                    bad(format!("the model's input {what} {n} is not between 1 and {MAX_MODEL_SIDE}"))
                })?;
                if what == "height" { info.height = n } else { info.width = n }
            }
            _ => {}
        }
    }
    if info.height == 0 || info.width == 0 {
        return Err(bad(
            "neither the processor (a fixed size or a centre crop) nor the model fixes the image's size".into()
        ));
    }
    Ok(Some(info))
}

/// A `{"height", "width"}` size, or a bare number for both.
fn size_of(v: &Value, key: &str) -> Result<Option<(u32, u32)>, Error> {
    let side = |x: &Value, what: &str| {
        x.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| (1..=MAX_MODEL_SIDE).contains(n))
            .ok_or_else(|| bad(format!("{key}.{what} must be a whole number from 1 to {MAX_MODEL_SIDE}, not {x}")))
    };
    match v {
        Value::Null => Ok(None),
        Value::Number(_) => {
            let n = side(v, "size")?;
            Ok(Some((n, n)))
        }
        Value::Object(m) if m.contains_key("height") || m.contains_key("width") => {
            let get = |k: &str| m.get(k).unwrap_or(&Value::Null);
            Ok(Some((side(get("height"), "height")?, side(get("width"), "width")?)))
        }
        Value::Object(_) => Ok(None),
        other => Err(bad(format!("{key} must be a size, not {other}"))),
    }
}

fn flag(config: &Value, key: &str, default: bool) -> Result<bool, Error> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(bad(format!("{key} must be true or false, not {other}"))),
    }
}

/// What a transformers image processor class does with what its config leaves
/// unsaid: whether a bare number `size` is a square (else the shorter edge), and
/// its resampling filter.
struct Processor {
    square_size: bool,
    resample: &'static str,
    center_crop: bool,
}

/// The image processors whose settings zoo applies as transformers does.
const PROCESSORS: &[(&str, Processor)] = &[
    ("ViTImageProcessor", Processor { square_size: true, resample: "bilinear", center_crop: false }),
    ("DeiTImageProcessor", Processor { square_size: true, resample: "bicubic", center_crop: true }),
    ("BeitImageProcessor", Processor { square_size: true, resample: "bicubic", center_crop: true }),
    ("SiglipImageProcessor", Processor { square_size: true, resample: "bicubic", center_crop: false }),
    ("CLIPImageProcessor", Processor { square_size: false, resample: "bicubic", center_crop: true }),
    ("BitImageProcessor", Processor { square_size: false, resample: "bicubic", center_crop: true }),
    ("MobileNetV1ImageProcessor", Processor { square_size: false, resample: "bilinear", center_crop: true }),
    ("MobileNetV2ImageProcessor", Processor { square_size: false, resample: "bilinear", center_crop: true }),
];

/// The processor class a config names (`image_processor_type`, or an older
/// `feature_extractor_type`; the torchvision `Fast` and Pillow `Pil` variants are
/// the same settings).
fn processor(config: &Value) -> Result<&'static Processor, Error> {
    let named = config
        .get("image_processor_type")
        .or_else(|| config.get("feature_extractor_type"))
        .and_then(Value::as_str)
        .unwrap_or("ViTImageProcessor");
    let base = named.strip_suffix("Fast").or_else(|| named.strip_suffix("Pil")).unwrap_or(named);
    let base = base.replace("FeatureExtractor", "ImageProcessor");
    PROCESSORS.iter().find(|(n, _)| *n == base).map(|(_, p)| p).ok_or_else(|| {
        bad(format!(
            "image processor '{named}' is not one zoo applies; it applies {}",
            PROCESSORS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
        ))
    })
}

/// Pillow's resampling filters by their number in `resample`.
fn resample(config: &Value, default: &'static str) -> Result<String, Error> {
    Ok(match config.get("resample").and_then(Value::as_u64) {
        None => default,
        Some(0) => "nearest",
        Some(2) => "bilinear",
        Some(3) => "bicubic",
        Some(n) => {
            return Err(bad(format!(
                "resample {n} is not one zoo applies (0 nearest, 2 bilinear, 3 bicubic are; Pillow's lanczos, box and \
                 hamming are not)"
            )));
        }
    }
    .into())
}

/// Three numbers per channel (or one for all).
fn per_channel(config: &Value, key: &str, default: f32) -> Result<Vec<f32>, Error> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(vec![default; 3]),
        Some(Value::Number(n)) => Ok(vec![n.as_f64().unwrap_or(0.0) as f32; 3]),
        Some(Value::Array(a)) if a.len() == 3 && a.iter().all(Value::is_number) => {
            Ok(a.iter().map(|v| v.as_f64().unwrap_or(0.0) as f32).collect())
        }
        Some(other) => Err(bad(format!("{key} must be 3 numbers (one per RGB channel), not {other}"))),
    }
}

/// transformers' image processor settings as zoo applies them. `height`/`width`
/// are 0 where the processor leaves the size to the image (filled from the model).
pub fn parse(config: &Value) -> Result<ImageInfo, Error> {
    if !config.is_object() {
        return Err(bad("must be a JSON object".into()));
    }
    // Settings that change the pixels in ways zoo does not reproduce.
    if config.get("crop_pct").is_some_and(|v| !v.is_null()) {
        return Err(bad("crop_pct (ConvNeXt's resize-then-crop) is not supported".into()));
    }
    for key in ["do_pad", "do_flip_channel_order", "include_top", "rescale_offset"] {
        if flag(config, key, false)? {
            return Err(bad(format!("{key} is not supported")));
        }
    }
    let kind = processor(config)?;
    let resize = if flag(config, "do_resize", true)? {
        let size = config.get("size").unwrap_or(&Value::Null);
        // A bare number: a square for ViT's kind of processor, the shorter edge for CLIP's.
        let size = &match size.as_u64() {
            Some(n) if !kind.square_size => serde_json::json!({"shortest_edge": n}),
            _ => size.clone(),
        };
        if let Some((h, w)) = size_of(size, "size")? {
            Some(ImageResize::Exact { height: h, width: w })
        } else if let Some(edge) = size.get("shortest_edge") {
            let e = edge
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| (1..=MAX_MODEL_SIDE).contains(n))
                .ok_or_else(|| bad(format!("size.shortest_edge must be from 1 to {MAX_MODEL_SIDE}, not {edge}")))?;
            if size.get("longest_edge").is_some_and(|v| !v.is_null()) {
                return Err(bad("size.longest_edge is not supported".into()));
            }
            Some(ImageResize::ShortestEdge(e))
        } else {
            return Err(bad(format!("size must be {{\"height\", \"width\"}} or {{\"shortest_edge\"}}, not {size}")));
        }
    } else {
        None
    };
    let crop = if flag(config, "do_center_crop", kind.center_crop)? {
        let (h, w) = size_of(config.get("crop_size").unwrap_or(&Value::Null), "crop_size")?
            .ok_or_else(|| bad("do_center_crop needs crop_size {\"height\", \"width\"}".into()))?;
        if let Some(ImageResize::ShortestEdge(e)) = resize
            && (e < h || e < w)
        {
            return Err(bad(format!("the centre crop {h}x{w} is larger than the resized shortest edge {e}")));
        }
        if let Some(ImageResize::Exact { height, width }) = resize
            && (height < h || width < w)
        {
            return Err(bad(format!("the centre crop {h}x{w} is larger than the resized image {height}x{width}")));
        }
        Some([h, w])
    } else {
        None
    };
    let rescale = if flag(config, "do_rescale", true)? {
        let f = match config.get("rescale_factor") {
            None | Some(Value::Null) => 1.0 / 255.0,
            Some(v) => v.as_f64().filter(|f| f.is_finite()).ok_or_else(|| bad(format!("rescale_factor {v}")))?,
        };
        Some(f)
    } else {
        None
    };
    let normalize = if flag(config, "do_normalize", true)? {
        let mean = per_channel(config, "image_mean", 0.5)?;
        let std = per_channel(config, "image_std", 0.5)?;
        if std.iter().any(|s| *s == 0.0 || !s.is_finite()) || mean.iter().any(|m| !m.is_finite()) {
            return Err(bad(format!("image_std must be finite and not zero, got {std:?}")));
        }
        Some(ImageNormalize { mean, std })
    } else {
        None
    };
    let (height, width) = match (crop, resize) {
        (Some([h, w]), _) => (h, w),
        (None, Some(ImageResize::Exact { height, width })) => (height, width),
        _ => (0, 0),
    };
    if let (None, Some(ImageResize::ShortestEdge(_))) = (crop, resize) {
        return Err(bad(
            "a shortest-edge resize without a centre crop makes images of different sizes; a model takes one".into(),
        ));
    }
    Ok(ImageInfo {
        input: String::new(),
        height,
        width,
        resize,
        resample: resample(config, kind.resample)?,
        crop,
        rescale,
        normalize,
        labels: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn vit_settings_are_read_as_transformers_applies_them() {
        let i = parse(&json!({
            "do_normalize": true, "do_rescale": true, "do_resize": true,
            "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
            "image_processor_type": "ViTImageProcessor", "resample": 2,
            "rescale_factor": 0.00392156862745098, "size": {"height": 224, "width": 224}
        }))
        .unwrap();
        assert_eq!((i.height, i.width), (224, 224));
        assert_eq!(i.resize, Some(ImageResize::Exact { height: 224, width: 224 }));
        assert_eq!(i.resample, "bilinear");
        assert_eq!(i.crop, None);
        assert_eq!(i.rescale, Some(1.0 / 255.0));
        assert_eq!(i.normalize, Some(ImageNormalize { mean: vec![0.5; 3], std: vec![0.5; 3] }));
    }

    #[test]
    fn a_shortest_edge_resize_with_a_centre_crop_makes_the_crop_size() {
        let i = parse(&json!({"size": {"shortest_edge": 256}, "do_center_crop": true,
                              "crop_size": {"height": 224, "width": 224}, "resample": 3}))
        .unwrap();
        assert_eq!(i.resize, Some(ImageResize::ShortestEdge(256)));
        assert_eq!((i.crop, i.height, i.width, i.resample.as_str()), (Some([224, 224]), 224, 224, "bicubic"));
    }

    #[test]
    fn a_bare_number_size_is_a_square_or_the_shorter_edge_as_the_processor_class_reads_it() {
        let clip = parse(&json!({"image_processor_type": "CLIPImageProcessor", "size": 224, "crop_size": 224,
                                 "do_center_crop": true}))
        .unwrap();
        assert_eq!(
            (clip.resize, clip.crop, clip.resample.as_str()),
            (Some(ImageResize::ShortestEdge(224)), Some([224, 224]), "bicubic")
        );
        let vit = parse(&json!({"feature_extractor_type": "ViTFeatureExtractor", "size": 224})).unwrap();
        assert_eq!(
            (vit.resize, vit.resample.as_str()),
            (Some(ImageResize::Exact { height: 224, width: 224 }), "bilinear")
        );
    }

    #[test]
    fn settings_zoo_cannot_reproduce_are_refused_with_the_reason() {
        for (config, says) in [
            (json!({"size": {"height": 8, "width": 8}, "crop_pct": 0.875}), "crop_pct"),
            (json!({"size": {"height": 8, "width": 8}, "resample": 1}), "resample 1"),
            (json!({"size": {"shortest_edge": 8}}), "different sizes"),
            (json!({"size": {"height": 0, "width": 8}}), "size.height"),
            (json!({"size": {"height": 8, "width": 8}, "image_std": [1, 0, 1]}), "image_std"),
            (json!({"size": {"height": 8, "width": 8}, "do_pad": true}), "do_pad"),
            (json!([1, 2]), "object"),
            (json!({"size": {"height": 8}}), "size.width"),
            (json!({"size": {"height": 8, "width": 8}, "image_processor_type": "LevitImageProcessor"}), "Levit"),
            (json!({"size": {"height": 8, "width": 8}, "do_flip_channel_order": true}), "do_flip_channel_order"),
        ] {
            let e = parse(&config).unwrap_err().to_string();
            assert!(e.contains(says), "{config}: {e}");
        }
    }
}
