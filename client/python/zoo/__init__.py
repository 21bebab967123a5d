"""Deploy models to a zoo server and call them, from Python.

    import zoo
    v = zoo.deploy("model.onnx", "text-classifier")
    v.predict({"x": [[0.1, 0.2, 0.3, 0.4]]})

What `deploy` takes: a path (a model file, or a model directory, sent as a tar bundle
as `zoo deploy DIR` does), an `onnx.ModelProto`, or a fitted scikit-learn estimator
(an MLflow model in the skops format). Nothing is pickled: objects are saved in a
format zoo validates as data.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import requests

__all__ = ["Client", "Version", "ZooError", "deploy", "predict"]

_CHUNK = 256 * 1024


class ZooError(Exception):
    """An error the server answered (or a connection that failed: status 0,
    code ``connection_failed``)."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{code}: {message}" if status == 0 else f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def _saved_login() -> Dict[str, str]:
    """The login `zoo login` saved (a flat TOML file of `url` and `key`)."""
    path = os.environ.get("ZOO_CONFIG")
    if not path:
        # Where the CLI saves it (Rust's dirs::config_dir).
        if sys.platform == "darwin":
            base = os.path.join(os.path.expanduser("~"), "Library", "Application Support")
        else:
            base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
        path = os.path.join(base, "zoo", "config.toml")
    saved: Dict[str, str] = {}
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                key, sep, value = line.partition("=")
                value = value.strip()
                if sep and key.strip() in ("url", "key") and len(value) >= 2 and value[0] == value[-1] == '"':
                    saved[key.strip()] = value[1:-1]
    except OSError:
        pass
    return saved


class Version:
    """A deployed version: what the server says of it, and how to call it."""

    def __init__(self, client: "Client", info: Dict[str, Any]):
        self._client = client
        self.info = info

    model = property(lambda self: self.info["model"])
    version = property(lambda self: self.info["version"])
    task = property(lambda self: self.info["task"])
    servable = property(lambda self: self.info["servable"])
    signature = property(lambda self: self.info["signature"])

    @property
    def endpoint(self) -> str:
        """The URL that predicts with exactly this version."""
        return self._client.url + self.info["endpoints"]["predict"]

    def predict(self, inputs: Any, **options: Any) -> Any:
        """Predict with this version: `inputs` as its task takes them (a text or
        a list of texts; an image or a list of images; a dict of tensor name ->
        nested lists)."""
        return self._client.predict(self.model, inputs, version=self.version, **options)

    def openapi(self) -> Dict[str, Any]:
        """This version's own OpenAPI document."""
        return self._client._json("GET", self.info["endpoints"]["openapi"])

    def __repr__(self) -> str:
        state = "servable" if self.servable else f"not servable: {self.info.get('reason')}"
        return f"<zoo.Version {self.model} {self.version} ({self.info['format']} {self.task}, {state})>"


