"""Time to first token and tokens/s of an OpenAI-compatible server, streaming.

    python generate.py BASE_URL KEY MODEL CONCURRENCY REQUESTS [MAX_TOKENS]

Each of CONCURRENCY threads sends chat completions (greedy, the same prompts for
every server, `stream: true`) until REQUESTS are done. Prints one JSON line: the
median time to the first token, the median tokens/s of one stream (tokens after
the first over the time after it), the aggregate tokens/s over the wall time, and
the tokens per answer. Used by scripts/bench-peers against zoo and llama.cpp's
server on the same GGUF.
"""

import json
import statistics
import sys
import threading
import time

import openai

PROMPTS = [
    "Write a short story about a fox who learns to read.",
    "Explain how a bicycle works to a child.",
    "Describe a day at the seaside.",
    "What makes a good cup of tea? Answer in detail.",
]


def main(base, key, model, concurrency, requests, max_tokens=128):
    concurrency, requests, max_tokens = int(concurrency), int(requests), int(max_tokens)
    client = openai.OpenAI(base_url=base, api_key=key, max_retries=0, timeout=600)
    lock = threading.Lock()
    next_request = [0]
    results = []

    def one(i):
        started = time.perf_counter()
        first = None
        pieces = 0
        usage = None
        stream = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
            max_tokens=max_tokens,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        for chunk in stream:
            if getattr(chunk, "usage", None):
                usage = chunk.usage
            for c in chunk.choices:
                if c.delta.content:
                    pieces += 1
                    if first is None:
                        first = time.perf_counter()
        end = time.perf_counter()
        tokens = usage.completion_tokens if usage else pieces
        return {"ttft": (first or end) - started, "tokens": tokens, "decode": end - (first or end)}

    def worker():
        while True:
            with lock:
                i = next_request[0]
                if i >= requests:
                    return
                next_request[0] += 1
            r = one(i)
            with lock:
                results.append(r)

    one(0)  # warm-up, not counted
    wall = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - wall
    per_stream = [(r["tokens"] - 1) / r["decode"] for r in results if r["decode"] > 0 and r["tokens"] > 1]
    print(json.dumps({
        "concurrency": concurrency,
        "requests": len(results),
        "ttft_ms_p50": round(statistics.median(r["ttft"] for r in results) * 1000, 1),
        "stream_tokens_per_s_p50": round(statistics.median(per_stream), 1) if per_stream else None,
        "aggregate_tokens_per_s": round(sum(r["tokens"] for r in results) / wall, 1),
        "tokens_per_answer": round(statistics.mean(r["tokens"] for r in results), 1),
    }))


if __name__ == "__main__":
    main(*sys.argv[1:])
