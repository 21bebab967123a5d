//! The `token-classification` task (named-entity recognition): a text (or a
//! list) in, the entities found in it out, as transformers' pipeline answers with
//! `aggregation_strategy="simple"`: every token but the special ones is labelled
//! with its best label (softmax over the model's logits), adjacent tokens of one
//! entity are grouped (a `B-` label starts a new group), a group's score is the
//! mean of its tokens', its word their decoded tokens, `start`..`end` its
//! characters in the text; groups labelled `O` are left out. In KServe v2 a
//! `text` BYTES input and an `entities` BYTES output (each text's entities as JSON).

use std::path::Path;

use ndarray::{ArrayD, Axis, IxDyn};
use serde_json::{Value, json};
use tokenizers::{Decoder, Encoding};
use zoo_api::kserve::V2TensorMetadata;
use zoo_api::{DType, EffectiveServing, Entity, MlflowPredictions, PredictResponse, Signature, Task, VersionInfo};

use super::{TaskKind, TaskPipeline};
use crate::error::{Error, Result};
use crate::pipeline::json;
use crate::pipeline::request::{Answer, Inputs, RawPredict};
use crate::pipeline::text::{self, Reads, TextPipeline, texts_schema};
use crate::runtime::{Tensor, Tensors};

pub struct TokenClassification;

struct Loaded(TextPipeline);

impl TaskKind for TokenClassification {
    fn task(&self) -> Task {
        Task::TokenClassification
    }

    fn load(&self, dir: &Path, signature: &Signature, labels: &[String]) -> Result<Box<dyn TaskPipeline>> {
        Ok(Box::new(Loaded(TextPipeline::for_version(dir, signature, labels, Reads::TokenLabels)?)))
    }

    fn v2_metadata(
        &self,
        _signature: &Signature,
        _labels: &[String],
    ) -> (Vec<V2TensorMetadata>, Vec<V2TensorMetadata>) {
        (
            vec![V2TensorMetadata::new("text", DType::String, vec![-1])],
            vec![V2TensorMetadata::new("entities", DType::String, vec![-1])],
        )
    }

    fn openapi(&self, info: &VersionInfo) -> (Value, Value, Value) {
        let groups: Vec<String> = entity_groups(&info.labels);
        let mut group = json!({"type": "string", "description": "the entity's type (PER from B-PER and I-PER)"});
        if !groups.is_empty() {
            group["enum"] = json!(groups);
        }
        let entity = json!({
            "type": "object",
            "required": ["entity_group", "score", "word", "start", "end"],
            "properties": {
                "entity_group": group,
                "score": {"type": "number", "minimum": 0, "maximum": 1, "description": "the mean score of its tokens"},
                "word": {"type": "string", "description": "its tokens, decoded"},
                "start": {"type": "integer", "minimum": 0, "description": "its first character in the text (Unicode scalar values)"},
                "end": {"type": "integer", "minimum": 0, "description": "one past its last character"}
            }
        });
        let request = json!({
            "type": "object",
            "required": ["inputs"],
            "properties": {"inputs": texts_schema(info.effective.max_items)}
        });
        let list = json!({"type": "array", "items": entity});
        let response = json!({
            "description": "the entities of the text, in order; a list of those for a list of texts",
            "oneOf": [list.clone(), {"type": "array", "items": list}]
        });
        (request, response, json!({"inputs": "My name is Sarah and I live in London"}))
    }

    fn needs_labels(&self) -> bool {
        true
    }

    fn mlflow_cell(&self) -> Value {
        json!({"type": "string"})
    }
}

/// The entity types of labels (`B-PER`, `I-PER` -> `PER`), `O` left out.
fn entity_groups(labels: &[String]) -> Vec<String> {
    let mut groups: Vec<String> = Vec::new();
    for l in labels {
        let g = tag(l).1;
        if g != "O" && !groups.iter().any(|x| x == g) {
            groups.push(g.to_string());
        }
    }
    groups
}

/// transformers' `get_tag`: (`B` or `I`, the type); a label without a prefix
/// continues a group of its own type.
fn tag(label: &str) -> (char, &str) {
    if let Some(t) = label.strip_prefix("B-") {
        ('B', t)
    } else if let Some(t) = label.strip_prefix("I-") {
        ('I', t)
    } else {
        ('I', label)
    }
}

