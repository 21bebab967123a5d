//! zoo's serving benchmark tools (run by scripts/bench; never a test):
//!
//!   zoo-bench load --url URL --key KEY --path /v1/models/M/predict (--body JSON | --texts)
//!                  --concurrency C [--seconds S] [--warmup S] [--label TEXT]
//!       a closed-loop load generator: C clients, each one request after another
//!       (`--texts`: `{"inputs": text}` cycling through the texts `inproc` uses),
//!       for S seconds after a warm-up; prints one CSV row: label, concurrency,
//!       requests, errors, throughput/s, p50 ms, p99 ms, mean and max batch rows
//!       (from x-batch-size).
//!
//!   zoo-bench inproc --model PATH [--bundle DIR] --ort LIB --batch B [--seconds S] [--label TEXT]
//!       the same model called in-process through ONNX Runtime (no HTTP, no queue),
//!       B rows per call (texts through the bundle's tokenizer); prints label,
//!       batch, calls, throughput rows/s, p50 ms, p99 ms per call.
//!
//!   zoo-bench soak --urls URL1,URL2 --key KEY --path P --body JSON --rate R
//!                  --artifact FILE --artifact-body JSON --pids P1,P2 --out CSV
//!                  [--seconds S] [--deploy-every S] [--max-rss-growth-mib M]
//!       a bounded soak of replicas sharing a registry (see soak.rs).
//!
//!   zoo-bench make-mlp OUT.onnx
//!       writes the benchmark's tensor model: an fp32 MLP 256 -> 1024 -> 1024 -> 10.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The in-process floor runs without a server's limits.
const INPROC_LIMITS: zoo_server::runtime::RunLimits =
    zoo_server::runtime::RunLimits { timeout: std::time::Duration::from_secs(3600), max_output_bytes: u64::MAX };

use anyhow::Context;
use zoo_api::Task;
use zoo_formats::build;
use zoo_server::pipeline::text::{Reads, TextPipeline};
use zoo_server::runtime::ort::OrtRuntime;
use zoo_server::runtime::{Runtime, Tensor};

mod soak;

const TEXTS: [&str; 6] = [
    "This movie was absolutely wonderful!",
    "A dull, lifeless and boring film.",
    "good job",
    "I hate waiting in line.",
    "The service was quick and the staff were friendly, I would come back any time.",
    "Not bad at all",
];

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn need(args: &[String], name: &str) -> anyhow::Result<String> {
    flag(args, name).with_context(|| format!("{name} is required"))
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("load") => load(&args).await,
        Some("inproc") => inproc(&args),
        Some("soak") => soak::soak(&args).await,
        Some("make-mlp") => {
            let out = args.get(1).context("make-mlp OUT.onnx")?;
            let (i, h, o) = (256usize, 1024usize, 10usize);
            let w =
                |n: usize, s: f32| (0..n).map(|k| (((k * 7919) % 1000) as f32 / 1000.0 - 0.5) * s).collect::<Vec<_>>();
            // Two hidden layers: x W1 + b1 -> relu -> W2 -> relu -> W3.
            let m = build::mlp3(
                &w(i * h, 0.1),
                &w(h, 0.01),
                &w(h * h, 0.05),
                &w(h, 0.01),
                &w(h * o, 0.1),
                &w(o, 0.01),
                i as i64,
                h as i64,
                o as i64,
            );
            std::fs::write(out, build::encode(&m))?;
            Ok(())
        }
        _ => anyhow::bail!("usage: zoo-bench load|inproc|soak|make-mlp ... (see the source)"),
    }
}

async fn load(args: &[String]) -> anyhow::Result<()> {
    let url = need(args, "--url")?;
    let key = need(args, "--key")?;
    let path = need(args, "--path")?;
    // `--texts`: each client cycles through TEXTS (as `inproc` does), one text per
    // request; else every request sends `--body`.
    let bodies: Vec<Vec<u8>> = if args.iter().any(|a| a == "--texts") {
        TEXTS.iter().map(|t| serde_json::to_vec(&serde_json::json!({ "inputs": t }))).collect::<Result<_, _>>()?
    } else {
        let body: serde_json::Value = serde_json::from_str(&need(args, "--body")?)?;
        vec![serde_json::to_vec(&body)?]
    };
    let concurrency: usize = need(args, "--concurrency")?.parse()?;
    let seconds: f64 = flag(args, "--seconds").map_or(Ok(10.0), |s| s.parse())?;
    let warmup: f64 = flag(args, "--warmup").map_or(Ok(2.0), |s| s.parse())?;
    let label = flag(args, "--label").unwrap_or_default();
    let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build()?;
    let bodies = Arc::new(bodies);
    let start = Instant::now();
    let (warm_end, end) = (start + Duration::from_secs_f64(warmup), start + Duration::from_secs_f64(warmup + seconds));
    let tasks: Vec<_> = (0..concurrency)
        .map(|k| {
            let (client, bodies, url, key) = (client.clone(), bodies.clone(), format!("{url}{path}"), key.clone());
            tokio::spawn(async move {
                let (mut lat, mut errors, mut batches) = (Vec::new(), 0usize, Vec::<usize>::new());
                for i in k.. {
                    let body = &bodies[i % bodies.len()];
                    let t = Instant::now();
                    if t >= end {
                        break;
                    }
                    let r = client
                        .post(&url)
                        .bearer_auth(&key)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await;
                    let ok = match r {
                        Ok(r) if r.status().is_success() => {
                            // Servers other than zoo do not say how they batched.
                            let b = r
                                .headers()
                                .get("x-batch-size")
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| v.parse().ok())
                                .unwrap_or(0);
                            r.bytes().await.ok().map(|_| b)
                        }
                        Ok(r) => {
                            let _ = r.bytes().await;
                            None
                        }
                        Err(_) => None,
                    };
                    if t >= warm_end {
                        match ok {
                            Some(b) => {
                                lat.push(t.elapsed());
                                batches.push(b);
                            }
                            None => errors += 1,
                        }
                    }
                }
                (lat, errors, batches)
            })
        })
        .collect();
    let (mut lat, mut errors, mut batches) = (Vec::new(), 0, Vec::<usize>::new());
    for t in tasks {
        let (l, e, b) = t.await?;
        lat.extend(l);
        errors += e;
        batches.extend(b);
    }
    lat.sort();
    let mean_batch = batches.iter().sum::<usize>() as f64 / batches.len().max(1) as f64;
    println!(
        "{label},{concurrency},{},{errors},{:.1},{:.3},{:.3},{:.2},{}",
        lat.len(),
        lat.len() as f64 / seconds,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        mean_batch,
        batches.iter().max().copied().unwrap_or(0)
    );
    Ok(())
}

