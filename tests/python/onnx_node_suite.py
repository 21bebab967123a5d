"""The ONNX backend node test suite through zoo.

For every node test of the `onnx` package (its models with their input and
expected output tensors, built by `onnx.backend.test.loader`), ONNX Runtime runs
the model here first: a test is *runnable* when ONNX Runtime loads it and its
answer equals the expected output. Every runnable test whose inputs and outputs
are tensors of a type the KServe v2 protocol carries is then deployed to zoo,
called through the v2 route with binary tensor data (NaN, infinities and 64-bit
integers travel exactly) and, where JSON can carry the values (finite, no empty
tensor), through zoo's own v1 route, and zoo's answer must equal ONNX Runtime's.
A test ONNX Runtime does not load because its IR version or opset is newer than
it reads must be stored by zoo with `servable: false` and that reason.

Usage: python onnx_node_suite.py URL KEY OUT.json [--only SUBSTRING]
Prints the counts; exits 1 when any runnable test is answered differently by zoo.
"""

import ctypes
import json
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto
from onnx.backend.test.loader import load_model_tests

URL, KEY, OUT = sys.argv[1], sys.argv[2], sys.argv[3]
ONLY = sys.argv[sys.argv.index("--only") + 1] if "--only" in sys.argv else None
RTOL, ATOL = 1e-3, 1e-7

# KServe v2 datatypes by ONNX element type (BF16 as Triton names it).
V2 = {
    TensorProto.BOOL: "BOOL", TensorProto.UINT8: "UINT8", TensorProto.UINT16: "UINT16",
    TensorProto.UINT32: "UINT32", TensorProto.UINT64: "UINT64", TensorProto.INT8: "INT8",
    TensorProto.INT16: "INT16", TensorProto.INT32: "INT32", TensorProto.INT64: "INT64",
    TensorProto.FLOAT16: "FP16", TensorProto.FLOAT: "FP32", TensorProto.DOUBLE: "FP64",
    TensorProto.STRING: "BYTES", TensorProto.BFLOAT16: "BF16",
}


def request(method, path, body=None, headers=None):
    req = urllib.request.Request(URL + path, data=body, method=method)
    req.add_header("Authorization", "Bearer " + KEY)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def elem_type(tp):
    return tp.tensor_type.elem_type if tp.WhichOneof("value") == "tensor_type" else None


def v1_differs(out1, outputs, ort_out):
    """The outputs whose v1 JSON answer is not ONNX Runtime's (integers exactly)."""
    diff = []
    for o, w in zip(outputs, ort_out):
        w = np.asarray(w)
        et = elem_type(o.type)
        v = out1.get(o.name)
        a = np.array(v, dtype=object if et == TensorProto.STRING else np.float64)
        if et != TensorProto.STRING and (a.size != w.size):
            diff.append(o.name)
            continue
        a = a.reshape(w.shape)
        if et == TensorProto.STRING:
            ok1 = same(a, w, et)
        elif np.issubdtype(w.dtype, np.integer) or w.dtype == np.bool_:
            ok1 = np.array_equal(np.array(v, dtype=object).reshape(w.shape).astype(w.dtype), w)
        else:
            ok1 = same(a, w.astype(np.float64), et)
        if not ok1:
            diff.append(o.name)
    return diff


def bf16_bits(a):
    return np.asarray(a).astype(np.float32).view(np.uint32).__rshift__(16).astype(np.uint16)


def ort_run(sess, g, inputs):
    """ONNX Runtime's own answer; BF16 tensors go through raw OrtValues (its
    Python API has no numpy type for them)."""
    names = [o.name for o in g.output]
    types = [elem_type(v.type) for v in list(g.input) + list(g.output)]
    if TensorProto.BFLOAT16 not in types:
        return sess.run(names, {v.name: a for v, a in zip(g.input, inputs)})
    feeds, keep = {}, []
    for v, a in zip(g.input, inputs):
        if elem_type(v.type) == TensorProto.BFLOAT16:
            raw = bf16_bits(a).tobytes()
            ov = ort.OrtValue.ortvalue_from_shape_and_type(list(np.shape(a)), TensorProto.BFLOAT16)
            ctypes.memmove(ov.data_ptr(), raw, len(raw))
        else:
            ov = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(a))
        keep.append(ov)
        feeds[v.name] = ov._ortvalue
    values = sess._sess.run_with_ort_values(feeds, names, None)
    out = []
    for i, o in enumerate(g.output):
        ov = values[i]
        if elem_type(o.type) == TensorProto.BFLOAT16:
            n = ov.tensor_size_in_bytes()
            raw = ctypes.string_at(ov.data_ptr(), n) if n else b""
            out.append((np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32).reshape(ov.shape()))
        else:
            out.append(ov.numpy())
    return out


