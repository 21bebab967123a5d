//! Text generation's pre- and post-processing: the tokenizer a GGUF file carries
//! (rebuilt as a Hugging Face `tokenizers` BPE, with llama.cpp's pre-tokenizer
//! for the file's `tokenizer.ggml.pre`), its chat template (Jinja, rendered by
//! minijinja as transformers renders it, within an instruction budget), the
//! request's generation settings, and the text that grows token by token until
//! the model ends or a stop string appears.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use candle_core::quantized::gguf_file::Value as Meta;
use serde_json::json;
use tokenizers::Tokenizer;
use zoo_api::kserve::V2GenerateParameters;
use zoo_api::openai::{ChatMessage, Content, GenerationParameters, SamplingParams, TokenLogprob, TopLogprob};

use crate::error::{Error, Result};
use crate::runtime::generate::{
    Engine, EngineSettings, Event, Finish, Job, Model, Observer, Refused, Sampling, TokenLogprobs,
};

/// Most stop strings a request may give, and the longest.
pub const MAX_STOPS: usize = 4;
pub const MAX_STOP_BYTES: usize = 256;
/// Most messages in a chat.
pub const MAX_MESSAGES: usize = 1024;
/// Most tokens `top_logprobs` may ask for at each position (OpenAI's bound).
pub const MAX_TOP_LOGPROBS: usize = 20;
/// The instructions a chat template may run to render one prompt (a template
/// that loops forever runs out of them).
pub const TEMPLATE_FUEL: u64 = 2_000_000;
/// Tokens the predict route generates when `max_new_tokens` is not given.
pub const DEFAULT_NEW_TOKENS: usize = 256;
/// The texts llama.cpp takes for end-of-generation tokens besides `eos_token_id`.
const END_TEXTS: &[&str] =
    &["<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|end|>", "</s>", "<|end_of_text|>", "<end_of_turn>", "<|eom_id|>"];

/// The tokenizer of a GGUF model, and its special tokens.
pub struct Vocab {
    tokenizer: Tokenizer,
    bos: Option<(u32, String)>,
    add_bos: bool,
    /// A Hugging Face tokenizer.json: its post-processor adds the special tokens
    /// a plain prompt takes (a chat's template writes its own).
    post_processor: bool,
    eos_text: String,
    /// Tokens that end a generation.
    pub end_tokens: Vec<u32>,
    /// Each token's bytes (a byte-level BPE token may be part of a character).
    bytes: Vec<Vec<u8>>,
}

/// The bytes a byte-level BPE token stands for: GPT-2's `bytes_to_unicode`
/// turned around (printable bytes are themselves; the others are the characters
/// from U+0100 on, in byte order).
fn byte_level_bytes(token: &str) -> Vec<u8> {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut shifted = [0u8; 68];
    let mut n = 0;
    for b in 0..=255u8 {
        if !printable(u32::from(b)) {
            shifted[n] = b;
            n += 1;
        }
    }
    let mut out = Vec::with_capacity(token.len());
    for c in token.chars() {
        let code = c as u32;
        match code {
            _ if printable(code) => out.push(code as u8),
            256..=323 => out.push(shifted[(code - 256) as usize]),
            _ => out.extend_from_slice(c.to_string().as_bytes()),
        }
    }
    out
}

fn meta_u32(md: &HashMap<String, Meta>, key: &str) -> Option<u32> {
    md.get(key).and_then(|v| v.to_u32().ok().or_else(|| v.to_u64().ok().and_then(|n| u32::try_from(n).ok())))
}

fn meta_strings(md: &HashMap<String, Meta>, key: &str) -> std::result::Result<Vec<String>, String> {
    let v = md.get(key).ok_or_else(|| format!("{key} is missing"))?;
    v.to_vec()
        .map_err(|e| format!("{key}: {e}"))?
        .iter()
        .map(|s| s.to_string().cloned().map_err(|e| format!("{key}: {e}")))
        .collect()
}

