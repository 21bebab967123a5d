"""The two benchmark models as a hand-written Python service would run them:
one ONNX Runtime session per model, created once; texts tokenized with the
Hugging Face tokenizer from the bundle's tokenizer.json (as zoo does); softmax
over the logits with the labels of config.json. Thread counts come from
ZOO_PEER_THREADS (intra-op threads per session)."""

import json
import os

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer


def session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(os.environ.get("ZOO_PEER_THREADS", "1"))
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])


class TextClassifier:
    def __init__(self, bundle):
        self.session = session(os.path.join(bundle, "model.onnx"))
        self.tokenizer = Tokenizer.from_file(os.path.join(bundle, "tokenizer.json"))
        if self.tokenizer.truncation is None:
            self.tokenizer.enable_truncation(512)
        self.tokenizer.enable_padding(pad_id=0)
        config = json.load(open(os.path.join(bundle, "config.json")))
        id2label = config.get("id2label", {})
        self.labels = [id2label.get(str(i), f"LABEL_{i}") for i in range(len(id2label))]
        self.inputs = [i.name for i in self.session.get_inputs()]

    def __call__(self, texts):
        enc = self.tokenizer.encode_batch(texts)
        feeds = {
            "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
        }
        (logits,) = self.session.run(None, {k: feeds[k] for k in self.inputs})[:1]
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)
        return [
            sorted(({"label": self.labels[i], "score": float(s)} for i, s in enumerate(row)), key=lambda r: -r["score"])
            for row in p
        ]


class TensorModel:
    def __init__(self, path):
        self.session = session(path)
        self.input = self.session.get_inputs()[0].name
        self.outputs = [o.name for o in self.session.get_outputs()]

    def __call__(self, x):
        out = self.session.run(None, {self.input: np.asarray(x, dtype=np.float32)})
        return dict(zip(self.outputs, out))
