"""Attacks on a live `ecso serve` (tiny-random), as JSON: what each did to the server, and to /health.

Each case gets a fresh server process on loopback: file paths in ``image_url.url`` (read? an existence
oracle?), a blocking path, an oversized ``max_tokens`` and prompt followed by small requests, sixteen
6000x6000 images (with /health probed meanwhile, and the server's resident memory), and a request that
times out followed by a small one. Uses only options every version has, so it measures older
checkouts too.

    python bench/server_attacks.py
"""

from __future__ import annotations

import base64
import io
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from PIL import Image
from server_load import free_port, start_server

ROOT = Path(__file__).resolve().parents[1]
MODEL = "tiny-random:llava-small"
PNG = "data:image/png;base64," + base64.b64encode((ROOT / "examples/images/kitchen.png").read_bytes()).decode()


def body(url: str = PNG, text: str = "What is this?", max_tokens: int = 8) -> dict[str, Any]:
    content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": text}]
    return {"messages": [{"role": "user", "content": content}], "max_tokens": max_tokens}


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


class Server:
    def __init__(self, extra: list[str], raise_image_limits: bool = False) -> None:
        self.port = free_port()
        self.process = start_server(MODEL, self.port, ["--config", _config(raise_image_limits), *extra])
        self.url = f"http://127.0.0.1:{self.port}"

    def post(self, payload: Any, timeout: float = 60) -> dict[str, Any]:
        start = time.perf_counter()
        try:
            response = httpx.post(f"{self.url}/v1/chat/completions", json=payload, timeout=timeout)
            out: dict[str, Any] = {"status": response.status_code, "body": response.text[:160]}
        except httpx.HTTPError as exc:
            out = {"status": type(exc).__name__}
        out["seconds"] = round(time.perf_counter() - start, 2)
        return out

    def health_during(self, action: Any) -> dict[str, Any]:
        result: list[Any] = []
        worker = threading.Thread(target=lambda: result.append(action()))
        worker.start()
        probes: list[float | None] = []
        peak = 0.0
        time.sleep(0.2)
        while worker.is_alive() and len(probes) < 40:
            start = time.perf_counter()
            try:
                httpx.get(f"{self.url}/health", timeout=2)
                probes.append(round(time.perf_counter() - start, 3))
            except httpx.HTTPError:
                probes.append(None)
            peak = max(peak, rss_mb(self.process.pid))
            time.sleep(0.2)
        worker.join(120)
        answered = [p for p in probes if p is not None]
        return {
            "request": result[0] if result else "no answer within 120 s",
            "health_probes": len(probes),
            "health_failed": probes.count(None),
            "health_worst_s": max(answered) if answered else None,
            "rss_peak_mb": peak,
        }

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(30)


def _config(raise_image_limits: bool = False) -> str:
    from ecso_core.config import ECSOConfig, ImageLimits

    settings: dict[str, Any] = {"caption_params": {"max_new_tokens": 8}}
    if "min_score_mass" in ECSOConfig.model_fields:
        settings["min_score_mass"] = 0.0  # random weights: time the probability path a real model takes
    if raise_image_limits and "max_total_pixels" in ImageLimits.model_fields:
        settings["image_limits"] = {"max_total_pixels": 600_000_000}
    handle = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
    json.dump(settings, handle)
    handle.close()
    return handle.name


def huge_images() -> dict[str, Any]:
    colors = ["red", "green", "blue", "white", "black", "yellow", "cyan", "magenta"] * 2
    content: list[dict[str, Any]] = []
    for color in colors:
        buffer = io.BytesIO()
        Image.new("RGB", (6000, 6000), color).save(buffer, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
        content.append({"type": "image_url", "image_url": {"url": url}})
    content.append({"type": "text", "text": "Compare them."})
    return {"messages": [{"role": "user", "content": content}], "max_tokens": 4}


def case(extra: list[str], run: Any, raise_image_limits: bool = False) -> dict[str, Any]:
    server = Server(extra, raise_image_limits)
    try:
        return run(server)
    finally:
        server.stop()


def file_paths(server: Server) -> dict[str, Any]:
    paths = ["examples/images/steps.png", "~/.bashrc", "/etc/shadow", "/nope/missing.png"]
    answers = {path: server.post(body(path), timeout=20) for path in paths}
    return {
        "answers": answers,
        "distinct_answers": len({(a["status"], a.get("body")) for a in answers.values()}),
    }


def blocking_path(server: Server) -> dict[str, Any]:
    return server.health_during(lambda: server.post(body("/proc/kmsg"), timeout=10))


def then_small(server: Server, first: dict[str, Any], timeout: float) -> dict[str, Any]:
    out = {"first": server.post(first, timeout=timeout)}
    out["next_small"] = [server.post(body(text=f"Hi {i}."), timeout=30) for i in range(4)]
    return out


def main() -> None:
    payload = huge_images()
    report = {
        "bench": "server_attacks",
        "model": MODEL,
        "file paths in image_url.url": case([], file_paths),
        "blocking path /proc/kmsg": case([], blocking_path),
        "max_tokens=100000, then small requests": case(
            ["--request-timeout", "10"], lambda s: then_small(s, body(max_tokens=100_000), 15)
        ),
        "200 kB prompt, then small requests": case(
            ["--request-timeout", "10"], lambda s: then_small(s, body(text="word " * 40_000), 15)
        ),
        "timed-out request (max_tokens=4000, 3 s), then small requests": case(
            ["--request-timeout", "3"], lambda s: then_small(s, body(max_tokens=4000), 15)
        ),
    }

    def images(server: Server) -> dict[str, Any]:
        before = rss_mb(server.process.pid)
        out = server.health_during(lambda: server.post(payload, timeout=120))
        time.sleep(3)
        out.update(rss_before_mb=before, rss_after_mb=rss_mb(server.process.pid))
        return out

    report["16 images of 6000x6000"] = case([], images)
    report["16 images of 6000x6000, image limits raised to 600 MP"] = case([], images, raise_image_limits=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