class Client:
    """A zoo server. `url` and `key` default to `ZOO_URL` and `ZOO_API_KEY`, then
    to the login `zoo login` saved."""

    def __init__(self, url: Optional[str] = None, key: Optional[str] = None, timeout: float = 300.0):
        saved = _saved_login()
        self.url = (url or os.environ.get("ZOO_URL") or saved.get("url") or "http://127.0.0.1:8080").rstrip("/")
        self.key = key or os.environ.get("ZOO_API_KEY") or saved.get("key")
        self.timeout = timeout
        self._session = requests.Session()
        if self.key:
            self._session.headers["Authorization"] = f"Bearer {self.key}"

    # -- transport --

    def _send(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            r = self._session.request(method, self.url + path, timeout=self.timeout, **kwargs)
        except requests.RequestException as e:
            raise ZooError(0, "connection_failed", f"cannot reach {self.url}: {e}") from None
        if r.status_code >= 400:
            try:
                err = r.json()["error"]
                code, message = err["code"], err["message"]
            except (ValueError, KeyError, TypeError):
                code, message = "http_error", r.text[:500]
            raise ZooError(r.status_code, code, message)
        return r

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._send(method, path, **kwargs).json()

    # -- models --

    def deploy(
        self,
        obj: Any,
        name: str,
        version: Optional[str] = None,
        alias: Optional[str] = None,
        task: Optional[str] = None,
        labels: Optional[List[str]] = None,
        description: Optional[str] = None,
        progress: Optional[bool] = None,
        example: Any = None,
        tokenizer: Any = None,
        example_inputs: Any = None,
        **serving: Any,
    ) -> Version:
        """Upload `obj` as a new version of model `name` (the next number unless
        `version` is given) and return it once stored, validated and loaded.

        `obj`: a path to a model file or directory (an ONNX, TorchScript or
        safetensors file, a Hugging Face or MLflow model directory), an
        `onnx.ModelProto`, a `transformers` pipeline, a `transformers` model (with
        `tokenizer=`, or as a `(model, tokenizer)` pair; saved with
        `save_pretrained` as safetensors and `tokenizer.json`), a `torch.nn.Module`
        (compiled with `torch.jit.script`, or `torch.jit.trace` when
        `example_inputs` is given), or a fitted scikit-learn estimator or pipeline
        (saved as an MLflow model in the skops format; `example`: a few input rows,
        from which MLflow records the signature and so the column names). The
        framework packages are imported only for their own objects.
        `serving`: `max_batch_size`, `max_queue_delay_ms`, `instances`, `load`,
        `max_items`, `max_tokens`, `timeout_secs`, `max_body_bytes`,
        `max_output_bytes`, `runtime`, as `zoo deploy` takes them.
        """
        query: Dict[str, Any] = {k: v for k, v in serving.items() if v is not None}
        for k, v in (("alias", alias), ("task", task), ("description", description)):
            if v is not None:
                query[k] = v
        if labels is not None:
            query["labels"] = ",".join(labels)
        art = _artifact(obj, example, tokenizer=tokenizer, example_inputs=example_inputs)
        with art as (path, content_type):
            if task is None and art.task is not None:
                query["task"] = art.task
            size = path.stat().st_size
            sha = art.sha256 or _sha256(path)
            bar = _progress(size, f"{name}", progress)
            method, route = ("PUT", f"/v1/models/{name}/versions/{version}") if version else (
                "POST",
                f"/v1/models/{name}/versions",
            )
            body = _Reader(path, size, bar)
            try:
                info = self._json(
                    method,
                    route,
                    params=query,
                    data=body,
                    headers={"x-zoo-sha256": sha, "content-type": content_type},
                )
            finally:
                body.close()
                bar(None)
        return Version(self, info)

    def predict(self, model: str, inputs: Any, version: Optional[str] = None, **options: Any) -> Any:
        """Predict with a model's default version (alias `production`, else the
        newest), or with `version`. `inputs`: a text or a list of texts; an image
        (a `PIL.Image`, the bytes of a JPEG or PNG, or a `pathlib.Path` to one) or
        a list of images; a dict of tensor name -> nested lists; a prompt for a
        text-generation model. `options`: `top_k`, `normalize`; `parameters` (a
        dict) for text generation (`max_new_tokens`, `temperature`, ...)."""
        path = f"/v1/models/{model}/versions/{version}/predict" if version else f"/v1/models/{model}/predict"
        body = {"inputs": _encode_images(inputs), **{k: v for k, v in options.items() if v is not None}}
        return self._json("POST", path, json=body)

    def models(self, q: Optional[str] = None) -> List[Dict[str, Any]]:
        """Every model (with `q`, those whose name or description contains it)."""
        found: List[Dict[str, Any]] = []
        cursor = None
        while True:
            params = {"limit": 1000, **({"q": q} if q else {}), **({"cursor": cursor} if cursor else {})}
            page = self._json("GET", "/v1/models", params=params)
            found.extend(page["models"])
            cursor = page.get("next_cursor")
            if not cursor:
                return found

    def model(self, name: str) -> Dict[str, Any]:
        """A model with its versions and aliases."""
        return self._json("GET", f"/v1/models/{name}")

    def version(self, name: str, version: str) -> Version:
        return Version(self, self._json("GET", f"/v1/models/{name}/versions/{version}"))

    def set_alias(self, name: str, alias: str, version: str) -> Dict[str, Any]:
        """Point `alias` (e.g. `production`) at a version; the default route serves `production`."""
        return self._json("PUT", f"/v1/models/{name}/aliases/{alias}", json={"version": version})

    def remove_alias(self, name: str, alias: str) -> Dict[str, Any]:
        return self._json("DELETE", f"/v1/models/{name}/aliases/{alias}")

    # -- keys (admin scope) --

    def create_key(
        self, name: str, scopes: List[str], models: Optional[List[str]] = None, expires_at: Optional[str] = None
    ) -> Dict[str, Any]:
        """A new API key: `{"key": <shown once>, "info": {...}}`. `scopes`: `read`,
        `predict`, `deploy`, `admin`; `models`: name patterns it is limited to;
        `expires_at`: RFC 3339."""
        body: Dict[str, Any] = {"name": name, "scopes": scopes, "models": models or []}
        if expires_at is not None:
            body["expires_at"] = expires_at
        return self._json("POST", "/v1/keys", json=body)

    def keys(self) -> List[Dict[str, Any]]:
        return self._json("GET", "/v1/keys")["keys"]

    def revoke_key(self, key_id: str, confirm: bool = False) -> Dict[str, Any]:
        """Revoke a key (`confirm=True` to revoke the key this client uses)."""
        return self._json("DELETE", f"/v1/keys/{key_id}", params={"confirm": "true"} if confirm else None)


class _artifact:
    """The file to upload for `obj`, with its content type; temporary files are
    removed on exit."""

    def __init__(self, obj: Any, example: Any = None, tokenizer: Any = None, example_inputs: Any = None):
        self.obj = obj
        self.example = example
        self.tokenizer = tokenizer
        self.example_inputs = example_inputs
        self.tmp: Optional[tempfile.TemporaryDirectory] = None
        # The sha256 of a bundle's archive, taken while it was packed.
        self.sha256: Optional[str] = None
        # The task the object says it does (a transformers pipeline's), if any.
        self.task: Optional[str] = None

    def __enter__(self):
        obj = self.obj
        if isinstance(obj, (str, os.PathLike)):
            path = Path(obj)
            if path.is_dir():
                return self._tar(path), "application/x-tar"
            if path.is_file():
                return path, "application/octet-stream"
            raise FileNotFoundError(f"no file or directory at {path}")
        if isinstance(obj, tuple) and len(obj) == 2 and self.tokenizer is None:
            obj, self.tokenizer = obj
        kind = f"{type(obj).__module__}.{type(obj).__name__}"
        if kind.startswith("transformers.") and hasattr(obj, "model") and hasattr(obj, "task"):
            return self._tar(self._pipeline(obj)), "application/x-tar"
        if kind.startswith("transformers.") and hasattr(obj, "save_pretrained") and hasattr(obj, "config"):
            return self._tar(self._pretrained(obj, self.tokenizer)), "application/x-tar"
        if _is_torch_module(obj):
            return self._torch(obj), "application/octet-stream"
        if kind.startswith("onnx") and type(obj).__name__ == "ModelProto":
            out = self._dir() / "model.onnx"
            out.write_bytes(obj.SerializeToString())
            return out, "application/octet-stream"
        if kind.startswith("sklearn.") and hasattr(obj, "predict"):
            return self._tar(self._sklearn(obj)), "application/x-tar"
        raise TypeError(
            f"zoo.deploy cannot deploy a {kind}: give the path of a saved model (a file or a directory), an "
            "onnx.ModelProto, a transformers pipeline or model, a torch.nn.Module or a scikit-learn estimator"
        )

    def _pipeline(self, pipe: Any) -> Path:
        """A transformers pipeline: its model and preprocessors, saved as a
        Hugging Face directory; its task named for zoo."""
        self.task = _PIPELINE_TASKS.get(pipe.task)
        pre = [getattr(pipe, a, None) for a in ("tokenizer", "image_processor", "feature_extractor")]
        return self._pretrained(pipe.model, *[p for p in pre if p is not None])

    def _pretrained(self, model: Any, *preprocessors: Any) -> Path:
        """A transformers model (and its tokenizer or image processor) saved with
        `save_pretrained`: config.json, model.safetensors, tokenizer.json."""
        out = self._dir() / "hf-model"
        model.save_pretrained(str(out), safe_serialization=True)
        for p in preprocessors:
            if p is not None:
                p.save_pretrained(str(out))
        tokenizers = [p for p in preprocessors if p is not None and hasattr(p, "encode")]
        if tokenizers and not (out / "tokenizer.json").is_file():
            raise ValueError(
                "zoo needs the tokenizer as tokenizer.json, which only a fast tokenizer saves: "
                "load it with AutoTokenizer.from_pretrained(..., use_fast=True)"
            )
        if not (out / "model.safetensors").is_file():
            raise ValueError(
                "save_pretrained wrote no single model.safetensors (a sharded checkpoint?): "
                "zoo takes one safetensors file; save with a larger max_shard_size"
            )
        return out

    def _torch(self, module: Any) -> Path:
        """A torch.nn.Module as TorchScript: `torch.jit.trace` with
        `example_inputs` when given, else `torch.jit.script`; a ScriptModule as it is."""
        import torch

        out = self._dir() / "model.pt"
        if isinstance(module, torch.jit.ScriptModule):
            scripted = module
        elif self.example_inputs is not None:
            ex = self.example_inputs
            scripted = torch.jit.trace(module.eval(), ex if isinstance(ex, tuple) else (ex,))
        else:
            scripted = torch.jit.script(module.eval())
        torch.jit.save(scripted, str(out))
        return out

    def _sklearn(self, est: Any) -> Path:
        """A fitted scikit-learn estimator or pipeline as an MLflow model directory
        in the skops format (read by zoo as data; never a pickle), with the
        signature MLflow infers from `example` when one was given."""
        try:
            import mlflow.sklearn
            import skops.io as sio
        except ImportError as e:
            raise ImportError(
                f"deploying a scikit-learn estimator needs mlflow and skops ({e.name} is missing): "
                "pip install mlflow skops"
            ) from None
        out = self._dir() / "sklearn-model"
        signature = None
        if self.example is not None:
            from mlflow.models import infer_signature

            signature = infer_signature(self.example, est.predict(self.example))
        trusted = sio.get_untrusted_types(data=sio.dumps(est)) or None
        mlflow.sklearn.save_model(
            est,
            str(out),
            serialization_format="skops",
            skops_trusted_types=trusted,
            signature=signature,
            # No requirement inference (it loads the model again in a subprocess).
            pip_requirements=[],
        )
        return out

    def _dir(self) -> Path:
        if self.tmp is None:
            self.tmp = tempfile.TemporaryDirectory(prefix="zoo-deploy-")
        return Path(self.tmp.name)

    def _tar(self, root: Path) -> Path:
        """The directory as `zoo deploy DIR` sends it: regular files in sorted
        order, hidden files and directories left out, links followed (their
        content is sent), long names in GNU tar's form."""
        out = self._dir() / "bundle.tar"
        files = []
        for here, dirs, names in os.walk(root, followlinks=True):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for n in names:
                p = Path(here) / n
                if not n.startswith(".") and p.is_file():
                    files.append(p.relative_to(root))
        files.sort()
        with open(out, "wb") as raw, tarfile.open(
            fileobj=(hashed := _HashingWriter(raw)), mode="w", format=tarfile.GNU_FORMAT
        ) as tar:
            for rel in files:
                info = tar.gettarinfo(str(root / rel), arcname=rel.as_posix())
                info.type = tarfile.REGTYPE
                info.linkname = ""
                info.size = (root / rel).stat().st_size
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                info.mode = 0o644
                with open(root / rel, "rb") as f:
                    tar.addfile(info, f)
        self.sha256 = hashed.hexdigest()
        return out

    def __exit__(self, *exc: Any) -> None:
        if self.tmp is not None:
            self.tmp.cleanup()


def _encode_images(inputs: Any) -> Any:
    """Images in `inputs` as base64 (what an image model takes in JSON): a
    `PIL.Image` as PNG, bytes as they are, a `pathlib.Path` read; others unchanged."""
    import base64
    import io

    if isinstance(inputs, list):
        return [_encode_images(i) for i in inputs]
    pil = sys.modules.get("PIL.Image")
    if pil is not None and isinstance(inputs, pil.Image):
        buf = io.BytesIO()
        inputs.save(buf, format="PNG")
        return base64.b64encode(buf.getvalue()).decode("ascii")
    if isinstance(inputs, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(inputs)).decode("ascii")
    if isinstance(inputs, Path):
        return base64.b64encode(inputs.read_bytes()).decode("ascii")
    return inputs


# transformers' pipeline task names -> zoo's tasks.
_PIPELINE_TASKS = {
    "image-classification": "image-classification",
    "text-classification": "text-classification",
    "sentiment-analysis": "text-classification",
    "feature-extraction": "feature-extraction",
    "token-classification": "token-classification",
    "ner": "token-classification",
    "text-generation": "text-generation",
}


def _is_torch_module(obj: Any) -> bool:
    """Whether `obj` is a torch.nn.Module, without importing torch for others."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


class _HashingWriter:
    """A file being written, hashed as it is (the archive's sha256 without
    reading it again)."""

    def __init__(self, f: Any):
        self._f = f
        self._h = hashlib.sha256()

    def write(self, b: bytes) -> int:
        self._h.update(b)
        return self._f.write(b)

    def tell(self) -> int:
        return self._f.tell()

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


class _Reader:
    """The file, streamed in blocks (with its length, so that the request says
    its Content-Length), counting what was sent."""

    def __init__(self, path: Path, size: int, bar: Callable[[Optional[int]], None]):
        self._f = open(path, "rb")
        self._size = size
        self._bar = bar

    def __len__(self) -> int:
        return self._size

    def read(self, n: int = -1) -> bytes:
        chunk = self._f.read(_CHUNK if n is None or n < 0 else n)
        if chunk:
            self._bar(len(chunk))
        return chunk

    def close(self) -> None:
        self._f.close()


def _progress(total: int, label: str, wanted: Optional[bool]) -> Callable[[Optional[int]], None]:
    """A progress callback (bytes sent; `None` to close): tqdm's notebook-aware
    bar when tqdm is installed and `wanted` is not False, else nothing."""
    if wanted is False:
        return lambda n: None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        if wanted:
            raise ImportError("progress=True needs tqdm: pip install 'zoo-client[progress]'") from None
        return lambda n: None
    bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"deploy {label}")

    def update(n: Optional[int]) -> None:
        if n is None:
            bar.close()
        else:
            bar.update(n)

    return update


_default: Optional[Client] = None


def _client() -> Client:
    global _default
    if _default is None:
        _default = Client()
    return _default


def deploy(obj: Any, name: str, **kwargs: Any) -> Version:
    """`Client().deploy(...)` with the environment's server and key."""
    return _client().deploy(obj, name, **kwargs)


def predict(model: str, inputs: Any, **kwargs: Any) -> Any:
    """`Client().predict(...)` with the environment's server and key."""
    return _client().predict(model, inputs, **kwargs)
