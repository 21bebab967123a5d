//! ModelHost: dedicated inference threads own a loaded model (one copy each);
//! async callers send work over a bounded queue and wait on a oneshot reply. A full
//! queue is backpressure (429).
//!
//! Dynamic batching: a thread that picks up a request also takes the requests
//! queued behind it (and, with a queue delay, waits up to that long from the first
//! request's arrival for more), up to `max_batch_rows` rows, merges their inputs
//! (token sequences padded to the longest; texts of very different lengths run
//! apart), runs the model once and splits the outputs back by rows. Requests
//! whose shapes cannot share a batch run in their own; when a merged run fails,
//! each request runs alone so that an error reaches only the request that caused
//! it; a model whose outputs have no batch axis is switched to unbatched serving.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use tokio::sync::oneshot;
use zoo_api::BatchRate;

use super::batch;
use super::{LoadedModel, RuntimeError, Tensors};

/// How a host forms batches.
#[derive(Debug, Clone)]
pub struct HostSettings {
    /// Thread name suffix (model-version).
    pub label: String,
    /// Requests waiting before new ones get `Busy`.
    pub capacity: usize,
    /// Most rows in one batch; 1 runs every request alone.
    pub max_batch_rows: usize,
    /// Longest the first request of a batch waits for others.
    pub max_queue_delay: Duration,
    /// Inputs that may differ in their second axis (token sequences), with the value
    /// they are padded with.
    pub pad: Vec<(String, i64)>,
    /// Measure, while no request waits, which batch sizes pay (see [`Tuning`]).
    pub measure: Option<MeasureSettings>,
}

/// What a host measures its batch sizes with.
#[derive(Debug, Clone)]
pub struct MeasureSettings {
    /// One row of real inputs (the warm-up's).
    pub probe: Tensors,
    /// Report only: keep `max_batch_rows` (a size given at deploy).
    pub keep_max: bool,
}

/// What a host measured at batch sizes 1, 2, 4, ... up to its maximum, in the
/// first moments no request waited after it started, and the cap it took from it:
/// the smallest size within 5 % of the best rows/s, since larger batches would
/// only add waiting.
#[derive(Debug, Default)]
pub struct Tuning {
    rates: Mutex<Vec<BatchRate>>,
    /// Rows per batch at most since the measurement (0: not capped).
    cap: AtomicUsize,
}

/// A request's answer with its timings.
#[derive(Debug)]
pub struct Done {
    pub outputs: Tensors,
    /// Time spent waiting in the queue.
    pub queue: Duration,
    /// Time of the model run (shared by the batch).
    pub inference: Duration,
    /// Rows in the batch the request ran in.
    pub batch_rows: usize,
}

struct Job {
    inputs: Tensors,
    rows: usize,
    /// It has no rows (counted as 1): never merged, since its outputs could not
    /// be told apart from the others'.
    solo: bool,
    enqueued: Instant,
    reply: oneshot::Sender<Result<Done, RuntimeError>>,
}

/// Called with the rows of every batch run (for the batch size histogram).
pub type BatchObserver = Arc<dyn Fn(usize) + Send + Sync>;

/// Handle to a model's inference threads. Dropping the last handle stops the
/// threads once queued work is done, and unloads the model.
pub struct ModelHost {
    tx: Sender<Job>,
    batching: Arc<AtomicBool>,
    max_batch_rows: usize,
    tuning: Arc<Tuning>,
}

/// Why a request did not get an answer.
#[derive(Debug)]
pub enum HostError {
    /// The queue is full.
    Busy,
    /// The threads are gone (shutting down).
    Stopped,
    Runtime(RuntimeError),
}

