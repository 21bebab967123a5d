//! What each task takes and answers in the Open Inference Protocol (KServe v2):
//! text models take a `text` BYTES input and answer `label`, `score` and `scores`
//! (classifiers) or `embedding`; tensor models their signature's tensors.

use ndarray::{ArrayD, IxDyn};
use zoo_api::kserve::{V2TensorMetadata, datatype};
use zoo_api::{DType, Dim, Signature, Task, TensorSpec, ValueKind};

use super::text::{BYTES_PER_TOKEN, TextPipeline};
use crate::error::{Error, Result};
use crate::runtime::{Tensor, Tensors};

fn bad(m: impl Into<String>) -> Error {
    Error::InvalidInput(m.into())
}

fn shape_of(dims: Option<&Vec<Dim>>) -> Vec<i64> {
    match dims {
        Some(d) => d.iter().map(|d| d.fixed().unwrap_or(-1)).collect(),
        None => vec![-1],
    }
}

/// The v2 view of a version's inputs and outputs, from its stored record (no
/// need to load it).
pub fn tensors_metadata(
    task: Task,
    signature: &Signature,
    labels: &[String],
) -> (Vec<V2TensorMetadata>, Vec<V2TensorMetadata>) {
    let meta = |name: &str, dtype: DType, shape: Vec<i64>| V2TensorMetadata {
        name: name.into(),
        datatype: datatype(dtype).into(),
        shape,
    };
    match task {
        Task::TextClassification => {
            let n = if labels.is_empty() { signature.text.as_ref().map_or(0, |t| t.labels.len()) } else { labels.len() }
                as i64;
            (
                vec![meta("text", DType::String, vec![-1])],
                vec![
                    meta("label", DType::String, vec![-1]),
                    meta("score", DType::Float32, vec![-1]),
                    meta("scores", DType::Float32, vec![-1, n]),
                ],
            )
        }
        Task::FeatureExtraction => {
            let dim =
                signature.outputs.first().and_then(|o| o.shape.as_ref()).and_then(|s| s.last()).and_then(Dim::fixed);
            (
                vec![meta("text", DType::String, vec![-1])],
                vec![meta("embedding", DType::Float32, vec![-1, dim.unwrap_or(-1)])],
            )
        }
        Task::Tensor => {
            let convert = |specs: &[TensorSpec]| {
                specs
                    .iter()
                    .filter(|s| s.kind == ValueKind::Tensor)
                    .map(|s| meta(&s.name, s.dtype, shape_of(s.shape.as_ref())))
                    .collect()
            };
            (convert(&signature.inputs), convert(&signature.outputs))
        }
    }
}

/// The texts of a v2 request to a text model: one BYTES input, 1 to `max_items`
/// texts, each within the bytes `max_tokens` allows.
pub fn texts(given: Tensors, max_items: usize, max_tokens: usize) -> Result<Vec<String>> {
    let [(name, t)] = given.as_slice() else {
        return Err(bad("a text model takes one input: text (BYTES)"));
    };
    let Tensor::Str(a) = t else {
        return Err(bad(format!("input '{name}' must be BYTES (the texts)")));
    };
    let texts: Vec<String> = a.iter().cloned().collect();
    if texts.is_empty() || texts.len() > max_items {
        return Err(bad(format!("send 1 to {max_items} texts, got {}", texts.len())));
    }
    let max_bytes = max_tokens.saturating_mul(BYTES_PER_TOKEN);
    if let Some((i, t)) = texts.iter().enumerate().find(|(_, t)| t.len() > max_bytes) {
        return Err(bad(format!(
            "text {i} is {} bytes, more than the limit of {max_bytes} bytes per text; split it",
            t.len()
        )));
    }
    Ok(texts)
}

/// A text model's v2 outputs for its texts (`mask`: their attention mask).
pub fn text_outputs(p: &TextPipeline, task: Task, outputs: &Tensors, mask: &ArrayD<i64>) -> Result<Tensors> {
    let n = mask.shape().first().copied().unwrap_or(0);
    if task != Task::TextClassification {
        let emb = p.embed(outputs, mask, p.info().normalize)?;
        let d = emb.first().map_or(0, Vec::len);
        let flat: Vec<f32> = emb.into_iter().flatten().collect();
        return Ok(vec![(
            "embedding".to_string(),
            Tensor::F32(ArrayD::from_shape_vec(IxDyn(&[n, d]), flat).map_err(Error::internal)?),
        )]);
    }
    let labels = &p.info().labels;
    let scored = p.classify(outputs, None)?;
    let best: Vec<String> = scored.iter().map(|s| s[0].label.clone()).collect();
    let top: Vec<f32> = scored.iter().map(|s| s[0].score).collect();
    let k = labels.len().max(scored.first().map_or(0, Vec::len));
    let mut all = vec![0f32; n * k];
    for (row, s) in scored.iter().enumerate() {
        for ls in s {
            let i = labels
                .iter()
                .position(|l| *l == ls.label)
                .unwrap_or_else(|| ls.label.strip_prefix("LABEL_").and_then(|i| i.parse().ok()).unwrap_or(0));
            if i < k {
                all[row * k + i] = ls.score;
            }
        }
    }
    Ok(vec![
        ("label".to_string(), Tensor::Str(ArrayD::from_shape_vec(IxDyn(&[n]), best).map_err(Error::internal)?)),
        ("score".to_string(), Tensor::F32(ArrayD::from_shape_vec(IxDyn(&[n]), top).map_err(Error::internal)?)),
        ("scores".to_string(), Tensor::F32(ArrayD::from_shape_vec(IxDyn(&[n, k]), all).map_err(Error::internal)?)),
    ])
}