/// The pre-tokenizer of llama.cpp's `tokenizer.ggml.pre`, in `tokenizers`' JSON.
/// Every name `zoo_formats::gguf::PRE_TOKENIZERS` lists has one.
pub fn pre_tokenizer(pre: &str) -> Option<serde_json::Value> {
    let byte_level =
        |regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": regex});
    let split = |pattern: &str| json!({"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false});
    const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    Some(match pre {
        // SmolLM: every digit alone, then GPT-2's split.
        "smollm" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
        "gpt2" => byte_level(true),
        "llama-bpe" | "llama3" => {
            json!({"type": "Sequence", "pretokenizers": [split(LLAMA3), byte_level(false)]})
        }
        "qwen2" => json!({"type": "Sequence", "pretokenizers": [split(QWEN2), byte_level(false)]}),
        _ => return None,
    })
}

impl Vocab {
    /// The byte-level BPE tokenizer of a GGUF file's metadata.
    pub fn from_gguf(md: &HashMap<String, Meta>) -> std::result::Result<Vocab, String> {
        let model = md.get("tokenizer.ggml.model").and_then(|v| v.to_string().ok()).map(String::as_str);
        if model != Some("gpt2") {
            return Err(format!("zoo rebuilds byte-level BPE (gpt2) tokenizers only, not {model:?}"));
        }
        let pre = md.get("tokenizer.ggml.pre").and_then(|v| v.to_string().ok()).map_or("gpt2", String::as_str);
        let pre_tokenizer = pre_tokenizer(pre).ok_or_else(|| format!("the pre-tokenizer '{pre}' is not known"))?;
        let tokens = meta_strings(md, "tokenizer.ggml.tokens")?;
        let merges = meta_strings(md, "tokenizer.ggml.merges")?;
        let types: Vec<i64> = md
            .get("tokenizer.ggml.token_type")
            .and_then(|v| v.to_vec().ok())
            .map(|v| v.iter().map(|t| t.to_i32().map_or(1, i64::from)).collect())
            .unwrap_or_default();
        let mut vocab = serde_json::Map::new();
        let mut added = Vec::new();
        let mut bytes = Vec::with_capacity(tokens.len());
        for (id, t) in tokens.iter().enumerate() {
            if !vocab.contains_key(t) {
                vocab.insert(t.clone(), json!(id));
            }
            // Control (3) and user-defined (4) tokens are matched whole in a text.
            let kind = types.get(id).copied().unwrap_or(1);
            bytes.push(if kind == 3 || kind == 4 { t.as_bytes().to_vec() } else { byte_level_bytes(t) });
            if kind == 3 || kind == 4 {
                added.push(json!({"id": id, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                    "normalized": false, "special": kind == 3}));
            }
        }
        let spec = json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
            "normalizer": null, "pre_tokenizer": pre_tokenizer, "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": vocab, "merges": merges},
        });
        let tokenizer: Tokenizer =
            spec.to_string().parse().map_err(|e| format!("the tokenizer could not be rebuilt: {e}"))?;
        let text_of = |id: u32| tokens.get(id as usize).cloned();
        let bos = meta_u32(md, "tokenizer.ggml.bos_token_id").and_then(|id| Some((id, text_of(id)?)));
        let eos = meta_u32(md, "tokenizer.ggml.eos_token_id");
        let mut end_tokens: Vec<u32> = eos.into_iter().collect();
        for key in ["tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
            end_tokens.extend(meta_u32(md, key));
        }
        for (id, t) in tokens.iter().enumerate() {
            if types.get(id) == Some(&3) && END_TEXTS.contains(&t.as_str()) {
                end_tokens.push(id as u32);
            }
        }
        end_tokens.sort_unstable();
        end_tokens.dedup();
        let add_bos = md.get("tokenizer.ggml.add_bos_token").and_then(|v| v.to_bool().ok()).unwrap_or(false);
        Ok(Vocab {
            tokenizer,
            bos,
            add_bos,
            post_processor: false,
            eos_text: eos.and_then(text_of).unwrap_or_default(),
            end_tokens,
            bytes,
        })
    }

    /// A Hugging Face decoder directory's tokenizer (`tokenizer.json`), its
    /// special tokens (`tokenizer_config.json`) and the tokens that end a
    /// generation (`generation_config.json`'s `eos_token_id`, else config.json's),
    /// as transformers' `generate()` takes them.
    #[allow(clippy::disallowed_methods, reason = "models load on a blocking thread (service::loader)")]
    pub fn from_hf(dir: &std::path::Path, config_eos: &[u32]) -> std::result::Result<Vocab, String> {
        let tokenizer = Tokenizer::from_file(dir.join("tokenizer.json")).map_err(|e| format!("tokenizer.json: {e}"))?;
        let side = |name: &str| -> serde_json::Value {
            std::fs::read(dir.join(name)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
        };
        let tokenizer_config = side("tokenizer_config.json");
        let special = |key: &str| -> Option<String> {
            match tokenizer_config.get(key)? {
                serde_json::Value::String(s) => Some(s.clone()),
                v => v.get("content").and_then(serde_json::Value::as_str).map(str::to_string),
            }
        };
        let generation = side("generation_config.json");
        let mut end_tokens = zoo_formats::decoder::token_ids(generation.get("eos_token_id"));
        if end_tokens.is_empty() {
            end_tokens = config_eos.to_vec();
        }
        let eos_text = special("eos_token");
        if end_tokens.is_empty()
            && let Some(id) = eos_text.as_deref().and_then(|t| tokenizer.token_to_id(t))
        {
            end_tokens.push(id);
        }
        let bos = special("bos_token").and_then(|t| Some((tokenizer.token_to_id(&t)?, t)));
        let byte_level = serde_json::to_value(tokenizer.get_decoder())
            .is_ok_and(|d| d.to_string().contains(r#""type":"ByteLevel""#));
        let added = tokenizer.get_added_tokens_decoder();
        let size = tokenizer.get_vocab_size(true) as u32;
        let bytes = (0..size)
            .map(|id| {
                let Some(t) = tokenizer.id_to_token(id) else { return Vec::new() };
                if added.contains_key(&id) {
                    t.into_bytes()
                } else if byte_level {
                    byte_level_bytes(&t)
                } else if let Some(b) =
                    t.strip_prefix("<0x").and_then(|h| h.strip_suffix('>')).and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    // SentencePiece's byte fallback.
                    vec![b]
                } else {
                    t.replace('\u{2581}', " ").into_bytes()
                }
            })
            .collect();
        Ok(Vocab {
            tokenizer,
            bos,
            add_bos: false,
            post_processor: true,
            eos_text: eos_text.unwrap_or_default(),
            end_tokens,
            bytes,
        })
    }

    /// A prompt's tokens (special tokens in it matched whole). A plain prompt
    /// gets the model's BOS in front as its tokenizer adds it (a GGUF file's
    /// `add_bos_token`, a tokenizer.json's post-processor); a chat's prompt,
    /// which its template wrote, is read as it is (as transformers'
    /// `apply_chat_template`), except that a GGUF model still gets its BOS when
    /// the template left it out (as llama.cpp).
    pub fn encode(&self, text: &str, chat: bool) -> Result<Vec<u32>> {
        let specials = self.post_processor && !chat;
        let enc = self.tokenizer.encode_fast(text, specials).map_err(|e| Error::InvalidInput(e.to_string()))?;
        let mut ids = enc.get_ids().to_vec();
        if let Some((bos, _)) = &self.bos
            && self.add_bos
            && ids.first() != Some(bos)
        {
            ids.insert(0, *bos);
        }
        Ok(ids)
    }

    /// Tokens to text, special tokens left out.
    /// A token as OpenAI's log-probabilities give it: its text (lossy where it
    /// ends inside a character) and its bytes.
    pub fn token(&self, id: u32) -> (String, Vec<u8>) {
        let b = self.bytes.get(id as usize).cloned().unwrap_or_default();
        (String::from_utf8_lossy(&b).into_owned(), b)
    }

    pub fn decode(&self, ids: &[u32]) -> String {
        self.tokenizer.decode(ids, true).unwrap_or_default()
    }
}

/// A model's chat template.
pub struct ChatTemplate {
    env: minijinja::Environment<'static>,
}

impl ChatTemplate {
    /// Compile a template (transformers' settings: blocks trimmed, Python's string
    /// methods, `raise_exception`, `strftime_now`).
    pub fn new(source: &str) -> std::result::Result<ChatTemplate, String> {
        let mut env = minijinja::Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
        });
        env.add_function("strftime_now", |fmt: String| {
            let mut out = String::new();
            use std::fmt::Write;
            match write!(out, "{}", chrono::Utc::now().format(&fmt)) {
                Ok(()) => out,
                Err(_) => String::new(),
            }
        });
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| format!("the chat template does not compile: {e}"))?;
        Ok(ChatTemplate { env })
    }

    /// The prompt of a chat, ready for the assistant's answer.
    pub fn render(&self, messages: &[(String, String)], vocab: &Vocab) -> Result<String> {
        let t = self.env.get_template("chat").map_err(Error::internal)?;
        let messages: Vec<_> =
            messages.iter().map(|(role, content)| json!({"role": role, "content": content})).collect();
        t.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => true,
            bos_token => vocab.bos.as_ref().map(|(_, t)| t.clone()).unwrap_or_default(),
            eos_token => vocab.eos_text.clone(),
        })
        .map_err(|e| Error::InvalidInput(format!("the model's chat template refused this chat: {e}")))
    }
}

