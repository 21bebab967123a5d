//! Labels from logits, shared by the classification tasks (texts and images):
//! softmax (sigmoid for one logit of two labels), best first, and their KServe v2
//! tensors.

use ndarray::{ArrayD, Axis, IxDyn};
use serde_json::{Value, json};
use zoo_api::kserve::V2TensorMetadata;
use zoo_api::{DType, LabelScore};

use crate::error::{Error, Result};
use crate::runtime::{Tensor, Tensors};

/// The v2 metadata of a classifier's outputs: `label`, `score` and `scores` of
/// its `n` labels.
pub fn v2_label_outputs(n: usize) -> Vec<V2TensorMetadata> {
    vec![
        V2TensorMetadata::new("label", DType::String, vec![-1]),
        V2TensorMetadata::new("score", DType::Float32, vec![-1]),
        V2TensorMetadata::new("scores", DType::Float32, vec![-1, n as i64]),
    ]
}

/// The OpenAPI schema of a classifier's answer: labels with scores, best first,
/// one list per input (`what`: "text" or "image").
pub fn labels_response(labels: &[String], what: &str) -> Value {
    let label = json!({
        "type": "object",
        "required": ["label", "score"],
        "properties": {
            "label": {"type": "string", "enum": labels},
            "score": {"type": "number", "minimum": 0, "maximum": 1}
        }
    });
    json!({
        "description": format!("labels with scores, best first; a list of those for a list of {what}s"),
        "oneOf": [
            {"type": "array", "items": label},
            {"type": "array", "items": {"type": "array", "items": label}}
        ]
    })
}

/// Softmax over logits `[batch, labels]` (sigmoid for one logit of two labels),
/// labels sorted by score, the best `top_k` of each row.
pub fn classify(logits: &ArrayD<f32>, labels: &[String], top_k: Option<usize>) -> Result<Vec<Vec<LabelScore>>> {
    if logits.ndim() != 2 {
        return Err(Error::Inference(format!("logits have shape {:?}, expected [batch, labels]", logits.shape())));
    }
    let mut out = Vec::with_capacity(logits.shape()[0]);
    for row in logits.axis_iter(Axis(0)) {
        let row: Vec<f32> = row.iter().copied().collect();
        let mut scored: Vec<LabelScore> = if row.len() == 1 && labels.len() == 2 {
            let p = 1.0 / (1.0 + (-row[0]).exp());
            vec![
                LabelScore { label: labels[1].clone(), score: p },
                LabelScore { label: labels[0].clone(), score: 1.0 - p },
            ]
        } else {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let exps: Vec<f32> = row.iter().map(|v| (v - max).exp()).collect();
            let sum: f32 = exps.iter().sum();
            exps.iter()
                .enumerate()
                .map(|(i, e)| LabelScore {
                    label: labels.get(i).cloned().unwrap_or_else(|| format!("LABEL_{i}")),
                    score: e / sum,
                })
                .collect()
        };
        scored.sort_by(|a, b| b.score.total_cmp(&a.score));
        if let Some(k) = top_k {
            scored.truncate(k.max(1));
        }
        out.push(scored);
    }
    Ok(out)
}

/// The v2 outputs of a classifier: `label` and `score` (the best of each row) and
/// `scores` (every label's, in the labels' order). `scored`: every label of each row.
pub fn v2_labels(scored: &[Vec<LabelScore>], labels: &[String]) -> Result<Tensors> {
    let n = scored.len();
    let best: Vec<String> = scored.iter().map(|s| s.first().map(|l| l.label.clone()).unwrap_or_default()).collect();
    let top: Vec<f32> = scored.iter().map(|s| s.first().map_or(0.0, |l| l.score)).collect();
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
    let shaped = |shape: &[usize]| IxDyn(shape);
    Ok(vec![
        ("label".to_string(), Tensor::Str(ArrayD::from_shape_vec(shaped(&[n]), best).map_err(Error::internal)?)),
        ("score".to_string(), Tensor::F32(ArrayD::from_shape_vec(shaped(&[n]), top).map_err(Error::internal)?)),
        ("scores".to_string(), Tensor::F32(ArrayD::from_shape_vec(shaped(&[n, k]), all).map_err(Error::internal)?)),
    ])
}
