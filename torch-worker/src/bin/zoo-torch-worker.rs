//! `zoo-torch-worker`: runs one TorchScript module with libtorch for a zoo server.
//!
//! `zoo-torch-worker serve` (what the server starts) talks the `zoo_torch` protocol
//! on the Unix socket it gets as stdin: one `load`, then `run` requests until the
//! socket closes. Between reading `load` and opening the model it confines itself
//! (`zoo_torch::sandbox`). `probe POLICY SECRET WRITE_TO` applies a sandbox policy
//! (JSON) to itself, tries to read `SECRET`, create `WRITE_TO`, open a socket and
//! start a program, runs libtorch, and prints what happened as JSON (the server
//! runs it once at start). `--version` prints the libtorch version it is built
//! for, and `example-mlp OUT` writes a small TorchScript MLP traced with libtorch
//! (for tests and demos; its weights are given by `example_mlp_weights`).

use std::io::{BufReader, BufWriter};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;

use tch::{CModule, Device, IValue, Kind, Tensor};
use zoo_torch::{
    Arg, DType, FailureKind, LIBTORCH_VERSION, MAX_PAYLOAD, ProtocolError, Reply, Request, Scalar, WireTensor, pack,
    read_frame, sandbox, unpack, write_frame,
};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result =
        match args.first().map(String::as_str) {
            Some("--version") => {
                // Touch libtorch so that a missing or broken library shows here.
                let t = Tensor::from_slice(&[1.0f32, 2.0]).sum(Kind::Float);
                println!(
                    "zoo-torch-worker {} libtorch {LIBTORCH_VERSION} ({})",
                    env!("CARGO_PKG_VERSION"),
                    t.double_value(&[])
                );
                Ok(())
            }
            Some("example-mlp") if args.len() == 2 => example_mlp(&args[1]),
            Some("probe") if args.len() == 4 => probe(&args[1], &args[2], &args[3]),
            Some("serve") => serve(),
            _ => Err("usage: zoo-torch-worker serve | probe POLICY SECRET WRITE_TO | --version | example-mlp OUT.pt"
                .to_string()),
        };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zoo-torch-worker: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve() -> Result<(), String> {
    let fd = std::io::stdin().as_fd().try_clone_to_owned().map_err(|e| format!("stdin: {e}"))?;
    let stream = UnixStream::from(fd);
    let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
    let mut writer = BufWriter::new(stream);
    let send = |w: &mut BufWriter<UnixStream>, reply: &Reply, parts: &[&[u8]]| {
        write_frame(w, reply, parts).map_err(|e| format!("cannot answer the server: {e}"))
    };
    let (first, _): (Request, Vec<u8>) = read_frame(&mut reader, MAX_PAYLOAD).map_err(|e| e.to_string())?;
    let Request::Load { model, args, threads, sandbox: policy, max_output_bytes } = first else {
        return Err("the first request must be load".into());
    };
    // Confined before the model is opened: nothing in it runs outside the sandbox.
    use std::os::fd::AsRawFd;
    let keep = [reader.get_ref().as_raw_fd(), writer.get_ref().as_raw_fd()];
    let report = match sandbox::apply(&policy, &keep) {
        Ok(r) => r,
        Err(e) => {
            let reply = Reply::Failed { kind: FailureKind::Load, message: e };
            return send(&mut writer, &reply, &[]);
        }
    };
    tch::set_num_threads(threads.max(1) as i32);
    tch::set_num_interop_threads(1);
    let module = match CModule::load_on_device(&model, Device::Cpu).and_then(|mut m| m.f_set_eval().map(|_| m)) {
        Ok(m) => m,
        Err(e) => {
            let reply = Reply::Failed { kind: FailureKind::Load, message: short(&e.to_string()) };
            return send(&mut writer, &reply, &[]);
        }
    };
    // A module with reset_states() (streaming models such as Silero VAD) keeps
    // state between calls; resetting before each request keeps requests independent.
    let stateful = module.method_is::<IValue>("reset_states", &[]).is_ok();
    send(&mut writer, &Reply::Loaded { stateful, libtorch: LIBTORCH_VERSION.into(), sandbox: report }, &[])?;
    loop {
        let (request, payload): (Request, Vec<u8>) = match read_frame(&mut reader, MAX_PAYLOAD) {
            Ok(r) => r,
            Err(ProtocolError::Closed) => return Ok(()),
            Err(e) => return Err(e.to_string()),
        };
        let Request::Run { inputs } = request else {
            return Err("only run requests may follow load".into());
        };
        match run(&module, stateful, &args, &inputs, &payload, max_output_bytes) {
            Ok(outputs) => {
                let (headers, parts) = pack(outputs.iter().map(|(_, t)| Some(t)));
                let named =
                    outputs.iter().zip(headers).map(|((n, _), h)| (n.clone(), h.expect("all present"))).collect();
                send(&mut writer, &Reply::Outputs { outputs: named }, &parts)?;
            }
            Err((kind, message)) => send(&mut writer, &Reply::Failed { kind, message }, &[])?,
        }
    }
}