/// How one request is to be generated.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `None`: until the model ends or its context is full.
    pub max_tokens: Option<usize>,
    pub sampling: Sampling,
    pub stop: Vec<String>,
    /// Answer each token's log-probability and this many most likely tokens'.
    pub logprobs: Option<usize>,
}

fn bad(param: &str, what: &str) -> Error {
    Error::InvalidInput(format!("'{param}' {what}"))
}

fn check_stops(stop: Vec<String>) -> Result<Vec<String>> {
    if stop.len() > MAX_STOPS {
        return Err(bad("stop", &format!("holds {} strings; at most {MAX_STOPS} are allowed", stop.len())));
    }
    if stop.iter().any(|s| s.is_empty() || s.len() > MAX_STOP_BYTES) {
        return Err(bad("stop", &format!("strings must be 1 to {MAX_STOP_BYTES} bytes long")));
    }
    Ok(stop)
}

fn sampling(
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<u32>,
    penalty: Option<f64>,
    seed: Option<i64>,
) -> Result<Sampling> {
    let temperature = temperature.unwrap_or(0.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(bad("temperature", "must be between 0 and 2"));
    }
    let top_p = top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(bad("top_p", "must be greater than 0 and at most 1"));
    }
    let repetition_penalty = penalty.unwrap_or(1.0);
    if !(repetition_penalty > 0.0 && repetition_penalty <= 10.0) {
        return Err(bad("repetition_penalty", "must be greater than 0 and at most 10"));
    }
    Ok(Sampling {
        temperature,
        top_p,
        top_k: top_k.unwrap_or(0) as usize,
        repetition_penalty: repetition_penalty as f32,
        seed: seed.map_or_else(rand::random, |s| s as u64),
    })
}