impl ModelHost {
    /// Start one thread per loaded copy of the model.
    pub fn spawn(
        models: Vec<Box<dyn LoadedModel>>,
        settings: HostSettings,
        observe: BatchObserver,
    ) -> std::io::Result<ModelHost> {
        let (tx, rx) = crossbeam_channel::bounded::<Job>(settings.capacity.max(1));
        let batching = Arc::new(AtomicBool::new(settings.max_batch_rows > 1));
        let tuning = Arc::new(Tuning::default());
        let settings = Arc::new(settings);
        for (i, model) in models.into_iter().enumerate() {
            let (rx, settings, batching, observe) = (rx.clone(), settings.clone(), batching.clone(), observe.clone());
            // The first thread measures (its copy is like the others).
            let measure = match &settings.measure {
                Some(m) if i == 0 && settings.max_batch_rows > 1 => Some((
                    batch::Measurer::new(m.probe.clone(), settings.max_batch_rows, settings.pad.clone()),
                    m.keep_max,
                )),
                _ => None,
            };
            let tuning = tuning.clone();
            std::thread::Builder::new()
                .name(format!("zoo-model-{}-{i}", settings.label))
                .spawn(move || serve(model, rx, &settings, &batching, &observe, &tuning, measure))?;
        }
        let max_batch_rows = settings.max_batch_rows;
        Ok(ModelHost { tx, batching, max_batch_rows, tuning })
    }

    /// Queue inputs of `rows` rows and wait for the outputs.
    pub async fn infer(&self, inputs: Tensors, rows: usize) -> Result<Done, HostError> {
        let (reply, rx) = oneshot::channel();
        let job = Job { inputs, rows: rows.max(1), solo: rows == 0, enqueued: Instant::now(), reply };
        self.tx.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => HostError::Busy,
            TrySendError::Disconnected(_) => HostError::Stopped,
        })?;
        match rx.await {
            Ok(r) => r.map_err(HostError::Runtime),
            Err(_) => Err(HostError::Stopped),
        }
    }

    /// Requests waiting in the queue.
    pub fn queued(&self) -> usize {
        self.tx.len()
    }

    /// Rows per batch at most, or 1 when requests run alone.
    pub fn max_batch_rows(&self) -> usize {
        if !self.batching.load(Ordering::Relaxed) {
            return 1;
        }
        self.tuning.max_rows(self.max_batch_rows)
    }

    /// Rows per second at each batch size measured (empty until measured).
    pub fn measured(&self) -> Vec<BatchRate> {
        self.tuning.rates.lock().expect("tuning").clone()
    }
}

fn serve(
    mut model: Box<dyn LoadedModel>,
    rx: Receiver<Job>,
    settings: &HostSettings,
    batching: &AtomicBool,
    observe: &BatchObserver,
    tuning: &Tuning,
    mut measure: Option<(batch::Measurer, bool)>,
) {
    let mut carry: Option<Job> = None;
    loop {
        let first = match carry.take() {
            Some(j) => j,
            None => match rx.try_recv() {
                Ok(j) => j,
                Err(TryRecvError::Disconnected) => return, // every handle dropped: unload
                // Nothing waits: make one more measuring run, if the measurement
                // is not done.
                Err(TryRecvError::Empty) if measure.is_some() && batching.load(Ordering::Relaxed) => {
                    // One measuring run at a time in the process (versions would
                    // measure each other), taken for this run only.
                    let Some(_token) = MeasureToken::take() else {
                        // Another version is making its run: wait for a request a little.
                        match rx.recv_timeout(Duration::from_millis(5)) {
                            Ok(j) => carry = Some(j),
                            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
                            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                        }
                        continue;
                    };
                    if let Some((m, keep_max)) = &mut measure
                        && !m.step(model.as_mut())
                    {
                        let rates = m.rates().to_vec();
                        if !*keep_max && let Some(cap) = batch::cap(&rates) {
                            tuning.cap.store(cap as usize, Ordering::Relaxed);
                        }
                        tracing::info!(model = %settings.label, ?rates, cap = tuning.cap.load(Ordering::Relaxed),
                            "measured which batch sizes pay");
                        *tuning.rates.lock().expect("tuning") = rates;
                        measure = None;
                    }
                    continue;
                }
                Err(TryRecvError::Empty) => match rx.recv() {
                    Ok(j) => j,
                    Err(_) => return,
                },
            },
        };
        let mut jobs = vec![first];
        let max_rows = tuning.max_rows(settings.max_batch_rows);
        if batching.load(Ordering::Relaxed) {
            let deadline = jobs[0].enqueued + settings.max_queue_delay;
            let mut rows = jobs[0].rows;
            while rows < max_rows {
                let next = match rx.try_recv() {
                    Ok(j) => Some(j),
                    Err(_) if Instant::now() < deadline => rx.recv_deadline(deadline).ok(),
                    Err(_) => None,
                };
                let Some(job) = next else { break };
                if rows + job.rows > max_rows {
                    carry = Some(job);
                    break;
                }
                rows += job.rows;
                jobs.push(job);
            }
        }
        // Callers that gave up (timeout, disconnect) are not run.
        jobs.retain(|j| !j.reply.is_closed());
        if jobs.is_empty() {
            continue;
        }
        run_jobs(model.as_mut(), jobs, settings, batching, observe);
    }
}

