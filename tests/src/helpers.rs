//! Small helpers every test file uses: answers, error codes, process memory,
//! child processes, prediction comparison.

use serde_json::Value;

pub fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// Status and JSON body of an answer (a body that is not JSON, as a string).
pub async fn json_of(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// The stable error code of a v1 error body.
pub fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<no error code>")
}

/// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`); `None` once the
/// process has exited.
pub fn proc_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let prefix = format!("{field}:");
    status.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Peak resident memory of a live process so far (`VmHWM`), in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    proc_kib(pid, "VmHWM").expect("the process is alive")
}

/// Resident and peak resident memory of a live process, in KiB.
pub fn memory_kib(pid: u32) -> (u64, u64) {
    (proc_kib(pid, "VmRSS").expect("the process is alive"), peak_rss_kib(pid))
}

/// Live child processes of `pid` whose command name starts with `name` (Linux /proc).
pub fn children_named(pid: u32, name: &str) -> Vec<u32> {
    let mut v = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // pid (comm) state ppid ...
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let comm = &stat[open + 1..close];
        let mut fields = stat[close + 2..].split(' ');
        let state = fields.next();
        let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) && name.starts_with(comm) && state != Some("Z") {
            v.push(stat[..open].trim().parse().expect("pid"));
        }
    }
    v
}

/// Whether `got` matches `want`: labels and strings exactly, numbers within a
/// relative tolerance.
pub fn same_predictions(got: &Value, want: &Value, tol: f64) -> bool {
    match (got, want) {
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_predictions(x, y, tol))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| same_predictions(v, w, tol)))
        }
        (Value::Number(x), Value::Number(y)) if y.is_i64() => x.as_i64() == y.as_i64(),
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => (x - y).abs() <= tol * y.abs().max(1.0),
            _ => false,
        },
        (a, b) => a == b,
    }
}

/// 512 samples at 16 kHz: a voiced-like mix of tones.
pub fn audio_chunk() -> Vec<f32> {
    (0..512)
        .map(|i| {
            let t = i as f32 / 16000.0;
            0.5 * (2.0 * std::f32::consts::PI * 220.0 * t).sin() + 0.2 * (2.0 * std::f32::consts::PI * 1100.0 * t).sin()
        })
        .collect()
}
