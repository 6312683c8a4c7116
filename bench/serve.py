"""Serving benchmark: per-photo latency at batch 1 for PyTorch fp32, ONNX fp32 and ONNX int8,
split into decode / detect / classify, then the int8 model behind the real service on loopback:
one client after another, and 8 clients at once (a bounded number of requests).

    .venv/bin/python bench/serve.py --make runs/bench-serve          (demo data, fit, export: a few minutes)
    .venv/bin/python bench/serve.py --fit FIT --onnx MODEL [--int8 MODEL_INT8] --data DATA

--onnx and --int8 may name the same folder, exported with `maskcls export --int8`. Targets: a
whole request's p50 at most 30 ms with int8, classify at most 5 ms per face.
"""
from __future__ import annotations

import argparse
import os
import queue
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from maskcls.serve.app import decode_photo
from maskcls.serve.model import ServedModel

TARGET_REQUEST_MS = 30.0
TARGET_CLASSIFY_PER_FACE_MS = 5.0
CLIENTS = 8
WARMUP = 3  # the first calls build the detector's networks and ONNX Runtime's kernels
BANNER = re.compile(r"at (http://127\.0\.0\.1:\d+)/")


def maskcls(*args) -> None:
    subprocess.run([sys.executable, "-m", "maskcls", "-q", *map(str, args)], check=True)


def make(out: Path) -> tuple[Path, Path, Path]:
    """Demo wide photos, the demo recipe fitted for one epoch (latency does not need a good model), its export."""
    data, fit_dir, model = out / "data", out / "fit", out / "model"
    if not (data / "eval").is_dir():
        maskcls("demo-data", "--out", data, "--persons", 30, "--eval-persons", 12)
    if not (fit_dir / "recipe.yaml").is_file():
        maskcls("fit", "demo", "--data", data, "--out", fit_dir, "train.epochs=1", "tracking=[]")
    if not (model / "model.json").is_file():
        maskcls("export", fit_dir, "--format", "onnx", "--int8", "--data", data, "--out", model)
    return data, fit_dir, model


def percentiles(values) -> str:
    return f"{np.percentile(values, 50):7.1f} {np.percentile(values, 95):7.1f}" if len(values) else "      -       -"


def time_model(model: ServedModel, photos: list[bytes]) -> dict:
    """Each photo decoded and predicted alone, as the service does; milliseconds per step."""
    for data in photos[:WARMUP]:
        model.predict(decode_photo(data))
    steps = {"decode": [], "detect": [], "classify": [], "classify/face": [], "whole": []}
    for data in photos:
        started = time.perf_counter()
        rgb = decode_photo(data)
        decoded = time.perf_counter()
        answer = model.predict(rgb)
        steps["whole"].append((time.perf_counter() - started) * 1000)
        steps["decode"].append((decoded - started) * 1000)
        steps["detect"].append(answer["latency_ms"]["detect"])
        if answer["faces"]:  # a photo without a face classifies nothing
            steps["classify"].append(answer["latency_ms"]["classify"])
            steps["classify/face"].append(answer["latency_ms"]["classify"] / len(answer["faces"]))
    return steps


