"""Greedy answers of llama.cpp (llama-cpp-python) to fixed chat prompts, the
reference zoo's GGUF engine is compared with (tests/python/test_openai.py).

    python llama_reference.py MODEL.gguf OUT.json

The prompt is the model's own chat template (from the GGUF, rendered with
jinja2 as transformers and llama-cpp-python do, generation prompt added); the
answer is llama.cpp's greedy decoding (temperature 0) of at most `max_tokens`
tokens, stopped at the template's end token. Written with the token ids, their
text pieces and their log-probabilities, so a comparison can say how many tokens
agree, how closely, and whether a divergence is a near tie.
"""

import hashlib
import json
import math
import platform
import sys

import jinja2
import llama_cpp

PROMPTS = [
    "What is the capital of France?",
    "Name three colours.",
    "What is 2 + 2?",
    "Write one sentence about cats.",
    "Translate 'good morning' into Spanish.",
    "Give me a word that rhymes with 'light'.",
]
MAX_TOKENS = 48


def cpu():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main(model, out):
    llm = llama_cpp.Llama(model_path=model, n_ctx=2048, n_threads=2, seed=0, verbose=False, logits_all=True)
    template = jinja2.Environment(loader=jinja2.BaseLoader()).from_string(llm.metadata["tokenizer.chat_template"])
    # The end of the answer: EOS, and the template's end-of-turn token.
    ends = {llm.token_eos()}
    end_of_turn = llm.tokenize(b"<|im_end|>", add_bos=False, special=True)
    if len(end_of_turn) == 1:
        ends.add(end_of_turn[0])
    answers = []
    for text in PROMPTS:
        messages = [{"role": "user", "content": text}]
        prompt = template.render(messages=messages, add_generation_prompt=True, bos_token="", eos_token="")
        prompt_tokens = llm.tokenize(prompt.encode(), add_bos=False, special=True)
        llm.reset()
        tokens = []
        for tok in llm.generate(prompt_tokens, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0, reset=True):
            if tok in ends:
                break
            tokens.append(tok)
            if len(tokens) == MAX_TOKENS:
                break
        pieces = [llm.detokenize([t]).decode("utf-8", errors="replace") for t in tokens]
        # llama.cpp's log-probability of each answer token, from its logits at the
        # position before it (logits_all keeps every position's).
        logprobs = []
        for i, t in enumerate(tokens):
            row = llm.scores[len(prompt_tokens) - 1 + i]
            top = float(max(row))
            norm = top + math.log(sum(math.exp(float(x) - top) for x in row))
            logprobs.append(round(float(row[t]) - norm, 5))
        answer = llm.detokenize(tokens).decode("utf-8", errors="replace")
        print(f"{text!r} -> {answer!r}", file=sys.stderr)
        answers.append({
            "messages": messages,
            "max_tokens": MAX_TOKENS,
            "prompt": prompt,
            "prompt_tokens": prompt_tokens,
            "tokens": tokens,
            "pieces": pieces,
            "logprobs": logprobs,
            "text": answer,
        })
    with open(model, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    doc = {
        "made_by": "tests/python/llama_reference.py (scripts/llama-reference)",
        "model_sha256": sha,
        "llama_cpp_python": llama_cpp.__version__,
        "cpu": cpu(),
        "answers": answers,
    }
    with open(out, "w") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main(*sys.argv[1:3])
