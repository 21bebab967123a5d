//! ModelHost: one dedicated thread owns a loaded model; async callers send work over
//! a bounded queue and wait on a oneshot reply. A full queue is backpressure (429).

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::{LoadedModel, RuntimeError, Tensors};

struct Job {
    inputs: Tensors,
    reply: oneshot::Sender<Result<(Tensors, Duration), RuntimeError>>,
}

/// Handle to a model's inference thread. Dropping the last handle stops the thread
/// once queued work is done, and unloads the model.
pub struct ModelHost {
    tx: mpsc::Sender<Job>,
}

/// Why a request did not get an answer.
#[derive(Debug)]
pub enum HostError {
    /// The queue is full.
    Busy,
    /// The thread is gone (it panicked or is shutting down).
    Stopped,
    Runtime(RuntimeError),
}

impl ModelHost {
    /// Start the thread that owns `model`.
    pub fn spawn(label: &str, model: Box<dyn LoadedModel>, capacity: usize) -> std::io::Result<ModelHost> {
        let (tx, mut rx) = mpsc::channel::<Job>(capacity.max(1));
        let mut model = model;
        std::thread::Builder::new().name(format!("zoo-model-{label}")).spawn(move || {
            while let Some(job) = rx.blocking_recv() {
                if job.reply.is_closed() {
                    continue; // the caller gave up (timeout or disconnect)
                }
                let start = Instant::now();
                // A runtime that panics fails this request, not the model's thread.
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model.run(job.inputs)))
                    .unwrap_or_else(|_| Err(RuntimeError::Run("the runtime panicked on this input".into())))
                    .map(|out| (out, start.elapsed()));
                let _ = job.reply.send(result);
            }
        })?;
        Ok(ModelHost { tx })
    }

    /// Queue inputs and wait for the outputs and the time spent running them.
    pub async fn infer(&self, inputs: Tensors) -> Result<(Tensors, Duration), HostError> {
        let (reply, rx) = oneshot::channel();
        self.tx.try_send(Job { inputs, reply }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => HostError::Busy,
            mpsc::error::TrySendError::Closed(_) => HostError::Stopped,
        })?;
        match rx.await {
            Ok(r) => r.map_err(HostError::Runtime),
            Err(_) => Err(HostError::Stopped),
        }
    }

    /// Requests waiting in the queue.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}
