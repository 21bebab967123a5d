"""Peer 1: the typical hand-rolled service. FastAPI + uvicorn + onnxruntime, one
worker process per core (uvicorn --workers), each with its sessions created once
at start-up. Run: ZOO_PEER_TEXT=<bundle> ZOO_PEER_MLP=<mlp.onnx>
uvicorn fastapi_app:app --workers N."""

import asyncio.base_events
import os
import socket

from fastapi import FastAPI
from pydantic import BaseModel

from common import TensorModel, TextClassifier


# With --workers, uvicorn hands each worker a listening socket made with proto 0,
# and asyncio then skips TCP_NODELAY on accepted connections (it checks for
# IPPROTO_TCP): every keep-alive response waits ~40 ms for a delayed ACK. A
# careful hand-written service would fix that, so this one does.
def _set_nodelay(sock):
    if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


asyncio.base_events._set_nodelay = _set_nodelay

app = FastAPI()
text = TextClassifier(os.environ["ZOO_PEER_TEXT"])
mlp = TensorModel(os.environ["ZOO_PEER_MLP"])


class TextRequest(BaseModel):
    inputs: str | list[str]


class TensorRequest(BaseModel):
    inputs: dict[str, list[list[float]]]


@app.post("/predict/text")
def predict_text(req: TextRequest):
    texts = [req.inputs] if isinstance(req.inputs, str) else req.inputs
    return text(texts)


@app.post("/predict/mlp")
def predict_mlp(req: TensorRequest):
    out = mlp(req.inputs["x"])
    return {"outputs": {k: v.tolist() for k, v in out.items()}}