/// One labelled token.
struct Token {
    label: String,
    score: f32,
    token: String,
    /// The original text of an unknown token.
    unknown: Option<String>,
    start: usize,
    end: usize,
}

impl Loaded {
    /// The entities of each text from the token logits `[batch, sequence, labels]`.
    fn entities(&self, answer: &Answer, outputs: &Tensors) -> Result<Vec<Vec<Entity>>> {
        let logits = self.0.read(outputs)?;
        if logits.ndim() != 3 {
            return Err(Error::Inference(format!(
                "logits have shape {:?}, expected [batch, sequence, labels]",
                logits.shape()
            )));
        }
        let (encodings, texts) = answer.encodings()?;
        if logits.shape()[0] != encodings.len() {
            return Err(Error::Inference(format!(
                "the model returned logits for {} texts, not {}",
                logits.shape()[0],
                encodings.len()
            )));
        }
        let labels = &self.0.info().labels;
        let tokenizer = self.0.tokenizer();
        let unk = ["[UNK]", "<unk>"].iter().find_map(|t| tokenizer.token_to_id(t));
        let mut out = Vec::with_capacity(encodings.len());
        for ((row, enc), text) in logits.axis_iter(Axis(0)).zip(encodings).zip(texts) {
            let tokens = label_tokens(row, enc, text, labels, unk);
            out.push(self.group(tokens));
        }
        Ok(out)
    }

    /// transformers' `group_entities`, then the `O` groups left out.
    fn group(&self, tokens: Vec<Token>) -> Vec<Entity> {
        group_tokens(tokens).into_iter().filter_map(|g| self.entity(g)).collect()
    }

    fn entity(&self, group: Vec<Token>) -> Option<Entity> {
        let first = group.first()?;
        let entity_group = first.label.split_once('-').map_or(first.label.as_str(), |(_, t)| t).to_string();
        if entity_group == "O" {
            return None;
        }
        let score = group.iter().map(|t| t.score).sum::<f32>() / group.len() as f32;
        let (start, end) = (first.start, group.last().map_or(first.end, |t| t.end));
        let words: Vec<String> = group.into_iter().map(|t| t.unknown.unwrap_or(t.token)).collect();
        let word = match self.0.tokenizer().get_decoder() {
            Some(d) => d.decode(words.clone()).unwrap_or_else(|_| words.join(" ")),
            None => words.join(" "),
        };
        Some(Entity { entity_group, score, word, start, end })
    }
}

/// Adjacent tokens of one entity type together; a `B-` label starts a new group.
fn group_tokens(tokens: Vec<Token>) -> Vec<Vec<Token>> {
    let mut groups: Vec<Vec<Token>> = Vec::new();
    for t in tokens {
        let joins = groups.last().and_then(|g| g.last()).is_some_and(|last| {
            let (bi, ty) = tag(&t.label);
            ty == tag(&last.label).1 && bi != 'B'
        });
        match groups.last_mut() {
            Some(g) if joins => g.push(t),
            _ => groups.push(vec![t]),
        }
    }
    groups
}

/// Every token of one text but the special ones, with its best label and score
/// (softmax over its logits) and its characters in the text.
fn label_tokens(
    logits: ndarray::ArrayViewD<'_, f32>,
    enc: &Encoding,
    text: &str,
    labels: &[String],
    unk: Option<u32>,
) -> Vec<Token> {
    // Byte offsets to character offsets.
    let chars: Vec<usize> = {
        let mut map = vec![0usize; text.len() + 1];
        let mut n = 0;
        for (b, _) in text.char_indices() {
            map[b] = n;
            n += 1;
        }
        map[text.len()] = n;
        map
    };
    let char_at = |b: usize| chars.get(b).copied().unwrap_or(n_chars(&chars));
    let mut out = Vec::new();
    for (i, scores) in logits.axis_iter(Axis(0)).enumerate().take(enc.len()) {
        if enc.get_special_tokens_mask()[i] == 1 || enc.get_attention_mask()[i] == 0 {
            continue;
        }
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exps: Vec<f32> = scores.iter().map(|v| (v - max).exp()).collect();
        let sum: f32 = exps.iter().sum();
        let (best, e) =
            exps.iter().enumerate().fold((0, f32::NEG_INFINITY), |acc, (k, e)| if *e > acc.1 { (k, *e) } else { acc });
        let (start, end) = enc.get_offsets()[i];
        let id = enc.get_ids()[i];
        out.push(Token {
            label: labels.get(best).cloned().unwrap_or_else(|| format!("LABEL_{best}")),
            score: e / sum,
            token: enc.get_tokens()[i].clone(),
            unknown: (Some(id) == unk).then(|| text.get(start..end).unwrap_or("").to_string()),
            start: char_at(start),
            end: char_at(end),
        });
    }
    out
}

