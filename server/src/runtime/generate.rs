//! Text generation: a decoder language model (zoo's Llama forward, from a GGUF
//! file or a Hugging Face directory) and the engine that decodes its sequences.
//!
//! One engine per loaded version, on its own thread. Each sequence has its own
//! key/value cache; the weights are shared. Each step of the engine runs every
//! running sequence together (continuous batching, `runtime/llama.rs`): the next
//! token of those decoding and a chunk of a prompt being read, as the rows of
//! one pass through the weights, so a long generation never holds up a short one
//! and several streams cost little more than one. It speaks in token ids: the
//! caller tokenizes, detokenizes and watches for stop strings, and cancels a
//! sequence by dropping its receiver (a client that went away).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use candle_core::quantized::gguf_file;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::RuntimeError;
use super::llama::{Cache, Row, Weights};

/// The longest context a sequence may have (the rotary tables' length).
pub const MAX_CONTEXT: usize = super::llama::MAX_CONTEXT;
/// Prompt tokens run in one step (of all the sequences reading their prompts),
/// so that a long prompt shares the engine with the sequences already decoding.
pub const PREFILL_CHUNK: usize = 256;

/// How the next token is chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    /// 0: greedy (the most likely token).
    pub temperature: f64,
    /// Keep the most likely tokens whose probabilities add up to this (1: all).
    pub top_p: f64,
    /// Keep this many most likely tokens (0: all).
    pub top_k: usize,
    /// Divides the logits of tokens already in the sequence (>0) or multiplies
    /// the negative ones (CTRL's penalty, as transformers and llama.cpp apply it).
    pub repetition_penalty: f32,
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling { temperature: 0.0, top_p: 1.0, top_k: 0, repetition_penalty: 1.0, seed: 0 }
    }
}

/// Why a sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// An end-of-generation token (or, seen by the caller, a stop string).
    Stop,
    /// `max_tokens`, or the model's context is full.
    Length,
}

impl Finish {
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
        }
    }
}

/// The log-probabilities at one position of the model's own distribution
/// (before penalty, temperature and truncation).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprobs {
    /// Of the chosen token.
    pub logprob: f32,
    /// The most likely tokens, most likely first.
    pub top: Vec<(u32, f32)>,
}

/// What the engine tells a sequence's caller.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The next token (never an end-of-generation token), with its
    /// log-probabilities when the job asked for them.
    Token(u32, Option<TokenLogprobs>),
    Done(Finish),
    Failed(String),
}

/// A sequence to generate.
pub struct Job {
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    pub sampling: Sampling,
    /// Tokens that end the sequence (not sent).
    pub end_tokens: Vec<u32>,
    /// Send each token's log-probability and this many most likely tokens'.
    pub logprobs: Option<usize>,
    pub events: tokio::sync::mpsc::UnboundedSender<Event>,
}

/// Timings of one finished sequence, for the metrics.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// From submission to its first token.
    pub first_token: Option<Duration>,
    /// From its first token to its last.
    pub decoding: Duration,
    pub tokens: usize,
}

/// Called with each finished sequence's timings.
pub type Observer = Arc<dyn Fn(Timings) + Send + Sync>;

/// A GGUF file's metadata, by key.
pub type Metadata = std::collections::HashMap<String, gguf_file::Value>;

/// A language model's weights, loaded once and shared by every sequence.
#[derive(Clone)]
pub struct Model {
    weights: Arc<Weights>,
    /// Tokens one sequence may hold, prompt and answer.
    pub context: usize,
}

