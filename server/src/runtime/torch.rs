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
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ndarray::{ArrayD, IxDyn};
use zoo_api::Signature;
use zoo_torch::sandbox::{self, Mode, Policy, Probe};
use zoo_torch::{Arg, FailureKind, ProtocolError, Reply, Request, WireTensor};

use super::{LoadedModel, RunLimits, Runtime, RuntimeError, Tensor, Tensors};

/// How long a worker may take to load a module.
const LOAD_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the sandbox probe at start may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);
/// Lines of a worker's output kept for error messages.
const TAIL_LINES: usize = 20;
/// How often a running request's CPU time is checked.
const CPU_CHECK_EVERY: Duration = Duration::from_millis(50);
/// Address space a worker gets beyond libtorch itself and its model, when the
/// operator sets no limit.
const MEMORY_HEADROOM: u64 = 1 << 30;
/// Open files a worker may hold.
const WORKER_OPEN_FILES: u64 = 256;

/// Where the worker and libtorch are, and how workers are confined.
#[derive(Debug, Clone)]
pub struct TorchSettings {
    pub worker: Option<PathBuf>,
    pub libtorch: Option<PathBuf>,
    pub data_dir: PathBuf,
    pub threads: usize,
    pub sandbox: Mode,
    /// Address-space limit of a worker in bytes (0: libtorch's own size plus
    /// 1 GiB plus four times the model's size).
    pub memory_bytes: u64,
}

/// Where the worker and libtorch are.
#[derive(Debug, Clone)]
pub struct TorchRuntime {
    worker: PathBuf,
    /// `<libtorch>/lib` goes on the worker's library path.
    libtorch: Option<PathBuf>,
    threads: usize,
    mode: Mode,
    memory_bytes: u64,
    /// What the sandbox probe found at start.
    probe: Probe,
}

/// How to make TorchScript servable, for reasons shown to users.
pub const ENABLE_HINT: &str = "build zoo with the torch feature (cargo build --release --features zoo-torch/torch, \
     which needs libtorch 2.13.0: scripts/fetch-libtorch installs it) so that zoo-torch-worker sits next to the zoo \
     binary, or set ZOO_TORCH_WORKER";

