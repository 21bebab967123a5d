//! `zoo-bench soak`: a bounded soak of replicas sharing one registry and store.
//!
//! Predictions at a steady open-loop rate (latency counted from when each request
//! was due, so a stall is not hidden by the client waiting), spread over the
//! replicas; model listings twice a second; and every few seconds a deploy on one
//! replica, an alias move to it on the other, predictions through the alias on
//! both, and the delete of an old version. The servers' resident memory is
//! sampled every 5 s. Prints a summary and writes the samples as CSV; exits
//! non-zero on any 5xx, transport error or unexpected 4xx, or when a server's
//! memory trends upward by more than the bound after the first minute's warm-up,
//! or over the second half of the run (a leak keeps growing after pools and caches
//! reach their size).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::{flag, need, percentile};

#[derive(Default)]
struct Tally {
    lat: Vec<Duration>,
    ok: usize,
    too_many: usize,
    client_errors: usize,
    server_errors: usize,
    transport: usize,
}

#[derive(Default, Clone)]
struct Stats(Arc<Mutex<BTreeMap<&'static str, Tally>>>);

impl Stats {
    /// Send one request and record its outcome and latency under `kind`.
    async fn timed(&self, kind: &'static str, req: reqwest::RequestBuilder) {
        let t = Instant::now();
        let r = send(req).await;
        self.record(kind, t, &r);
    }

    fn record(&self, kind: &'static str, since: Instant, r: &Result<reqwest::StatusCode, reqwest::Error>) {
        let mut all = self.0.lock().unwrap();
        let t = all.entry(kind).or_default();
        match r {
            Ok(s) if s.is_success() => {
                t.ok += 1;
                t.lat.push(since.elapsed());
            }
            Ok(s) if s.as_u16() == 429 => t.too_many += 1,
            Ok(s) if s.is_client_error() => t.client_errors += 1,
            Ok(s) => {
                eprintln!("soak: {kind}: {s}");
                t.server_errors += 1
            }
            Err(e) => {
                eprintln!("soak: {kind}: {e}");
                t.transport += 1
            }
        }
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

async fn send(req: reqwest::RequestBuilder) -> Result<reqwest::StatusCode, reqwest::Error> {
    let r = req.send().await?;
    let status = r.status();
    r.bytes().await?;
    Ok(status)
}

pub async fn soak(args: &[String]) -> anyhow::Result<()> {
    let urls: Vec<String> = need(args, "--urls")?.split(',').map(String::from).collect();
    let key = need(args, "--key")?;
    let path = need(args, "--path")?;
    let body = Arc::new(serde_json::to_vec(&serde_json::from_str::<serde_json::Value>(&need(args, "--body")?)?)?);
    let rate: f64 = need(args, "--rate")?.parse()?;
    let seconds: u64 = flag(args, "--seconds").map_or(Ok(600), |s| s.parse())?;
    let artifact = std::fs::read(need(args, "--artifact")?).context("--artifact")?;
    let churn_body = need(args, "--artifact-body")?;
    let churn_every: f64 = flag(args, "--deploy-every").map_or(Ok(10.0), |s| s.parse())?;
    let pids: Vec<u32> = need(args, "--pids")?.split(',').map(|p| p.parse()).collect::<Result<_, _>>()?;
    let out = need(args, "--out")?;
    let growth_bound_mib: u64 = flag(args, "--max-rss-growth-mib").map_or(Ok(32), |s| s.parse())?;

    let client = reqwest::Client::builder().pool_max_idle_per_host(256).timeout(Duration::from_secs(30)).build()?;
    let stats = Stats::default();
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let skipped = Arc::new(AtomicUsize::new(0));

    // Predictions: open loop at `rate`, round robin over the replicas, at most
    // 4096 in flight (beyond that the request is counted as skipped).
    let predictions = {
        let (client, stats, urls, key, path, body, skipped) =
            (client.clone(), stats.clone(), urls.clone(), key.clone(), path.clone(), body.clone(), skipped.clone());
        tokio::spawn(async move {
            let period = Duration::from_secs_f64(1.0 / rate);
            let in_flight = Arc::new(tokio::sync::Semaphore::new(4096));
            let mut i: u64 = 0;
            loop {
                let due = start + period.mul_f64(i as f64);
                if due >= end {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                    skipped.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                    continue;
                };
                let url = format!("{}{path}", urls[i as usize % urls.len()]);
                let req = client
                    .post(url)
                    .bearer_auth(&key)
                    .header("content-type", "application/json")
                    .body(body.as_ref().clone());
                let stats = stats.clone();
                tokio::spawn(async move {
                    let r = send(req).await;
                    stats.record("predict", due, &r);
                    drop(permit);
                });
                i += 1;
            }
        })
    };

    // Listings: twice a second, alternating replicas.
    let listings = {
        let (client, stats, urls, key) = (client.clone(), stats.clone(), urls.clone(), key.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while Instant::now() < end {
                stats
                    .timed("list", client.get(format!("{}/v1/models?limit=50", urls[i % urls.len()])).bearer_auth(&key))
                    .await;
                i += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };

    // Churn: deploy on one replica, move the alias on the other, predict through
    // the alias on both, delete the version before last.
    let churn = {
        let (client, stats, urls, key) = (client.clone(), stats.clone(), urls.clone(), key.clone());
        let churn_body = churn_body.into_bytes();
        tokio::spawn(async move {
            let mut n = 0usize;
            while Instant::now() + Duration::from_secs_f64(churn_every) < end {
                tokio::time::sleep(Duration::from_secs_f64(churn_every)).await;
                n += 1;
                let (a, b) = (&urls[n % urls.len()], &urls[(n + 1) % urls.len()]);
                stats
                    .timed(
                        "deploy",
                        client
                            .put(format!("{a}/v1/models/churn/versions/{n}"))
                            .bearer_auth(&key)
                            .header("content-type", "application/octet-stream")
                            .body(artifact.clone()),
                    )
                    .await;
                stats
                    .timed(
                        "alias move",
                        client
                            .put(format!("{b}/v1/models/churn/aliases/production"))
                            .bearer_auth(&key)
                            .json(&serde_json::json!({"version": n.to_string()})),
                    )
                    .await;
                for u in [a, b] {
                    stats
                        .timed(
                            "predict via alias",
                            client
                                .post(format!("{u}/v1/models/churn/aliases/production/predict"))
                                .bearer_auth(&key)
                                .header("content-type", "application/json")
                                .body(churn_body.clone()),
                        )
                        .await;
                }
                if n > 2 {
                    stats
                        .timed(
                            "delete",
                            client.delete(format!("{a}/v1/models/churn/versions/{}", n - 2)).bearer_auth(&key),
                        )
                        .await;
                }
            }
        })
    };

    // Memory and progress, every 5 s.
    let mut samples = String::from("seconds,predictions_ok,errors");
    for (i, _) in pids.iter().enumerate() {
        samples.push_str(&format!(",replica{}_rss_mib", i + 1));
    }
    samples.push('\n');
    let mut rss: Vec<Vec<u64>> = vec![Vec::new(); pids.len()];
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(5).min(end.saturating_duration_since(Instant::now()))).await;
        let (ok, errors) = {
            let all = stats.0.lock().unwrap();
            let ok = all.get("predict").map_or(0, |t| t.ok);
            let errors: usize = all.values().map(|t| t.server_errors + t.transport).sum();
            (ok, errors)
        };
        samples.push_str(&format!("{},{ok},{errors}", start.elapsed().as_secs()));
        for (i, pid) in pids.iter().enumerate() {
            let kib = rss_kib(*pid);
            rss[i].push(kib);
            samples.push_str(&format!(",{:.1}", kib as f64 / 1024.0));
        }
        samples.push('\n');
    }
    predictions.await?;
    listings.await?;
    churn.await?;
    // Let the last predictions finish.
    tokio::time::sleep(Duration::from_secs(2)).await;
    std::fs::write(&out, samples)?;

    println!(
        "soak: {seconds} s, {} replicas, predictions due at {rate:.0}/s (open loop), a deploy + alias move + delete every {churn_every} s",
        urls.len()
    );
    println!("| traffic | requests | ok | 429 | other 4xx | 5xx | transport errors | p50 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut failures = 0;
    for (kind, t) in stats.0.lock().unwrap().iter_mut() {
        t.lat.sort();
        let total = t.ok + t.too_many + t.client_errors + t.server_errors + t.transport;
        println!(
            "| {kind} | {total} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} |",
            t.ok,
            t.too_many,
            t.client_errors,
            t.server_errors,
            t.transport,
            percentile(&t.lat, 0.5),
            percentile(&t.lat, 0.99),
            t.lat.last().map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
        );
        failures += t.server_errors + t.transport + t.client_errors;
    }
    let skipped = skipped.load(Ordering::Relaxed);
    if skipped > 0 {
        println!("{skipped} predictions not sent: 4096 were already in flight");
    }
    let mut grew_too_much = false;
    for (i, r) in rss.iter().enumerate() {
        let mib = |k: u64| k as f64 / 1024.0;
        let at = |frac: f64| r.get(((r.len() as f64 - 1.0) * frac) as usize).copied().unwrap_or(0);
        let (first_minute, half, last) =
            (r.get(12.min(r.len().saturating_sub(1))).copied().unwrap_or(0), at(0.5), at(1.0));
        let max = r.iter().max().copied().unwrap_or(0);
        // The trend, not two samples: memory moves up and down by tens of MiB as
        // models are loaded and dropped, so the growth is a least-squares line
        // through the samples, over their length.
        // Both over the whole run after the first minute's warm-up (a slow climb
        // to a higher level) and over the second half (still climbing at the end).
        let (growth, late_growth) = growth_mib(r);
        println!(
            "replica {}: RSS {:.0} MiB after the first minute, {:.0} MiB at half time, {:.0} MiB at the end, {:.0} MiB at most; \
             trend after the first minute {growth:+.1} MiB, over the second half {late_growth:+.1} MiB (bound {growth_bound_mib} MiB each)",
            i + 1,
            mib(first_minute),
            mib(half),
            mib(last),
            mib(max)
        );
        grew_too_much |= growth.max(late_growth) > growth_bound_mib as f64;
    }
    println!("samples: {out}");
    anyhow::ensure!(failures == 0, "{failures} requests failed (5xx, transport or unexpected 4xx)");
    anyhow::ensure!(skipped == 0, "the servers fell behind: {skipped} predictions could not be sent");
    anyhow::ensure!(!grew_too_much, "resident memory grew past the bound");
    Ok(())
}

/// The growth (MiB) of 5-second KiB samples after the first minute, and over the
/// second half: each the least-squares slope times the samples' span.
fn growth_mib(r: &[u64]) -> (f64, f64) {
    let trend_over = |from: usize| {
        let from = from.min(r.len());
        mib_trend(&r[from..]) * (r.len() - from) as f64
    };
    (trend_over(12), trend_over(r.len() / 2))
}

/// Least-squares slope of KiB samples taken at a fixed interval, in MiB per sample.
fn mib_trend(samples: &[u64]) -> f64 {
    let n = samples.len() as f64;
    if samples.len() < 2 {
        return 0.0;
    }
    let mean_x = (n - 1.0) / 2.0;
    let mean_y = samples.iter().map(|&k| k as f64 / 1024.0).sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for (x, &k) in samples.iter().enumerate() {
        let dx = x as f64 - mean_x;
        num += dx * (k as f64 / 1024.0 - mean_y);
        den += dx * dx;
    }
    num / den
}

#[cfg(test)]
mod tests {
    #[test]
    fn trend_ignores_swings_but_not_growth() {
        let flat: Vec<u64> = (0..60).map(|i| if i % 2 == 0 { 200 << 10 } else { 260 << 10 }).collect();
        assert!(super::mib_trend(&flat).abs() < 0.1);
        let growing: Vec<u64> = (0..60).map(|i| (200 + i) << 10).collect();
        assert!((super::mib_trend(&growing) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn a_climb_that_levels_off_late_is_still_growth() {
        // 200 MiB after a minute, +60 MiB over the next ten, then flat for ten
        // (with swings): the second half alone looks flat, the run does not.
        let r: Vec<u64> = (0..252)
            .map(|i| {
                let level = if i < 12 { 200.0 } else { 200.0 + 60.0 * ((i - 12) as f64 / 120.0).min(1.0) };
                ((level + if i % 2 == 0 { 15.0 } else { -15.0 }) * 1024.0) as u64
            })
            .collect();
        let (growth, late) = super::growth_mib(&r);
        assert!(growth > 32.0, "{growth}");
        assert!(late.abs() < 5.0, "{late}");
    }
}
