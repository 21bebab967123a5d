//! Upload throughput of a large artifact to S3 through zoo (`zoo deploy`: pack,
//! hash, upload, validate, multipart to S3, load) against a plain aws-sdk-s3
//! multipart upload of the same bytes to the same server, in one run; and the zoo
//! server's peak RSS.
//!
//! zoo-upload-bench --zoo BIN --url URL --key KEY --pid SERVER_PID --bucket B [--mib 1024]
//! (S3 endpoint and credentials from the standard AWS variables.)

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use aws_sdk_s3::config::RequestChecksumCalculation;
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};

fn vm_hwm_mib(pid: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmHWM")?;
    Ok(kib / 1024)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut zoo, mut url, mut key, mut pid, mut bucket, mut mib) = (None, None, None, None, None, 1024u64);
    while let Some(a) = args.next() {
        let mut v = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--zoo" => zoo = Some(PathBuf::from(v()?)),
            "--url" => url = Some(v()?),
            "--key" => key = Some(v()?),
            "--pid" => pid = Some(v()?),
            "--bucket" => bucket = Some(v()?),
            "--mib" => mib = v()?.parse()?,
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let (zoo, url, key, pid, bucket) = (
        zoo.context("--zoo")?,
        url.context("--url")?,
        key.context("--key")?,
        pid.context("--pid")?,
        bucket.context("--bucket")?,
    );
    let tmp = tempfile::tempdir()?;
    let size = mib * 1024 * 1024;
    let bundle = zoo_tests::fixtures::large_bundle(tmp.path(), size);
    let before = vm_hwm_mib(&pid)?;

    let t = Instant::now();
    let out = std::process::Command::new(&zoo)
        .args(["deploy", bundle.to_str().context("path")?, "--name", "large", "-o", "json"])
        .env("ZOO_URL", &url)
        .env("ZOO_API_KEY", &key)
        .output()?;
    anyhow::ensure!(out.status.success(), "zoo deploy failed: {}", String::from_utf8_lossy(&out.stderr));
    let zoo_secs = t.elapsed().as_secs_f64();
    let peak = vm_hwm_mib(&pid)?;

    // The same bytes with aws-sdk-s3 directly, each part read from the file as it
    // goes: parts one after another (16 MiB), and parts four at a time (8 MiB),
    // as zoo sends them.
    let sdk = aws_config::load_from_env().await;
    let conf = aws_sdk_s3::config::Builder::from(&sdk)
        .force_path_style(true)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .build();
    let s3 = aws_sdk_s3::Client::from_conf(conf);
    let file = bundle.join("weights.bin");
    let sequential = sdk_upload(&s3, &bucket, &file, size, 16 << 20, 1).await?;
    let concurrent = sdk_upload(&s3, &bucket, &file, size, 8 << 20, 4).await?;

    let mb = size as f64 / 1024.0 / 1024.0;
    println!("artifact: {mib} MiB bundle (model.onnx + weights.bin)");
    let row = |what: &str, secs: f64| println!("{what:<52} {secs:>8.2} s {:>8.1} MiB/s", mb / secs);
    row("zoo deploy (pack+hash+upload+validate+S3+load)", zoo_secs);
    row("plain aws-sdk-s3 multipart, 16 MiB parts in turn", sequential);
    row("plain aws-sdk-s3 multipart, 8 MiB parts 4 at a time", concurrent);
    println!("zoo / plain SDK, parts in turn:    {:.2}x", sequential / zoo_secs);
    println!("zoo / plain SDK, parts 4 at a time: {:.2}x", concurrent / zoo_secs);
    println!("zoo server peak RSS (VmHWM): {before} MiB before, {peak} MiB after");
    Ok(())
}

/// Seconds for a multipart upload of `file` with `in_flight` parts at once.
async fn sdk_upload(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    file: &std::path::Path,
    size: u64,
    part: u64,
    in_flight: usize,
) -> anyhow::Result<f64> {
    let k = "plain-sdk-upload";
    let t = Instant::now();
    let up = s3.create_multipart_upload().bucket(bucket).key(k).send().await?;
    let id = up.upload_id().context("upload id")?.to_string();
    let mut tasks = tokio::task::JoinSet::new();
    let mut parts = Vec::new();
    let mut offset = 0;
    let mut n = 1;
    while offset < size {
        while tasks.len() >= in_flight {
            parts.push(tasks.join_next().await.context("a part")???);
        }
        let len = part.min(size - offset);
        let body = ByteStream::read_from().path(file).offset(offset).length(Length::Exact(len)).build().await?;
        let req =
            s3.upload_part().bucket(bucket).key(k).upload_id(&id).part_number(n).content_length(len as i64).body(body);
        tasks.spawn(async move {
            let p = req.send().await?;
            Ok::<_, anyhow::Error>(
                CompletedPart::builder().part_number(n).set_e_tag(p.e_tag().map(str::to_string)).build(),
            )
        });
        offset += len;
        n += 1;
    }
    while let Some(p) = tasks.join_next().await {
        parts.push(p??);
    }
    parts.sort_by_key(|p| p.part_number());
    s3.complete_multipart_upload()
        .bucket(bucket)
        .key(k)
        .upload_id(&id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
        .send()
        .await?;
    let secs = t.elapsed().as_secs_f64();
    s3.delete_object().bucket(bucket).key(k).send().await?;
    Ok(secs)
}
