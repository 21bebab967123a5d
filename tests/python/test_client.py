"""zoo's Python client (client/python) against a live zoo: run by
tests/tests/python_client.rs, which starts the server and passes ZOO_URL,
ZOO_API_KEY and ZOO_TEST_CASES (a JSON file: the text classifier's directory and
the label each of its sentences must get)."""

import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import zoo

CASES = json.load(open(os.environ["ZOO_TEST_CASES"]))


def mlp(seed: int) -> onnx.ModelProto:
    """A float32 MLP 4 -> 8 -> 3 with fixed random weights, built with onnx itself."""
    rng = np.random.default_rng(seed)
    w1, b1 = rng.normal(size=(4, 8)).astype(np.float32), rng.normal(size=8).astype(np.float32)
    w2, b2 = rng.normal(size=(8, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    init = [helper.make_tensor(n, TensorProto.FLOAT, a.shape, a.flatten()) for n, a in
            (("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2))]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "w2"], ["o"]),
        helper.make_node("Add", ["o", "b2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        init,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def test_an_onnx_model_object_deploys_and_answers_as_onnx_runtime_does():
    model = mlp(seed=7)
    v = zoo.deploy(model, "py-mlp", description="built in Python", progress=False)
    assert (v.model, v.version, v.task, v.servable) == ("py-mlp", "1", "tensor", True)
    assert v.endpoint == f"{os.environ['ZOO_URL']}/v1/models/py-mlp/versions/1/predict"
    assert [i["name"] for i in v.signature["inputs"]] == ["x"]
    x = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    got = np.array(v.predict({"x": x.tolist()})["outputs"]["y"], dtype=np.float32)
    assert got.shape == (5, 3)
    assert np.abs(got - want).max() < 1e-5
    doc = v.openapi()
    assert doc["openapi"] == "3.1.0" and "/v1/models/py-mlp/versions/1/predict" in doc["paths"]
    # A second deploy is the next version, and an alias can point back.
    v2 = zoo.deploy(mlp(seed=8), "py-mlp", alias="production")
    assert v2.version == "2"
    client = zoo.Client()
    assert client.model("py-mlp")["aliases"]["production"] == "2"
    client.set_alias("py-mlp", "production", "1")
    got = np.array(client.predict("py-mlp", {"x": x.tolist()})["outputs"]["y"], dtype=np.float32)
    assert np.abs(got - want).max() < 1e-5, "production points at version 1 again"
    assert "py-mlp" in [m["name"] for m in client.models(q="py-")]


def test_a_saved_file_and_a_model_directory_deploy_as_the_cli_sends_them(tmp_path):
    path = tmp_path / "model.onnx"
    onnx.save(mlp(seed=9), str(path))
    v = zoo.Client().deploy(str(path), "py-file", version="7", max_batch_size=4, progress=False)
    assert v.version == "7" and v.info["effective"]["max_batch_size"] == 4
    # A directory: links followed, hidden files left out, long names kept.
    real = tmp_path / "elsewhere"
    real.mkdir()
    onnx.save(mlp(seed=10), str(real / "model.onnx"))
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "model.onnx").symlink_to(real / "model.onnx")
    (bundle / "docs").symlink_to(real, target_is_directory=True)
    long_name = "notes-" + "x" * 120 + ".txt"
    (bundle / long_name).write_text("how this model was trained")
    (bundle / ".secret").write_text("not sent")
    v = zoo.deploy(bundle, "py-dir", progress=False)
    sent = sorted(f["path"] for f in v.signature["files"])
    assert sent == sorted(["model.onnx", "docs/model.onnx", long_name]), sent
    assert v.servable, v.info
    # The text classifier's directory: sent as a tar bundle, served as a text task.
    v = zoo.deploy(CASES["dir"], "py-text")
    assert v.task == "text-classification"
    for text, label in CASES["cases"]:
        answer = v.predict(text)
        assert answer[0]["label"] == label, (text, answer)
        assert abs(sum(a["score"] for a in answer) - 1.0) < 1e-4
    top = zoo.predict("py-text", [c[0] for c in CASES["cases"]], top_k=1)
    assert [a[0]["label"] for a in top] == [c[1] for c in CASES["cases"]]


def test_errors_carry_the_servers_status_code_and_message(tmp_path):
    junk = tmp_path / "notes.txt"
    junk.write_text("not a model at all, just some words")
    with pytest.raises(zoo.ZooError) as e:
        zoo.deploy(junk, "py-junk")
    assert (e.value.status, e.value.code) == (422, "unknown_format")
    assert "zoo accepts" in e.value.message
    with pytest.raises(zoo.ZooError) as e:
        zoo.predict("py-no-such-model", "hello")
    assert (e.value.status, e.value.code) == (404, "model_not_found")
    with pytest.raises(zoo.ZooError) as e:
        zoo.Client(key="zk_nobody_000000000000").predict("py-mlp", {"x": [[0, 0, 0, 0]]})
    assert (e.value.status, e.value.code) == (401, "unauthorized")
    with pytest.raises(zoo.ZooError) as e:
        zoo.Client(url="http://127.0.0.1:9").models()
    assert (e.value.status, e.value.code) == (0, "connection_failed")
    with pytest.raises(TypeError, match="cannot deploy a builtins.dict"):
        zoo.deploy({"weights": [1, 2]}, "py-dict")
    with pytest.raises(FileNotFoundError):
        zoo.deploy(tmp_path / "missing.onnx", "py-missing")


def test_the_cli_login_is_used_when_the_environment_says_nothing(tmp_path, monkeypatch):
    config = tmp_path / "config.toml"
    config.write_text(f'url = "{os.environ["ZOO_URL"]}"\nkey = "{os.environ["ZOO_API_KEY"]}"\n')
    monkeypatch.delenv("ZOO_URL")
    monkeypatch.delenv("ZOO_API_KEY")
    monkeypatch.setenv("ZOO_CONFIG", str(config))
    client = zoo.Client()
    assert client.url == config.read_text().split('"')[1]
    # The saved key is sent: listing needs one.
    assert isinstance(client.models(), list)
    assert zoo.Client(key="zk_nobody_000000000000").key != client.key


def test_keys_limit_what_a_client_may_do():
    admin = zoo.Client()
    zoo.deploy(mlp(seed=11), "py-keys-a", progress=False)
    zoo.deploy(mlp(seed=12), "py-keys-b", progress=False)
    created = admin.create_key("py predict a", ["predict"], models=["py-keys-a"])
    assert created["key"].startswith(f"zk_{created['info']['id']}_")
    assert created["info"]["id"] in [k["id"] for k in admin.keys()]
    limited = zoo.Client(key=created["key"])
    x = {"x": [[0.5, 0.5, 0.5, 0.5]]}
    assert "outputs" in limited.predict("py-keys-a", x)
    with pytest.raises(zoo.ZooError) as e:
        limited.predict("py-keys-b", x)
    assert (e.value.status, e.value.code) == (403, "forbidden")
    with pytest.raises(zoo.ZooError) as e:
        limited.deploy(mlp(seed=13), "py-keys-a")
    assert (e.value.status, e.value.code) == (403, "forbidden")
    assert admin.revoke_key(created["info"]["id"])["revoked"] is True
    with pytest.raises(zoo.ZooError) as e:
        limited.predict("py-keys-a", x)
    assert (e.value.status, e.value.code) == (401, "unauthorized")