def same(got, want, et):
    if et == TensorProto.STRING:
        return got.shape == want.shape and [str(x) for x in got.ravel()] == [
            x.decode() if isinstance(x, bytes) else str(x) for x in want.ravel()]
    if got.shape != want.shape:
        return False
    if et == TensorProto.BOOL or np.issubdtype(want.dtype, np.integer):
        return np.array_equal(got.astype(want.dtype), want)
    try:
        np.testing.assert_allclose(got.astype(np.float64), np.asarray(want).astype(np.float64),
                                   rtol=RTOL, atol=ATOL, equal_nan=True)
        return True
    except AssertionError:
        return False


def encode_binary(a, et):
    if et == TensorProto.STRING:
        out = b""
        for x in a.ravel():
            b = x if isinstance(x, bytes) else str(x).encode()
            out += len(b).to_bytes(4, "little") + b
        return out
    if et == TensorProto.BFLOAT16:
        return bf16_bits(a).tobytes()
    if et == TensorProto.BOOL:
        return np.asarray(a, dtype=np.bool_).astype(np.uint8).tobytes()
    return np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()


NP = {"UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64, "INT8": np.int8,
      "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "FP16": np.float16, "FP32": np.float32,
      "FP64": np.float64}


def decode_binary(raw, datatype, shape):
    if datatype == "BYTES":
        out, i = [], 0
        while i < len(raw):
            n = int.from_bytes(raw[i:i + 4], "little")
            out.append(raw[i + 4:i + 4 + n].decode())
            i += 4 + n
        return np.array(out, dtype=object).reshape(shape)
    if datatype == "BOOL":
        return np.frombuffer(raw, dtype=np.uint8).astype(bool).reshape(shape)
    if datatype == "BF16":
        return (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32).reshape(shape)
    return np.frombuffer(raw, dtype=np.dtype(NP[datatype]).newbyteorder("<")).reshape(shape)


def infer_v2(name, inputs, outputs):
    header = {"inputs": [], "outputs": [{"name": n, "parameters": {"binary_data": True}} for n in outputs]}
    blobs = []
    for n, (a, et) in inputs.items():
        b = encode_binary(a, et)
        header["inputs"].append({"name": n, "shape": list(a.shape), "datatype": V2[et],
                                 "parameters": {"binary_data_size": len(b)}})
        blobs.append(b)
    js = json.dumps(header).encode()
    status, h, body = request("POST", f"/v2/models/{name}/infer", js + b"".join(blobs),
                              {"Content-Type": "application/octet-stream",
                               "Inference-Header-Content-Length": str(len(js))})
    if status != 200:
        return None, f"v2 {status}: {body[:300]!r}"
    n = int({k.lower(): v for k, v in h.items()}.get("inference-header-content-length", len(body)))
    meta, raw, off, got = json.loads(body[:n]), body[n:], 0, {}
    for o in meta["outputs"]:
        size = o["parameters"]["binary_data_size"]
        got[o["name"]] = decode_binary(raw[off:off + size], o["datatype"], o["shape"])
        off += size
    return got, None


def json_ready(a, et):
    """A tensor as JSON values, or None when JSON cannot carry it exactly."""
    if a.size == 0:
        return None
    if et == TensorProto.STRING:
        return np.vectorize(lambda x: x.decode() if isinstance(x, bytes) else str(x), otypes=[object])(a).tolist()
    if et in (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16):
        f = np.asarray(a, dtype=np.float64)
        if not np.all(np.isfinite(f)):
            return None
        return f.tolist()
    return np.asarray(a).tolist()


def infer_v1(name, inputs, outputs):
    body = {}
    for n, (a, et) in inputs.items():
        j = json_ready(a, et)
        if j is None:
            return None, "skip"
        body[n] = j
    status, _, raw = request("POST", f"/v1/models/{name}/predict", json.dumps({"inputs": body}).encode(),
                             {"Content-Type": "application/json"})
    if status != 200:
        return None, f"v1 {status}: {raw[:300]!r}"
    return json.loads(raw)["outputs"], None