type Failure = (FailureKind, String);

fn input_err(m: impl Into<String>) -> Failure {
    (FailureKind::Input, m.into())
}

/// The first lines of a libtorch error: its message, without the C++ backtrace.
fn short(message: &str) -> String {
    let lines: Vec<&str> = message.lines().filter(|l| !l.trim().is_empty()).collect();
    let keep = lines
        .iter()
        .position(|l| l.contains("Exception raised from") || l.starts_with("frame #"))
        .unwrap_or(lines.len());
    let text = lines[..keep.min(12)].join("\n");
    if text.len() > 2000 { format!("{}...", &text[..text.floor_char_boundary(2000)]) } else { text }
}

/// A failed forward: an exception the model's own code raised (`raise
/// ValueError(...)` in TorchScript, which reaches here as `builtins.ValueError: ...`)
/// is how a model refuses an input, so it is the client's error; anything else is
/// the model failing. The message is the exception's line, not the traceback.
fn classify(message: &str) -> Failure {
    let lines: Vec<&str> = message.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if let Some(raised) = lines.iter().rev().find_map(|l| l.strip_prefix("builtins.")) {
        return (FailureKind::Input, format!("the model refused the input: {raised}"));
    }
    let error_line = lines
        .iter()
        .rev()
        .find(|l| l.split_once(": ").is_some_and(|(head, _)| head.ends_with("Error") && !head.contains(' ')));
    (FailureKind::Run, error_line.map_or_else(|| short(message), |l| l.to_string()))
}

/// Apply a sandbox policy to this process, try to leave it, run libtorch, and
/// print what happened (`sandbox::Probe`) as JSON.
fn probe(policy: &str, secret: &str, write_to: &str) -> Result<(), String> {
    let policy: sandbox::Policy = serde_json::from_str(policy).map_err(|e| format!("policy: {e}"))?;
    let address_space = sandbox::address_space();
    let report = sandbox::apply(&policy, &[])?;
    let escapes = sandbox::try_escapes(std::path::Path::new(secret), std::path::Path::new(write_to));
    let _no_grad = tch::no_grad_guard();
    // A product of two 512 x 512 matrices of ones, on libtorch's threads: what a
    // small model does, within the sandbox's limits.
    let libtorch = Tensor::f_ones([512, 512], (Kind::Float, Device::Cpu))
        .and_then(|a| a.f_matmul(&a))
        .and_then(|p| p.f_double_value(&[7, 7]))
        .is_ok_and(|v| v == 512.0);
    let out = sandbox::Probe { report, escapes, libtorch, address_space };
    println!("{}", serde_json::to_string(&out).map_err(|e| e.to_string())?);
    Ok(())
}

fn run(
    module: &CModule,
    stateful: bool,
    args: &[Arg],
    inputs: &[Option<zoo_torch::TensorHeader>],
    payload: &[u8],
    max_output_bytes: u64,
) -> Result<Vec<(String, WireTensor)>, Failure> {
    let _no_grad = tch::no_grad_guard();
    if inputs.len() != args.len() {
        return Err(input_err(format!("forward takes {} arguments, got {}", args.len(), inputs.len())));
    }
    // Trailing arguments left out that have a default take it (TorchScript fills
    // them in); an Optional left out is None.
    let mut given = inputs.len();
    while given > 0 && inputs[given - 1].is_none() && args[given - 1].has_default {
        given -= 1;
    }
    let mut values = Vec::with_capacity(given);
    for (arg, h) in args.iter().zip(inputs).take(given) {
        let t = h.as_ref().map(|h| unpack(h, payload)).transpose().map_err(|e| input_err(e.to_string()))?;
        values.push(to_ivalue(arg, t)?);
    }
    if stateful {
        module.method_is::<IValue>("reset_states", &[]).map_err(|e| (FailureKind::Run, short(&e.to_string())))?;
    }
    let out = module.forward_is(&values).map_err(|e| classify(&e.to_string()))?;
    // The outputs' size is checked before they are copied out of libtorch.
    let size = output_bytes(&out);
    if size > max_output_bytes {
        return Err((
            FailureKind::Run,
            format!(
                "the model's output is {size} bytes, more than this version's output limit of {max_output_bytes} bytes"
            ),
        ));
    }
    let mut outputs = Vec::new();
    match out {
        IValue::Tuple(items) => {
            for (i, v) in items.into_iter().enumerate() {
                flatten(v, format!("output_{i}"), &mut outputs)?;
            }
        }
        IValue::GenericDict(_) => flatten(out, String::new(), &mut outputs)?,
        v => flatten(v, "output_0".into(), &mut outputs)?,
    }
    Ok(outputs)
}

