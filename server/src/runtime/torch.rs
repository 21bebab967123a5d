//! TorchScript through libtorch, in a worker process (`zoo-torch-worker`, built
//! with the `torch` feature of the `zoo-torch` crate).
//!
//! The server never links libtorch: each loaded TorchScript version gets its own
//! worker, started with the libtorch directory on its library path and a Unix
//! socket as its stdin (see `zoo_torch` for the protocol). A worker that dies fails
//! the request it was running and is started again for the next one.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, BufWriter};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ndarray::{ArrayD, IxDyn};
use zoo_api::Signature;
use zoo_torch::{Arg, FailureKind, ProtocolError, Reply, Request, WireTensor};

use super::{LoadedModel, Runtime, RuntimeError, Tensor, Tensors};

/// How long a worker may take to load a module.
const LOAD_TIMEOUT: Duration = Duration::from_secs(300);
/// Lines of a worker's output kept for error messages.
const TAIL_LINES: usize = 20;

/// Where the worker and libtorch are.
#[derive(Debug, Clone)]
pub struct TorchRuntime {
    worker: PathBuf,
    /// `<libtorch>/lib` goes on the worker's library path.
    libtorch: Option<PathBuf>,
    threads: usize,
    /// The longest one request may run before the worker is restarted.
    run_timeout: Duration,
}

/// How to make TorchScript servable, for reasons shown to users.
pub const ENABLE_HINT: &str = "build zoo with the torch feature (cargo build --release --features zoo-torch/torch, \
     which needs libtorch 2.13.0: scripts/fetch-libtorch installs it) so that zoo-torch-worker sits next to the zoo \
     binary, or set ZOO_TORCH_WORKER";

impl TorchRuntime {
    /// Find the worker: the configured path, else `zoo-torch-worker` next to this
    /// executable. Err says why TorchScript cannot be served and how to fix it.
    pub fn find(
        configured: Option<&Path>,
        libtorch: Option<&Path>,
        data_dir: &Path,
        threads: usize,
        run_timeout: Duration,
    ) -> Result<TorchRuntime, String> {
        let worker = match configured {
            Some(p) => p.to_path_buf(),
            None => std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().map(|d| d.join(zoo_torch::WORKER_BIN)))
                .unwrap_or_else(|| PathBuf::from(zoo_torch::WORKER_BIN)),
        };
        if !worker.is_file() {
            return Err(format!(
                "TorchScript needs {} ({} not found): {ENABLE_HINT}",
                zoo_torch::WORKER_BIN,
                worker.display()
            ));
        }
        let libtorch = libtorch
            .map(Path::to_path_buf)
            .or_else(|| libtorch_candidates(data_dir).into_iter().find(|d| d.join("lib").is_dir()));
        Ok(TorchRuntime { worker, libtorch, threads, run_timeout })
    }

    pub fn worker(&self) -> &Path {
        &self.worker
    }
}