impl Tuning {
    /// Rows per batch at most: `configured`, or the measured cap below it.
    fn max_rows(&self, configured: usize) -> usize {
        match self.cap.load(Ordering::Relaxed) {
            0 => configured,
            cap => cap.min(configured),
        }
    }
}

/// Held by the one host making a measuring run; given back when dropped (after
/// the run, or if the host's thread ends).
struct MeasureToken;

static MEASURING: AtomicBool = AtomicBool::new(false);

impl MeasureToken {
    fn take() -> Option<MeasureToken> {
        MEASURING.compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed).ok().map(|_| MeasureToken)
    }
}

impl Drop for MeasureToken {
    fn drop(&mut self) {
        MEASURING.store(false, Ordering::Release);
    }
}

/// Run a model, turning a panic into an error of this run only.
fn guarded(model: &mut dyn LoadedModel, inputs: Tensors) -> Result<Tensors, RuntimeError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model.run(inputs)))
        .unwrap_or_else(|_| Err(RuntimeError::Run("the runtime panicked on this input".into())))
}

fn run_alone(model: &mut dyn LoadedModel, job: Job, observe: &BatchObserver) {
    let start = Instant::now();
    let queue = start - job.enqueued;
    observe(job.rows);
    let result = guarded(model, job.inputs);
    let inference = start.elapsed();
    let rows = job.rows;
    let _ = job.reply.send(result.map(|outputs| Done { outputs, queue, inference, batch_rows: rows }));
}

/// Requests share a run when the longest is at most this many times as long as
/// the shortest (texts: their token counts).
const LENGTH_RATIO: f64 = 2.0;

fn run_jobs(
    model: &mut dyn LoadedModel,
    jobs: Vec<Job>,
    settings: &HostSettings,
    batching: &AtomicBool,
    observe: &BatchObserver,
) {
    let pad = |name: &str| settings.pad.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
    let padded = |name: &str| pad(name).is_some();
    // Requests whose inputs agree on everything but their rows share a batch.
    let mut groups: Vec<Vec<Job>> = Vec::new();
    for job in jobs {
        if job.solo {
            groups.push(vec![job]);
            continue;
        }
        let key = batch::compat_key(&job.inputs, &padded);
        match groups.iter_mut().find(|g| !g[0].solo && batch::compat_key(&g[0].inputs, &padded) == key) {
            Some(g) => g.push(job),
            None => groups.push(vec![job]),
        }
    }
    // Texts of very different lengths run apart (no long padding for short texts).
    let runs = groups.into_iter().flat_map(|g| {
        if settings.pad.is_empty() {
            vec![g]
        } else {
            batch::by_length(g, |j| batch::padded_len(&j.inputs, &padded).unwrap_or(0), LENGTH_RATIO)
        }
    });
    for group in runs {
        if group.len() == 1 {
            run_alone(model, group.into_iter().next().expect("one job"), observe);
            continue;
        }
        let rows: Vec<usize> = group.iter().map(|j| j.rows).collect();
        let total: usize = rows.iter().sum();
        let merged = batch::merge(&group.iter().map(|j| &j.inputs).collect::<Vec<_>>(), &pad);
        let Ok(merged) = merged else {
            group.into_iter().for_each(|j| run_alone(model, j, observe));
            continue;
        };
        let start = Instant::now();
        let result = guarded(model, merged);
        let inference = start.elapsed();
        match result.map(|out| batch::split(out, &rows)) {
            Ok(Ok(parts)) => {
                observe(total);
                for (job, outputs) in group.into_iter().zip(parts) {
                    let done = Done { outputs, queue: start - job.enqueued, inference, batch_rows: total };
                    let _ = job.reply.send(Ok(done));
                }
            }
            Ok(Err(why)) => {
                // The outputs have no batch axis: serve this model unbatched from now on.
                tracing::warn!(model = %settings.label, %why, "the model's outputs cannot be split by request; batching off");
                batching.store(false, Ordering::Relaxed);
                group.into_iter().for_each(|j| run_alone(model, j, observe));
            }
            // One request may have broken the batch: run each alone, so its error
            // reaches it and the others get their answers.
            Err(_) => group.into_iter().for_each(|j| run_alone(model, j, observe)),
        }
    }
}