/// Bytes of every tensor in an output value (lists, tuples and dicts included).
fn output_bytes(v: &IValue) -> u64 {
    match v {
        IValue::Tensor(t) => (t.numel() as u64).saturating_mul(t.kind().elt_size_in_bytes() as u64),
        IValue::TensorList(ts) => {
            ts.iter().map(|t| (t.numel() as u64).saturating_mul(t.kind().elt_size_in_bytes() as u64)).sum()
        }
        IValue::IntList(v) => 8 * v.len() as u64,
        IValue::DoubleList(v) => 8 * v.len() as u64,
        IValue::BoolList(v) => v.len() as u64,
        IValue::Tuple(items) | IValue::GenericList(items) => items.iter().map(output_bytes).sum(),
        IValue::GenericDict(pairs) => pairs.iter().map(|(_, v)| output_bytes(v)).sum(),
        _ => 8,
    }
}

fn kind_of(d: DType) -> Kind {
    match d {
        DType::F32 => Kind::Float,
        DType::F64 => Kind::Double,
        DType::I64 => Kind::Int64,
        DType::I32 => Kind::Int,
        DType::I16 => Kind::Int16,
        DType::I8 => Kind::Int8,
        DType::U8 => Kind::Uint8,
        DType::Bool => Kind::Bool,
    }
}

fn to_tensor(t: &WireTensor) -> Result<Tensor, Failure> {
    let shape: Vec<i64> = t.shape.iter().map(|d| *d as i64).collect();
    Tensor::f_from_data_size(&t.data, &shape, kind_of(t.dtype)).map_err(|e| input_err(short(&e.to_string())))
}

/// The value a `forward` argument of type `arg.ty` takes from a tensor.
fn to_ivalue(arg: &Arg, t: Option<WireTensor>) -> Result<IValue, Failure> {
    let (ty, optional) = match arg.ty.strip_prefix("Optional[").and_then(|r| r.strip_suffix(']')) {
        Some(inner) => (inner.trim(), true),
        None => (arg.ty.trim(), false),
    };
    let Some(t) = t else {
        return match (optional, arg.has_default) {
            (true, _) => Ok(IValue::None),
            (false, true) => Err(input_err(format!(
                "input '{}' may be left out only with every input after it; send it too",
                arg.name
            ))),
            (false, false) => Err(input_err(format!("missing input '{}' ({ty})", arg.name))),
        };
    };
    let scalar = || t.scalar().ok_or_else(|| input_err(format!("input '{}' ({ty}) must be a single value", arg.name)));
    let numbers = |t: &WireTensor| -> Result<Vec<f64>, Failure> {
        let tensor = to_tensor(t)?.f_to_kind(Kind::Double).map_err(|e| input_err(e.to_string()))?;
        Vec::<f64>::try_from(tensor.flatten(0, -1)).map_err(|e| input_err(e.to_string()))
    };
    Ok(match ty {
        "Tensor" => IValue::Tensor(to_tensor(&t)?),
        "int" => match scalar()? {
            Scalar::Int(i) => IValue::Int(i),
            _ => return Err(input_err(format!("input '{}' must be an integer", arg.name))),
        },
        "float" => match scalar()? {
            Scalar::Float(f) => IValue::Double(f),
            Scalar::Int(i) => IValue::Double(i as f64),
            Scalar::Bool(_) => return Err(input_err(format!("input '{}' must be a number", arg.name))),
        },
        "bool" => match scalar()? {
            Scalar::Bool(b) => IValue::Bool(b),
            _ => return Err(input_err(format!("input '{}' must be true or false", arg.name))),
        },
        "List[int]" if matches!(t.dtype, DType::I64 | DType::I32 | DType::I16 | DType::I8 | DType::U8) => {
            IValue::IntList(numbers(&t)?.into_iter().map(|f| f as i64).collect())
        }
        "List[float]" => IValue::DoubleList(numbers(&t)?),
        "List[Tensor]" => {
            let whole = to_tensor(&t)?;
            IValue::TensorList(whole.f_unbind(0).map_err(|e| input_err(e.to_string()))?)
        }
        other => {
            return Err(input_err(format!(
                "input '{}' has TorchScript type {other}, which zoo cannot build from a tensor",
                arg.name
            )));
        }
    })
}