impl Model {
    /// Load a GGUF file zoo validated at deploy. Returns the model and the file's
    /// metadata (the tokenizer and the chat template are read from it).
    #[allow(clippy::disallowed_methods, reason = "models load on a blocking thread (service::loader)")]
    pub fn load(path: &Path) -> Result<(Model, Metadata), RuntimeError> {
        let err = |e: candle_core::Error| RuntimeError::Load { runtime: "candle", message: e.to_string() };
        let mut file = std::io::BufReader::new(
            std::fs::File::open(path).map_err(|e| RuntimeError::Load { runtime: "candle", message: e.to_string() })?,
        );
        let content = gguf_file::Content::read(&mut file).map_err(err)?;
        let arch = content.metadata.get("general.architecture").and_then(|v| v.to_string().ok()).cloned();
        let trained = arch
            .and_then(|a| content.metadata.get(&format!("{a}.context_length")).and_then(|v| v.to_u64().ok()))
            .map_or(MAX_CONTEXT, |c| c as usize);
        let metadata = content.metadata.clone();
        let weights = Weights::from_gguf(&content, &mut file).map_err(err)?;
        Ok((Model { weights: Arc::new(weights), context: trained.clamp(2, MAX_CONTEXT) }, metadata))
    }

    /// Load a Hugging Face decoder directory's weights (`model.safetensors`).
    pub fn load_hf(weights: &Path, cfg: &zoo_formats::decoder::DecoderConfig) -> Result<Model, RuntimeError> {
        let weights = Weights::from_safetensors(weights, cfg)
            .map_err(|e| RuntimeError::Load { runtime: "candle", message: e.to_string() })?;
        Ok(Model { weights: Arc::new(weights), context: cfg.context.unwrap_or(MAX_CONTEXT).clamp(2, MAX_CONTEXT) })
    }
}

/// What the batching host holds for a text-generation version: its model runs
/// in the engine, so a tensor request is refused.
pub struct NoTensors;

impl super::LoadedModel for NoTensors {
    fn run(&mut self, _inputs: super::Tensors) -> Result<super::Tensors, RuntimeError> {
        Err(RuntimeError::Input("a text-generation version takes prompts, not tensors".into()))
    }
}

/// Settings of one engine.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub label: String,
    /// Sequences decoding at the same time; more wait their turn.
    pub max_sequences: usize,
    /// Sequences waiting at most; more are refused (429).
    pub queue_capacity: usize,
}

/// Why a sequence was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    Busy,
    Stopped,
}

/// A running engine: submit sequences, see how many run and wait.
pub struct Engine {
    jobs: mpsc::SyncSender<(Job, Instant)>,
    waiting: Arc<AtomicUsize>,
    running: Arc<AtomicUsize>,
    pub context: usize,
}

impl Engine {
    pub fn spawn(model: Model, settings: EngineSettings, observe: Observer) -> Result<Engine, RuntimeError> {
        let (tx, rx) = mpsc::sync_channel(settings.queue_capacity.max(1));
        let waiting = Arc::new(AtomicUsize::new(0));
        let running = Arc::new(AtomicUsize::new(0));
        let context = model.context;
        let (w, r) = (waiting.clone(), running.clone());
        std::thread::Builder::new()
            .name(format!("zoo-gen-{}", settings.label))
            .spawn(move || run(model, rx, settings.max_sequences.max(1), w, r, observe))
            .map_err(|e| RuntimeError::Load { runtime: "candle", message: format!("no engine thread: {e}") })?;
        Ok(Engine { jobs: tx, waiting, running, context })
    }

    /// Queue a sequence; its events come on `job.events`.
    pub fn submit(&self, job: Job) -> Result<(), Refused> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        match self.jobs.try_send((job, Instant::now())) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                Err(match e {
                    mpsc::TrySendError::Full(_) => Refused::Busy,
                    mpsc::TrySendError::Disconnected(_) => Refused::Stopped,
                })
            }
        }
    }

    /// Sequences decoding now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    /// Sequences waiting for a turn.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }
}

/// One sequence in the engine.
struct Sequence {
    job: Job,
    cache: Cache,
    /// Prompt tokens already run.
    fed: usize,
    generated: Vec<u32>,
    rng: StdRng,
    submitted: Instant,
    first_token: Option<Instant>,
}

