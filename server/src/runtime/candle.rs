//! candle: BERT-family encoders straight from `model.safetensors` + `config.json`,
//! in pure Rust. Takes `input_ids`, `attention_mask`, `token_type_ids` and returns
//! `last_hidden_state`, like an ONNX export of the same model, so the text tasks
//! work the same on both; a `BertForSequenceClassification` returns `logits` from
//! its pooler and classifier, as transformers computes them.

use std::path::Path;

use candle_core::{DType, Device, Tensor as CTensor};
use candle_nn::{Linear, Module, VarBuilder};
use candle_transformers::models::bert::{BertModel, Config};
use ndarray::{ArrayD, IxDyn};
use zoo_api::Signature;

use super::{LoadedModel, RunLimits, Runtime, RuntimeError, Tensor, Tensors};

pub struct CandleRuntime;

fn load_err(message: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Load { runtime: "candle", message: message.to_string() }
}

impl Runtime for CandleRuntime {
    fn name(&self) -> &'static str {
        "candle"
    }

    #[allow(clippy::disallowed_methods, reason = "models load on a blocking thread (service::loader)")]
    fn load(
        &self,
        model: &Path,
        signature: &Signature,
        _limits: &RunLimits,
    ) -> Result<Box<dyn LoadedModel>, RuntimeError> {
        let dir = model.parent().ok_or_else(|| load_err("the weights file has no directory"))?;
        let config_text =
            std::fs::read_to_string(dir.join("config.json")).map_err(|e| load_err(format!("config.json: {e}")))?;
        let config: Config = serde_json::from_str(&config_text)
            .map_err(|e| load_err(format!("config.json is not a BERT config: {e}")))?;
        let device = Device::Cpu;
        let tensors = candle_core::safetensors::load(model, &device).map_err(load_err)?;
        let head = if signature.outputs.first().is_some_and(|o| o.name == "logits") {
            let linear = |names: [&str; 2]| -> Result<Linear, RuntimeError> {
                let get = |suffix: &str| {
                    names
                        .iter()
                        .find_map(|n| tensors.get(&format!("{n}.{suffix}")))
                        .cloned()
                        .ok_or_else(|| load_err(format!("{}.{suffix} is missing", names[0])))
                };
                let w = get("weight")?.to_dtype(DType::F32).map_err(load_err)?;
                let b = get("bias")?.to_dtype(DType::F32).map_err(load_err)?;
                Ok(Linear::new(w, Some(b)))
            };
            let pooler = linear(["bert.pooler.dense", "pooler.dense"])?;
            let classifier = linear(["classifier", "classifier"])?;
            Some((pooler, classifier))
        } else {
            None
        };
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
        let bert = BertModel::load(vb, &config).map_err(load_err)?;
        Ok(Box::new(CandleBert { bert, head, device }))
    }
}

struct CandleBert {
    bert: BertModel,
    /// Pooler and classifier of a sequence classifier.
    head: Option<(Linear, Linear)>,
    device: Device,
}

impl CandleBert {
    /// A `[batch, sequence]` int64 input as a candle tensor.
    fn ids(&self, inputs: &Tensors, name: &str) -> Result<Option<CTensor>, RuntimeError> {
        let Some((_, t)) = inputs.iter().find(|(n, _)| n == name) else { return Ok(None) };
        let Tensor::I64(a) = t else {
            return Err(RuntimeError::Input(format!("input '{name}' must be int64")));
        };
        let &[b, s] = a.shape() else {
            return Err(RuntimeError::Input(format!("input '{name}' must be [batch, sequence], got {:?}", a.shape())));
        };
        let data: Vec<i64> = a.iter().copied().collect();
        CTensor::from_vec(data, (b, s), &self.device).map(Some).map_err(|e| RuntimeError::Run(e.to_string()))
    }
}

impl LoadedModel for CandleBert {
    fn run(&mut self, inputs: Tensors) -> Result<Tensors, RuntimeError> {
        let run = |e: candle_core::Error| RuntimeError::Run(e.to_string());
        let ids =
            self.ids(&inputs, "input_ids")?.ok_or_else(|| RuntimeError::Input("missing input 'input_ids'".into()))?;
        let types = match self.ids(&inputs, "token_type_ids")? {
            Some(t) => t,
            None => ids.zeros_like().map_err(run)?,
        };
        let mask = self.ids(&inputs, "attention_mask")?;
        let hidden = self.bert.forward(&ids, &types, mask.as_ref()).map_err(run)?;
        let (name, out) = match &self.head {
            // transformers' BertPooler (tanh of a dense layer on [CLS]), then the classifier.
            Some((pooler, classifier)) => {
                let cls = hidden.narrow(1, 0, 1).and_then(|t| t.squeeze(1)).map_err(run)?;
                let pooled = pooler.forward(&cls).and_then(|t| t.tanh()).map_err(run)?;
                ("logits", classifier.forward(&pooled).map_err(run)?)
            }
            None => ("last_hidden_state", hidden),
        };
        let shape = out.dims().to_vec();
        let values = out.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(run)?;
        let array = ArrayD::from_shape_vec(IxDyn(&shape), values).map_err(|e| RuntimeError::Run(e.to_string()))?;
        Ok(vec![(name.to_string(), Tensor::F32(array))])
    }
}
