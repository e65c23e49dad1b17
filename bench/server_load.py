"""Load test of `ecso serve`: N concurrent clients against the guarded server and the bare model.

Starts two servers on loopback (`ecso serve --model SPEC` and `ecso serve --model SPEC --no-guard`),
sends the same image requests from `--clients` concurrent clients to each, and prints one JSON object:
errors, p50 / p95 latency, throughput, the guard's decisions, and the p50 overhead of the guard.

    python bench/server_load.py --model tiny-random --clients 64 --requests-per-client 2
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "examples" / "images" / "kitchen.png"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(model: str, port: int, extra: list[str]) -> subprocess.Popen[bytes]:
    ecso = Path(sys.executable).with_name("ecso")
    command = [str(ecso), "serve", "--model", model, "--port", str(port), *extra]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.3)
        if process.poll() is not None:
            raise RuntimeError(process.stderr.read().decode() if process.stderr else "server died")
    raise RuntimeError("server did not start")


async def drive(url: str, clients: int, per_client: int, max_tokens: int) -> dict[str, object]:
    image = "data:image/png;base64," + base64.b64encode(IMAGE.read_bytes()).decode()
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    decisions: Counter[str] = Counter()

    async def client(index: int, http: httpx.AsyncClient) -> None:
        for turn in range(per_client):
            body = {
                "model": "bench",
                "max_tokens": max_tokens,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": image}},
                            {"type": "text", "text": f"Client {index} question {turn}: what is on the table?"},
                        ],
                    }
                ],
            }
            start = time.perf_counter()
            try:
                response = await http.post(f"{url}/v1/chat/completions", json=body)
            except httpx.HTTPError as exc:
                errors[type(exc).__name__] += 1
                continue
            latencies.append(time.perf_counter() - start)
            if response.status_code != 200:
                errors[str(response.status_code)] += 1
            elif "ecso" in response.json():
                decisions[response.json()["ecso"]["decision"]] += 1

    start = time.perf_counter()
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        await asyncio.gather(*(client(i, http) for i in range(clients)))
    wall = time.perf_counter() - start
    ordered = sorted(latencies)
    return {
        "requests": clients * per_client,
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
        "p50_s": round(statistics.median(ordered), 4) if ordered else None,
        "p95_s": round(ordered[int(0.95 * (len(ordered) - 1))], 4) if ordered else None,
        "wall_s": round(wall, 3),
        "requests_per_s": round(len(ordered) / wall, 3),
        "decisions": dict(decisions),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-random")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--requests-per-client", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=64, help="max_tokens of every request and of the caption")
    parser.add_argument("--max-batch-size", type=int, default=16)
    args = parser.parse_args()

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as config:
        # tiny-random's random weights put little mass on yes/no: a floor of 0 keeps its verdicts on the
        # probability path a real model takes (with the floor, nearly every request would fail closed).
        json.dump({"caption_params": {"max_new_tokens": args.max_tokens}, "min_score_mass": 0.0}, config)
    common = ["--max-batch-size", str(args.max_batch_size)]
    runs = {}
    for label, extra in (("bare", ["--no-guard"]), ("guarded", ["--config", config.name])):
        port = free_port()
        server = start_server(args.model, port, common + extra)
        try:
            asyncio.run(drive(f"http://127.0.0.1:{port}", 2, 1, args.max_tokens))  # warm-up
            runs[label] = asyncio.run(
                drive(f"http://127.0.0.1:{port}", args.clients, args.requests_per_client, args.max_tokens)
            )
        finally:
            server.terminate()
            server.wait(30)
    os.unlink(config.name)
    bare, guarded = runs["bare"]["p50_s"], runs["guarded"]["p50_s"]
    print(
        json.dumps(
            {
                "bench": "server_load",
                "model": args.model,
                "clients": args.clients,
                "requests_per_client": args.requests_per_client,
                "max_tokens": args.max_tokens,
                "max_batch_size": args.max_batch_size,
                "bare": runs["bare"],
                "guarded": runs["guarded"],
                "p50_overhead_ratio": round(guarded / bare, 3) if bare and guarded else None,
                "note": "tiny-random has random weights: its verdicts are noise, so the unsafe share is arbitrary",
                "machine": {
                    "python": platform.python_version(),
                    "cpu_count": os.cpu_count(),
                    "platform": platform.platform(),
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
