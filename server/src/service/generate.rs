//! Text generation for every front end (zoo's predict route, the OpenAI routes,
//! KServe v2 `generate`): find the version a model reference names, make the
//! prompt's tokens (a chat through the model's template), and start the
//! generation in the version's engine.

use std::sync::Arc;
use std::time::Instant;

use zoo_api::openai::{ChatMessage, GeneratedText};
use zoo_api::{AliasName, ModelName, PredictResponse, VersionName};

use super::Services;
use super::pool::LoadedVersion;
use super::predict::{Prediction, Target};
use crate::error::{Error, Result};
use crate::pipeline::generation::{self, Generator, Settings, Stream};
use crate::pipeline::request::RawPredict;

/// Prompts up to this many bytes are tokenized on the request's own task.
const INLINE_BYTES: usize = 4096;

/// A text-generation version, ready to generate.
pub struct Generating {
    pub served: Arc<LoadedVersion>,
    pub generator: Arc<Generator>,
}

/// A model reference of the OpenAI routes: `name`, `name:alias` or `name@version`.
pub fn parse_reference(reference: &str) -> Result<(ModelName, Option<(bool, String)>)> {
    let (name, target) = match (reference.split_once('@'), reference.split_once(':')) {
        (Some((n, v)), _) => (n, Some((true, v.to_string()))),
        (None, Some((n, a))) => (n, Some((false, a.to_string()))),
        (None, None) => (reference, None),
    };
    let name: ModelName = name.parse().map_err(|e| {
        Error::InvalidName(format!("'model' must be a zoo model name (or name:alias, name@version): {e}"))
    })?;
    match &target {
        Some((true, v)) => {
            v.parse::<VersionName>().map_err(|e| Error::InvalidName(format!("'model': {e}")))?;
        }
        Some((false, a)) => {
            a.parse::<AliasName>().map_err(|e| Error::InvalidName(format!("'model': {e}")))?;
        }
        None => {}
    }
    Ok((name, target))
}

impl Services {
    /// The text-generation version a target names, loaded.
    pub async fn generating(&self, model: &str, target: Target<'_>) -> Result<Generating> {
        let (_, served) = self.prepare(model, target).await?;
        let generator = served.pipeline.generator().cloned().ok_or_else(|| {
            Error::InvalidRequest(format!(
                "model '{model}' version '{}' is a {} version, not text-generation",
                served.version,
                served.task.as_str()
            ))
        })?;
        Ok(Generating { served, generator })
    }

    /// A prompt's tokens (a long prompt on a blocking thread); `chat`: a
    /// prompt the chat template wrote.
    pub async fn prompt_tokens(&self, g: &Generating, text: String, chat: bool) -> Result<Vec<u32>> {
        if text.len() <= INLINE_BYTES {
            return g.generator.vocab.encode(&text, chat);
        }
        let generator = g.generator.clone();
        tokio::task::spawn_blocking(move || generator.vocab.encode(&text, chat)).await?
    }

    /// A chat's tokens, through the model's chat template.
    pub async fn chat_tokens(&self, g: &Generating, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        let messages = generation::chat_messages(messages)?;
        let template = g.generator.template.as_ref().map_err(|why| Error::InvalidRequest(why.clone()))?;
        let prompt = template.render(&messages, &g.generator.vocab)?;
        self.prompt_tokens(g, prompt, true).await
    }

    /// Start generating; the stream yields the text as it comes. The version
    /// counts as used for as long as it is asked.
    pub fn start(&self, g: &Generating, prompt: Vec<u32>, settings: &Settings) -> Result<Stream> {
        g.served.touch();
        generation::generate(&g.generator, prompt, settings, &g.served.model)
    }

    /// The predict route of a text-generation version: `{"inputs": "prompt",
    /// "parameters": {...}}` -> `[{"generated_text": ...}]`.
    pub(super) async fn predict_generate(
        &self,
        served: &Arc<LoadedVersion>,
        req: &RawPredict<'_>,
    ) -> Result<Prediction> {
        let generator = served.pipeline.generator().cloned().ok_or_else(|| Error::internal("no generator"))?;
        let g = Generating { served: served.clone(), generator };
        let raw = req.inputs.ok_or_else(|| Error::InvalidInput("'inputs' (the prompt) is required".into()))?;
        let prompt: String = serde_json::from_str(raw.get())
            .map_err(|_| Error::InvalidInput("'inputs' must be the prompt, a string".into()))?;
        let params = req.parameters.clone().unwrap_or_default();
        let settings = Settings::pipeline(&params)?;
        let started = Instant::now();
        let tokens = self.prompt_tokens(&g, prompt.clone(), false).await?;
        let text = self.start(&g, tokens, &settings)?.collect().await?.text;
        let generated_text = if params.return_full_text.unwrap_or(true) { prompt + &text } else { text };
        Ok(Prediction {
            version: served.version.clone(),
            queue: std::time::Duration::ZERO,
            inference: started.elapsed(),
            batch_rows: 1,
            response: PredictResponse::Generated(vec![GeneratedText { generated_text }]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_references_name_a_version_or_an_alias() {
        let (n, t) = parse_reference("smol").unwrap();
        assert_eq!((&*n, t), ("smol", None));
        let (n, t) = parse_reference("smol@2").unwrap();
        assert_eq!((&*n, t), ("smol", Some((true, "2".into()))));
        let (n, t) = parse_reference("smol:production").unwrap();
        assert_eq!((&*n, t), ("smol", Some((false, "production".into()))));
        assert!(matches!(parse_reference("../etc"), Err(Error::InvalidName(_))));
        assert!(matches!(parse_reference("smol@"), Err(Error::InvalidName(_))));
    }
}