def start_server(model_dir: Path) -> tuple[subprocess.Popen, str]:
    """`maskcls serve` on a free loopback port, in its own process: clients and server do not share a GIL."""
    process = subprocess.Popen([sys.executable, "-m", "maskcls", "serve", str(model_dir), "--port", "0", "--int8"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()  # keeps the pipe drained
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        try:
            found = BANNER.search(lines.get(timeout=1))
        except queue.Empty:
            continue
        if found:
            return process, found.group(1)
    process.kill()
    sys.exit("bench: `maskcls serve` did not start")


def load_test(url: str, photos: list[bytes], requests: int, clients: int) -> tuple[list[float], list[float], float]:
    """`requests` uploads shared among `clients` threads, each with its own keep-alive connection:
    (latencies, what each request spent outside decode, detect and classify, requests/s)."""
    jobs: queue.Queue = queue.Queue()
    for index in range(requests):
        jobs.put(photos[index % len(photos)])
    latencies: list[float] = []
    outside: list[float] = []

    def client() -> None:
        with httpx.Client(timeout=60) as session:
            while True:
                try:
                    data = jobs.get_nowait()
                except queue.Empty:
                    return
                started = time.perf_counter()
                response = session.post(f"{url}/predict", files={"file": ("photo.jpg", data)})
                response.raise_for_status()
                latency = (time.perf_counter() - started) * 1000
                inside = response.json()["latency_ms"]
                latencies.append(latency)  # list.append is atomic
                # Per request: the sum of medians of the parts is not the median of the whole.
                outside.append(latency - inside["decode"] - inside["detect"] - inside["classify"])

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result()
    return latencies, outside, requests / (time.perf_counter() - started)


def serve_bench(model_dir: Path, photos: list[bytes], requests: int) -> dict:
    process, url = start_server(model_dir)
    try:
        load_test(url, photos[:WARMUP], WARMUP, 1)
        alone, outside, _ = load_test(url, photos, min(requests, len(photos)), 1)
        loaded, _, throughput = load_test(url, photos, requests, CLIENTS)
    finally:
        process.terminate()
        process.wait(30)
    return {"alone": alone, "outside": outside, "loaded": loaded, "throughput": throughput}


def report(models: dict, served: dict | None) -> None:
    print(f"\nper photo at batch 1, ms (p50 p95); {os.cpu_count()} cores, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print(f"{'model':<12}" + "".join(f"{step:>17}" for step in ("decode", "detect", "classify", "classify/face", "whole")))
    for name, steps in models.items():
        print(f"{name:<12}" + "".join(f"  {percentiles(values)}" for values in steps.values()))
    if "onnx int8" in models:
        per_face = np.percentile(models["onnx int8"]["classify/face"], 50) if models["onnx int8"]["classify/face"] else float("nan")
        print(f"\nonnx int8 classify per face p50 {per_face:.1f} ms: {per_face / TARGET_CLASSIFY_PER_FACE_MS:.2f}x the "
              f"{TARGET_CLASSIFY_PER_FACE_MS:g} ms target")
    for name in ("torch fp32", "onnx fp32"):
        if name in models and "onnx int8" in models:
            ratio = np.percentile(models[name]["whole"], 50) / np.percentile(models["onnx int8"]["whole"], 50)
            print(f"{name} whole p50 / onnx int8 whole p50: {ratio:.2f}x")
    if served:
        request = np.percentile(served["alone"], 50)
        print(f"\nservice (int8, loopback), whole request ms p50 p95: one client {percentiles(served['alone'])}; "
              f"{CLIENTS} clients {percentiles(served['loaded'])}")
        print(f"one client, per request outside decode + detect + classify (HTTP, multipart, JSON, the thread hop): "
              f"{percentiles(served['outside'])}")
        print(f"throughput with {CLIENTS} clients: {served['throughput']:.1f} requests/s over {len(served['loaded'])} requests")
        print(f"whole request p50 {request:.1f} ms: {request / TARGET_REQUEST_MS:.2f}x the {TARGET_REQUEST_MS:g} ms target")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--make", type=Path, help="build demo data, a fit and its fp32+int8 export here (reused when present)")
    parser.add_argument("--fit", type=Path, help="fit folder (PyTorch fp32)")
    parser.add_argument("--onnx", type=Path, help="exported model folder (its fp32 graphs)")
    parser.add_argument("--int8", type=Path, help="exported model folder with int8 graphs (may be --onnx's)")
    parser.add_argument("--data", type=Path, help="data set whose eval/images are the wide photos")
    parser.add_argument("--photos", type=int, default=40, help="photos timed per model")
    parser.add_argument("--requests", type=int, default=200, help="requests sent to the service by the 8 clients")
    args = parser.parse_args()
    if args.make:
        args.data, args.fit, args.onnx = make(args.make)
        args.int8 = args.int8 or args.onnx
    if not args.data or not (args.fit or args.onnx or args.int8):
        parser.error("pass --make DIR, or --data and at least one of --fit, --onnx, --int8")
    files = sorted((args.data / "eval" / "images").glob("*"))[: args.photos]
    photos = [f.read_bytes() for f in files]
    if not photos:
        parser.error(f"{args.data / 'eval' / 'images'}: no photos")
    loaders = {"torch fp32": args.fit and (lambda: ServedModel.load(args.fit)),
               "onnx fp32": args.onnx and (lambda: ServedModel.from_export(args.onnx, int8=False)),
               "onnx int8": args.int8 and (lambda: ServedModel.from_export(args.int8, int8=True))}
    models = {name: time_model(load(), photos) for name, load in loaders.items() if load}
    report(models, serve_bench(args.int8, photos, args.requests) if args.int8 else None)


if __name__ == "__main__":
    main()
