"""Parity of zoo with transformers and torch themselves, through the Python
client: run by tests/tests/python_hf.rs, which starts the server and passes
ZOO_URL, ZOO_API_KEY, ZOO_CLI (the `zoo` binary, logged in through ZOO_URL and
ZOO_API_KEY) and ZOO_TEST_MODELS (the fetched all-MiniLM package, whose
WordPiece tokenizer.json the BERT-family models use).

Every model here is built on this machine from a config with a fixed seed
(`from_config`, `save_pretrained`); the reference is transformers' own pipeline
(or torch's own forward) on the same inputs, run here, never copied."""

import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast, pipeline

import zoo

TEXTS = [
    "good job",
    "My name is Sarah and I live in London",
    "zoo serves this model with no code at all, from a notebook",
    "Ünïcödé text — with ümlauts, dashes and 3 numbers: 1, 22, 333!",
]
# Enough text for a small trained vocabulary to split words into several pieces.
CORPUS = TEXTS + [
    "the quick brown fox jumps over the lazy dog",
    "Sarah and Paul went to Paris and then to Berlin on Monday",
    "models are deployed from notebooks and training scripts",
    "a classifier, an encoder and a tagger of names and places",
] * 4
NER_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
SENTIMENT = {0: "NEGATIVE", 1: "POSITIVE", 2: "NEUTRAL"}
SIZE = dict(hidden=32, layers=2, heads=4, intermediate=37)


def wordpiece() -> PreTrainedTokenizerFast:
    """The all-MiniLM package's BERT WordPiece tokenizer (uncased, 30522 tokens)."""
    path = Path(os.environ["ZOO_TEST_MODELS"]) / "minilm" / "tokenizer.json"
    return transformers.BertTokenizerFast(tokenizer_object=Tokenizer.from_file(str(path)))


def byte_bpe() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer as RoBERTa's, trained here on a small corpus."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=400, special_tokens=special,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True)
    return transformers.RobertaTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                             sep_token="</s>", cls_token="<s>", unk_token="<unk>",
                                             pad_token="<pad>", mask_token="<mask>")


def sentencepiece(special) -> Tokenizer:
    """A SentencePiece-style Unigram tokenizer (`special`: cls, pad, sep, unk,
    mask, at ids 0..4 in that order of the list), trained here."""
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(CORPUS, trainers.UnigramTrainer(vocab_size=300, special_tokens=special,
                                                            unk_token=special[3]))
    return tok


def unigram() -> PreTrainedTokenizerFast:
    """XLM-RoBERTa's kind of tokenizer: `<s> text </s>`."""
    tok = sentencepiece(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    return transformers.XLMRobertaTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                                sep_token="</s>", cls_token="<s>", unk_token="<unk>",
                                                pad_token="<pad>", mask_token="<mask>")


def deberta_unigram() -> PreTrainedTokenizerFast:
    """DeBERTa-v3's kind of tokenizer: `[CLS] text [SEP]`, [PAD] at 0."""
    tok = sentencepiece(["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"])
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 1), ("[SEP]", 2)])
    return transformers.DebertaV2TokenizerFast(tokenizer_object=tok, bos_token="[CLS]", eos_token="[SEP]",
                                               sep_token="[SEP]", cls_token="[CLS]", unk_token="[UNK]",
                                               pad_token="[PAD]", mask_token="[MASK]")


def config(arch: str, vocab: int, **extra):
    h, n, k, i = SIZE["hidden"], SIZE["layers"], SIZE["heads"], SIZE["intermediate"]
    if arch == "bert":
        return transformers.BertConfig(vocab_size=vocab, hidden_size=h, num_hidden_layers=n,
                                       num_attention_heads=k, intermediate_size=i, **extra)
    if arch == "distilbert":
        return transformers.DistilBertConfig(vocab_size=vocab, dim=h, n_layers=n, n_heads=k, hidden_dim=i,
                                             **extra)
    if arch == "deberta-v2":
        # DeBERTa-v3's settings: disentangled attention over log-bucketed relative positions.
        return transformers.DebertaV2Config(
            vocab_size=vocab, hidden_size=h, num_hidden_layers=n, num_attention_heads=k, intermediate_size=i,
            max_position_embeddings=128, relative_attention=True, position_buckets=32, max_relative_positions=-1,
            norm_rel_ebd="layer_norm", share_att_key=True, pos_att_type=["p2c", "c2p"],
            position_biased_input=False, type_vocab_size=0, pad_token_id=0, **extra)
    cls = transformers.RobertaConfig if arch == "roberta" else transformers.XLMRobertaConfig
    return cls(vocab_size=vocab, hidden_size=h, num_hidden_layers=n, num_attention_heads=k,
               intermediate_size=i, max_position_embeddings=130, pad_token_id=1, bos_token_id=0,
               eos_token_id=2, type_vocab_size=1, **extra)


