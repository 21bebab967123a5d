//! Text generation end to end: a GGUF Llama (a tiny one with random weights,
//! written by the test) deployed with the real CLI to the real server, then
//! called through zoo's predict route and the OpenAI routes, streaming and not,
//! with keys, stop strings, limits and errors as a client sees them.

use futures::StreamExt;
use serde_json::{Value, json};
use zoo_tests::helpers::{code, json_of, tmp};
use zoo_tests::{Server, ok};

fn deploy_tiny(s: &Server) -> tempfile::TempDir {
    let dir = tmp();
    let path = dir.path().join("tiny.gguf");
    std::fs::write(&path, zoo_formats::gguf::write::tiny_llama()).unwrap();
    // Naming the task it has is no error; naming one it cannot have is.
    for task in ["tensor", "text-classification"] {
        let refused = s.cli(&["deploy", path.to_str().unwrap(), "--name", "tiny", "--task", task]);
        assert!(!refused.status.success(), "a language model deployed as {task}");
    }
    let out = ok(&s.cli(&["deploy", path.to_str().unwrap(), "--name", "tiny", "--task", "text-generation"]));
    assert!(out.contains("gguf file") && out.contains("text-generation"), "{out}");
    assert!(out.contains("zoo chat tiny") && out.contains("/openai/v1"), "prints how to call it: {out}");
    dir
}