impl Sequence {
    /// The tokens of its next step (`budget`: prompt tokens it may read now):
    /// a chunk of the prompt, or the last token. Empty: nothing to run now.
    fn input(&self, budget: usize) -> &[u32] {
        if self.fed < self.job.prompt.len() {
            let end = (self.fed + budget).min(self.job.prompt.len());
            &self.job.prompt[self.fed..end]
        } else {
            let last = self.generated.len().saturating_sub(1);
            &self.generated[last..]
        }
    }

    /// After a step that ran `n` tokens: sample the next token once the prompt
    /// is in. `None`: the sequence goes on.
    fn after(&mut self, n: usize, mut logits: Vec<f32>, context: usize) -> Option<Result<Finish, String>> {
        if self.fed < self.job.prompt.len() {
            self.fed += n;
            if self.fed < self.job.prompt.len() {
                return None;
            }
        }
        let seen: Vec<u32> = self.job.prompt.iter().chain(&self.generated).copied().collect();
        let model = self.job.logprobs.map(|k| (logits.clone(), k));
        let next = sample(&mut logits, &self.job.sampling, &seen, &mut self.rng);
        let logprobs = model.map(|(logits, k)| log_probs(&logits, next, k));
        if self.first_token.is_none() {
            self.first_token = Some(Instant::now());
        }
        if self.job.end_tokens.contains(&next) {
            return Some(Ok(Finish::Stop));
        }
        self.generated.push(next);
        if self.job.events.send(Event::Token(next, logprobs)).is_err() {
            return Some(Ok(Finish::Stop));
        }
        if self.generated.len() >= self.job.max_tokens || self.job.prompt.len() + self.generated.len() >= context {
            return Some(Ok(Finish::Length));
        }
        None
    }

    /// Tell the caller how it ended, and the metrics how it went.
    fn end(self, end: Result<Finish, String>, observe: &Observer) {
        let event = match end {
            Ok(f) => Event::Done(f),
            Err(e) => Event::Failed(e),
        };
        let _ = self.job.events.send(event);
        observe(Timings {
            first_token: self.first_token.map(|t| t - self.submitted),
            decoding: self.first_token.map_or(Duration::ZERO, |t| t.elapsed()),
            tokens: self.generated.len(),
        });
    }
}

/// One step of every running sequence, together: those decoding run their last
/// token, those reading their prompt share `PREFILL_CHUNK` prompt tokens. Returns
/// the sequences that ended.
fn step(weights: &Weights, active: &mut Vec<Sequence>, context: usize) -> Vec<(Sequence, Result<Finish, String>)> {
    let mut ended = Vec::new();
    // Cancelled (the client went away) or empty: ended before the step.
    let mut i = 0;
    while i < active.len() {
        let why = if active[i].job.events.is_closed() {
            Some(Ok(Finish::Stop))
        } else if active[i].job.prompt.is_empty() {
            Some(Err("the prompt has no tokens".to_string()))
        } else {
            None
        };
        match why {
            Some(end) => ended.push((active.swap_remove(i), end)),
            None => i += 1,
        }
    }
    let mut budget = PREFILL_CHUNK;
    let mut taken: Vec<(usize, usize)> = Vec::new();
    for (i, s) in active.iter().enumerate() {
        let n = s.input(budget).len();
        if n > 0 {
            taken.push((i, n));
            if s.fed < s.job.prompt.len() {
                budget -= n;
            }
        }
    }
    if taken.is_empty() {
        return ended;
    }
    let logits = {
        let mut caches: Vec<(usize, Cache)> =
            taken.iter().map(|&(i, _)| (i, std::mem::take(&mut active[i].cache))).collect();
        let inputs: Vec<Vec<u32>> = taken.iter().map(|&(i, n)| active[i].input(n).to_vec()).collect();
        let mut rows: Vec<Row<'_>> =
            caches.iter_mut().zip(&inputs).map(|((_, cache), tokens)| Row { tokens, cache }).collect();
        let logits = weights.forward(&mut rows);
        drop(rows);
        for (i, cache) in caches {
            active[i].cache = cache;
        }
        logits
    };
    let mut done: Vec<(usize, Result<Finish, String>)> = Vec::new();
    match logits {
        Ok(logits) => {
            for (&(i, n), l) in taken.iter().zip(logits) {
                if let Some(end) = active[i].after(n, l, context) {
                    done.push((i, end));
                }
            }
        }
        Err(e) => done.extend(taken.iter().map(|&(i, _)| (i, Err(e.to_string())))),
    }
    // Remove from the back, so the indices stay valid.
    done.sort_by_key(|d| std::cmp::Reverse(d.0));
    for (i, end) in done {
        ended.push((active.swap_remove(i), end));
    }
    ended
}