#[cfg(test)]
mod tests {
    use ndarray::{ArrayD, IxDyn};

    use super::*;
    use crate::runtime::Tensor;

    /// Doubles `x`; counts the batches it ran; refuses negative inputs.
    struct Doubler(Arc<std::sync::Mutex<Vec<usize>>>);

    impl LoadedModel for Doubler {
        fn run(&mut self, inputs: Tensors) -> Result<Tensors, RuntimeError> {
            let Tensor::F32(x) = &inputs[0].1 else { unreachable!() };
            if x.iter().any(|v| *v < 0.0) {
                return Err(RuntimeError::Input("negative".into()));
            }
            self.0.lock().unwrap().push(x.shape()[0]);
            std::thread::sleep(Duration::from_millis(20));
            Ok(vec![("y".into(), Tensor::F32(x.mapv(|v| v * 2.0)))])
        }
    }

    fn x(v: f32, rows: usize) -> Tensors {
        vec![("x".into(), Tensor::F32(ArrayD::from_elem(IxDyn(&[rows, 2]), v)))]
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn concurrent_requests_share_batches_and_get_their_own_rows() {
        let batches = Arc::new(std::sync::Mutex::new(Vec::new()));
        let settings = HostSettings {
            label: "t".into(),
            capacity: 64,
            max_batch_rows: 16,
            max_queue_delay: Duration::from_millis(5),
            pad: vec![],
            measure: None,
        };
        let host =
            Arc::new(ModelHost::spawn(vec![Box::new(Doubler(batches.clone()))], settings, Arc::new(|_| {})).unwrap());
        for bad in [None, Some(5)] {
            let tasks: Vec<_> = (0..12)
                .map(|i| {
                    let host = host.clone();
                    tokio::spawn(async move {
                        let v = if Some(i) == bad { -1.0 } else { i as f32 };
                        (i, host.infer(x(v, 1 + i % 2), 1 + i % 2).await)
                    })
                })
                .collect();
            for t in tasks {
                let (i, r) = t.await.unwrap();
                if Some(i) == bad {
                    // A request that breaks its batch fails alone.
                    assert!(matches!(r, Err(HostError::Runtime(RuntimeError::Input(_)))), "only the bad request fails");
                    continue;
                }
                let done = r.unwrap();
                assert_eq!(done.outputs[0].1, x(2.0 * i as f32, 1 + i % 2)[0].1, "request {i} gets its own rows");
            }
            if bad.is_none() {
                let batches = batches.lock().unwrap();
                assert!(batches.iter().any(|b| *b > 2), "some requests were merged: {batches:?}");
            }
        }
        let batches = batches.lock().unwrap();
        assert!(batches.iter().all(|b| *b <= 16), "{batches:?}");
    }

    /// Records, for every run, each row's real length (its non-padding tokens).
    struct Shapes(Arc<std::sync::Mutex<Vec<Vec<usize>>>>);

    impl LoadedModel for Shapes {
        fn run(&mut self, inputs: Tensors) -> Result<Tensors, RuntimeError> {
            let Tensor::I64(ids) = &inputs[0].1 else { unreachable!() };
            let lens = ids.outer_iter().map(|row| row.iter().filter(|v| **v != 0).count()).collect();
            self.0.lock().unwrap().push(lens);
            std::thread::sleep(Duration::from_millis(5));
            let rows = inputs[0].1.shape()[0];
            Ok(vec![("y".into(), Tensor::F32(ArrayD::zeros(IxDyn(&[rows, 2]))))])
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn short_texts_are_not_padded_to_a_long_one() {
        let runs = Arc::new(std::sync::Mutex::new(Vec::new()));
        let settings = HostSettings {
            label: "t".into(),
            capacity: 64,
            max_batch_rows: 32,
            max_queue_delay: Duration::from_millis(100),
            pad: vec![("input_ids".into(), 0)],
            measure: None,
        };
        let host =
            Arc::new(ModelHost::spawn(vec![Box::new(Shapes(runs.clone()))], settings, Arc::new(|_| {})).unwrap());
        let ids = |len: usize| vec![("input_ids".to_string(), Tensor::I64(ArrayD::ones(IxDyn(&[1, len]))))];
        let tasks: Vec<_> = [4, 40, 5, 6, 48, 4]
            .into_iter()
            .map(|len| {
                let host = host.clone();
                tokio::spawn(async move { host.infer(ids(len), 1).await.map(|d| d.batch_rows) })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let runs = runs.lock().unwrap();
        // Short texts ran together and long ones together: no run mixes a text of
        // 4 tokens with one of 40 (it would be padded to ten times its length).
        for run in runs.iter() {
            let (min, max) = (run.iter().min().unwrap(), run.iter().max().unwrap());
            assert!(*max <= 2 * *min, "texts of {min} and {max} tokens shared a run: {runs:?}");
        }
        assert!(runs.iter().any(|r| r.len() > 1), "requests were still merged: {runs:?}");
    }

    /// 2 ms a run, plus 2 ms per row beyond 2: batches pay up to 2 rows.
    struct Steep;

    impl LoadedModel for Steep {
        fn run(&mut self, inputs: Tensors) -> Result<Tensors, RuntimeError> {
            let rows = inputs[0].1.shape()[0];
            std::thread::sleep(Duration::from_millis(2 + 2 * rows.saturating_sub(2) as u64));
            Ok(vec![("y".into(), inputs[0].1.clone())])
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_idle_host_measures_its_batch_sizes_and_caps_itself_unless_told_a_size() {
        // Two hosts at once: they take turns (one measures at a time), both finish.
        let hosts: Vec<(bool, ModelHost)> = [false, true]
            .into_iter()
            .map(|keep_max| {
                let settings = HostSettings {
                    label: "t".into(),
                    capacity: 64,
                    max_batch_rows: 8,
                    max_queue_delay: Duration::ZERO,
                    pad: vec![],
                    measure: Some(MeasureSettings { probe: x(1.0, 1), keep_max }),
                };
                (keep_max, ModelHost::spawn(vec![Box::new(Steep)], settings, Arc::new(|_| {})).unwrap())
            })
            .collect();
        for (keep_max, host) in &hosts {
            // A request during the measurement is answered.
            assert_eq!(host.infer(x(3.0, 1), 1).await.unwrap().outputs[0].1, x(3.0, 1)[0].1);
            let started = Instant::now();
            while host.measured().is_empty() {
                assert!(started.elapsed() < Duration::from_secs(30), "never measured");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let rates = host.measured();
            assert_eq!(rates.iter().map(|r| r.batch).collect::<Vec<_>>(), [1, 2, 4, 8]);
            assert_eq!(host.max_batch_rows(), if *keep_max { 8 } else { 2 }, "{rates:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_request_without_rows_runs_alone_and_batching_stays_on() {
        let batches = Arc::new(std::sync::Mutex::new(Vec::new()));
        let settings = HostSettings {
            label: "t".into(),
            capacity: 64,
            max_batch_rows: 16,
            max_queue_delay: Duration::from_millis(50),
            pad: vec![],
            measure: None,
        };
        let host =
            Arc::new(ModelHost::spawn(vec![Box::new(Doubler(batches.clone()))], settings, Arc::new(|_| {})).unwrap());
        for round in 0..2 {
            let tasks: Vec<_> = [0usize, 1, 2, 0, 1]
                .into_iter()
                .map(|rows| {
                    let host = host.clone();
                    tokio::spawn(async move { (rows, host.infer(x(1.0, rows), rows).await) })
                })
                .collect();
            for t in tasks {
                let (rows, r) = t.await.unwrap();
                assert_eq!(r.unwrap().outputs[0].1.shape()[0], rows, "round {round}: a request gets its own rows");
            }
        }
        assert!(host.max_batch_rows() > 1, "batching was switched off");
    }
}
