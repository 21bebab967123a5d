//! Uploaded code against the sandbox: TorchScript modules that read a secret,
//! create and overwrite files, allocate without bound, answer with a huge tensor
//! and spin forever, deployed and called with a key limited to `text-*` as an
//! attacker would, first refused by the operator check, then (check off) run
//! inside the worker's sandbox with no effect outside it; and the sandbox probe,
//! which tries sockets and new processes no TorchScript operator offers.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use zoo_api::Format;
use zoo_tests::helpers::{json_of, memory_kib};
use zoo_tests::{Options, Server, fixtures, ok, with_ort};

/// The example MLP archive (traced by libtorch) with `forward`'s body replaced:
/// `body` is TorchScript, `{x}` standing for the argument's name. This is what an
/// attacker does: a few lines of TorchScript in an otherwise ordinary archive.
fn with_forward(base: &Path, body: &str, out: &Path) -> PathBuf {
    let archive = zoo_formats::zip::Archive::open(base, Format::Torchscript, &zoo_formats::Limits::default()).unwrap();
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for m in &archive.members {
        if m.name.ends_with(".debug_pkl") {
            continue; // source ranges of the original code
        }
        let mut bytes = archive.read(m, u64::MAX).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap_or_default();
        if m.name.ends_with(".py") && text.contains("def forward(") {
            let (inputs, _) = zoo_formats::torchscript::forward_signature(&text).unwrap();
            let start = text.find("def forward(").unwrap();
            let arrow = start + text[start..].find(") -> ").unwrap();
            let end = arrow + text[arrow..].find(":\n").unwrap() + 2;
            bytes = format!("{}{}", &text[..end], body.replace("{x}", &inputs[0].name)).into_bytes();
        }
        files.push((m.name.clone(), bytes));
    }
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
    std::fs::write(out, zoo_formats::hostile::zip_of(&refs)).unwrap();
    out.to_path_buf()
}

/// The example MLP traced by libtorch.
fn example_mlp(dir: &Path) -> PathBuf {
    fixtures::torch_mlps(dir).remove(0).path
}

struct Attack {
    name: &'static str,
    body: String,
    /// Refused by the operator check (uses an I/O operator).
    io: bool,
}

fn attacks(secret: &Path, outside: &Path) -> Vec<Attack> {
    let secret_len = std::fs::metadata(secret).unwrap().len();
    vec![
        Attack {
            name: "text-read-secret",
            body: format!("    return torch.from_file(\"{}\", False, {secret_len}, dtype=0)\n", secret.display()),
            io: true,
        },
        Attack {
            name: "text-create-file",
            body: format!(
                "    t = torch.from_file(\"{}\", True, 16, dtype=0)\n    return t.fill_(65)\n",
                outside.join("created").display()
            ),
            io: true,
        },
        Attack {
            name: "text-overwrite-file",
            body: format!(
                "    t = torch.from_file(\"{}\", True, 8, dtype=0)\n    return t.fill_(66)\n",
                outside.join("existing").display()
            ),
            io: true,
        },
        Attack {
            name: "text-save-file",
            body: format!("    torch.save({{x}}, \"{}\")\n    return {{x}}\n", outside.join("saved.pt").display()),
            io: true,
        },
        Attack { name: "text-allocate", body: "    return torch.zeros([8000000000], dtype=0)\n".into(), io: false },
        Attack { name: "text-huge-output", body: "    return torch.ones([300000000], dtype=0)\n".into(), io: false },
        Attack {
            name: "text-spin",
            body: "    y = {x}\n    for i in range(100000000000):\n      y = torch.add(y, 1)\n    return y\n".into(),
            io: false,
        },
    ]
}

/// A key as the attacker has it: deploy and predict, models `text-*`.
async fn attacker_key(s: &Server) -> String {
    let r = reqwest::Client::new()
        .post(s.at("/v1/keys"))
        .bearer_auth(&s.admin_key)
        .json(&json!({"name": "ci", "scopes": ["deploy", "predict"], "models": ["text-*"]}))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(r).await;
    assert_eq!(status, 201, "{body}");
    body["key"].as_str().unwrap().to_string()
}

async fn deploy(s: &Server, key: &str, name: &str, file: &Path, query: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .put(s.at(&format!("/v1/models/{name}/versions/1{query}")))
        .bearer_auth(key)
        .body(std::fs::read(file).unwrap())
        .send()
        .await
        .unwrap();
    json_of(r).await
}

