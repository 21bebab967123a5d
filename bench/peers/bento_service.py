"""Peer 2: BentoML serving the same ONNX models with onnxruntime, adaptive
batching on (batchable APIs), as BentoML's documentation recommends. Run:
ZOO_PEER_TEXT=<bundle> ZOO_PEER_MLP=<mlp.onnx> bentoml serve bento_service:Models."""

import os

import bentoml
import numpy as np

from common import TensorModel, TextClassifier


@bentoml.service(workers=1, traffic={"timeout": 60})
class Models:
    def __init__(self):
        self.text = TextClassifier(os.environ["ZOO_PEER_TEXT"])
        self.mlp = TensorModel(os.environ["ZOO_PEER_MLP"])

    @bentoml.api(batchable=True, max_batch_size=32, max_latency_ms=1000)
    def text_classify(self, inputs: list[str]) -> list[list[dict]]:
        return self.text(inputs)

    @bentoml.api(batchable=True, batch_dim=0, max_batch_size=32, max_latency_ms=1000)
    def mlp_predict(self, x: np.ndarray) -> np.ndarray:
        out = self.mlp(x)
        return next(iter(out.values()))