/// The `data:` payloads of a server-sent event stream.
async fn events(r: reqwest::Response) -> Vec<String> {
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/event-stream"), "{ct}");
    let mut text = String::new();
    let mut body = r.bytes_stream();
    while let Some(b) = body.next().await {
        text.push_str(&String::from_utf8_lossy(&b.unwrap()));
    }
    text.lines().filter_map(|l| l.strip_prefix("data: ")).map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gguf_model_answers_predict_chat_and_completions() {
    let s = Server::start();
    let _dir = deploy_tiny(&s);
    let http = s.http();
    let key = &s.admin_key;
    let info: Value =
        http.get(s.at("/v1/models/tiny/versions/1")).bearer_auth(key).send().await.unwrap().json().await.unwrap();
    assert_eq!(info["format"], "gguf");
    assert_eq!(info["signature"]["gguf"]["architecture"], "llama");
    assert_eq!(info["servable"], true, "{info}");

    // zoo's predict route: the prompt and its continuation, the same twice (greedy).
    let predict = json!({"inputs": "the cat", "parameters": {"max_new_tokens": 12}});
    let (st, a) =
        json_of(http.post(s.at("/v1/models/tiny/predict")).bearer_auth(key).json(&predict).send().await.unwrap()).await;
    assert_eq!(st, 200, "{a}");
    let text = a[0]["generated_text"].as_str().unwrap();
    assert!(text.starts_with("the cat") && text.len() > "the cat".len(), "{a}");
    let (_, b) =
        json_of(http.post(s.at("/v1/models/tiny/predict")).bearer_auth(key).json(&predict).send().await.unwrap()).await;
    assert_eq!(a, b, "greedy decoding is repeatable");
    let only_new = json!({"inputs": "the cat", "parameters": {"max_new_tokens": 12, "return_full_text": false}});
    let (_, c) =
        json_of(http.post(s.at("/v1/models/tiny/predict")).bearer_auth(key).json(&only_new).send().await.unwrap())
            .await;
    assert_eq!(format!("the cat{}", c[0]["generated_text"].as_str().unwrap()), text);
    let (st, e) = json_of(
        http.post(s.at("/v1/models/tiny/predict"))
            .bearer_auth(key)
            .json(&json!({"inputs": "x", "parameters": {"beams": 4}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((st, code(&e)), (400, "invalid_request"), "unknown parameters are refused: {e}");

    // Chat completions, whole and streamed: the same text, usage at the end.
    let chat = json!({"model": "tiny", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 10, "temperature": 0});
    let (st, whole) =
        json_of(http.post(s.at("/v1/chat/completions")).bearer_auth(key).json(&chat).send().await.unwrap()).await;
    assert_eq!(st, 200, "{whole}");
    assert_eq!(whole["object"], "chat.completion");
    assert_eq!(whole["choices"][0]["message"]["role"], "assistant");
    let usage = &whole["usage"];
    let n = usage["completion_tokens"].as_u64().unwrap();
    assert!((1..=10).contains(&n), "{whole}");
    assert_eq!(whole["choices"][0]["finish_reason"], if n == 10 { "length" } else { "stop" });
    assert_eq!(usage["total_tokens"].as_u64().unwrap(), usage["prompt_tokens"].as_u64().unwrap() + n);
    let mut streamed = chat.clone();
    streamed["stream"] = true.into();
    let data =
        events(http.post(s.at("/openai/v1/chat/completions")).bearer_auth(key).json(&streamed).send().await.unwrap())
            .await;
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String =
        chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect::<Vec<_>>().concat();
    assert_eq!(content, whole["choices"][0]["message"]["content"].as_str().unwrap());
    let last = chunks.last().unwrap();
    assert_eq!(last["usage"], whole["usage"], "the last chunk carries the usage");
    assert_eq!(chunks[chunks.len() - 2]["choices"][0]["finish_reason"], whole["choices"][0]["finish_reason"]);

    // A stop string cuts the text before it.
    let full = whole["choices"][0]["message"]["content"].as_str().unwrap();
    if let Some(stop) = full.char_indices().nth(3).map(|(i, _)| &full[i..]).and_then(|rest| rest.get(..2)) {
        let mut stopped = chat.clone();
        stopped["stop"] = json!([stop]);
        let (_, v) =
            json_of(http.post(s.at("/v1/chat/completions")).bearer_auth(key).json(&stopped).send().await.unwrap())
                .await;
        let got = v["choices"][0]["message"]["content"].as_str().unwrap();
        assert_eq!(got, &full[..full.find(stop).unwrap()], "stop {stop:?} in {full:?}");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
    }

    // Completions: 16 tokens unless asked, echo, streaming.
    let (st, v) = json_of(
        http.post(s.at("/v1/completions"))
            .bearer_auth(key)
            .json(&json!({"model": "tiny@1", "prompt": "the", "temperature": 0, "echo": true}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() <= 16);
    assert!(v["choices"][0]["text"].as_str().unwrap().starts_with("the"));
    let data = events(
        http.post(s.at("/v1/completions"))
            .bearer_auth(key)
            .json(&json!({"model": "tiny", "prompt": "the", "temperature": 0, "max_tokens": 5, "stream": true}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));

    // OpenAI's model list, where it does not collide with zoo's.
    let (st, list) = json_of(http.get(s.at("/openai/v1/models")).bearer_auth(key).send().await.unwrap()).await;
    assert_eq!(st, 200);
    assert_eq!(list["data"][0]["id"], "tiny");
    let metrics = http.get(s.at("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("zoo_time_to_first_token_seconds_count{model=\"tiny\",version=\"1\"}"), "{metrics}");
    assert!(metrics.contains("zoo_generated_tokens_total{model=\"tiny\",version=\"1\"}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_routes_refuse_as_openai_does() {
    let s = Server::start();
    let _dir = deploy_tiny(&s);
    let http = s.http();
    let chat = json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4});
    let err = |v: &Value| (v["error"]["type"].as_str().unwrap_or("").to_string(), v["error"]["param"].clone());
    let (st, v) = json_of(http.post(s.at("/v1/chat/completions")).json(&chat).send().await.unwrap()).await;
    assert_eq!((st, err(&v).0.as_str()), (401, "authentication_error"), "{v}");
    let reader = ok(&s.cli(&["keys", "create", "--name", "reader", "--scope", "read", "-o", "json"]));
    let reader: Value = serde_json::from_str(&reader).unwrap();
    let reader = reader["key"].as_str().unwrap();
    let (st, v) =
        json_of(http.post(s.at("/v1/chat/completions")).bearer_auth(reader).json(&chat).send().await.unwrap()).await;
    assert_eq!((st, err(&v).0.as_str()), (403, "permission_error"), "a key without predict: {v}");
    let key = &s.admin_key;
    for (body, status, param) in [
        (json!({"model": "nope", "messages": [{"role": "user", "content": "hi"}]}), 404, Value::Null),
        (json!({"model": "tiny", "messages": []}), 400, json!("messages")),
        (
            json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "temperature": 9}),
            400,
            json!("temperature"),
        ),
        (json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "n": 3}), 400, json!("n")),
        (
            json!({"model": "tiny", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
            400,
            json!("messages[0].content"),
        ),
        (json!({"model": "Bad Name", "messages": [{"role": "user", "content": "hi"}]}), 400, json!("model")),
    ] {
        let (st, v) =
            json_of(http.post(s.at("/v1/chat/completions")).bearer_auth(key).json(&body).send().await.unwrap()).await;
        assert_eq!(st, status, "{body}: {v}");
        assert_eq!(v["error"]["param"], param, "{body}: {v}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    }
    // A prompt longer than the model's context (1024 tokens).
    let long = "x ".repeat(3000);
    let (st, v) = json_of(
        http.post(s.at("/v1/completions"))
            .bearer_auth(key)
            .json(&json!({"model": "tiny", "prompt": long}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((st, code(&v)), (400, "invalid_input"), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("context"), "{v}");
    // Two streams at once, one dropped mid-way: the other completes.
    let stream = |n: u32| {
        http.post(s.at("/v1/chat/completions"))
            .bearer_auth(key)
            .json(&json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": n, "temperature": 0, "stream": true}))
            .send()
    };
    let (dropped, kept) = tokio::join!(stream(500), stream(20));
    let mut dropped = dropped.unwrap().bytes_stream();
    let _ = dropped.next().await;
    drop(dropped);
    let data = events(kept.unwrap()).await;
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
}

/// The payloads of a stream, as JSON.
async fn json_events(r: reqwest::Response) -> Vec<Value> {
    events(r).await.iter().map(|d| serde_json::from_str(d).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn kserve_generate_and_the_cli_chat_answer_as_the_other_routes() {
    let s = Server::start();
    let _dir = deploy_tiny(&s);
    let http = s.http();
    let key = &s.admin_key;

    // KServe v2 generate (Triton's extension): the prompt and its continuation,
    // as the predict route's greedy answer; streamed, the same text in pieces.
    let (_, predicted) = json_of(
        http.post(s.at("/v1/models/tiny/predict"))
            .bearer_auth(key)
            .json(&json!({"inputs": "the cat", "parameters": {"max_new_tokens": 12}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let predicted = predicted[0]["generated_text"].as_str().unwrap().to_string();
    let (st, meta) = json_of(http.get(s.at("/v2")).bearer_auth(key).send().await.unwrap()).await;
    assert_eq!(st, 200);
    assert!(meta["extensions"].as_array().unwrap().contains(&json!("generate")), "{meta}");
    let (_, meta) = json_of(http.get(s.at("/v2/models/tiny")).bearer_auth(key).send().await.unwrap()).await;
    assert_eq!(meta["inputs"][0]["name"], "text_input", "{meta}");
    let body = json!({"id": "7", "text_input": "the cat", "parameters": {"max_tokens": 12}});
    let (st, g) =
        json_of(http.post(s.at("/v2/models/tiny/generate")).bearer_auth(key).json(&body).send().await.unwrap()).await;
    assert_eq!(st, 200, "{g}");
    assert_eq!(
        (g["id"].as_str(), g["model_name"].as_str(), g["model_version"].as_str()),
        (Some("7"), Some("tiny"), Some("1"))
    );
    assert_eq!(g["text_output"], predicted.as_str());
    let n = g["completion_tokens"].as_u64().unwrap();
    assert_eq!(g["finish_reason"], if n == 12 { "length" } else { "stop" });
    let only_new = json!({"text_input": "the cat", "parameters": {"max_tokens": 12, "exclude_input_in_output": true}});
    let (_, v) = json_of(
        http.post(s.at("/v2/models/tiny/versions/1/generate")).bearer_auth(key).json(&only_new).send().await.unwrap(),
    )
    .await;
    assert_eq!(format!("the cat{}", v["text_output"].as_str().unwrap()), predicted);
    let pieces = json_events(
        http.post(s.at("/v2/models/tiny/generate_stream")).bearer_auth(key).json(&body).send().await.unwrap(),
    )
    .await;
    let streamed: String = pieces.iter().map(|p| p["text_output"].as_str().unwrap()).collect();
    assert_eq!(format!("the cat{streamed}"), predicted);
    let last = pieces.last().unwrap();
    assert_eq!((&last["finish_reason"], &last["completion_tokens"]), (&g["finish_reason"], &g["completion_tokens"]));
    assert!(pieces[..pieces.len() - 1].iter().all(|p| p.get("finish_reason").is_none()));
    // Its errors, in the protocol's shape.
    let reader: Value =
        serde_json::from_str(&ok(&s.cli(&["keys", "create", "--name", "r", "--scope", "read", "-o", "json"]))).unwrap();
    for (req, who, status, code) in [
        (s.at("/v2/models/tiny/generate"), reader["key"].as_str().unwrap(), 403, "forbidden"),
        (s.at("/v2/models/nope/generate"), key.as_str(), 404, "model_not_found"),
    ] {
        let (st, v) = json_of(http.post(req).bearer_auth(who).json(&body).send().await.unwrap()).await;
        assert_eq!(st, status, "{v}");
        assert!(v["error"].as_str().unwrap().starts_with(code), "{v}");
    }
    for bad in [
        json!({"text_input": "x", "parameters": {"beams": 2}}),
        json!({"prompt": "x"}),
        json!({"text_input": "x", "parameters": {"max_tokens": 0}}),
        json!({"text_input": "x", "parameters": {"temperature": -1}}),
    ] {
        let (st, v) =
            json_of(http.post(s.at("/v2/models/tiny/generate")).bearer_auth(key).json(&bad).send().await.unwrap())
                .await;
        assert_eq!(st, 400, "{bad}: {v}");
        assert!(v["error"].as_str().unwrap().starts_with("invalid_"), "{bad}: {v}");
    }
    let (st, v) = json_of(
        http.post(s.at("/v2/models/tiny/infer"))
            .bearer_auth(key)
            .json(&json!({"inputs": [{"name": "text_input", "shape": [1], "datatype": "BYTES", "data": ["x"]}]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 400, "infer points to generate: {v}");
    assert!(v["error"].as_str().unwrap().contains("generate"), "{v}");

    // `zoo chat NAME "message"`: the answer the chat route gives, printed as it streams.
    let chat = json!({"model": "tiny", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 10, "temperature": 0});
    let (_, whole) =
        json_of(http.post(s.at("/v1/chat/completions")).bearer_auth(key).json(&chat).send().await.unwrap()).await;
    let answer = whole["choices"][0]["message"]["content"].as_str().unwrap();
    let out = ok(&s.cli(&["chat", "tiny", "hello", "--max-tokens", "10", "--temperature", "0"]));
    assert_eq!(out, format!("{answer}\n"));
    let out = ok(&s.cli(&["chat", "tiny@1", "hello", "--max-tokens", "10", "--temperature", "0", "-o", "json"]));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((v["content"].as_str(), &v["finish_reason"]), (Some(answer), &whole["choices"][0]["finish_reason"]));
    // The message from standard input.
    let mut cmd = s.cli_command(key);
    cmd.args(["chat", "tiny", "--max-tokens", "10", "--temperature", "0"]).stdin(std::process::Stdio::piped());
    cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"hello").unwrap();
    let out = ok(&child.wait_with_output().unwrap());
    assert_eq!(out, format!("{answer}\n"));
    // Refusals as the server words them.
    let out = s.cli_with_key(reader["key"].as_str().unwrap(), &["chat", "tiny", "hello"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("forbidden"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = s.cli(&["chat", "tiny", "hello", "--temperature", "5"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("temperature"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_catalogue_chat_streams_for_a_session_with_its_csrf_token() {
    let s = Server::start();
    let _dir = deploy_tiny(&s);
    let http = s.http();
    let open = |key: String| {
        let (http, url) = (http.clone(), s.at("/v1/auth/session"));
        async move { http.post(url).json(&json!({"key": key})).send().await.unwrap() }
    };
    let r = open(s.admin_key.clone()).await;
    let cookie = r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    let csrf = r.json::<Value>().await.unwrap()["csrf_token"].as_str().unwrap().to_string();
    let page = http.get(s.at("/models/tiny")).header("cookie", &cookie).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("id=\"chat-form\"") && page.contains("data-chat=\"/models/tiny/chat\""), "{page}");
    let messages = json!([{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"},
        {"role": "user", "content": "how are you?"}])
    .to_string();
    let chat = |csrf: &str, messages: &str| {
        http.post(s.at("/models/tiny/chat"))
            .header("cookie", &cookie)
            .form(&[("csrf", csrf), ("version", "1"), ("messages", messages)])
            .send()
    };
    let events: Vec<Value> =
        events(chat(&csrf, &messages).await.unwrap()).await.iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    let (last, pieces) = events.split_last().unwrap();
    assert!(!pieces.is_empty() && pieces.iter().all(|p| p["text"].is_string()), "{events:?}");
    let n = last["completion_tokens"].as_u64().unwrap();
    assert_eq!(last["finish_reason"], if n == 512 { "length" } else { "stop" }, "{last}");
    // Refused: another CSRF token, a broken conversation, a reader's session.
    let r = chat("wrong", &messages).await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.json::<Value>().await.unwrap()["error"].as_str().unwrap().starts_with("forbidden"));
    let r = chat(&csrf, "[{\"role\": \"user\"}]").await.unwrap();
    assert_eq!(r.status(), 400);
    let reader: Value =
        serde_json::from_str(&ok(&s.cli(&["keys", "create", "--name", "r", "--scope", "read", "-o", "json"]))).unwrap();
    let r = open(reader["key"].as_str().unwrap().to_string()).await;
    let reader_cookie = r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    let reader_csrf = r.json::<Value>().await.unwrap()["csrf_token"].as_str().unwrap().to_string();
    let r = http
        .post(s.at("/models/tiny/chat"))
        .header("cookie", &reader_cookie)
        .form(&[("csrf", reader_csrf.as_str()), ("version", "1"), ("messages", messages.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a session without predict");
    // Without the page's script, the form answers one message on the page.
    let r = http
        .post(s.at("/models/tiny/try"))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str()), ("version", "1"), ("input", "hello")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(page.contains("200 OK") && page.contains("id=\"try-output\""), "{page}");
}
