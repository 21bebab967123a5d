//! Predict latency of a text model over HTTP against the same model called
//! in-process through the runtime, on the same machine in one run.
//!
//! zoo-bench --bundle DIR --ort LIB --url URL --key KEY --model NAME [--n 500]
//!
//! Prints p50/p90/p99 for both and their ratio; run by scripts/bench.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use zoo_api::{PredictRequest, Task};
use zoo_server::pipeline::text::TextPipeline;
use zoo_server::runtime::Runtime;
use zoo_server::runtime::ort::OrtRuntime;

const TEXTS: [&str; 4] = [
    "This movie was absolutely wonderful!",
    "A dull, lifeless and boring film.",
    "good job",
    "I hate waiting in line.",
];

struct Args {
    bundle: PathBuf,
    ort: PathBuf,
    url: String,
    key: String,
    model: String,
    n: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut it = std::env::args().skip(1);
    let (mut bundle, mut ort, mut url, mut key, mut model, mut n) = (None, None, None, None, None, 500);
    while let Some(a) = it.next() {
        let mut v = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--bundle" => bundle = Some(PathBuf::from(v()?)),
            "--ort" => ort = Some(PathBuf::from(v()?)),
            "--url" => url = Some(v()?),
            "--key" => key = Some(v()?),
            "--model" => model = Some(v()?),
            "--n" => n = v()?.parse()?,
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    Ok(Args {
        bundle: bundle.context("--bundle")?,
        ort: ort.context("--ort")?,
        url: url.context("--url")?,
        key: key.context("--key")?,
        model: model.context("--model")?,
        n,
    })
}

fn percentiles(mut d: Vec<Duration>) -> [f64; 3] {
    d.sort();
    let at = |p: f64| d[((d.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0;
    [at(0.5), at(0.9), at(0.99)]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let limits = zoo_formats::Limits::default();
    let files: Vec<zoo_api::BundleFile> = std::fs::read_dir(&a.bundle)?
        .filter_map(|e| e.ok())
        .map(|e| zoo_api::BundleFile { path: e.file_name().to_string_lossy().into_owned(), size: 0 })
        .collect();
    let artifact = zoo_formats::inspect_dir(&a.bundle, files, &limits)?;
    let text = artifact.signature.text.clone().context("not a text bundle")?;
    let classifier = artifact.task == Task::TextClassification;

    // In-process: tokenizer + ONNX Runtime + post-processing, no HTTP, no queue.
    let rt = OrtRuntime::init(&a.ort, 0).map_err(anyhow::Error::msg)?;
    let mut model = rt.load(&artifact.model_path, &artifact.signature)?;
    let pipeline = TextPipeline::load(&a.bundle, &artifact.signature, text, classifier)?;
    let mut inproc = Vec::with_capacity(a.n);
    for i in 0..a.n + 50 {
        let t = Instant::now();
        let enc = pipeline.encode(&[TEXTS[i % TEXTS.len()].to_string()], usize::MAX)?;
        let out = model.run(enc.inputs)?;
        if classifier {
            pipeline.classify(&out, None)?;
        } else {
            pipeline.embed(&out, &enc.mask, true)?;
        }
        if i >= 50 {
            inproc.push(t.elapsed());
        }
    }

    // Over HTTP: one client, keep-alive, one request at a time.
    let client = zoo_client::Client::new(&a.url, Some(a.key.clone()))?;
    let mut http = Vec::with_capacity(a.n);
    for i in 0..a.n + 50 {
        let req = PredictRequest {
            inputs: serde_json::json!(TEXTS[i % TEXTS.len()]),
            top_k: None,
            normalize: None,
            ..Default::default()
        };
        let t = Instant::now();
        client.predict(&a.model, None, &req).await?;
        if i >= 50 {
            http.push(t.elapsed());
        }
    }

    let [ip50, ip90, ip99] = percentiles(inproc);
    let [hp50, hp90, hp99] = percentiles(http);
    println!("requests: {} sequential, after 50 warm-up", a.n);
    println!("{:<22} {:>9} {:>9} {:>9}", "", "p50 ms", "p90 ms", "p99 ms");
    println!("{:<22} {ip50:>9.3} {ip90:>9.3} {ip99:>9.3}", "in-process (ort)");
    println!("{:<22} {hp50:>9.3} {hp90:>9.3} {hp99:>9.3}", "HTTP predict");
    println!("HTTP / in-process p50: {:.2}x (+{:.3} ms)", hp50 / ip50, hp50 - ip50);
    Ok(())
}