/// One in-process call of the model on a batch (the argument varies the texts).
type Call = Box<dyn Fn(&mut Box<dyn zoo_server::runtime::LoadedModel>, usize) -> anyhow::Result<()>>;

fn inproc(args: &[String]) -> anyhow::Result<()> {
    let model_path = PathBuf::from(need(args, "--model")?);
    let ort = PathBuf::from(need(args, "--ort")?);
    let batch: usize = need(args, "--batch")?.parse()?;
    let seconds: f64 = flag(args, "--seconds").map_or(Ok(5.0), |s| s.parse())?;
    let label = flag(args, "--label").unwrap_or_default();
    let limits = zoo_formats::Limits::default();
    let rt = OrtRuntime::init(&ort, 0).map_err(anyhow::Error::msg)?;
    let (mut model, run): (_, Call) = match flag(args, "--bundle") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            let files: Vec<zoo_api::BundleFile> = std::fs::read_dir(&dir)?
                .filter_map(|e| e.ok())
                .map(|e| zoo_api::BundleFile { path: e.file_name().to_string_lossy().into_owned(), size: 0 })
                .collect();
            let artifact = zoo_formats::inspect_dir(&dir, files, &limits)?;
            let text = artifact.signature.text.clone().context("not a text bundle")?;
            let classifier = artifact.task == Task::TextClassification;
            let model = rt.load(&artifact.model_path, &artifact.signature, &INPROC_LIMITS)?;
            let reads = if classifier { Reads::Labels } else { Reads::Hidden };
            let pipeline = TextPipeline::load(&dir, &artifact.signature, text, reads)?;
            // Tokenizer, runtime and post-processing, as zoo runs them.
            let f = move |m: &mut Box<dyn zoo_server::runtime::LoadedModel>, i: usize| -> anyhow::Result<()> {
                let texts: Vec<String> = (0..batch).map(|k| TEXTS[(i + k) % TEXTS.len()].to_string()).collect();
                let enc = pipeline.encode(texts, usize::MAX)?;
                let out = m.run(enc.inputs)?;
                if classifier {
                    pipeline.classify(&out, None)?;
                } else {
                    pipeline.embed(&out, &enc.mask, true)?;
                }
                Ok(())
            };
            (model, Box::new(f))
        }
        None => {
            let bytes = prost::bytes::Bytes::from(std::fs::read(&model_path)?);
            let signature = zoo_formats::onnx::inspect(bytes, None, &limits)?;
            let model = rt.load(&model_path, &signature, &INPROC_LIMITS)?;
            let input = signature.inputs[0].clone();
            let width = input.shape.as_ref().and_then(|s| s.get(1)).and_then(|d| d.fixed()).unwrap_or(1) as usize;
            let f = move |m: &mut Box<dyn zoo_server::runtime::LoadedModel>, _: usize| -> anyhow::Result<()> {
                let x = ndarray::ArrayD::<f32>::from_elem(ndarray::IxDyn(&[batch, width]), 0.5);
                m.run(vec![(input.name.clone(), Tensor::F32(x))])?;
                Ok(())
            };
            (model, Box::new(f))
        }
    };
    for i in 0..20 {
        run(&mut model, i)?;
    }
    let (start, mut lat, mut i) = (Instant::now(), Vec::new(), 0);
    while start.elapsed().as_secs_f64() < seconds {
        let t = Instant::now();
        run(&mut model, i)?;
        lat.push(t.elapsed());
        i += 1;
    }
    let took = start.elapsed().as_secs_f64();
    lat.sort();
    println!(
        "{label},{batch},{},{:.1},{:.3},{:.3}",
        lat.len(),
        (lat.len() * batch) as f64 / took,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
    Ok(())
}
