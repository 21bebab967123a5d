//! `zoo`: deploy, inspect and call models on a zoo server; `zoo serve` runs one.
//!
//! Exit codes: 0 ok, 1 server or user error (with the server's message), 2 usage.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use zoo_api::openai::{ChatCompletionRequest, ChatMessage, Content, SamplingParams};
use zoo_api::{
    CreateKeyRequest, DeployQuery, Format, ListModelsQuery, LoadPolicy, PredictRequest, RuntimeChoice, Scope, Task,
    VersionInfo,
};
use zoo_client::{Client, ClientError, config};

#[cfg(feature = "server")]
mod malloc;

/// mimalloc rather than glibc's malloc: under sustained load with models loaded
/// and unloaded, glibc's per-thread arenas kept the server's resident memory
/// growing (scripts/soak: see the README's performance section).
#[cfg(feature = "server")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "zoo", version, about = "Deploy models and serve them behind documented, authenticated endpoints")]
struct Cli {
    /// Server URL (default: saved login, then http://127.0.0.1:8080).
    #[arg(long, global = true, env = "ZOO_URL")]
    url: Option<String>,
    /// API key (default: saved login).
    #[arg(long, global = true, env = "ZOO_API_KEY", hide_env_values = true)]
    key: Option<String>,
    /// Output format.
    #[arg(long, short, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

/// Serving settings of `zoo deploy` (the server's defaults when not given).
#[derive(clap::Args)]
struct ServingArgs {
    /// Most rows merged into one batch (1 = no batching).
    #[arg(long)]
    max_batch_size: Option<u32>,
    /// Longest a request waits for others to join its batch, in milliseconds.
    #[arg(long)]
    max_queue_delay_ms: Option<u32>,
    /// Copies of the model, each on its own inference thread.
    #[arg(long)]
    instances: Option<u32>,
    /// Load at deploy with a warm-up (eager) or on the first request (lazy).
    #[arg(long, value_parser = parse_load)]
    load: Option<LoadPolicy>,
    /// Most texts or rows per request.
    #[arg(long)]
    max_items: Option<u32>,
    /// Most tokens per text.
    #[arg(long)]
    max_tokens: Option<u32>,
    /// Predict timeout, in seconds.
    #[arg(long)]
    timeout_secs: Option<u32>,
    /// Largest predict body, in bytes.
    #[arg(long)]
    max_body_bytes: Option<u64>,
    /// Largest total size of one run's outputs, in bytes.
    #[arg(long)]
    max_output_bytes: Option<u64>,
}

fn parse_load(s: &str) -> Result<LoadPolicy, String> {
    match s {
        "eager" => Ok(LoadPolicy::Eager),
        "lazy" => Ok(LoadPolicy::Lazy),
        _ => Err(format!("unknown load policy '{s}' (eager, lazy)")),
    }
}

#[derive(Subcommand)]
enum Command {
    /// Save the server URL and API key for later commands.
    Login {
        #[arg(long)]
        url: String,
        #[arg(long)]
        key: String,
    },
    /// Upload a model file or bundle directory as a new version, and serve it.
    Deploy {
        /// A model file (ONNX, TorchScript, safetensors) or a directory (an ONNX or
        /// Hugging Face bundle, an MLflow model).
        path: PathBuf,
        /// Model name (default: from the file or directory name).
        #[arg(long)]
        name: Option<String>,
        /// Version (default: the next integer).
        #[arg(long)]
        version: Option<String>,
        /// Override the task derived from the artifact.
        #[arg(long, value_parser = parse_task)]
        task: Option<Task>,
        /// Runtime: auto, ort, tract (ONNX), candle (safetensors), torch (TorchScript)
        /// or sklearn (skops).
        #[arg(long, value_parser = parse_runtime)]
        runtime: Option<RuntimeChoice>,
        /// Class labels, comma-separated (override config.json id2label).
        #[arg(long)]
        labels: Option<String>,
        /// Model description.
        #[arg(long)]
        description: Option<String>,
        /// Point this alias (e.g. production) at the new version once it is ready.
        #[arg(long)]
        alias: Option<String>,
        #[command(flatten)]
        serving: ServingArgs,
    },
    /// List or show models.
    Models {
        #[command(subcommand)]
        command: Option<ModelsCommand>,
    },
    /// Call a model: `zoo predict NAME "text"` or `zoo predict NAME --json FILE|-`.
    Predict {
        name: String,
        /// Text to classify or embed.
        text: Option<String>,
        /// JSON request body from a file, or - for standard input.
        #[arg(long, conflicts_with = "text")]
        json: Option<String>,
        /// An image (JPEG or PNG) to classify, for an image model.
        #[arg(long, conflicts_with_all = ["text", "json"])]
        file: Option<PathBuf>,
        /// Version (default: alias production, else the newest).
        #[arg(long)]
        version: Option<String>,
        /// Labels to return per text or image.
        #[arg(long)]
        top_k: Option<usize>,
    },
    /// Chat with a text-generation model, the answer streamed as it comes:
    /// `zoo chat NAME` (a conversation; an empty line or Ctrl-D ends it, /reset
    /// starts over) or `zoo chat NAME "message"` (one answer; - reads the
    /// message from standard input).
    Chat {
        /// A model name; NAME@VERSION or NAME:ALIAS for another than the default.
        name: String,
        /// One message to answer, then exit.
        message: Option<String>,
        /// A system prompt (default: the model's own, if its template has one).
        #[arg(long)]
        system: Option<String>,
        /// Most tokens per answer (default: until the model ends).
        #[arg(long)]
        max_tokens: Option<u32>,
        /// 0 (greedy) to 2 (default 0.7).
        #[arg(long, default_value_t = 0.7)]
        temperature: f64,
        /// Makes sampled answers repeatable.
        #[arg(long)]
        seed: Option<i64>,
    },
    /// Download a version's artifact.
    Pull {
        name: String,
        #[arg(long)]
        version: String,
        /// Destination file (default: NAME-VERSION.onnx or .tar).
        #[arg(long, short = 'O')]
        out: Option<PathBuf>,
    },
    /// Delete a version, or a whole model with --all.
    Rm {
        name: String,
        #[arg(long, required_unless_present = "all")]
        version: Option<String>,
        /// Delete the model and every version.
        #[arg(long, conflicts_with = "version")]
        all: bool,
    },
    /// Move or remove an alias (production, staging, ...).
    Alias {
        #[command(subcommand)]
        command: AliasCommand,
    },
    /// Manage API keys (admin).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Run a zoo server.
    #[cfg(feature = "server")]
    Serve(Box<zoo_server::Config>),
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// List models.
    List {
        /// Filter by a substring of the name or description.
        #[arg(long)]
        query: Option<String>,
        #[arg(long, value_parser = parse_format)]
        format: Option<Format>,
        #[arg(long, value_parser = parse_task)]
        task: Option<Task>,
    },
    /// Show a model, or one version of it.
    Show {
        name: String,
        #[arg(long)]
        version: Option<String>,
    },
}

#[derive(Subcommand)]
enum AliasCommand {
    /// Point ALIAS of model NAME at VERSION (loaded and warmed before traffic moves).
    Set { name: String, alias: String, version: String },
    /// Remove ALIAS of model NAME.
    Rm { name: String, alias: String },
    /// List a model's aliases and every move (who, when, from, to).
    List { name: String },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key; its secret is printed once.
    Create {
        #[arg(long)]
        name: String,
        /// Scopes: read, predict, deploy, admin (repeat or comma-separate).
        #[arg(long = "scope", value_delimiter = ',', required = true, value_parser = parse_scope)]
        scopes: Vec<Scope>,
        /// Limit to model-name patterns (`*` wildcard; repeat or comma-separate).
        #[arg(long = "model", value_delimiter = ',')]
        models: Vec<String>,
        /// Expire after this many days.
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    List,
    Revoke {
        id: String,
        /// Revoke it even if it is the key this command uses.
        #[arg(long)]
        confirm: bool,
    },
}

fn parse_task(s: &str) -> Result<Task, String> {
    Task::parse(s).ok_or_else(|| format!("unknown task '{s}' ({})", Task::ALL.map(Task::as_str).join(", ")))
}

fn parse_format(s: &str) -> Result<Format, String> {
    Format::parse(s).ok_or_else(|| format!("unknown format '{s}' (onnx, torchscript, safetensors, mlflow)"))
}

fn parse_scope(s: &str) -> Result<Scope, String> {
    Scope::parse(s).ok_or_else(|| format!("unknown scope '{s}' (read, predict, deploy, admin)"))
}

fn parse_runtime(s: &str) -> Result<RuntimeChoice, String> {
    match s {
        "auto" => Ok(RuntimeChoice::Auto),
        "ort" => Ok(RuntimeChoice::Ort),
        "tract" => Ok(RuntimeChoice::Tract),
        "candle" => Ok(RuntimeChoice::Candle),
        "torch" => Ok(RuntimeChoice::Torch),
        "sklearn" => Ok(RuntimeChoice::Sklearn),
        _ => Err(format!("unknown runtime '{s}' (auto, ort, tract, candle, torch, sklearn)")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before any runtime thread starts.
    #[cfg(feature = "server")]
    let malloc = matches!(cli.command, Command::Serve(_)).then(malloc::tune);
    #[cfg(not(feature = "server"))]
    let malloc = None;
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("zoo: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cli, malloc)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<ClientError>() {
                Some(ClientError::Api { message, code, status }) => {
                    eprintln!("zoo: error: {message} [{code}, HTTP {status}]")
                }
                _ => eprintln!("zoo: error: {e:#}"),
            }
            ExitCode::from(1)
        }
    }
}

fn client(cli: &Cli) -> anyhow::Result<Client> {
    let saved = config::load();
    let url = cli.url.clone().or(saved.url).unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let key = cli.key.clone().or(saved.key);
    Ok(Client::new(&url, key)?)
}

fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

// `malloc` is what `zoo serve` tuned; a build without the server has nothing to report.
#[cfg_attr(not(feature = "server"), allow(unused_variables))]
async fn run(cli: Cli, malloc: Option<&'static str>) -> anyhow::Result<()> {
    let json = cli.output == Output::Json;
    match &cli.command {
        #[cfg(feature = "server")]
        Command::Serve(config) => {
            zoo_server::init_tracing(config.log_json);
            if let Some(m) = malloc {
                tracing::info!("{m}");
            }
            zoo_server::run((**config).clone()).await
        }
        Command::Login { url, key } => {
            let c = Client::new(url, Some(key.clone()))?;
            c.health().await?;
            c.list_models(&ListModelsQuery { limit: Some(1), ..Default::default() }).await?;
            let path = config::save(&config::Saved { url: Some(url.clone()), key: Some(key.clone()) })?;
            if json {
                print_json(&serde_json::json!({"url": url, "config": path}))
            } else {
                println!("logged in to {url} (saved to {})", path.display());
                Ok(())
            }
        }
        Command::Deploy { path, name, version, task, runtime, labels, description, alias, serving } => {
            let c = client(&cli)?;
            let name = match name {
                Some(n) => n.clone(),
                None => default_name(path)?,
            };
            let query = DeployQuery {
                task: *task,
                runtime: *runtime,
                labels: labels.clone(),
                description: description.clone(),
                alias: alias.as_deref().map(zoo_api::AliasName::parse).transpose()?,
                max_batch_size: serving.max_batch_size,
                max_queue_delay_ms: serving.max_queue_delay_ms,
                instances: serving.instances,
                load: serving.load,
                max_items: serving.max_items,
                max_tokens: serving.max_tokens,
                timeout_secs: serving.timeout_secs,
                max_body_bytes: serving.max_body_bytes,
                max_output_bytes: serving.max_output_bytes,
            };
            let info = deploy(&c, path, &name, version.as_deref(), &query, !json).await?;
            if json {
                return print_json(&info);
            }
            print_deployed(&c, &info);
            if let Some(a) = alias {
                println!("alias {a} -> {}", info.version);
            }
            Ok(())
        }
        Command::Alias { command } => {
            let c = client(&cli)?;
            let info = match command {
                AliasCommand::Set { name, alias, version } => c.set_alias(name, alias, version).await?,
                AliasCommand::Rm { name, alias } => c.delete_alias(name, alias).await?,
                AliasCommand::List { name } => {
                    let list = c.list_aliases(name).await?;
                    if json {
                        return print_json(&list);
                    }
                    for (alias, v) in &list.aliases {
                        println!("{alias} -> {v}");
                    }
                    if !list.history.is_empty() {
                        println!("history (newest first):");
                    }
                    for m in &list.history {
                        let (from, to) = (m.from.as_deref().unwrap_or("-"), m.to.as_deref().unwrap_or("(removed)"));
                        println!("  {}  {}: {from} -> {to}  by {}", m.at.format("%Y-%m-%d %H:%M:%S"), m.alias, m.by);
                    }
                    return Ok(());
                }
            };
            if json {
                return print_json(&info);
            }
            match (&info.version, &info.previous) {
                (Some(v), Some(p)) if v != p => println!("{} alias {}: {p} -> {v}", info.model, info.alias),
                (Some(v), _) => println!("{} alias {} -> {v}", info.model, info.alias),
                (None, p) => {
                    println!("removed {} alias {} (was {})", info.model, info.alias, p.as_deref().unwrap_or("-"))
                }
            }
            Ok(())
        }
        Command::Models { command } => {
            let c = client(&cli)?;
            match command {
                None | Some(ModelsCommand::List { .. }) => {
                    let (query, format, task) = match command {
                        Some(ModelsCommand::List { query, format, task }) => (query.clone(), *format, *task),
                        _ => (None, None, None),
                    };
                    let list = c
                        .list_models(&ListModelsQuery { q: query, format, task, limit: Some(1000), cursor: None })
                        .await?;
                    if json {
                        return print_json(&list);
                    }
                    if list.models.is_empty() {
                        println!("no models yet: deploy one with `zoo deploy PATH --name NAME`");
                        return Ok(());
                    }
                    println!("{:<32} {:<8} {:<12} {:<22} {:>10}", "NAME", "LATEST", "FORMAT", "TASK", "SIZE");
                    for m in list.models {
                        println!(
                            "{:<32} {:<8} {:<12} {:<22} {:>10}",
                            m.name,
                            m.latest_version.unwrap_or_else(|| "-".into()),
                            m.format.map(|f| f.as_str()).unwrap_or("-"),
                            m.task.map(|t| t.as_str()).unwrap_or("-"),
                            human_size(m.total_size)
                        );
                    }
                    Ok(())
                }
                Some(ModelsCommand::Show { name, version: Some(v) }) => {
                    let info = c.show_version(name, v).await?;
                    if json {
                        return print_json(&info);
                    }
                    print_version(&info);
                    Ok(())
                }
                Some(ModelsCommand::Show { name, version: None }) => {
                    let m = c.show_model(name).await?;
                    if json {
                        return print_json(&m);
                    }
                    println!(
                        "{}{}",
                        m.name,
                        if m.description.is_empty() { String::new() } else { format!(": {}", m.description) }
                    );
                    for (alias, v) in &m.aliases {
                        println!("  alias {alias} -> {v}");
                    }
                    if m.versions.is_empty() {
                        println!("  no versions");
                    }
                    for v in &m.versions {
                        println!();
                        print_version(v);
                    }
                    Ok(())
                }
            }
        }
        Command::Predict { name, text, json: body, file, version, top_k } => {
            let c = client(&cli)?;
            let req = match (text, body) {
                _ if file.is_some() => {
                    use base64::Engine as _;
                    let path = file.as_ref().expect("checked");
                    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
                    PredictRequest {
                        inputs: Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
                        top_k: *top_k,
                        ..Default::default()
                    }
                }
                (Some(t), _) => PredictRequest {
                    inputs: Value::String(t.clone()),
                    top_k: *top_k,
                    normalize: None,
                    ..Default::default()
                },
                (None, Some(src)) => {
                    let raw = if src == "-" {
                        let mut s = String::new();
                        std::io::stdin().read_to_string(&mut s)?;
                        s
                    } else {
                        std::fs::read_to_string(src).with_context(|| format!("cannot read {src}"))?
                    };
                    let mut req: PredictRequest =
                        serde_json::from_str(&raw).context("the request must be JSON like {\"inputs\": ...}")?;
                    if top_k.is_some() {
                        req.top_k = *top_k;
                    }
                    req
                }
                (None, None) => bail!("give a text to send, --file IMAGE, or --json FILE|- with a request body"),
            };
            let p = c.predict(name, version.as_deref(), &req).await?;
            if json {
                return print_json(&p.body);
            }
            print_prediction(&p.body);
            Ok(())
        }
        Command::Chat { name, message, system, max_tokens, temperature, seed } => {
            let c = client(&cli)?;
            let mut req = ChatCompletionRequest {
                model: name.clone(),
                messages: Vec::new(),
                params: SamplingParams {
                    max_tokens: *max_tokens,
                    temperature: Some(*temperature),
                    seed: *seed,
                    ..Default::default()
                },
            };
            let system = system.iter().map(|s| chat_message("system", s.clone()));
            req.messages.extend(system);
            let one = match message.as_deref() {
                Some("-") => Some(std::io::read_to_string(std::io::stdin())?),
                Some(m) => Some(m.to_string()),
                None if !std::io::stdin().is_terminal() => Some(std::io::read_to_string(std::io::stdin())?),
                None => None,
            };
            if let Some(m) = one {
                if m.trim().is_empty() {
                    bail!("the message is empty: give one, or run `zoo chat {name}` in a terminal to converse");
                }
                req.messages.push(chat_message("user", m));
                let (answer, finish) = chat_answer(&c, &req, !json).await?;
                if json {
                    return print_json(&serde_json::json!({"content": answer, "finish_reason": finish}));
                }
                return Ok(());
            }
            let first = req.messages.len();
            eprintln!("chatting with {name}: an empty line or Ctrl-D ends, /reset starts over");
            loop {
                eprint!("> ");
                let mut line = String::new();
                if std::io::stdin().read_line(&mut line)? == 0 || line.trim().is_empty() {
                    return Ok(());
                }
                if line.trim() == "/reset" {
                    req.messages.truncate(first);
                    continue;
                }
                req.messages.push(chat_message("user", line.trim_end().to_string()));
                match chat_answer(&c, &req, true).await {
                    Ok((answer, _)) => req.messages.push(chat_message("assistant", answer)),
                    Err(e) => {
                        // The conversation goes on without the message that failed.
                        req.messages.pop();
                        eprintln!("error: {e:#}");
                    }
                }
            }
        }
        Command::Pull { name, version, out } => {
            let c = client(&cli)?;
            let info = c.show_version(name, version).await?;
            let ext = if info.signature.bundle { "tar" } else { "onnx" };
            let dest = out.clone().unwrap_or_else(|| PathBuf::from(format!("{name}-{version}.{ext}")));
            let info = c.pull(name, version, &dest).await?;
            if json {
                return print_json(&serde_json::json!({"path": dest, "sha256": info.sha256, "size": info.size}));
            }
            println!("saved {} ({}, sha256 {})", dest.display(), human_size(info.size), info.sha256);
            Ok(())
        }
        Command::Rm { name, version, all } => {
            let c = client(&cli)?;
            let deleted = if *all {
                c.delete_model(name).await?
            } else {
                let v = version.as_deref().context("--version or --all is required")?;
                vec![c.delete_version(name, v).await?]
            };
            if json {
                return print_json(&deleted);
            }
            if *all {
                println!("deleted model {name} ({} versions)", deleted.len());
            } else {
                for v in deleted {
                    println!("deleted {name} version {}", v.version);
                }
            }
            Ok(())
        }
        Command::Keys { command } => {
            let c = client(&cli)?;
            match command {
                KeysCommand::Create { name, scopes, models, expires_in_days } => {
                    let expires_at = expires_in_days.map(|d| chrono_now_plus_days(d.into()));
                    let k = c
                        .create_key(&CreateKeyRequest {
                            name: name.clone(),
                            scopes: scopes.clone(),
                            models: models.iter().map(|m| zoo_api::ModelPattern::parse(m)).collect::<Result<_, _>>()?,
                            expires_at,
                        })
                        .await?;
                    if json {
                        return print_json(&k);
                    }
                    println!(
                        "created key {} ({}); its secret is shown only now:",
                        k.info.id,
                        scopes_text(&k.info.scopes)
                    );
                    println!("{}", k.key);
                    Ok(())
                }
                KeysCommand::List => {
                    let keys = c.list_keys().await?;
                    if json {
                        return print_json(&keys);
                    }
                    println!("{:<14} {:<24} {:<28} {:<20} {:<8}", "ID", "NAME", "SCOPES", "MODELS", "STATE");
                    for k in keys.keys {
                        let state = if k.revoked {
                            "revoked"
                        } else if k.expires_at.is_some_and(|e| e <= chrono::Utc::now()) {
                            "expired"
                        } else {
                            "active"
                        };
                        let models = if k.models.is_empty() { "*".to_string() } else { k.models.join(",") };
                        println!(
                            "{:<14} {:<24} {:<28} {:<20} {:<8}",
                            k.id,
                            k.name,
                            scopes_text(&k.scopes),
                            models,
                            state
                        );
                    }
                    Ok(())
                }
                KeysCommand::Revoke { id, confirm } => {
                    let k = c.revoke_key(id, *confirm).await?;
                    if json {
                        return print_json(&k);
                    }
                    println!("revoked key {}", k.id);
                    Ok(())
                }
            }
        }
    }
}

fn chat_message(role: &str, text: String) -> ChatMessage {
    ChatMessage { role: role.into(), content: Some(Content::Text(text)), name: None }
}

/// One answer of a chat, printed as it comes; a note on standard error when the
/// answer was cut at `--max-tokens` or the model's context.
async fn chat_answer(c: &Client, req: &ChatCompletionRequest, print: bool) -> anyhow::Result<(String, Option<String>)> {
    use std::io::Write as _;
    let mut out = std::io::stdout();
    let (answer, finish) = c
        .chat(req, |piece| {
            if print {
                let _ = out.write_all(piece.as_bytes());
                let _ = out.flush();
            }
        })
        .await?;
    if print {
        println!();
    }
    if finish.as_deref() == Some("length") {
        eprintln!("(cut at the token limit)");
    }
    Ok((answer, finish))
}

fn chrono_now_plus_days(days: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now() + chrono::TimeDelta::days(days)
}

fn scopes_text(scopes: &[Scope]) -> String {
    scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
}

fn default_name(path: &Path) -> anyhow::Result<String> {
    let stem = if path.is_dir() {
        path.canonicalize()?.file_name().map(|s| s.to_owned())
    } else {
        path.file_stem().map(|s| s.to_owned())
    };
    let stem = stem.map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    zoo_api::names::model_name_from(&stem)
        .with_context(|| format!("cannot make a model name from '{stem}': pass --name"))
}

async fn deploy(
    c: &Client,
    path: &Path,
    name: &str,
    version: Option<&str>,
    query: &DeployQuery,
    progress: bool,
) -> anyhow::Result<VersionInfo> {
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    let packed = if meta.is_dir() {
        // The bundle is packed twice, never to disk: once into its hash and size,
        // then again as it is sent.
        let dir = path.to_path_buf();
        let packed = tokio::task::spawn_blocking(move || zoo_client::pack::measure(&dir)).await??;
        if packed.files.is_empty() {
            bail!("{} holds no files", path.display());
        }
        Some(packed)
    } else {
        None
    };
    let size = packed.as_ref().map_or(meta.len(), |p| p.size);
    let bar = if progress && std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(size);
        bar.set_style(
            ProgressStyle::with_template("uploading {bar:30} {bytes}/{total_bytes} {bytes_per_sec} {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let b = bar.clone();
    let progress = move |n| b.set_position(n);
    let info = match &packed {
        Some(p) => c.deploy_dir(name, version, path, p, query, progress).await,
        None => c.deploy_file(name, version, path, "application/octet-stream", query, progress).await,
    };
    bar.finish_and_clear();
    Ok(info?)
}

fn print_deployed(c: &Client, info: &VersionInfo) {
    let kind = if info.signature.bundle { "bundle" } else { "file" };
    println!(
        "deployed {} version {} ({} {kind}, {}, {})",
        info.model,
        info.version,
        info.format.as_str(),
        human_size(info.size),
        info.task.as_str()
    );
    if !info.servable {
        println!("warning: stored, but NOT servable: {}", info.reason.as_deref().unwrap_or("no reason given"));
        return;
    }
    match (&info.runtime, info.warmup_ms) {
        (Some(rt), Some(w)) => println!("serving with {rt} (warm-up {w:.1} ms)"),
        (Some(rt), None) => println!("serving with {rt}"),
        _ => {}
    }
    let url = format!("{}{}", c.base_url(), info.endpoints.predict_default);
    println!("endpoint: POST {url}");
    let body = match info.task {
        Task::TextGeneration => {
            println!(
                "try it:\n  zoo chat {}\n  OpenAI clients: base_url {}/openai/v1, model \"{}\"",
                info.model,
                c.base_url(),
                info.model
            );
            return;
        }
        _ if info.task.takes_text(&info.signature) => r#"{"inputs": "good job"}"#.to_string(),
        _ if info.task.takes_image(&info.signature) => {
            println!(
                "try it:\n  zoo predict {} --file cat.jpg\n  curl -H \"Authorization: Bearer $ZOO_API_KEY\" -H 'Content-Type: image/jpeg' --data-binary @cat.jpg {url}",
                info.model
            );
            return;
        }
        Task::ImageClassification => r#"{"inputs": ["<base64 image>"]}"#.to_string(),
        // MLflow's text models: a list of texts, answered in MLflow's shape.
        Task::TextClassification | Task::FeatureExtraction | Task::TokenClassification => {
            r#"{"inputs": ["good job"]}"#.to_string()
        }
        Task::Tensor => example_tensor_body(info),
    };
    println!("try it:\n  curl -H \"Authorization: Bearer $ZOO_API_KEY\" -d '{body}' {url}");
}

fn example_tensor_body(info: &VersionInfo) -> String {
    let mut inputs = serde_json::Map::new();
    for i in &info.signature.inputs {
        let shape: Vec<usize> = i
            .shape
            .as_deref()
            .unwrap_or(&[])
            .iter()
            .map(|d| d.fixed().map(|n| n.clamp(1, 4) as usize).unwrap_or(1))
            .collect();
        let zero = match i.dtype {
            zoo_api::DType::Float32 | zoo_api::DType::Float64 => Value::from(0.0),
            zoo_api::DType::Bool => Value::from(false),
            _ => Value::from(0),
        };
        let v = shape.iter().rev().fold(zero, |acc, n| Value::Array(vec![acc; *n]));
        inputs.insert(i.name.clone(), v);
    }
    serde_json::json!({ "inputs": inputs }).to_string()
}

fn print_version(v: &VersionInfo) {
    println!("{} version {}  [{}]", v.model, v.version, if v.servable { "servable" } else { "not servable" });
    println!("  format   {}{}", v.format.as_str(), if v.signature.bundle { " (bundle)" } else { "" });
    println!("  task     {}", v.task.as_str());
    println!("  size     {}  sha256 {}", human_size(v.size), v.sha256);
    if let Some(rt) = &v.runtime {
        println!("  runtime  {rt}{}", v.warmup_ms.map(|w| format!(" (warm-up {w:.1} ms)")).unwrap_or_default());
    }
    if let Some(r) = &v.reason {
        println!("  reason   {r}");
    }
    let e = &v.effective;
    if e.batched && e.max_batch_size > 1 {
        let measured: Vec<String> =
            e.measured_batches.iter().map(|r| format!("{} rows {:.0}/s", r.batch, r.rows_per_s)).collect();
        let measured =
            if measured.is_empty() { String::new() } else { format!(" (measured: {})", measured.join(", ")) };
        println!("  batching up to {} rows{measured}", e.max_batch_size);
    }
    if !v.labels.is_empty() {
        println!("  labels   {}", v.labels.join(", "));
    }
    for i in &v.signature.inputs {
        println!("  input    {} {}", i.name, i.type_text);
    }
    for o in &v.signature.outputs {
        println!("  output   {} {}", o.name, o.type_text);
    }
    println!("  created  {} by {}", v.created_at.format("%Y-%m-%d %H:%M:%S UTC"), v.created_by);
}

fn print_prediction(body: &Value) {
    let label_line = |v: &Value| -> Option<String> {
        let items = v.as_array()?;
        let parts: Option<Vec<String>> = items
            .iter()
            .map(|i| Some(format!("{} {:.4}", i.get("label")?.as_str()?, i.get("score")?.as_f64()?)))
            .collect();
        parts.map(|p| p.join("  "))
    };
    // Entities (token-classification): `PER "Sarah" 11..16 0.9876`.
    let entity_line = |v: &Value| -> Option<String> {
        let items = v.as_array().filter(|a| a.first().is_some_and(|e| e.get("entity_group").is_some()))?;
        let parts: Option<Vec<String>> = items
            .iter()
            .map(|e| {
                Some(format!(
                    "{} {:?} {}..{} {:.4}",
                    e.get("entity_group")?.as_str()?,
                    e.get("word")?.as_str()?,
                    e.get("start")?.as_u64()?,
                    e.get("end")?.as_u64()?,
                    e.get("score")?.as_f64()?
                ))
            })
            .collect();
        parts.map(|p| p.join("  "))
    };
    let embedding_line = |v: &Value| -> Option<String> {
        let nums = v.as_array()?.iter().map(Value::as_f64).collect::<Option<Vec<f64>>>()?;
        let head: Vec<String> = nums.iter().take(6).map(|x| format!("{x:.4}")).collect();
        let norm = nums.iter().map(|x| x * x).sum::<f64>().sqrt();
        Some(format!("embedding [{}]: {} ... (L2 norm {norm:.3})", nums.len(), head.join(" ")))
    };
    if let Some(line) = entity_line(body).or_else(|| label_line(body)).or_else(|| embedding_line(body)) {
        println!("{line}");
        return;
    }
    if let Some(rows) = body.as_array().filter(|r| !r.is_empty())
        && let Some(lines) = rows
            .iter()
            .map(|r| entity_line(r).or_else(|| label_line(r)).or_else(|| embedding_line(r)))
            .collect::<Option<Vec<_>>>()
    {
        for l in lines {
            println!("{l}");
        }
        return;
    }
    println!("{}", serde_json::to_string_pretty(body).unwrap_or_default());
}

fn human_size(n: i64) -> String {
    let n = n as f64;
    if n < 1024.0 {
        format!("{n} B")
    } else if n < 1024.0 * 1024.0 {
        format!("{:.1} KiB", n / 1024.0)
    } else if n < 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} MiB", n / 1024.0 / 1024.0)
    } else {
        format!("{:.2} GiB", n / 1024.0 / 1024.0 / 1024.0)
    }
}