TOKENIZERS = {"bert": wordpiece, "distilbert": wordpiece, "roberta": byte_bpe, "xlm-roberta": unigram,
              "deberta-v2": deberta_unigram}
ARCHS = list(TOKENIZERS)


def build(arch: str, head, seed: int, **labels):
    """A randomly initialised model of `arch` with `head` (an Auto class), fixed seed."""
    tok = TOKENIZERS[arch]()
    torch.manual_seed(seed)
    model = head.from_config(config(arch, len(tok), **labels)).eval()
    # Random weights near zero make every score alike; larger ones tell labels apart.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(4.0)
    return model, tok


def close(a: float, b: float, tol: float = 1e-4) -> bool:
    return abs(float(a) - float(b)) <= tol


@pytest.mark.parametrize("arch", ARCHS)
def test_text_classification_pipeline_deploys_with_transformers_answers(arch):
    model, tok = build(arch, transformers.AutoModelForSequenceClassification, seed=11,
                       id2label=SENTIMENT, label2id={v: k for k, v in SENTIMENT.items()})
    pipe = pipeline("text-classification", model=model, tokenizer=tok, top_k=None)
    v = zoo.deploy(pipe, f"cls-{arch}", progress=False)
    assert (v.task, v.servable, v.info["runtime"]) == ("text-classification", True, "candle")
    want = pipe(TEXTS)
    got = v.predict(TEXTS)
    for text, w, g in zip(TEXTS, want, got):
        assert [x["label"] for x in g] == [x["label"] for x in w], text
        for wx, gx in zip(w, g):
            assert close(wx["score"], gx["score"]), (text, wx, gx)


@pytest.mark.parametrize("arch", ARCHS)
def test_token_classification_pipeline_finds_the_entities_transformers_finds(arch):
    id2label = dict(enumerate(NER_LABELS))
    model, tok = build(arch, transformers.AutoModelForTokenClassification, seed=5, id2label=id2label,
                       label2id={v: k for k, v in id2label.items()})
    pipe = pipeline("ner", model=model, tokenizer=tok, aggregation_strategy="simple")
    v = zoo.deploy(pipe, f"ner-{arch}", progress=False)
    assert (v.task, v.servable) == ("token-classification", True)
    found = 0
    for text in TEXTS:
        want = pipe(text)
        got = v.predict(text)
        assert [(e["entity_group"], e["word"], e["start"], e["end"]) for e in got] == \
            [(e["entity_group"], e["word"], e["start"], e["end"]) for e in want], text
        for w, g in zip(want, got):
            assert close(w["score"], g["score"]), (text, w, g)
        found += len(want)
    assert found > 0, "the random model should find some entities, or the test compares nothing"
    # A list of texts gets one list of entities per text (padded together in one
    # batch: the same entities, scores to float rounding).
    batch = v.predict(TEXTS[:2])
    for one, text in zip(batch, TEXTS[:2]):
        alone = v.predict(text)
        assert [{**e, "score": 0} for e in one] == [{**e, "score": 0} for e in alone], (one, alone)
        assert all(close(a["score"], b["score"], 1e-5) for a, b in zip(one, alone)), (one, alone)
    if arch == "bert":
        the_other_front_ends_answer_the_same(v)


def the_other_front_ends_answer_the_same(v):
    """KServe v2, the version's OpenAPI document and the CLI, for a NER version."""
    import requests

    text = TEXTS[1]
    want = v.predict(text)
    url = f"{os.environ['ZOO_URL']}/v2/models/{v.model}/versions/{v.version}"
    auth = {"Authorization": f"Bearer {os.environ['ZOO_API_KEY']}"}
    meta = requests.get(url, headers=auth, timeout=30).json()
    assert [i["name"] for i in meta["inputs"]] == ["text"] and [o["name"] for o in meta["outputs"]] == ["entities"]
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [text]}]}
    out = requests.post(f"{url}/infer", json=body, headers=auth, timeout=30).json()
    assert json.loads(out["outputs"][0]["data"][0]) == want
    doc = v.openapi()
    path = next(p for p in doc["paths"] if p.endswith(f"/versions/{v.version}/predict"))
    schema = json.dumps(doc)
    assert '"entity_group"' in schema and '"PER"' in schema and '"LOC"' in schema, path
    out = subprocess.run([os.environ["ZOO_CLI"], "predict", v.model, text], capture_output=True, text=True,
                         check=True)
    # `PER "sarah" 11..16 0.2660` per entity.
    first = want[0]
    assert f'{first["entity_group"]} "{first["word"]}" {first["start"]}..{first["end"]}' in out.stdout, out.stdout