def main():
    t0 = time.time()
    np.random.seed(0)
    cases = load_model_tests(kind="node")
    if ONLY:
        cases = [c for c in cases if ONLY in c.name]
    so = ort.SessionOptions()
    so.log_severity_level = 3
    counts = {"tests": len(cases), "ort_loads": 0, "ort_runnable": 0, "representable": 0, "zoo_v2_equal": 0,
              "v1_checked": 0, "zoo_v1_equal": 0, "beyond_runtime": 0, "beyond_runtime_stored_not_servable": 0}
    excluded, failures, results = {}, [], {}
    for i, case in enumerate(cases):
        model, (inputs, expected) = case.model, case.data_sets[0]
        # The loader hands 0-d tensors over as numpy scalars: they are tensors.
        inputs = [np.asarray(x) if isinstance(x, np.generic) else x for x in inputs]
        expected = [np.asarray(x) if isinstance(x, np.generic) else x for x in expected]
        g = model.graph
        name = f"node-{i}"
        try:
            sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - ORT's own refusal is the fact recorded
            msg = str(e)
            if "max supported IR version" in msg or "official support for domain ai.onnx" in msg:
                counts["beyond_runtime"] += 1
                status, _, body = request("PUT", f"/v1/models/{name}/versions/1", model.SerializeToString())
                info = json.loads(body) if status == 201 else {}
                reason = info.get("reason") or ""
                if status == 201 and info.get("servable") is False and "newer than ONNX Runtime" in reason:
                    counts["beyond_runtime_stored_not_servable"] += 1
                else:
                    failures.append((case.name, f"beyond the runtime, zoo answered {status} {body[:300]!r}"))
                request("DELETE", f"/v1/models/{name}")
                results[case.name] = "beyond_runtime"
            else:
                results[case.name] = "ort_load_error"
            continue
        counts["ort_loads"] += 1
        types = [elem_type(v.type) for v in list(g.input) + list(g.output)]
        kinds_ok = all(t is not None for t in types) and len(inputs) == len(g.input) \
            and all(isinstance(x, np.ndarray) for x in list(inputs) + list(expected))
        try:
            if not kinds_ok:
                raise TypeError("not tensors")
            ort_out = ort_run(sess, g, inputs)
            ok = all(same(np.asarray(a), np.asarray(w), elem_type(o.type))
                     for a, w, o in zip(ort_out, expected, g.output))
        except Exception as e:  # noqa: BLE001
            ok, ort_out = False, None
            if not kinds_ok:
                results[case.name] = "not_tensors"
                kinds = sorted({v.type.WhichOneof("value") for v in list(g.input) + list(g.output)} - {"tensor_type"})
                if kinds:
                    why = f"inputs or outputs of kind {', '.join(kinds)}"
                elif any(t is None for t in types):
                    names = sorted({onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type)
                                    for v, t in zip(list(g.input) + list(g.output), types) if t is None})
                    why = f"element types with no wire form: {', '.join(names)}"
                elif len(inputs) != len(g.input):
                    why = "test data leaves optional inputs out"
                elif any(isinstance(x, TensorProto) for x in list(inputs) + list(expected)):
                    why = "test data numpy cannot hold (float8, 4-bit and 2-bit types, kept as TensorProto)"
                else:
                    why = "test data that is not a tensor (sequences)"
                excluded[why] = excluded.get(why, 0) + 1
                continue
            results[case.name] = f"ort_run_error: {e}"[:200]
            continue
        if not ok:
            results[case.name] = "ort_mismatch"
            continue
        counts["ort_runnable"] += 1
        bad = sorted({TensorProto.DataType.Name(t) for t in types if t not in V2})
        if bad:
            key = f"element types the KServe v2 protocol has no datatype for: {', '.join(bad)}"
            excluded[key] = excluded.get(key, 0) + 1
            results[case.name] = "no_v2_datatype"
            continue
        counts["representable"] += 1
        status, _, body = request("PUT", f"/v1/models/{name}/versions/1", model.SerializeToString())
        if status != 201 or not json.loads(body).get("servable"):
            failures.append((case.name, f"deploy {status}: {body[:400]!r}"))
            results[case.name] = "zoo_deploy_failed"
            request("DELETE", f"/v1/models/{name}")
            continue
        given = {v.name: (a, elem_type(v.type)) for v, a in zip(g.input, inputs)}
        got, err = infer_v2(name, given, [o.name for o in g.output])
        if err is None:
            diff = [o.name for o, w in zip(g.output, ort_out)
                    if o.name not in got or not same(got[o.name], np.asarray(w), elem_type(o.type))]
            err = f"v2 outputs differ from ONNX Runtime's: {diff}" if diff else None
        if err:
            failures.append((case.name, err))
            results[case.name] = "zoo_v2_differs"
        else:
            counts["zoo_v2_equal"] += 1
            results[case.name] = "equal"
            finite_out = all(json_ready(np.asarray(w), elem_type(o.type)) is not None
                             for w, o in zip(ort_out, g.output))
            out1, err1 = infer_v1(name, given, [o.name for o in g.output]) if finite_out else (None, "skip")
            if err1 != "skip":
                counts["v1_checked"] += 1
                if err1 is None:
                    diff = v1_differs(out1, g.output, ort_out)
                    err1 = f"v1 outputs differ from ONNX Runtime's: {diff}" if diff else None
                if err1:
                    failures.append((case.name, err1))
                    results[case.name] = "zoo_v1_differs"
                else:
                    counts["zoo_v1_equal"] += 1
        request("DELETE", f"/v1/models/{name}")
        if (i + 1) % 200 == 0:
            print(f"  {i + 1}/{len(cases)} in {time.time() - t0:.0f} s", flush=True)
    counts["seconds"] = round(time.time() - t0, 1)
    summary = {"counts": counts, "excluded": excluded, "failures": failures, "results": results,
               "onnx": onnx.__version__, "onnxruntime": ort.__version__}
    with open(OUT, "w") as f:
        json.dump(summary, f, indent=1, sort_keys=True)
    print(json.dumps({"counts": counts, "excluded": excluded}, indent=1))
    for name, why in failures[:40]:
        print(f"FAILED {name}: {why}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
