//! The OpenAI chat and completion messages zoo answers for text-generation
//! versions, as OpenAI names them, so that the `openai` client libraries work
//! unchanged; and the parameters of zoo's own predict route for the task, as the
//! Hugging Face text-generation pipeline names them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Whole numbers as JSON Schema's `integer` has them: `16` and `16.0` alike
/// (clients that compute a number send the second).
pub mod whole {
    use serde::Deserialize;
    use serde::de::{Deserializer, Error};

    fn read<'de, D: Deserializer<'de>, T: TryFrom<i128>>(d: D, range: &str) -> Result<Option<T>, D::Error> {
        let Some(n) = Option::<serde_json::Number>::deserialize(d)? else { return Ok(None) };
        let whole = match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(v), _, _) => Some(i128::from(v)),
            (_, Some(v), _) => Some(i128::from(v)),
            (_, _, Some(f)) if f.fract() == 0.0 && f.abs() < 1e20 => Some(f as i128),
            _ => None,
        };
        whole
            .and_then(|v| T::try_from(v).ok())
            .map(Some)
            .ok_or_else(|| D::Error::custom(format!("invalid value: {n}, expected a whole number {range}")))
    }

    /// An optional `u32`.
    pub fn u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        read(d, "from 0 to 4294967295")
    }

    /// An optional `i64`.
    pub fn i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        read(d, "that fits in 64 bits")
    }
}

/// Stop strings: one, or a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        }
    }
}

/// A message's content: a text, or a list of parts (only text parts are read).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ContentPart {
    /// `text` (other kinds are refused).
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

/// One message of a chat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` (or another role the model's template knows).
    pub role: String,
    /// Absent or null only for an assistant message that called tools (refused).
    #[serde(default)]
    pub content: Option<Content>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// What both OpenAI routes share: the model and how to sample.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SamplingParams {
    /// Most tokens to generate (also `max_completion_tokens`); default: until
    /// the model ends or its context is full (16 for `/completions`, as OpenAI).
    #[serde(default, deserialize_with = "crate::openai::whole::u32")]
    #[schema(minimum = 1, maximum = 4294967295u32)]
    pub max_tokens: Option<u32>,
    #[serde(default, deserialize_with = "crate::openai::whole::u32")]
    #[schema(minimum = 1, maximum = 4294967295u32)]
    pub max_completion_tokens: Option<u32>,
    /// 0 to 2; 0 is greedy. Default 1.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 2)]
    pub temperature: Option<f64>,
    /// 0 (exclusive) to 1. Default 1.
    #[serde(default)]
    #[schema(exclusive_minimum = 0, maximum = 1)]
    pub top_p: Option<f64>,
    /// zoo's (and llama.cpp's) extension: keep the k most likely tokens.
    #[serde(default, deserialize_with = "crate::openai::whole::u32")]
    #[schema(minimum = 0, maximum = 4294967295u32)]
    pub top_k: Option<u32>,
    /// zoo's extension: CTRL's repetition penalty (1: none).
    #[serde(default)]
    #[schema(exclusive_minimum = 0, maximum = 10)]
    pub repetition_penalty: Option<f64>,
    /// Makes sampling repeatable.
    #[serde(default, deserialize_with = "crate::openai::whole::i64")]
    #[schema(minimum = -9223372036854775808i64, maximum = 9223372036854775807i64)]
    pub seed: Option<i64>,
    /// Up to 4 strings that end the text (not included in it).
    #[serde(default)]
    pub stop: Option<Stop>,
    /// Answer as server-sent events, one chunk per piece of text.
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Only 1 is supported.
    #[serde(default, deserialize_with = "crate::openai::whole::u32")]
    #[schema(minimum = 1, maximum = 1)]
    pub n: Option<u32>,
    /// Accepted, and refused when set, since zoo does not apply them.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 0)]
    pub presence_penalty: Option<f64>,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 0)]
    pub frequency_penalty: Option<f64>,
    /// Chat only: answer each token's log-probability (`choices[].logprobs`),
    /// of the model's own distribution (before penalty, temperature and top-k/p).
    #[serde(default)]
    pub logprobs: Option<bool>,
    /// Chat only, with `logprobs`: also the this many most likely tokens at each position.
    #[serde(default, deserialize_with = "crate::openai::whole::u32")]
    #[schema(minimum = 0, maximum = 20)]
    pub top_logprobs: Option<u32>,
    /// Accepted and ignored, as OpenAI does for its own bookkeeping.
    #[serde(default)]
    pub user: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StreamOptions {
    /// Send a last chunk with the token usage (always sent by zoo).
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChatCompletionRequest {
    /// A zoo model name; `name:alias` or `name@version` for another than the default.
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,127}(:[a-z][a-z0-9._-]{0,63}|@[A-Za-z0-9][A-Za-z0-9._-]{0,63})?$")]
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(flatten)]
    pub params: SamplingParams,
}

/// `POST /v1/completions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CompletionRequest {
    /// A zoo model name; `name:alias` or `name@version` for another than the default.
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,127}(:[a-z][a-z0-9._-]{0,63}|@[A-Za-z0-9][A-Za-z0-9._-]{0,63})?$")]
    pub model: String,
    /// The text to continue (one prompt).
    pub prompt: Prompt,
    /// Answer with the prompt followed by its completion.
    #[serde(default)]
    pub echo: Option<bool>,
    #[serde(flatten)]
    pub params: SamplingParams,
}

/// A prompt: a text, or a list of exactly one text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Prompt {
    One(String),
    Many(Vec<String>),
}

/// Tokens a request took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
}

/// An assistant's message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AssistantMessage {
    pub role: String,
    pub content: String,
}