impl Settings {
    /// From an OpenAI request (`default_max`: its route's default). OpenAI's
    /// default temperature is 1.
    pub fn openai(p: &SamplingParams, default_max: Option<usize>) -> Result<Settings> {
        if p.n.is_some_and(|n| n != 1) {
            return Err(bad("n", "must be 1: zoo generates one choice per request"));
        }
        for (name, v) in [("presence_penalty", p.presence_penalty), ("frequency_penalty", p.frequency_penalty)] {
            if v.is_some_and(|v| v != 0.0) {
                return Err(bad(name, "is not supported (use repetition_penalty)"));
            }
        }
        if p.top_logprobs.is_some_and(|k| k > MAX_TOP_LOGPROBS as u32) {
            return Err(bad("top_logprobs", &format!("must be 0 to {MAX_TOP_LOGPROBS}")));
        }
        let logprobs = match (p.logprobs, p.top_logprobs) {
            (Some(true), k) => Some(k.unwrap_or(0) as usize),
            (_, Some(k)) if k > 0 => return Err(bad("top_logprobs", "needs logprobs: true")),
            _ => None,
        };
        let max = p.max_completion_tokens.or(p.max_tokens);
        if max == Some(0) {
            return Err(bad("max_tokens", "must be at least 1"));
        }
        Ok(Settings {
            max_tokens: max.map(|m| m as usize).or(default_max),
            sampling: sampling(p.temperature.or(Some(1.0)), p.top_p, p.top_k, p.repetition_penalty, p.seed)?,
            stop: check_stops(p.stop.clone().map(|s| s.into_vec()).unwrap_or_default())?,
            logprobs,
        })
    }

    /// From the predict route's `parameters` (greedy unless `do_sample` or a
    /// temperature says otherwise, as transformers' pipeline).
    pub fn pipeline(p: &GenerationParameters) -> Result<Settings> {
        if p.max_new_tokens == Some(0) {
            return Err(bad("parameters.max_new_tokens", "must be at least 1"));
        }
        let sample = p.do_sample.unwrap_or(p.temperature.is_some_and(|t| t > 0.0));
        let temperature = if sample { Some(p.temperature.unwrap_or(1.0)) } else { Some(0.0) };
        if sample && temperature == Some(0.0) {
            return Err(bad("parameters.temperature", "must be above 0 when do_sample is true"));
        }
        Ok(Settings {
            max_tokens: Some(p.max_new_tokens.map_or(DEFAULT_NEW_TOKENS, |m| m as usize)),
            sampling: sampling(temperature, p.top_p, p.top_k, p.repetition_penalty, p.seed)?,
            stop: check_stops(p.stop.clone().unwrap_or_default())?,
            logprobs: None,
        })
    }

    /// From a KServe v2 `generate` request's `parameters` (greedy unless a
    /// temperature above 0 is given, as Triton's backends).
    pub fn v2(p: &V2GenerateParameters) -> Result<Settings> {
        if p.max_tokens == Some(0) {
            return Err(bad("parameters.max_tokens", "must be at least 1"));
        }
        Ok(Settings {
            max_tokens: Some(p.max_tokens.map_or(DEFAULT_NEW_TOKENS, |m| m as usize)),
            sampling: sampling(Some(p.temperature.unwrap_or(0.0)), p.top_p, p.top_k, p.repetition_penalty, p.seed)?,
            stop: check_stops(p.stop.clone().map(|s| s.into_vec()).unwrap_or_default())?,
            logprobs: None,
        })
    }
}

/// The messages of a chat as (role, text); text parts only.
pub fn chat_messages(messages: &[ChatMessage]) -> Result<Vec<(String, String)>> {
    if messages.is_empty() {
        return Err(bad("messages", "must hold at least one message"));
    }
    if messages.len() > MAX_MESSAGES {
        return Err(bad("messages", &format!("holds {} messages; at most {MAX_MESSAGES} are allowed", messages.len())));
    }
    messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let text = match &m.content {
                Some(Content::Text(t)) => t.clone(),
                Some(Content::Parts(parts)) => {
                    let mut text = String::new();
                    for p in parts {
                        match (p.kind.as_str(), &p.text) {
                            ("text", Some(t)) => text.push_str(t),
                            (kind, _) => {
                                return Err(bad(
                                    &format!("messages[{i}].content"),
                                    &format!("holds a '{kind}' part; zoo's language models read text parts only"),
                                ));
                            }
                        }
                    }
                    text
                }
                None => return Err(bad(&format!("messages[{i}].content"), "is missing")),
            };
            Ok((m.role.clone(), text))
        })
        .collect()
}

/// Text as the tokens come: decoded in a window (a token may end inside a
/// character), held back while it may be the start of a stop string, cut at one.
pub struct TextStream {
    ids: Vec<u32>,
    prefix: usize,
    read: usize,
    pending: String,
    stops: Vec<String>,
}