/// The engine's thread: take sequences while there is room, run a step of all
/// the running ones together, end those finished or cancelled.
fn run(
    model: Model,
    jobs: mpsc::Receiver<(Job, Instant)>,
    max_sequences: usize,
    waiting: Arc<AtomicUsize>,
    running: Arc<AtomicUsize>,
    observe: Observer,
) {
    let mut active: Vec<Sequence> = Vec::new();
    let mut open = true;
    loop {
        while open && active.len() < max_sequences {
            let next = if active.is_empty() { jobs.recv().map_err(|_| ()) } else { jobs.try_recv().map_err(|_| ()) };
            match next {
                Ok((job, submitted)) => {
                    waiting.fetch_sub(1, Ordering::SeqCst);
                    let rng = StdRng::seed_from_u64(job.sampling.seed);
                    active.push(Sequence {
                        job,
                        cache: Cache::default(),
                        fed: 0,
                        generated: Vec::new(),
                        rng,
                        submitted,
                        first_token: None,
                    });
                    running.store(active.len(), Ordering::SeqCst);
                }
                Err(()) if active.is_empty() && jobs_closed(&jobs) => open = false,
                Err(()) => break,
            }
        }
        if active.is_empty() {
            if !open {
                return;
            }
            continue;
        }
        for (s, end) in step(&model.weights, &mut active, model.context) {
            s.end(end, &observe);
        }
        running.store(active.len(), Ordering::SeqCst);
    }
}

/// Whether no sender is left (the version was unloaded).
fn jobs_closed(jobs: &mpsc::Receiver<(Job, Instant)>) -> bool {
    matches!(jobs.try_recv(), Err(mpsc::TryRecvError::Disconnected))
}

/// The log-probabilities of `logits` (log-softmax): the chosen token's and the
/// `k` most likely, most likely first.
pub fn log_probs(logits: &[f32], chosen: u32, k: usize) -> TokenLogprobs {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let norm = max + logits.iter().map(|&l| (l as f64 - max).exp()).sum::<f64>().ln();
    let lp = |t: u32| logits.get(t as usize).map_or(f32::NEG_INFINITY, |&l| (l as f64 - norm) as f32);
    let k = k.min(logits.len());
    let mut top: Vec<u32> = (0..logits.len() as u32).collect();
    let by_logit = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]).then(a.cmp(b));
    if k > 0 && k < top.len() {
        top.select_nth_unstable_by(k - 1, by_logit);
    }
    top.truncate(k);
    top.sort_unstable_by(by_logit);
    TokenLogprobs { logprob: lp(chosen), top: top.into_iter().map(|t| (t, lp(t))).collect() }
}