@pytest.mark.parametrize("arch", ARCHS)
def test_an_encoder_with_its_tokenizer_embeds_as_transformers_does(arch):
    model, tok = build(arch, transformers.AutoModel, seed=3)
    v = zoo.deploy((model, tok), f"enc-{arch}", progress=False)
    assert (v.task, v.servable) == ("feature-extraction", True)
    got = np.array(v.predict(TEXTS), dtype=np.float32)
    with torch.no_grad():
        enc = tok(TEXTS, padding=True, return_tensors="pt")
        hidden = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        want = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-4


def test_distilbert_sentiment_from_a_directory_answers_through_the_cli_as_transformers_does(tmp_path):
    """The issue's own example: a DistilBERT saved with save_pretrained, loaded by
    pipeline("text-classification", model=<dir>), deployed with zoo.deploy, then
    `zoo predict sentiment "good job"` on the command line."""
    model, tok = build("distilbert", transformers.AutoModelForSequenceClassification, seed=2,
                       id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1})
    model.save_pretrained(tmp_path / "distilbert")
    tok.save_pretrained(tmp_path / "distilbert")
    pipe = pipeline("text-classification", model=str(tmp_path / "distilbert"))
    want = pipe("good job")[0]
    start = time.perf_counter()
    v = zoo.deploy(pipe, "sentiment", progress=False)
    first = v.predict("good job")
    ms = (time.perf_counter() - start) * 1000
    print(f"\ndeploy() -> first prediction, DistilBERT sentiment ({sum(p.numel() for p in model.parameters())} "
          f"parameters): {ms:.0f} ms")
    assert first[0]["label"] == want["label"] and close(first[0]["score"], want["score"])
    out = subprocess.run([os.environ["ZOO_CLI"], "predict", "sentiment", "good job"], capture_output=True,
                         text=True, check=True)
    # "POSITIVE 0.5123  NEGATIVE 0.4877": the best label first, its score to 4 places.
    label, score = out.stdout.split()[:2]
    assert label == want["label"] and close(float(score), want["score"], 1.5e-4), (out.stdout, want)


class Mlp(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(4, 8)
        self.b = torch.nn.Linear(8, 3)

    def forward(self, x):
        return torch.softmax(self.b(torch.relu(self.a(x))), dim=-1)


@pytest.mark.parametrize("how", ["script", "trace"])
def test_a_torch_module_deploys_as_torchscript_and_answers_as_torch_does(how):
    torch.manual_seed(9)
    module = Mlp().eval()
    x = torch.randn(5, 4)
    kwargs = {"example_inputs": x[:1]} if how == "trace" else {}
    v = zoo.deploy(module, f"torch-{how}", progress=False, **kwargs)
    assert (v.task, v.servable, v.info["runtime"]) == ("tensor", True, "torch")
    name = v.signature["inputs"][0]["name"]
    got = v.predict({name: x.tolist()})["outputs"]
    got = np.array(next(iter(got.values())), dtype=np.float32)
    with torch.no_grad():
        want = module(x).numpy()
    assert np.abs(got - want).max() < 1e-5


def test_a_framework_object_zoo_cannot_deploy_is_refused_by_name():
    with pytest.raises(TypeError, match="cannot deploy a builtins.dict"):
        zoo.deploy({"weights": [1, 2]}, "nothing", progress=False)


def test_a_slow_tokenizer_is_refused_with_what_to_do(tmp_path):
    model, _ = build("bert", transformers.AutoModel, seed=1)

    class Slow:
        def encode(self, text):
            return []

        def save_pretrained(self, path):
            (Path(path) / "vocab.txt").write_text("[PAD]\n")

    with pytest.raises(ValueError, match="tokenizer.json"):
        zoo.deploy(model, "slow-tok", tokenizer=Slow(), progress=False)
