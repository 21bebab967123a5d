"""deploy() from Python to the first prediction, and one text's latency against
transformers' own pipeline, on a running zoo (a release build; not part of CI).

    ZOO_URL=... ZOO_API_KEY=... ZOO_TEST_MODELS=~/.cache/zoo PYTHONPATH=client/python \\
        ~/.cache/zoo/venv-hf/bin/python bench/python_deploy.py [TEXT_CLASSIFIER_DIR]

Deploys the text-classifier directory (default ../shared/models/text-classifier) and a
DistilBERT-base-sized sentiment pipeline (random weights, fixed seed: 67M parameters,
268 MB of safetensors, the size of distilbert-base-uncased-finetuned-sst-2), then
compares one text's p50 over HTTP with the pipeline in-process; then the same for a
ViT-base image classifier (`google/vit-base-patch16-224`'s configuration: 86M
parameters, 224x224 images, random weights, fixed seed) on a 640x480 PNG. A version
measures its batch sizes just after the deploy; the latency is taken once that is done."""

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "python"))
import test_hf  # noqa: E402  (the parity tests' tokenizers)
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import pipeline  # noqa: E402

import zoo  # noqa: E402


def p50(f, n=30):
    f()
    times = []
    for _ in range(n):
        s = time.perf_counter()
        f()
        times.append((time.perf_counter() - s) * 1000)
    return statistics.median(times)


def main():
    classifier = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/models/text-classifier")
    size = sum(f.stat().st_size for f in classifier.rglob("*") if f.is_file()) / 1e6
    s = time.perf_counter()
    v = zoo.deploy(classifier, "bench-text-classifier", progress=False)
    v.predict("good job")
    print(f"text classifier ({size:.0f} MB directory): deploy() -> first prediction {(time.perf_counter() - s) * 1000:.0f} ms")

    tok = test_hf.wordpiece()
    torch.manual_seed(0)
    labels = {0: "NEGATIVE", 1: "POSITIVE"}
    cfg = transformers.DistilBertConfig(vocab_size=len(tok), id2label=labels, label2id={v: k for k, v in labels.items()})
    model = transformers.AutoModelForSequenceClassification.from_config(cfg).eval()
    out = Path(tempfile.mkdtemp()) / "distilbert"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    pipe = pipeline("text-classification", model=str(out))
    s = time.perf_counter()
    v = zoo.deploy(pipe, "bench-sentiment", progress=False)
    first = v.predict("good job")[0]
    ms = (time.perf_counter() - s) * 1000
    print(f"DistilBERT-base sentiment ({(out / 'model.safetensors').stat().st_size / 1e6:.0f} MB): deploy() -> first "
          f"prediction {ms:.0f} ms; zoo {first}, transformers {pipe('good job')[0]}")
    while not zoo.Client().version("bench-sentiment", v.version).info["effective"].get("measured_batches"):
        time.sleep(1)
    time.sleep(15)  # the measurement's rounds
    torch.set_num_threads(2)
    text = "zoo serves this model with no code at all, from a notebook"
    for i in range(2):
        z = p50(lambda: v.predict(text))
        t = p50(lambda: pipe(text))
        print(f"round {i}: one text p50, zoo over HTTP {z:.1f} ms, transformers pipeline in-process {t:.1f} ms "
              f"(torch {torch.__version__}, 2 threads): zoo {t / z:.2f}x")

    # ViT-base: one 640x480 PNG, resized to 224x224 by the server (Pillow's bilinear).
    torch.manual_seed(0)
    labels = {i: f"class_{i}" for i in range(1000)}
    cfg = transformers.ViTConfig(id2label=labels, label2id={v: k for k, v in labels.items()})
    vit = transformers.ViTForImageClassification(cfg).eval()
    vpipe = pipeline("image-classification", model=vit,
                     image_processor=transformers.ViTImageProcessor(size={"height": 224, "width": 224}))
    img = test_hf.picture(640, 480)
    png = test_hf.encoded(img)
    s = time.perf_counter()
    v = zoo.deploy(vpipe, "bench-vit", progress=False)
    first = v.predict(png)[0]
    ms = (time.perf_counter() - s) * 1000
    print(f"ViT-base image classifier ({sum(p.numel() for p in vit.parameters()) / 1e6:.0f}M parameters): deploy() -> "
          f"first prediction {ms:.0f} ms; zoo {first}, transformers {vpipe(img)[0]}")
    while not zoo.Client().version("bench-vit", v.version).info["effective"].get("measured_batches"):
        time.sleep(1)
    time.sleep(30)
    for i in range(2):
        z = p50(lambda: v.predict(png), n=15)
        t = p50(lambda: vpipe(img), n=15)
        print(f"round {i}: one 640x480 PNG p50, zoo over HTTP {z:.1f} ms (decode, resize, ViT-base), transformers "
              f"pipeline in-process on the decoded image {t:.1f} ms: zoo {t / z:.2f}x")


if __name__ == "__main__":
    main()