impl TextStream {
    pub fn new(stops: Vec<String>) -> TextStream {
        TextStream { ids: Vec::new(), prefix: 0, read: 0, pending: String::new(), stops }
    }

    /// The text the token adds that can be sent now, and whether a stop string
    /// ended the text.
    pub fn push(&mut self, token: u32, vocab: &Vocab) -> (String, bool) {
        self.ids.push(token);
        let before = vocab.decode(&self.ids[self.prefix..self.read]);
        let now = vocab.decode(&self.ids[self.prefix..]);
        if now.len() > before.len() && !now.ends_with('\u{FFFD}') {
            if let Some(new) = now.get(before.len()..) {
                self.pending.push_str(new);
            }
            self.prefix = self.read;
            self.read = self.ids.len();
        }
        if let Some(at) = self.stops.iter().filter_map(|s| self.pending.find(s.as_str())).min() {
            self.pending.truncate(at);
            return (std::mem::take(&mut self.pending), true);
        }
        // Keep back the longest end of the text that begins a stop string.
        let mut keep = 0;
        for s in &self.stops {
            for n in (1..s.len().min(self.pending.len() + 1)).rev() {
                if self.pending.is_char_boundary(self.pending.len() - n)
                    && s.is_char_boundary(n)
                    && self.pending.ends_with(&s[..n])
                {
                    keep = keep.max(n);
                    break;
                }
            }
        }
        let send = self.pending.len() - keep;
        let out = self.pending[..send].to_string();
        self.pending.drain(..send);
        (out, false)
    }

    /// What is left when the model ends: the text held back, and that of tokens
    /// that ended inside a character (as a replacement character, as
    /// transformers decodes them), so that no token's text is dropped.
    pub fn finish(&mut self, vocab: &Vocab) -> String {
        if self.read < self.ids.len() {
            let before = vocab.decode(&self.ids[self.prefix..self.read]);
            let now = vocab.decode(&self.ids[self.prefix..]);
            if let Some(new) = now.get(before.len()..) {
                self.pending.push_str(new);
            }
            self.read = self.ids.len();
        }
        std::mem::take(&mut self.pending)
    }

    pub fn tokens(&self) -> usize {
        self.ids.len()
    }
}

/// A loaded text-generation version: the model, its tokenizer and chat
/// template, and (once the loader starts it) its engine.
pub struct Generator {
    model: Model,
    pub vocab: Vocab,
    /// `Err`: why chats cannot be rendered (no template, or one that does not compile).
    pub template: std::result::Result<ChatTemplate, String>,
    engine: OnceLock<Engine>,
}

/// A piece of a generation.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    /// Text, with the log-probabilities (when asked for) of the tokens that
    /// came since the last piece.
    Text(String, Vec<TokenLogprob>),
    End {
        finish: Finish,
        prompt_tokens: usize,
        completion_tokens: usize,
    },
}

/// The pieces of one generation, in order. Dropping it cancels the generation.
pub struct Stream {
    events: tokio::sync::mpsc::UnboundedReceiver<Event>,
    text: TextStream,
    generator: Arc<Generator>,
    prompt_tokens: usize,
    ended: bool,
    /// The end, after the last text was given.
    deferred: Option<Piece>,
    /// Log-probabilities of tokens whose text is not given yet.
    logprobs: Vec<TokenLogprob>,
}

/// A whole generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    pub text: String,
    pub finish: Finish,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// One per token, when asked for.
    pub logprobs: Vec<TokenLogprob>,
}

impl Stream {
    /// The next piece, `None` after the end.
    pub async fn next(&mut self) -> Option<Result<Piece>> {
        if let Some(p) = self.deferred.take() {
            return Some(Ok(p));
        }
        if self.ended {
            return None;
        }
        loop {
            match self.events.recv().await {
                Some(Event::Token(t, lp)) => {
                    if let Some(lp) = lp {
                        self.logprobs.push(self.token_logprob(t, lp));
                    }
                    let (text, stopped) = self.text.push(t, &self.generator.vocab);
                    if stopped {
                        return Some(Ok(self.end(text, Finish::Stop)));
                    }
                    if !text.is_empty() {
                        return Some(Ok(Piece::Text(text, std::mem::take(&mut self.logprobs))));
                    }
                }
                Some(Event::Done(finish)) => {
                    let rest = self.text.finish(&self.generator.vocab);
                    return Some(Ok(self.end(rest, finish)));
                }
                Some(Event::Failed(why)) => {
                    self.ended = true;
                    return Some(Err(Error::Inference(why)));
                }
                None => {
                    self.ended = true;
                    return Some(Err(Error::Inference("the generation engine stopped".into())));
                }
            }
        }
    }

    /// The last text now and the end next (or the end now, when no text is
    /// left); the engine is told to stop.
    fn end(&mut self, text: String, finish: Finish) -> Piece {
        self.ended = true;
        self.events.close();
        let end = Piece::End { finish, prompt_tokens: self.prompt_tokens, completion_tokens: self.text.tokens() };
        if text.is_empty() && self.logprobs.is_empty() {
            end
        } else {
            self.deferred = Some(end);
            Piece::Text(text, std::mem::take(&mut self.logprobs))
        }
    }