/// Choose the next token from the logits: repetition penalty, then greedy, or
/// temperature, top-k and top-p sampling.
pub fn sample(logits: &mut [f32], s: &Sampling, seen: &[u32], rng: &mut impl Rng) -> u32 {
    if s.repetition_penalty != 1.0 {
        let mut done = std::collections::HashSet::new();
        for &t in seen {
            if done.insert(t)
                && let Some(l) = logits.get_mut(t as usize)
            {
                *l = if *l >= 0.0 { *l / s.repetition_penalty } else { *l * s.repetition_penalty };
            }
        }
    }
    let argmax = || {
        let mut best = 0;
        for (i, l) in logits.iter().enumerate() {
            if *l > logits[best] {
                best = i;
            }
        }
        best as u32
    };
    if s.temperature <= 0.0 || s.top_k == 1 {
        return argmax();
    }
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    order.sort_unstable_by(|a, b| logits[*b as usize].total_cmp(&logits[*a as usize]));
    if s.top_k > 0 {
        order.truncate(s.top_k);
    }
    let max = logits[order[0] as usize] as f64;
    let mut probs: Vec<f64> =
        order.iter().map(|t| ((logits[*t as usize] as f64 - max) / s.temperature).exp()).collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    if s.top_p < 1.0 {
        let mut sum = 0.0;
        let keep = probs
            .iter()
            .position(|p| {
                sum += p;
                sum >= s.top_p
            })
            .map_or(probs.len(), |i| i + 1);
        probs.truncate(keep);
        order.truncate(keep);
    }
    let total: f64 = probs.iter().sum();
    let mut x = rng.random::<f64>() * total;
    for (p, t) in probs.iter().zip(&order) {
        x -= p;
        if x <= 0.0 {
            return *t;
        }
    }
    order[order.len() - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_probabilities_are_the_log_softmax_with_the_most_likely_first() {
        let logits = [1.0f32, 3.0, 2.0, 3.0];
        let lp = log_probs(&logits, 2, 3);
        let norm = logits.iter().map(|&l| (l as f64).exp()).sum::<f64>().ln();
        assert!((lp.logprob as f64 - (2.0 - norm)).abs() < 1e-6);
        let top: Vec<u32> = lp.top.iter().map(|t| t.0).collect();
        assert_eq!(top, [1, 3, 2], "most likely first, ties by id");
        let total: f64 =
            logits.iter().enumerate().map(|(t, _)| (log_probs(&logits, t as u32, 0).logprob as f64).exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
        assert_eq!(log_probs(&logits, 0, 10).top.len(), 4, "at most the vocabulary");
    }

    #[test]
    fn greedy_takes_the_most_likely_and_penalty_turns_it_away() {
        let mut rng = StdRng::seed_from_u64(0);
        let greedy = Sampling::default();
        assert_eq!(sample(&mut [0.1, 2.0, 1.9], &greedy, &[], &mut rng), 1);
        let penalised = Sampling { repetition_penalty: 1.2, ..Sampling::default() };
        assert_eq!(sample(&mut [0.1, 2.0, 1.9], &penalised, &[1], &mut rng), 2);
        // A negative logit is made more negative, not less.
        assert_eq!(sample(&mut [-1.0, -1.1, -5.0], &penalised, &[0], &mut rng), 1);
    }

    #[test]
    fn sampling_is_seeded_and_stays_within_top_k_and_top_p() {
        let logits = [3.0f32, 2.9, 2.8, -10.0, 0.0];
        let s = Sampling { temperature: 1.0, top_k: 3, seed: 7, ..Sampling::default() };
        let draw = |s: &Sampling| {
            let mut rng = StdRng::seed_from_u64(s.seed);
            (0..200).map(|_| sample(&mut logits.clone(), s, &[], &mut rng)).collect::<Vec<_>>()
        };
        let a = draw(&s);
        assert_eq!(a, draw(&s), "the same seed draws the same tokens");
        assert!(a.iter().all(|t| *t < 3), "only the top 3: {a:?}");
        assert!((0..3).all(|t| a.contains(&t)), "each of the top 3 is drawn: {a:?}");
        let p = Sampling { temperature: 1.0, top_p: 0.3, seed: 1, ..Sampling::default() };
        assert!(draw(&p).iter().all(|t| *t == 0), "top_p 0.3 keeps only the first of three near-equal tokens");
    }
}