fn libtorch_candidates(data_dir: &Path) -> Vec<PathBuf> {
    let mut v = vec![data_dir.join("libtorch")];
    if let Some(cache) = std::env::var_os("ZOO_CACHE_DIR") {
        v.push(PathBuf::from(cache).join("libtorch"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        v.push(PathBuf::from(home).join(".cache/zoo/libtorch"));
    }
    v
}

fn load_err(message: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Load { runtime: "torch", message: message.to_string() }
}

impl Runtime for TorchRuntime {
    fn name(&self) -> &'static str {
        "torch"
    }

    fn load(&self, model: &Path, signature: &Signature) -> Result<Box<dyn LoadedModel>, RuntimeError> {
        let args = signature
            .inputs
            .iter()
            .map(|s| Arg {
                name: s.name.clone(),
                ty: s.type_text.clone(),
                has_default: s.optional && !s.type_text.starts_with("Optional["),
            })
            .collect();
        let spec = WorkerSpec { runtime: self.clone(), model: model.to_path_buf(), args };
        let worker = Worker::start(&spec).map_err(load_err)?;
        Ok(Box::new(TorchModel { spec, worker: Some(worker) }))
    }
}

/// What it takes to (re)start a worker for one model.
struct WorkerSpec {
    runtime: TorchRuntime,
    model: PathBuf,
    args: Vec<Arg>,
}

/// A running worker process with its socket.
struct Worker {
    child: Child,
    reader: BufReader<UnixStream>,
    writer: BufWriter<UnixStream>,
    tail: Arc<Mutex<VecDeque<String>>>,
}

impl Worker {
    fn start(spec: &WorkerSpec) -> Result<Worker, String> {
        let rt = &spec.runtime;
        let (ours, theirs) = UnixStream::pair().map_err(|e| format!("socket: {e}"))?;
        let threads = if rt.threads == 0 {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        } else {
            rt.threads
        };
        let mut cmd = Command::new(&rt.worker);
        // The worker gets a clean environment: only what libtorch needs.
        cmd.arg("serve").env_clear().env("OMP_NUM_THREADS", threads.to_string());
        if let Some(dir) = &rt.libtorch {
            cmd.env("LD_LIBRARY_PATH", dir.join("lib"));
        }
        let mut child = cmd
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", rt.worker.display()))?;
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let label = spec.model.display().to_string();
        if let Some(out) = child.stdout.take() {
            drain(out, tail.clone(), label.clone());
        }
        if let Some(err) = child.stderr.take() {
            drain(err, tail.clone(), label);
        }
        let reader = BufReader::new(ours.try_clone().map_err(|e| e.to_string())?);
        let mut worker = Worker { child, reader, writer: BufWriter::new(ours), tail };
        let load = Request::Load { model: spec.model.display().to_string(), args: spec.args.clone(), threads };
        let reply = worker.call(&load, &[], LOAD_TIMEOUT);
        match reply {
            Ok((Reply::Loaded { stateful, libtorch }, _)) => {
                tracing::debug!(model = %spec.model.display(), stateful, libtorch, "TorchScript worker ready");
                Ok(worker)
            }
            Ok((Reply::Failed { message, .. }, _)) => Err(format!("libtorch cannot load the module: {message}")),
            Ok(_) => Err("the worker answered load with something else".into()),
            Err(e) => Err(worker.died(&e)),
        }
    }

    fn call(&mut self, req: &Request, parts: &[&[u8]], timeout: Duration) -> Result<(Reply, Vec<u8>), ProtocolError> {
        self.send(req, parts)?;
        self.receive(timeout)
    }

    fn send(&mut self, req: &Request, parts: &[&[u8]]) -> Result<(), ProtocolError> {
        zoo_torch::write_frame(&mut self.writer, req, parts)
    }

    fn receive(&mut self, timeout: Duration) -> Result<(Reply, Vec<u8>), ProtocolError> {
        self.reader.get_ref().set_read_timeout(Some(timeout))?;
        zoo_torch::read_frame(&mut self.reader)
    }

    /// The process has exited (it was killed, or crashed while idle).
    fn exited(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_some()
    }

    /// Why the worker stopped answering, with the last lines it printed.
    fn died(&mut self, e: &ProtocolError) -> String {
        let _ = self.child.kill();
        let status = self.child.wait().ok();
        // Give the pipe readers a moment to collect the last words.
        std::thread::sleep(Duration::from_millis(50));
        let tail: Vec<String> = self.tail.lock().map(|t| t.iter().cloned().collect()).unwrap_or_default();
        let mut msg = match e {
            ProtocolError::Io(io)
                if matches!(io.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
            {
                "the TorchScript worker did not answer in time and was stopped".to_string()
            }
            _ => format!(
                "the TorchScript worker exited ({})",
                status.map(|s| s.to_string()).unwrap_or_else(|| "unknown status".into())
            ),
        };
        if !tail.is_empty() {
            msg.push_str(": ");
            msg.push_str(&tail.join(" | "));
        }
        if tail.iter().any(|l| l.contains("error while loading shared libraries")) {
            msg.push_str("; libtorch 2.13.0 is missing: install it with scripts/fetch-libtorch or set ZOO_LIBTORCH");
        }
        msg
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Log a worker's output, keeping the last lines for error messages.
fn drain(pipe: impl std::io::Read + Send + 'static, tail: Arc<Mutex<VecDeque<String>>>, label: String) {
    let spawned = std::thread::Builder::new().name("zoo-torch-log".into()).spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(mut line) = line else { break };
            if line.len() > 500 {
                line.truncate(line.floor_char_boundary(500));
            }
            tracing::info!(target: "zoo::torch_worker", model = %label, "{line}");
            if let Ok(mut t) = tail.lock() {
                if t.len() == TAIL_LINES {
                    t.pop_front();
                }
                t.push_back(line);
            }
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot follow a TorchScript worker's output");
    }
}

struct TorchModel {
    spec: WorkerSpec,
    /// `None` after the worker died; the next request starts another.
    worker: Option<Worker>,
}

fn to_wire(name: &str, t: &Tensor) -> Result<WireTensor, RuntimeError> {
    use zoo_torch::DType as W;
    fn bytes<T: Copy>(a: &ArrayD<T>, f: impl Fn(T) -> Vec<u8>) -> Vec<u8> {
        a.iter().flat_map(|x| f(*x)).collect()
    }
    let (dtype, data) = match t {
        Tensor::F32(a) => (W::F32, bytes(a, |x| x.to_le_bytes().to_vec())),
        Tensor::F64(a) => (W::F64, bytes(a, |x| x.to_le_bytes().to_vec())),
        Tensor::I64(a) => (W::I64, bytes(a, |x| x.to_le_bytes().to_vec())),
        Tensor::I32(a) => (W::I32, bytes(a, |x| x.to_le_bytes().to_vec())),
        Tensor::I16(a) => (W::I16, bytes(a, |x| x.to_le_bytes().to_vec())),
        Tensor::I8(a) => (W::I8, bytes(a, |x| x.to_le_bytes().to_vec())),
        Tensor::U8(a) => (W::U8, bytes(a, |x| vec![x])),
        Tensor::Bool(a) => (W::Bool, bytes(a, |x| vec![x as u8])),
        other => {
            return Err(RuntimeError::Input(format!(
                "input '{name}' is {}, which libtorch has no tensors of; send int64",
                other.dtype().as_str()
            )));
        }
    };
    Ok(WireTensor { dtype, shape: t.shape().iter().map(|d| *d as u64).collect(), data })
}

fn from_wire(t: WireTensor) -> Result<Tensor, RuntimeError> {
    use zoo_torch::DType as W;
    let shape = IxDyn(&t.shape.iter().map(|d| *d as usize).collect::<Vec<_>>());
    fn vals<T, const N: usize>(data: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
        data.chunks_exact(N).map(|c| f(c.try_into().expect("chunk size"))).collect()
    }
    let bad = |e: ndarray::ShapeError| RuntimeError::Run(format!("the worker sent a malformed tensor: {e}"));
    Ok(match t.dtype {
        W::F32 => Tensor::F32(ArrayD::from_shape_vec(shape, vals(&t.data, f32::from_le_bytes)).map_err(bad)?),
        W::F64 => Tensor::F64(ArrayD::from_shape_vec(shape, vals(&t.data, f64::from_le_bytes)).map_err(bad)?),
        W::I64 => Tensor::I64(ArrayD::from_shape_vec(shape, vals(&t.data, i64::from_le_bytes)).map_err(bad)?),
        W::I32 => Tensor::I32(ArrayD::from_shape_vec(shape, vals(&t.data, i32::from_le_bytes)).map_err(bad)?),
        W::I16 => Tensor::I16(ArrayD::from_shape_vec(shape, vals(&t.data, i16::from_le_bytes)).map_err(bad)?),
        W::I8 => Tensor::I8(ArrayD::from_shape_vec(shape, vals(&t.data, i8::from_le_bytes)).map_err(bad)?),
        W::U8 => Tensor::U8(ArrayD::from_shape_vec(shape, t.data).map_err(bad)?),
        W::Bool => Tensor::Bool(ArrayD::from_shape_vec(shape, t.data.iter().map(|b| *b != 0).collect()).map_err(bad)?),
    })
}

impl LoadedModel for TorchModel {
    fn run(&mut self, inputs: Tensors) -> Result<Tensors, RuntimeError> {
        let wire: Vec<Option<WireTensor>> = self
            .spec
            .args
            .iter()
            .map(|a| inputs.iter().find(|(n, _)| *n == a.name).map(|(n, t)| to_wire(n, t)).transpose())
            .collect::<Result<_, _>>()?;
        let (headers, parts) = zoo_torch::pack(wire.iter().map(Option::as_ref));
        let request = Request::Run { inputs: headers };
        // A worker that died while idle is replaced, and one whose socket is gone
        // before the request reached it too: the request has not run yet.
        if self.worker.as_mut().is_some_and(Worker::exited) {
            self.worker = None;
        }
        let mut sent = false;
        for _ in 0..2 {
            if self.worker.is_none() {
                self.worker = Some(Worker::start(&self.spec).map_err(RuntimeError::Run)?);
            }
            let worker = self.worker.as_mut().expect("started above");
            if worker.send(&request, &parts).is_ok() {
                sent = true;
                break;
            }
            self.worker = None;
        }
        if !sent {
            return Err(RuntimeError::Run("the TorchScript worker does not take requests".into()));
        }
        let worker = self.worker.as_mut().expect("sent above");
        let timeout = self.spec.runtime.run_timeout;
        match worker.receive(timeout) {
            Ok((Reply::Outputs { outputs }, payload)) => outputs
                .into_iter()
                .map(|(name, h)| {
                    let t = zoo_torch::unpack(&h, &payload).map_err(|e| RuntimeError::Run(e.to_string()))?;
                    Ok((name, from_wire(t)?))
                })
                .collect(),
            Ok((Reply::Failed { kind: FailureKind::Input, message }, _)) => Err(RuntimeError::Input(message)),
            Ok((Reply::Failed { message, .. }, _)) => Err(RuntimeError::Run(message)),
            Ok(_) => Err(RuntimeError::Run("the TorchScript worker answered with something else".into())),
            Err(e) => {
                let why = worker.died(&e);
                self.worker = None;
                Err(RuntimeError::Run(why))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_cross_the_wire_unchanged() {
        let a = Tensor::F32(ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![1.0, -2.5, 3.0, 0.0]).unwrap());
        let b = Tensor::Bool(ArrayD::from_shape_vec(IxDyn(&[3]), vec![true, false, true]).unwrap());
        let c = Tensor::I64(ArrayD::from_shape_vec(IxDyn(&[]), vec![16000]).unwrap());
        for t in [a, b, c] {
            assert_eq!(from_wire(to_wire("x", &t).unwrap()).unwrap(), t);
        }
        let u = Tensor::U32(ArrayD::from_shape_vec(IxDyn(&[1]), vec![1]).unwrap());
        assert!(matches!(to_wire("x", &u), Err(RuntimeError::Input(_))));
    }

    #[test]
    fn a_missing_worker_says_how_to_get_one() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = TorchRuntime::find(Some(&missing), None, dir.path(), 1, Duration::from_secs(1)).unwrap_err();
        assert!(err.contains("--features zoo-torch/torch") && err.contains("scripts/fetch-libtorch"), "{err}");
    }
}
