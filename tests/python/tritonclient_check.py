#!/usr/bin/env python3
"""Drive zoo with NVIDIA's tritonclient[http] (the KServe v2 protocol), unchanged.

Usage: tritonclient_check.py URL KEY CASES.json
CASES.json: {"float": {"model", "input", "output", "x", "y"},
             "int64": {"model", "inputs": {name: [[...]]}, "output", "y"},
             "text":  {"model", "texts", "labels"}}
Prints what it checked; exits 1 on the first mismatch.
"""
import json
import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

url, key, cases_path = sys.argv[1:4]
cases = json.load(open(cases_path))
headers = {"Authorization": f"Bearer {key}"}
client = httpclient.InferenceServerClient(url=url.removeprefix("http://"))


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}")
        sys.exit(1)
    print(f"ok: {what}")


check(client.is_server_live(), "server live")
check(client.is_server_ready(), "server ready")
meta = client.get_server_metadata(headers=headers)
check(meta["name"] == "zoo" and "binary_tensor_data" in meta["extensions"], f"server metadata {meta}")

# Unauthenticated calls are refused.
try:
    client.get_model_metadata(cases["float"]["model"])
    check(False, "metadata without a key is refused")
except InferenceServerException as e:
    check("unauthorized" in str(e), f"metadata without a key is refused ({e})")

f = cases["float"]
check(client.is_model_ready(f["model"], headers=headers), "model ready")
m = client.get_model_metadata(f["model"], headers=headers)
check([i["name"] for i in m["inputs"]] == [f["input"]] and m["inputs"][0]["datatype"] == "FP32", f"model metadata {m}")
x = np.array(f["x"], dtype=np.float32)
for binary_in in (False, True):
    for binary_out in (False, True):
        inp = httpclient.InferInput(f["input"], list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary_in)
        out = httpclient.InferRequestedOutput(f["output"], binary_data=binary_out)
        r = client.infer(f["model"], [inp], outputs=[out], request_id="req-42", headers=headers)
        y = r.as_numpy(f["output"])
        check(np.allclose(y, np.array(f["y"]), atol=1e-5), f"FP32 infer (binary in={binary_in}, out={binary_out})")
        check(r.get_response()["id"] == "req-42", "id echoed")

i = cases["int64"]
inputs = []
for name, value in i["inputs"].items():
    a = np.array(value, dtype=np.int64)
    t = httpclient.InferInput(name, list(a.shape), "INT64")
    t.set_data_from_numpy(a, binary_data=True)
    inputs.append(t)
r = client.infer(i["model"], inputs, headers=headers)
check(np.allclose(r.as_numpy(i["output"]), np.array(i["y"]), atol=1e-4), "INT64 infer (binary)")
r = client.infer(i["model"], inputs, model_version="1", headers=headers)
check(r.get_response()["model_version"] == "1", "infer on an explicit version")

t = cases["text"]
texts = np.array([s.encode() for s in t["texts"]], dtype=np.object_)
inp = httpclient.InferInput("text", [len(t["texts"])], "BYTES")
inp.set_data_from_numpy(texts, binary_data=True)
r = client.infer(t["model"], [inp], outputs=[httpclient.InferRequestedOutput("label", binary_data=False)], headers=headers)
labels = [l.decode() if isinstance(l, bytes) else l for l in r.as_numpy("label").tolist()]
check(labels == t["labels"], f"BYTES text in, labels out: {labels}")

# A wrong datatype is a clear error.
bad = httpclient.InferInput(f["input"], list(x.shape), "FP64")
bad.set_data_from_numpy(x.astype(np.float64))
try:
    client.infer(f["model"], [bad], headers=headers)
    check(False, "a wrong datatype is refused")
except InferenceServerException as e:
    check("invalid_input" in str(e) and "FP32" in str(e), f"a wrong datatype is refused ({e})")
print("tritonclient: all checks passed")