    fn token_logprob(&self, id: u32, lp: TokenLogprobs) -> TokenLogprob {
        let vocab = &self.generator.vocab;
        let (token, bytes) = vocab.token(id);
        let top_logprobs = lp
            .top
            .into_iter()
            .map(|(t, logprob)| {
                let (token, bytes) = vocab.token(t);
                TopLogprob { token, logprob, bytes: Some(bytes) }
            })
            .collect();
        TokenLogprob { token, logprob: lp.logprob, bytes: Some(bytes), top_logprobs }
    }

    /// Every piece, gathered.
    pub async fn collect(mut self) -> Result<Generated> {
        let (mut text, mut logprobs) = (String::new(), Vec::new());
        while let Some(p) = self.next().await {
            match p? {
                Piece::Text(t, lp) => {
                    text.push_str(&t);
                    logprobs.extend(lp);
                }
                Piece::End { finish, prompt_tokens, completion_tokens } => {
                    return Ok(Generated { text, finish, prompt_tokens, completion_tokens, logprobs });
                }
            }
        }
        Err(Error::Inference("the generation ended without its end".into()))
    }
}

impl Generator {
    /// Load a Hugging Face decoder directory: config.json, model.safetensors,
    /// tokenizer.json, and the chat template and EOS of its side files.
    #[allow(clippy::disallowed_methods, reason = "models load on a blocking thread (service::loader)")]
    pub fn load_hf(dir: &std::path::Path, template: Option<&str>) -> Result<Generator> {
        let config: serde_json::Value = std::fs::read(dir.join("config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| Error::NotServable("config.json could not be read".into()))?;
        let cfg = zoo_formats::decoder::DecoderConfig::parse(&config)
            .map_err(|e| Error::NotServable(e.to_string()))?
            .map_err(Error::NotServable)?;
        let model =
            Model::load_hf(&dir.join("model.safetensors"), &cfg).map_err(|e| Error::NotServable(e.to_string()))?;
        let vocab = Vocab::from_hf(dir, &cfg.eos_token_ids).map_err(Error::NotServable)?;
        let template = match template {
            Some(t) => ChatTemplate::new(t),
            None => {
                Err("this model has no chat template (tokenizer_config.json's chat_template); use /v1/completions"
                    .into())
            }
        };
        Ok(Generator { model, vocab, template, engine: OnceLock::new() })
    }

    /// Load a GGUF model with its tokenizer and chat template.
    pub fn load(path: &std::path::Path) -> Result<Generator> {
        let (model, metadata) = Model::load(path).map_err(|e| Error::NotServable(e.to_string()))?;
        let vocab = Vocab::from_gguf(&metadata).map_err(Error::NotServable)?;
        let template = match metadata.get("tokenizer.chat_template").and_then(|v| v.to_string().ok()) {
            Some(t) => ChatTemplate::new(t),
            None => Err("this model has no chat template (tokenizer.chat_template); use /v1/completions".into()),
        };
        Ok(Generator { model, vocab, template, engine: OnceLock::new() })
    }

    /// Start the engine (the loader does, with the version's settings).
    pub fn start(&self, settings: EngineSettings, observe: Observer) -> Result<()> {
        let engine =
            Engine::spawn(self.model.clone(), settings, observe).map_err(|e| Error::Inference(e.to_string()))?;
        let _ = self.engine.set(engine);
        Ok(())
    }

    /// Tokens one sequence may hold.
    pub fn context(&self) -> usize {
        self.model.context
    }

    /// Sequences decoding and waiting.
    pub fn load_now(&self) -> (usize, usize) {
        self.engine.get().map_or((0, 0), |e| (e.running(), e.waiting()))
    }
}

/// Start generating from a prompt's tokens.
pub fn generate(g: &Arc<Generator>, prompt: Vec<u32>, settings: &Settings, model: &str) -> Result<Stream> {
    let context = g.context();
    if prompt.len() >= context {
        return Err(Error::InvalidInput(format!(
            "the prompt is {} tokens; this model's context holds {context}, with room for at least one more",
            prompt.len()
        )));
    }
    let room = context - prompt.len();
    let max_tokens = settings.max_tokens.map_or(room, |m| m.min(room));
    let engine = g.engine.get().ok_or_else(|| Error::internal("the generation engine was not started"))?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let prompt_tokens = prompt.len();
    engine
        .submit(Job {
            prompt,
            max_tokens,
            sampling: settings.sampling.clone(),
            end_tokens: g.vocab.end_tokens.clone(),
            logprobs: settings.logprobs,
            events: tx,
        })
        .map_err(|r| match r {
            Refused::Busy => Error::Overloaded { model: model.to_string(), retry_after_secs: 1 },
            Refused::Stopped => Error::Unavailable(format!("model '{model}' is being unloaded; retry")),
        })?;
    Ok(Stream {
        events: rx,
        text: TextStream::new(settings.stop.clone()),
        generator: g.clone(),
        prompt_tokens,
        ended: false,
        deferred: None,
        logprobs: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> (tempfile::TempDir, Arc<Generator>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("model.gguf");
        #[allow(clippy::disallowed_methods, reason = "a test's fixture")]
        std::fs::write(&path, zoo_formats::gguf::write::tiny_llama()).expect("write");
        let g = Arc::new(Generator::load(&path).expect("the tiny llama loads"));
        let settings = EngineSettings { label: "tiny".into(), max_sequences: 4, queue_capacity: 8 };
        g.start(settings, Arc::new(|_| {})).expect("engine");
        (dir, g)
    }

    fn greedy(max: usize) -> Settings {
        Settings { max_tokens: Some(max), sampling: Sampling::default(), stop: vec![], logprobs: None }
    }

    #[test]
    fn the_gguf_tokenizer_matches_specials_whole_and_merges_bytes() {
        let (_dir, g) = tiny();
        let ids = g.vocab.encode("<|im_start|>user\nsee the cat", false).unwrap();
        assert_eq!(ids[0], 1, "<|im_start|> is one token: {ids:?}");
        let the = g.vocab.tokenizer.token_to_id("Ġthe").expect("Ġthe is in the vocabulary");
        assert!(ids.contains(&the), "' the' merges into one token: {ids:?}");
        assert_eq!(g.vocab.decode(&ids), "user\nsee the cat", "specials are left out of the text");
        assert_eq!(g.vocab.end_tokens, vec![0, 2], "EOS and the other end-of-generation specials");
        let emoji = g.vocab.encode("zoo 🦓", false).unwrap();
        assert_eq!(g.vocab.decode(&emoji), "zoo 🦓", "bytes of any character round-trip");
    }

    #[test]
    fn chats_render_through_the_models_template() {
        let (_dir, g) = tiny();
        let t = g.template.as_ref().expect("template");
        let prompt = t.render(&[("user".into(), "hi".into())], &g.vocab).unwrap();
        assert_eq!(prompt, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
        let looping =
            ChatTemplate::new("{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}")
                .expect("compiles");
        let err = looping.render(&[("user".into(), "hi".into())], &g.vocab).unwrap_err();
        assert!(err.to_string().contains("fuel"), "{err}");
        let raising = ChatTemplate::new("{{ raise_exception('roles must alternate') }}").unwrap();
        let err = raising.render(&[], &g.vocab).unwrap_err();
        assert!(err.to_string().contains("roles must alternate"), "{err}");
        let py = ChatTemplate::new("{{ messages[0]['content'].strip().upper() }}").unwrap();
        assert_eq!(py.render(&[("user".into(), "  hi ".into())], &g.vocab).unwrap(), "HI");
    }

    #[test]
    fn stop_strings_are_held_back_then_cut() {
        let (_dir, g) = tiny();
        let ids = g.vocab.encode("hello world, bye", false).unwrap();
        let mut s = TextStream::new(vec!["o w".into(), "xyz".into()]);
        let mut out = String::new();
        let mut stopped = false;
        for id in ids {
            let (t, stop) = s.push(id, &g.vocab);
            out.push_str(&t);
            if stop {
                stopped = true;
                break;
            }
        }
        assert!(stopped);
        assert_eq!(out, "hell");
        // Text that only looked like the start of a stop string comes out at the end.
        let mut s = TextStream::new(vec![", byz".into()]);
        let mut out = String::new();
        for id in g.vocab.encode("hello world, by", false).unwrap() {
            out.push_str(&s.push(id, &g.vocab).0);
        }
        assert_eq!(out, "hello world");
        out.push_str(&s.finish(&g.vocab));
        assert_eq!(out, "hello world, by");
        // An answer that ends inside a character: held back while it may go on,
        // then given as transformers decodes it (a replacement character).
        let ids = g.vocab.encode("zoo 🦓", false).unwrap();
        let cut = &ids[..ids.len() - 1];
        let mut s = TextStream::new(vec![]);
        let mut out = String::new();
        for id in cut {
            out.push_str(&s.push(*id, &g.vocab).0);
        }
        assert!(!out.contains('\u{FFFD}'), "{out:?}");
        out.push_str(&s.finish(&g.vocab));
        assert_eq!(out, g.vocab.decode(cut));
        assert!(out.starts_with("zoo") && out.ends_with('\u{FFFD}'), "{out:?}");
    }

    #[test]
    fn bad_settings_name_the_parameter() {
        let p = |v: serde_json::Value| serde_json::from_value::<SamplingParams>(v).unwrap();
        for (body, param) in [
            (json!({"temperature": 3}), "temperature"),
            (json!({"top_p": 0}), "top_p"),
            (json!({"n": 2}), "n"),
            (json!({"max_tokens": 0}), "max_tokens"),
            (json!({"stop": ["a", "b", "c", "d", "e"]}), "stop"),
            (json!({"stop": [""]}), "stop"),
            (json!({"presence_penalty": 0.5}), "presence_penalty"),
            (json!({"logprobs": true, "top_logprobs": 21}), "top_logprobs"),
            (json!({"top_logprobs": 2}), "top_logprobs"),
        ] {
            let err = Settings::openai(&p(body.clone()), None).unwrap_err().to_string();
            assert!(err.contains(&format!("'{param}'")), "{body}: {err}");
        }
        let s = Settings::openai(&p(json!({"stop": "x", "seed": 3})), Some(16)).unwrap();
        assert_eq!(
            (s.max_tokens, s.stop, s.sampling.seed, s.sampling.temperature),
            (Some(16), vec!["x".into()], 3, 1.0)
        );
        let pipeline = Settings::pipeline(&GenerationParameters::default()).unwrap();
        assert_eq!(pipeline.sampling.temperature, 0.0, "the pipeline is greedy by default");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sequences_decode_together_with_the_answers_they_get_alone() {
        let (_dir, g) = tiny();
        let prompt = |t: &str| g.vocab.encode(t, false).unwrap();
        let alone = generate(&g, prompt("the cat sat"), &greedy(24), "tiny").unwrap().collect().await.unwrap();
        assert!(alone.completion_tokens > 0 && alone.completion_tokens <= 24, "{alone:?}");
        assert_eq!(alone.prompt_tokens, prompt("the cat sat").len());
        // The same prompt three times, and a long one, at once: interleaved steps
        // give each the answer it gets alone.
        let long: String = "the quick brown fox ".repeat(25);
        assert!(prompt(&long).len() > crate::runtime::generate::PREFILL_CHUNK, "a prompt run in several chunks");
        let streams: Vec<Stream> = (0..3)
            .map(|_| generate(&g, prompt("the cat sat"), &greedy(24), "tiny").unwrap())
            .chain([generate(&g, prompt(&long), &greedy(8), "tiny").unwrap()])
            .collect();
        let answers = futures::future::join_all(streams.into_iter().map(Stream::collect)).await;
        for a in &answers[..3] {
            assert_eq!(a.as_ref().unwrap(), &alone);
        }
        assert!(answers[3].is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn logprobs_come_one_per_token_with_its_bytes_and_do_not_change_the_answer() {
        let (_dir, g) = tiny();
        let ids = g.vocab.encode("the cat sat", false).unwrap();
        let plain = generate(&g, ids.clone(), &greedy(12), "tiny").unwrap().collect().await.unwrap();
        assert!(plain.logprobs.is_empty(), "none unless asked for");
        let asked = Settings { logprobs: Some(3), ..greedy(12) };
        let got = generate(&g, ids, &asked, "tiny").unwrap().collect().await.unwrap();
        assert_eq!((&got.text, got.completion_tokens), (&plain.text, plain.completion_tokens));
        assert_eq!(got.logprobs.len(), got.completion_tokens, "one per answer token");
        let bytes: Vec<u8> = got.logprobs.iter().flat_map(|t| t.bytes.clone().unwrap()).collect();
        assert_eq!(String::from_utf8_lossy(&bytes), got.text, "the tokens' bytes are the text");
        for t in &got.logprobs {
            assert_eq!(t.top_logprobs.len(), 3);
            // Greedy: the chosen token is the most likely one.
            assert_eq!((t.top_logprobs[0].logprob, &t.top_logprobs[0].bytes), (t.logprob, &t.bytes));
            assert!(t.top_logprobs.windows(2).all(|w| w[0].logprob >= w[1].logprob));
            assert!(t.logprob <= 0.0);
        }
    }

    #[test]
    fn byte_level_tokens_stand_for_their_bytes() {
        assert_eq!(byte_level_bytes("Ġthe"), b" the");
        assert_eq!(byte_level_bytes("Ċ"), b"\n");
        // The four bytes of a zebra, split over tokens as byte-level BPE writes them.
        assert_eq!(byte_level_bytes("ðŁ¦"), [0xf0, 0x9f, 0xa6]);
        assert_eq!(byte_level_bytes("ĵ"), [0x93]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_stream_frees_its_slot_and_a_full_queue_refuses() {
        let (_dir, g) = tiny();
        let ids = g.vocab.encode("the", false).unwrap();
        let mut s = generate(&g, ids.clone(), &greedy(200), "tiny").unwrap();
        let _first = s.next().await;
        assert_eq!(g.load_now().0, 1);
        drop(s);
        for _ in 0..200 {
            if g.load_now() == (0, 0) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(g.load_now(), (0, 0), "the engine ended the cancelled sequence");
        // 4 decoding, 8 waiting at most: more are refused with 429.
        let mut held = Vec::new();
        let err = loop {
            match generate(&g, ids.clone(), &greedy(200), "tiny") {
                Ok(s) => held.push(s),
                Err(e) => break e,
            }
            assert!(held.len() <= 12, "a full queue takes more");
        };
        assert!(held.len() >= 8, "{} taken", held.len());
        assert!(matches!(err, Error::Overloaded { .. }), "{err}");
        drop(held);
        let over = generate(&g, vec![5; g.context()], &greedy(1), "tiny").err().expect("too long");
        assert!(over.to_string().contains("context"), "{over}");
    }
}