/// The log-probabilities of a choice's tokens, as OpenAI gives them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChoiceLogprobs {
    /// One per answer token, in order.
    pub content: Option<Vec<TokenLogprob>>,
}

/// One answer token: its text, its bytes (a token may end inside a character),
/// its log-probability, and the most likely tokens at its position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Option<Vec<u8>>,
    pub top_logprobs: Vec<TopLogprob>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChatChoice {
    pub index: u32,
    pub message: AssistantMessage,
    /// `stop` (the model ended, or a stop string) or `length` (`max_tokens`, or
    /// the context is full).
    pub finish_reason: String,
    /// With `logprobs: true`: the log-probabilities of this choice's tokens.
    #[serde(default)]
    pub logprobs: Option<ChoiceLogprobs>,
}

/// The answer to a chat completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChatCompletion {
    pub id: String,
    /// `chat.completion`
    pub object: String,
    /// Unix seconds.
    pub created: i64,
    /// The model as it was asked for.
    pub model: String,
    pub choices: Vec<ChatChoice>,
    pub usage: Usage,
    /// `zoo-<version>`: which version answered.
    pub system_fingerprint: String,
}

/// A piece of the assistant's message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Delta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChunkChoice {
    pub index: u32,
    pub delta: Delta,
    pub finish_reason: Option<String>,
    /// With `logprobs: true`: the log-probabilities of this choice's tokens.
    #[serde(default)]
    pub logprobs: Option<ChoiceLogprobs>,
}

/// One server-sent event of a streamed chat completion (`data: {...}`; the
/// stream ends with `data: [DONE]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChatCompletionChunk {
    pub id: String,
    /// `chat.completion.chunk`
    pub object: String,
    pub created: i64,
    pub model: String,
    pub choices: Vec<ChunkChoice>,
    /// Only in the last chunk (its `choices` empty).
    pub usage: Option<Usage>,
    pub system_fingerprint: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CompletionChoice {
    pub index: u32,
    pub text: String,
    pub finish_reason: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub logprobs: Option<serde_json::Value>,
}

/// The answer to a completion, and (with `object` `text_completion` and one
/// piece of text each) every event of a streamed one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Completion {
    pub id: String,
    /// `text_completion`
    pub object: String,
    pub created: i64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    pub usage: Option<Usage>,
    pub system_fingerprint: String,
}

/// A model in OpenAI's list (`GET /openai/v1/models`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OpenAiModel {
    /// The zoo model name.
    pub id: String,
    /// `model`
    pub object: String,
    /// When its first version was deployed (Unix seconds).
    pub created: i64,
    /// `zoo`
    pub owned_by: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OpenAiModelList {
    /// `list`
    pub object: String,
    pub data: Vec<OpenAiModel>,
}

/// An error as OpenAI answers one: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OpenAiError {
    pub error: OpenAiErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OpenAiErrorDetail {
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `permission_error`,
    /// `not_found_error`, `rate_limit_error`, `server_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The request field that was wrong, when one was.
    pub param: Option<String>,
    /// zoo's stable error code (as in zoo's own error bodies).
    pub code: Option<String>,
}

/// The `parameters` of a predict request to a text-generation version, as the
/// Hugging Face text-generation pipeline (and its Inference API) names them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerationParameters {
    /// Most tokens to generate (default 256, at most the model's context).
    #[serde(default, deserialize_with = "crate::openai::whole::u32")]
    #[schema(minimum = 1, maximum = 4294967295u32)]
    pub max_new_tokens: Option<u32>,
    /// Sample (with `temperature`, `top_k`, `top_p`) instead of taking the most
    /// likely token. Default: false (greedy), unless a temperature is given.
    #[serde(default)]
    pub do_sample: Option<bool>,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 2)]
    pub temperature: Option<f64>,
    #[serde(default, deserialize_with = "crate::openai::whole::u32")]
    #[schema(minimum = 0, maximum = 4294967295u32)]
    pub top_k: Option<u32>,
    #[serde(default)]
    #[schema(exclusive_minimum = 0, maximum = 1)]
    pub top_p: Option<f64>,
    #[serde(default)]
    #[schema(exclusive_minimum = 0, maximum = 10)]
    pub repetition_penalty: Option<f64>,
    #[serde(default, deserialize_with = "crate::openai::whole::i64")]
    #[schema(minimum = -9223372036854775808i64, maximum = 9223372036854775807i64)]
    pub seed: Option<i64>,
    /// Strings that end the text (not included in it).
    #[serde(default)]
    pub stop: Option<Vec<String>>,
    /// Answer with the prompt followed by the generated text (default true, as
    /// the pipeline does).
    #[serde(default)]
    pub return_full_text: Option<bool>,
}

/// One answer of a text-generation version's predict route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GeneratedText {
    pub generated_text: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_numbers_are_read_as_json_schema_counts_them() {
        let p = |v: serde_json::Value| serde_json::from_value::<SamplingParams>(v);
        let read = p(serde_json::json!({"max_tokens": 16.0, "top_k": 3, "seed": -7.0})).unwrap();
        assert_eq!((read.max_tokens, read.top_k, read.seed), (Some(16), Some(3), Some(-7)));
        assert_eq!(p(serde_json::json!({"max_tokens": null})).unwrap().max_tokens, None);
        for bad in [
            serde_json::json!({"max_tokens": 16.5}),
            serde_json::json!({"top_k": -1}),
            serde_json::json!({"max_tokens": 4294967296u64}),
            serde_json::json!({"seed": 1e30}),
            serde_json::json!({"max_tokens": "16"}),
        ] {
            let err = p(bad.clone()).unwrap_err().to_string();
            assert!(err.contains("whole number") || err.contains("invalid type"), "{bad}: {err}");
        }
    }
}