impl TorchRuntime {
    /// Find the worker (the configured path, else `zoo-torch-worker` next to this
    /// executable) and check, once, that it can be confined on this machine. Err
    /// says why TorchScript cannot be served and how to fix it.
    pub fn find(settings: &TorchSettings) -> Result<TorchRuntime, String> {
        let worker = match &settings.worker {
            Some(p) => p.clone(),
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
        let libtorch = settings
            .libtorch
            .clone()
            .or_else(|| libtorch_candidates(&settings.data_dir).into_iter().find(|d| d.join("lib").is_dir()));
        let mut rt = TorchRuntime {
            worker,
            libtorch,
            threads: settings.threads,
            mode: settings.sandbox,
            memory_bytes: settings.memory_bytes,
            probe: Probe::default(),
        };
        rt.probe.report.mode = settings.sandbox.as_str().into();
        if settings.sandbox == Mode::UnsafeOff {
            tracing::warn!(
                "TorchScript runs WITHOUT a sandbox (--torchscript-sandbox unsafe-off): uploaded TorchScript can read \
                 and write every file this server can, including its keys"
            );
            return Ok(rt);
        }
        rt.probe = rt.run_probe().map_err(|e| format!("the TorchScript sandbox could not be checked: {e}"))?;
        let mut problems: Vec<String> = rt.probe.report.missing.clone();
        problems.extend(rt.probe.escapes.allowed().into_iter().map(|e| format!("{e} was not refused")));
        if !rt.probe.libtorch {
            problems.push("libtorch does not run inside the sandbox".into());
        }
        if problems.is_empty() {
            return Ok(rt);
        }
        let problems = problems.join("; ");
        match settings.sandbox {
            Mode::Required => Err(format!(
                "the TorchScript sandbox is not available on this machine ({problems}): TorchScript versions are \
                 stored but not served. Serving them anyway needs --torchscript-sandbox unsafe-best-effort \
                 (ZOO_TORCHSCRIPT_SANDBOX), which lets uploaded TorchScript do what the sandbox would have stopped"
            )),
            _ => {
                tracing::warn!(%problems, "TorchScript is served with an incomplete sandbox (unsafe-best-effort)");
                Ok(rt)
            }
        }
    }

    pub fn worker(&self) -> &Path {
        &self.worker
    }

    /// The protections workers run with (from the probe at start).
    pub fn sandbox(&self) -> &sandbox::Report {
        &self.probe.report
    }

    /// A worker process command with a clean environment: only what libtorch needs.
    fn command(&self, threads: usize) -> Command {
        let mut cmd = Command::new(&self.worker);
        cmd.env_clear().env("OMP_NUM_THREADS", threads.to_string());
        if let Some(dir) = &self.libtorch {
            cmd.env("LD_LIBRARY_PATH", dir.join("lib"));
        }
        // Its own process group: a signal to the server's group does not reach it,
        // and it cannot be mistaken for part of the server.
        cmd.process_group(0);
        cmd
    }

    /// The sandbox of a worker that serves `model` (a file of `model_size` bytes).
    fn policy(&self, model: Option<&Path>, model_size: u64) -> Policy {
        let mut read_dirs = Vec::new();
        if let Some(dir) = &self.libtorch {
            read_dirs.push(dir.canonicalize().unwrap_or_else(|_| dir.clone()));
        }
        read_dirs.extend(Policy::system_read_dirs());
        let mut read_files: Vec<PathBuf> =
            model.map(|m| m.canonicalize().unwrap_or_else(|_| m.to_path_buf())).into_iter().collect();
        read_files.extend(Policy::system_read_files());
        let memory_bytes = match self.memory_bytes {
            0 if self.probe.address_space > 0 => {
                self.probe.address_space.saturating_add(MEMORY_HEADROOM).saturating_add(model_size.saturating_mul(4))
            }
            n => n,
        };
        Policy { mode: self.mode, read_dirs, read_files, memory_bytes, open_files: WORKER_OPEN_FILES }
    }

    /// Run `zoo-torch-worker probe`: confine a worker as a model's would be, and
    /// see what it can still do.
    #[allow(clippy::disallowed_methods, reason = "runs once at start-up, before the server accepts requests")]
    fn run_probe(&self) -> Result<Probe, String> {
        let dir = tempfile::Builder::new().prefix("zoo-sandbox-probe-").tempdir().map_err(|e| e.to_string())?;
        let secret = dir.path().join("secret");
        std::fs::write(&secret, b"zoo sandbox probe: this must not be readable").map_err(|e| e.to_string())?;
        let write_to = dir.path().join("written");
        let policy = serde_json::to_string(&self.policy(None, 0)).map_err(|e| e.to_string())?;
        let mut child = self
            .command(1)
            .arg("probe")
            .arg(policy)
            .arg(&secret)
            .arg(&write_to)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.worker.display()))?;
        let deadline = Instant::now() + PROBE_TIMEOUT;
        let status = loop {
            match child.try_wait().map_err(|e| e.to_string())? {
                Some(status) => break status,
                None if Instant::now() > deadline => {
                    let _ = child.kill();
                    return Err("the probe did not finish in time".into());
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        let output = child.wait_with_output().map_err(|e| e.to_string())?;
        if !status.success() {
            let err = String::from_utf8_lossy(&output.stderr);
            let mut msg = format!("the probe failed ({status}): {}", err.trim());
            if err.contains("error while loading shared libraries") {
                msg.push_str(
                    "; libtorch 2.13.0 is missing: install it with scripts/fetch-libtorch or set ZOO_LIBTORCH",
                );
            }
            return Err(msg);
        }
        let probe: Probe = serde_json::from_slice(&output.stdout)
            .map_err(|e| format!("the probe answered {:?}: {e}", String::from_utf8_lossy(&output.stdout)))?;
        if write_to.exists() {
            return Err("the probe created a file outside its sandbox".into());
        }
        Ok(probe)
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

    fn load(
        &self,
        model: &Path,
        signature: &Signature,
        limits: &RunLimits,
    ) -> Result<Box<dyn LoadedModel>, RuntimeError> {
        let args = signature
            .inputs
            .iter()
            .map(|s| Arg {
                name: s.name.clone(),
                ty: s.type_text.clone(),
                has_default: s.optional && !s.type_text.starts_with("Optional["),
            })
            .collect();
        #[allow(clippy::disallowed_methods, reason = "loading runs on a blocking thread")]
        let size = std::fs::metadata(model).map(|m| m.len()).unwrap_or(0);
        let spec = WorkerSpec {
            runtime: self.clone(),
            model: model.to_path_buf(),
            policy: self.policy(Some(model), size),
            args,
            limits: *limits,
        };
        let worker = Worker::start(&spec).map_err(load_err)?;
        Ok(Box::new(TorchModel { spec, worker: Some(worker) }))
    }
}

/// What it takes to (re)start a worker for one model.
struct WorkerSpec {
    runtime: TorchRuntime,
    model: PathBuf,
    policy: Policy,
    args: Vec<Arg>,
    limits: RunLimits,
}

/// A running worker process with its socket.
struct Worker {
    child: Child,
    reader: BufReader<UnixStream>,
    writer: BufWriter<UnixStream>,
    tail: Arc<Mutex<VecDeque<String>>>,
    /// Its working directory: empty, and removed with the worker.
    _scratch: tempfile::TempDir,
}

/// Why a reply did not come.
enum Wait {
    Protocol(ProtocolError),
    /// The request ran past its wall-clock or CPU-time limit.
    Overran(String),
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
        let scratch = tempfile::Builder::new()
            .prefix("zoo-torch-worker-")
            .tempdir()
            .map_err(|e| format!("cannot make the worker's working directory: {e}"))?;
        let mut child = rt
            .command(threads)
            .arg("serve")
            .current_dir(scratch.path())
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
        let mut worker = Worker { child, reader, writer: BufWriter::new(ours), tail, _scratch: scratch };
        let load = Request::Load {
            model: spec.model.display().to_string(),
            args: spec.args.clone(),
            threads,
            sandbox: spec.policy.clone(),
            max_output_bytes: spec.limits.max_output_bytes,
        };
        let reply = worker.send(&load, &[]).and_then(|()| {
            worker.reader.get_ref().set_read_timeout(Some(LOAD_TIMEOUT))?;
            zoo_torch::read_frame(&mut worker.reader, 0)
        });
        match reply {
            Ok((Reply::Loaded { stateful, libtorch, sandbox }, _)) => {
                if spec.policy.mode == Mode::Required && !sandbox.enforced() {
                    return Err(format!("the worker could not be confined: {}", sandbox.summary()));
                }
                tracing::debug!(model = %spec.model.display(), stateful, libtorch, sandbox = %sandbox.summary(),
                    "TorchScript worker ready");
                Ok(worker)
            }
            Ok((Reply::Failed { message, .. }, _)) => Err(format!("libtorch cannot load the module: {message}")),
            Ok(_) => Err("the worker answered load with something else".into()),
            Err(e) => Err(worker.died(&Wait::Protocol(e))),
        }
    }

    fn send(&mut self, req: &Request, parts: &[&[u8]]) -> Result<(), ProtocolError> {
        zoo_torch::write_frame(&mut self.writer, req, parts)
    }

    /// The reply to a run: its outputs at most `limits.max_output_bytes`, within
    /// `limits.timeout` of wall-clock time and of the worker's CPU time.
    fn receive(&mut self, limits: &RunLimits) -> Result<(Reply, Vec<u8>), Wait> {
        let started = Instant::now();
        let cpu_at_start = self.cpu_time();
        let io = |e: std::io::Error| Wait::Protocol(ProtocolError::Io(e));
        if self.reader.buffer().is_empty() {
            self.reader.get_ref().set_read_timeout(Some(CPU_CHECK_EVERY)).map_err(io)?;
            loop {
                // Waits for the reply's first bytes (kept in the buffer) at most
                // CPU_CHECK_EVERY; a closed socket gives an empty buffer.
                match self.reader.fill_buf() {
                    Ok(_) => break,
                    Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                    Err(e) => return Err(io(e)),
                }
                if started.elapsed() > limits.timeout {
                    return Err(Wait::Overran(format!(
                        "the model ran longer than this version's limit of {} s and its worker was stopped",
                        limits.timeout.as_secs_f64()
                    )));
                }
                if let (Some(then), Some(now)) = (cpu_at_start, self.cpu_time())
                    && now.saturating_sub(then) > limits.timeout
                {
                    return Err(Wait::Overran(format!(
                        "the model used more than this version's limit of {} s of CPU time and its worker was stopped",
                        limits.timeout.as_secs_f64()
                    )));
                }
            }
        }
        // The reply has started: the rest arrives as fast as the worker writes it.
        let rest = limits.timeout.saturating_sub(started.elapsed()).max(Duration::from_secs(1));
        self.reader.get_ref().set_read_timeout(Some(rest)).map_err(io)?;
        zoo_torch::read_frame(&mut self.reader, limits.max_output_bytes).map_err(Wait::Protocol)
    }

    /// CPU time the worker has used (user + system), from `/proc/<pid>/stat`.
    fn cpu_time(&self) -> Option<Duration> {
        #[allow(clippy::disallowed_methods, reason = "runs on the model's inference thread")]
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        // Fields after the command name (in parentheses): state is the 3rd field of
        // the line, utime and stime the 14th and 15th.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        // NOTE: /proc counts in USER_HZ, which Linux fixes at 100 on every architecture.
        Some(Duration::from_millis(ticks * 10))
    }

    /// The process has exited (it was killed, or crashed while idle).
    fn exited(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_some()
    }

    /// Why the worker stopped answering, with the last lines it printed; the
    /// worker is stopped.
    fn died(&mut self, why: &Wait) -> String {
        let _ = self.child.kill();
        let status = self.child.wait().ok();
        // Give the pipe readers a moment to collect the last words.
        std::thread::sleep(Duration::from_millis(50));
        let tail: Vec<String> = self.tail.lock().map(|t| t.iter().cloned().collect()).unwrap_or_default();
        let mut msg = match why {
            Wait::Overran(m) => return m.clone(),
            Wait::Protocol(ProtocolError::TooLarge { len, limit }) => {
                return format!(
                    "the model's output is {len} bytes, more than this version's output limit of {limit} bytes"
                );
            }
            Wait::Protocol(ProtocolError::Io(io))
                if matches!(io.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
            {
                "the TorchScript worker did not answer in time and was stopped".to_string()
            }
            Wait::Protocol(_) => format!(
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
        match worker.receive(&self.spec.limits) {
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
            Err(wait) => {
                let why = worker.died(&wait);
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
        let settings = TorchSettings {
            worker: Some(missing),
            libtorch: None,
            data_dir: dir.path().to_path_buf(),
            threads: 1,
            sandbox: Mode::Required,
            memory_bytes: 0,
        };
        let err = TorchRuntime::find(&settings).unwrap_err();
        assert!(err.contains("--features zoo-torch/torch") && err.contains("scripts/fetch-libtorch"), "{err}");
    }
}