async fn predict(s: &Server, key: &str, name: &str) -> (u16, Value, String) {
    let r = reqwest::Client::new()
        .post(s.at(&format!("/v1/models/{name}/predict")))
        .bearer_auth(key)
        .json(&json!({"inputs": [[1.0, 2.0, 3.0, 4.0]]}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn torchscript_attacks_are_refused_at_upload() {
    let dir = tempfile::tempdir().unwrap();
    let base = example_mlp(dir.path());
    let s = Server::start_with(with_ort());
    let key = attacker_key(&s).await;
    let secret = s.data_dir.join("admin.key");
    for a in attacks(&secret, dir.path()) {
        let file = with_forward(&base, &a.body, &dir.path().join(format!("{}.pt", a.name)));
        let (status, body) = deploy(&s, &key, a.name, &file, "?load=lazy").await;
        if a.io {
            assert_eq!(status, 422, "{}: {body}", a.name);
            assert_eq!(body["error"]["code"], "invalid_artifact", "{}: {body}", a.name);
            assert_eq!(body["error"]["rule"], "operator", "{}: {body}", a.name);
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains("from_file") || message.contains("save"), "{}: {message}", a.name);
            println!("{}: refused at upload: {message}", a.name);
        } else {
            assert_eq!(status, 201, "{} uses only ordinary operators: {body}", a.name);
        }
    }
    // Nothing was stored for the refused ones.
    let (_, list) =
        json_of(reqwest::Client::new().get(s.at("/v1/models")).bearer_auth(&s.admin_key).send().await.unwrap()).await;
    let names: Vec<&str> = list["models"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn torchscript_attacks_stay_inside_the_sandbox_without_the_operator_check() {
    let dir = tempfile::tempdir().unwrap();
    let base = example_mlp(dir.path());
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("existing"), b"original contents").unwrap();
    let mut opts = with_ort();
    opts.args.extend(["--torchscript-op-check", "off"].map(String::from));
    let s = Server::start_with(opts);
    let admin_key = s.admin_key.clone();
    let key = attacker_key(&s).await;

    // The sandbox is in force, and says so.
    let (_, ready) = json_of(reqwest::get(s.at("/readyz")).await.unwrap()).await;
    let sandbox = &ready["torchscript_sandbox"];
    assert_eq!(sandbox["enforced"], true, "{ready}");
    for p in ["landlock", "seccomp", "network_namespace", "no_new_privs", "rlimits", "not_dumpable"] {
        assert!(sandbox["protections"].as_array().unwrap().iter().any(|v| v == p), "{p} missing: {sandbox}");
    }

    let (_, before) = memory_kib(s.pid());
    let secret = s.data_dir.join("admin.key");
    let mut seen = String::new();
    for a in attacks(&secret, &outside) {
        let file = with_forward(&base, &a.body, &dir.path().join(format!("{}.pt", a.name)));
        let query = if a.name == "text-spin" { "?timeout_secs=3" } else { "" };
        let (status, body) = deploy(&s, &key, a.name, &file, query).await;
        seen.push_str(&body.to_string());
        assert_eq!(status, 201, "{}: {body}", a.name);
        assert_eq!(body["sandbox"]["enforced"], true, "{}: {body}", a.name);
        for _ in 0..2 {
            let (status, body, text) = predict(&s, &key, a.name).await;
            seen.push_str(&text);
            if a.name == "text-save-file" {
                // torch.save does not report a file it could not open: the model
                // answers, and the test below finds nothing written.
                continue;
            }
            assert_ne!(status, 200, "{}: the attack answered: {text}", a.name);
            println!("{}: {status} {}", a.name, body["error"]["message"].as_str().unwrap_or(&text));
            match a.name {
                "text-huge-output" => {
                    assert_eq!(body["error"]["code"], "inference_failed", "{text}");
                    assert!(text.contains("output limit"), "{text}");
                }
                "text-spin" => {
                    assert!(status == 408 || text.contains("CPU time") || text.contains("longer than"), "{text}")
                }
                _ => assert_eq!(body["error"]["code"], "inference_failed", "{}: {text}", a.name),
            }
        }
    }
    // No byte of the secret in any answer, no file made or changed outside.
    assert!(!seen.contains(admin_key.trim()), "the admin key leaked");
    assert!(!outside.join("created").exists(), "a file was created outside the sandbox");
    assert!(!outside.join("saved.pt").exists(), "a file was saved outside the sandbox");
    assert_eq!(std::fs::read(outside.join("existing")).unwrap(), b"original contents");
    // The server lives, serves a legitimate TorchScript model, and its memory did
    // not follow the 300 MB answer or the 8 GB allocation.
    ok(&s.cli(&["deploy", base.to_str().unwrap(), "--name", "text-mlp"]));
    let (status, body, _) = predict(&s, &key, "text-mlp").await;
    assert_eq!(status, 200, "{body}");
    let (rss, peak) = memory_kib(s.pid());
    println!("server memory: peak {before} -> {peak} KiB, resident now {rss} KiB");
    assert!(peak < before + 64 * 1024, "the server's peak memory grew by {} KiB", peak - before);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_sandbox_the_same_module_reads_the_file() {
    // The attack is real: with the sandbox off (and the check off) the module
    // answers with the bytes of a file it was never given. Here a decoy, not a key.
    let dir = tempfile::tempdir().unwrap();
    let base = example_mlp(dir.path());
    let decoy = dir.path().join("decoy");
    std::fs::write(&decoy, b"decoy secret 1234").unwrap();
    let mut opts = with_ort();
    opts.args.extend(["--torchscript-op-check", "off", "--torchscript-sandbox", "unsafe-off"].map(String::from));
    let s = Server::start_with(opts);
    let body = format!("    return torch.from_file(\"{}\", False, 17, dtype=0)\n", decoy.display());
    let file = with_forward(&base, &body, &dir.path().join("read.pt"));
    let (status, info) = deploy(&s, &s.admin_key, "reader", &file, "").await;
    assert_eq!(status, 201, "{info}");
    assert_eq!(info["sandbox"]["mode"], "unsafe-off", "{info}");
    assert_eq!(info["sandbox"]["enforced"], false, "{info}");
    let (status, body, _) = predict(&s, &s.admin_key, "reader").await;
    assert_eq!(status, 200, "{body}");
    let bytes: Vec<u8> =
        body["outputs"]["output_0"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u8).collect();
    assert_eq!(bytes, b"decoy secret 1234");
}

/// Run `zoo-torch-worker probe` with a policy of `mode`.
fn probe(mode: &str, dir: &Path) -> Value {
    let secret = dir.join("secret");
    std::fs::write(&secret, b"do not read").unwrap();
    let libtorch = PathBuf::from(std::env::var("ZOO_LIBTORCH").expect("ZOO_LIBTORCH (scripts/test sets it)"));
    let mut read_dirs = vec![libtorch.clone()];
    read_dirs.extend(zoo_torch::sandbox::Policy::system_read_dirs());
    let policy = json!({
        "mode": mode,
        "read_dirs": read_dirs,
        "read_files": zoo_torch::sandbox::Policy::system_read_files(),
        "memory_bytes": 0,
        "open_files": 64,
    });
    let out = std::process::Command::new(fixtures::torch_worker())
        .arg("probe")
        .arg(policy.to_string())
        .arg(&secret)
        .arg(dir.join("written"))
        .env_clear()
        .env("LD_LIBRARY_PATH", libtorch.join("lib"))
        .output()
        .unwrap();
    assert!(out.status.success(), "probe: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_sandbox_refuses_files_sockets_and_new_processes() {
    let dir = tempfile::tempdir().unwrap();
    let confined = probe("required", dir.path());
    println!("confined: {confined}");
    for escape in ["read_outside", "write_outside", "socket", "spawn"] {
        let outcome = confined["escapes"][escape].as_str().unwrap();
        assert!(outcome.starts_with("refused"), "{escape}: {outcome}");
    }
    assert_eq!(confined["libtorch"], true, "libtorch runs inside the sandbox");
    assert_eq!(confined["report"]["missing"], json!([]), "{confined}");
    assert!(!dir.path().join("written").exists());
    // The same attempts succeed without it: the probe's checks can fail.
    let open = probe("unsafe-off", dir.path());
    println!("unconfined: {open}");
    for escape in ["read_outside", "write_outside", "socket", "spawn"] {
        assert_eq!(open["escapes"][escape], "ALLOWED", "{escape}: {open}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn torchscript_is_not_served_when_the_sandbox_cannot_be_applied() {
    // A machine where a confined worker cannot run is simulated with an
    // address-space limit below what libtorch needs: the probe at start finds that
    // libtorch does not run inside the sandbox, and TorchScript is stored but not
    // served, saying why.
    let dir = tempfile::tempdir().unwrap();
    let base = example_mlp(dir.path());
    let mut opts: Options = with_ort();
    opts.args.extend(["--torch-worker-memory", "1000000"].map(String::from));
    let s = Server::start_with(opts);
    let (status, info) = deploy(&s, &s.admin_key, "mlp", &base, "").await;
    assert_eq!(status, 201, "{info}");
    assert_eq!(info["servable"], false, "{info}");
    println!("reason: {}", info["reason"]);
    assert!(info["reason"].as_str().unwrap().contains("sandbox"), "{info}");
    let (_, ready) = json_of(reqwest::get(s.at("/readyz")).await.unwrap()).await;
    assert!(ready["torchscript_sandbox"].is_null(), "{ready}");
}