fn n_chars(map: &[usize]) -> usize {
    map.last().copied().unwrap_or(0)
}

impl TaskPipeline for Loaded {
    fn text(&self) -> Option<&TextPipeline> {
        Some(&self.0)
    }

    fn inputs(&self, signature: &Signature, limits: &EffectiveServing, req: &RawPredict<'_>) -> Result<Inputs> {
        text::request_texts(signature, limits, req)
    }

    fn respond(
        &self,
        signature: &Signature,
        _req: &RawPredict<'_>,
        answer: &Answer,
        outputs: &Tensors,
    ) -> Result<PredictResponse> {
        let many = answer.many()?;
        let mut entities = self.entities(answer, outputs)?;
        Ok(if signature.mlflow.is_some() {
            PredictResponse::Mlflow(MlflowPredictions { predictions: json::raw(&entities) })
        } else if many {
            PredictResponse::EntitiesBatch(entities)
        } else {
            PredictResponse::Entities(entities.remove(0))
        })
    }

    fn v2_input_count(&self, _signature: &Signature) -> usize {
        1
    }

    fn v2_inputs(&self, _signature: &Signature, limits: &EffectiveServing, given: Tensors) -> Result<Inputs> {
        text::v2_texts(given, limits)
    }

    /// `entities`: each text's entities as a JSON array.
    fn v2_outputs(&self, answer: &Answer, outputs: Tensors) -> Result<Tensors> {
        let entities = self.entities(answer, &outputs)?;
        let n = entities.len();
        let texts: Vec<String> =
            entities.iter().map(|e| serde_json::to_string(e).map_err(Error::internal)).collect::<Result<_>>()?;
        Ok(vec![(
            "entities".to_string(),
            Tensor::Str(ArrayD::from_shape_vec(IxDyn(&[n]), texts).map_err(Error::internal)?),
        )])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(label: &str, score: f32, start: usize, end: usize) -> Token {
        Token { label: label.into(), score, token: format!("t{start}"), unknown: None, start, end }
    }

    #[test]
    fn tags_split_as_transformers_does() {
        assert_eq!(tag("B-PER"), ('B', "PER"));
        assert_eq!(tag("I-LOC"), ('I', "LOC"));
        assert_eq!(tag("O"), ('I', "O"));
        assert_eq!(tag("MISC"), ('I', "MISC"));
        let labels: Vec<String> = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"].map(String::from).to_vec();
        assert_eq!(entity_groups(&labels), ["PER", "LOC"]);
    }

    #[test]
    fn a_begin_label_starts_a_new_entity_and_o_is_left_out() {
        let tokens = vec![
            token("B-PER", 0.9, 0, 3),
            token("I-PER", 0.7, 4, 8),
            token("B-PER", 0.5, 9, 12),
            token("O", 0.99, 13, 15),
            token("I-LOC", 0.6, 16, 20),
            token("B-LOC", 0.8, 21, 24),
        ];
        let groups = group_tokens(tokens);
        let spans: Vec<(String, usize, usize, usize)> =
            groups.iter().map(|g| (g[0].label.clone(), g.len(), g[0].start, g[g.len() - 1].end)).collect();
        assert_eq!(
            spans,
            [
                ("B-PER".to_string(), 2, 0, 8),
                ("B-PER".to_string(), 1, 9, 12),
                ("O".to_string(), 1, 13, 15),
                ("I-LOC".to_string(), 1, 16, 20),
                ("B-LOC".to_string(), 1, 21, 24)
            ]
        );
    }
}