fn to_wire(t: &Tensor) -> Result<WireTensor, Failure> {
    let fail = |e: tch::TchError| (FailureKind::Run, short(&e.to_string()));
    let mut t = t.f_detach().map_err(fail)?;
    let dtype = match t.kind() {
        Kind::Float => DType::F32,
        Kind::Double => DType::F64,
        Kind::Half | Kind::BFloat16 => {
            t = t.f_to_kind(Kind::Float).map_err(fail)?;
            DType::F32
        }
        Kind::Int64 => DType::I64,
        Kind::Int => DType::I32,
        Kind::Int16 => DType::I16,
        Kind::Int8 => DType::I8,
        Kind::Uint8 => DType::U8,
        Kind::Bool => DType::Bool,
        other => {
            return Err((FailureKind::Run, format!("the model returned a {other:?} tensor, which zoo cannot send")));
        }
    };
    let t = t.f_contiguous().map_err(fail)?;
    let numel = t.numel();
    let mut data = vec![0u8; numel * dtype.size()];
    t.f_copy_data_u8(&mut data, numel).map_err(fail)?;
    Ok(WireTensor { dtype, shape: t.size().iter().map(|d| *d as u64).collect(), data })
}

fn scalar_tensor<T: tch::kind::Element>(v: T) -> Tensor {
    Tensor::from_slice(&[v]).reshape([] as [i64; 0])
}

/// Outputs as named tensors: tuples and lists by index (`output_1_0`), dicts by key.
fn flatten(v: IValue, name: String, out: &mut Vec<(String, WireTensor)>) -> Result<(), Failure> {
    let join = |i: usize| if name.is_empty() { format!("output_{i}") } else { format!("{name}_{i}") };
    match v {
        IValue::None => {}
        IValue::Tensor(t) => out.push((name, to_wire(&t)?)),
        IValue::Int(i) => out.push((name, to_wire(&scalar_tensor(i))?)),
        IValue::Double(f) => out.push((name, to_wire(&scalar_tensor(f))?)),
        IValue::Bool(b) => out.push((name, to_wire(&scalar_tensor(b))?)),
        IValue::IntList(v) => out.push((name, to_wire(&Tensor::from_slice(&v))?)),
        IValue::DoubleList(v) => out.push((name, to_wire(&Tensor::from_slice(&v))?)),
        IValue::BoolList(v) => out.push((name, to_wire(&Tensor::from_slice(&v))?)),
        IValue::TensorList(ts) => {
            for (i, t) in ts.iter().enumerate() {
                out.push((join(i), to_wire(t)?));
            }
        }
        IValue::Tuple(items) | IValue::GenericList(items) => {
            for (i, item) in items.into_iter().enumerate() {
                flatten(item, join(i), out)?;
            }
        }
        IValue::GenericDict(pairs) => {
            for (k, v) in pairs {
                let IValue::String(key) = k else {
                    return Err((FailureKind::Run, "the model returned a dict whose keys are not strings".into()));
                };
                flatten(v, if name.is_empty() { key } else { format!("{name}.{key}") }, out)?;
            }
        }
        _ => {
            return Err((
                FailureKind::Run,
                format!("output '{name}' is not a tensor or a number, which zoo cannot send"),
            ));
        }
    }
    Ok(())
}

fn example_mlp(out: &str) -> Result<(), String> {
    let (w1, b1, w2, b2) = zoo_torch::example_mlp_weights();
    let w1 = Tensor::from_slice(&w1).reshape([8, 4]);
    let b1 = Tensor::from_slice(&b1);
    let w2 = Tensor::from_slice(&w2).reshape([3, 8]);
    let b2 = Tensor::from_slice(&b2);
    let x = Tensor::zeros([1, 4], (Kind::Float, Device::Cpu));
    let mut f = |xs: &[Tensor]| vec![xs[0].linear(&w1, Some(&b1)).relu().linear(&w2, Some(&b2))];
    let module = CModule::create_by_tracing("ExampleMLP", "forward", &[x], &mut f).map_err(|e| e.to_string())?;
    module.save(out).map_err(|e| e.to_string())
}
