"""Upload benchmark: `.venv/bin/python -m bench.upload [--gib 1,4] [--repeat 3] [--dir PATH]`.

Starts the real server (`python orchestrator.py`) on a fresh database and a temp UPLOAD_DIR,
uploads generated videos of each size over loopback (streamed from a generator, never held in
memory), and prints for each: throughput, the server's peak RSS growth (sampled with psutil),
the latency of other requests served meanwhile, and what `dd` writes to the same disk.
Targets: RSS growth under 50 MB at every size; throughput at least half of dd's.
A stub stands in for the inference engine and accepts every job.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil

from bench.server import ROOT, free_port, fresh_database

BOUNDARY = "bench-boundary-7d1f"
BLOCK = os.urandom(1 << 20)
# An MP4 `ftyp` box, so the upload passes the container check.
MP4_HEAD = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"
MB = 1e6


def multipart(size: int) -> tuple[int, Iterator[bytes]]:
    """The length and the pieces of a form whose `file` is `size` bytes of fake MP4."""
    preamble = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="bench.mp4"\r\nContent-Type: video/mp4\r\n\r\n'
    ).encode() + MP4_HEAD
    epilogue = f"\r\n--{BOUNDARY}--\r\n".encode()
    filler = size - len(MP4_HEAD)

    def pieces() -> Iterator[bytes]:
        yield preamble
        whole, rest = divmod(filler, len(BLOCK))
        for _ in range(whole):
            yield BLOCK
        yield BLOCK[:rest]
        yield epilogue

    return len(preamble) + filler + len(epilogue), pieces()


class RssSampler(threading.Thread):
    """Samples a process's resident set size until stopped; keeps the peak."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.peak = self.process.memory_info().rss
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)


class LatencyProbe(threading.Thread):
    """Times `GET /` on its own connection while the upload runs (event loop responsiveness)."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.latencies: list[float] = []
        self.done = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while not self.done.wait(0.05):
            started = time.perf_counter()
            conn.request("GET", "/")
            conn.getresponse().read()
            self.latencies.append(time.perf_counter() - started)
        conn.close()


def upload(port: int, size: int) -> tuple[float, dict]:
    length, body = multipart(size)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    started = time.perf_counter()
    conn.request(
        "POST",
        "/matches/upload",
        body=body,
        headers={
            "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
            "Content-Length": str(length),
        },
    )
    response = conn.getresponse()
    document = json.loads(response.read())
    elapsed = time.perf_counter() - started
    conn.close()
    if response.status != 201:
        raise RuntimeError(f"upload answered {response.status}: {document}")
    return elapsed, document


def delete(port: int, match_id: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("DELETE", f"/matches/{match_id}")
    conn.getresponse().read()
    conn.close()


def dd_seconds(folder: Path, size: int) -> float:
    """Time for dd to write `size` bytes into `folder` and sync them, as the server does."""
    target = folder / "dd.bin"
    started = time.perf_counter()
    subprocess.run(
        ["dd", "if=/dev/zero", f"of={target}", "bs=1M", f"count={size >> 20}", "conv=fdatasync"],
        check=True,
        capture_output=True,
    )
    elapsed = time.perf_counter() - started
    target.unlink()
    return elapsed


class AcceptingEngine(BaseHTTPRequestHandler):
    """The inference stub: takes every job (202) and does nothing with it."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(202)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def inference_stub() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), AcceptingEngine)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def wait_for_health(port: int, server: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError("the server exited during start-up")
        with contextlib.suppress(OSError):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError("the server did not become healthy")


@contextlib.contextmanager
def running_server(
    database_url: str, inference_url: str, upload_dir: Path
) -> Iterator[tuple[int, int]]:
    """Runs `python orchestrator.py`; yields its pid and port."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "UPLOAD_DIR": str(upload_dir),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "INFERENCE_URL": inference_url,
        "MAX_UPLOAD_BYTES": "5GiB",
        "LOG_LEVEL": "WARNING",
    }
    server = subprocess.Popen([sys.executable, "orchestrator.py"], cwd=ROOT, env=env)
    try:
        wait_for_health(port, server)
        yield server.pid, port
    finally:
        server.terminate()
        server.wait(30)


@dataclasses.dataclass
class Round:
    upload_seconds: float
    dd_seconds: float
    cpu_seconds: float
    rss_growth: int
    latencies: list[float]


def measure_once(pid: int, port: int, folder: Path, size: int) -> Round:
    """One upload of `size`, then dd writing as much to the same folder."""
    sampler = RssSampler(pid)
    probe = LatencyProbe(port)
    baseline = sampler.peak
    cpu_before = sum(sampler.process.cpu_times()[:2])
    sampler.start()
    probe.start()
    elapsed, match = upload(port, size)
    cpu = sum(sampler.process.cpu_times()[:2]) - cpu_before
    sampler.done.set()
    probe.done.set()
    sampler.join()
    probe.join()
    delete(port, match["id"])
    return Round(elapsed, dd_seconds(folder, size), cpu, sampler.peak - baseline, probe.latencies)


def measure(pid: int, port: int, folder: Path, size: int, repeat: int) -> None:
    """Uploads and dd runs take turns, so that both see the same disk: this machine's disk
    and CPU speeds vary from minute to minute, and medians of alternating runs compare them
    fairly."""
    rounds = [measure_once(pid, port, folder, size) for _ in range(repeat)]
    upload = statistics.median(r.upload_seconds for r in rounds)
    dd = statistics.median(r.dd_seconds for r in rounds)
    cpu = statistics.median(r.cpu_seconds for r in rounds)
    latencies = sorted(latency for r in rounds for latency in r.latencies) or [0.0]
    print(
        f"{size / 2**30:4.1f} GiB x{repeat}  upload {size / upload / MB:7.1f} MB/s "
        f"(median {upload:5.1f} s, server CPU {cpu:4.1f} s)  "
        f"dd {size / dd / MB:7.1f} MB/s  ratio {dd / upload:4.2f} "
        f"(each round: {', '.join(f'{r.dd_seconds / r.upload_seconds:.2f}' for r in rounds)})  "
        f"peak RSS growth {max(r.rss_growth for r in rounds) / MB:5.1f} MB  "
        f"GET / during upload: p50 {statistics.median(latencies) * 1000:.1f} ms, "
        f"max {latencies[-1] * 1000:.1f} ms over {len(latencies)} requests"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", default="1,4", help="comma-separated upload sizes in GiB")
    parser.add_argument("--dir", default=None, help="where UPLOAD_DIR is made (default: temp)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds per size (median)")
    args = parser.parse_args()
    sizes = [int(float(text) * 2**30) for text in args.gib.split(",")]

    folder = Path(tempfile.mkdtemp(prefix="matcha-bench-", dir=args.dir))
    free = shutil.disk_usage(folder).free
    print(f"UPLOAD_DIR {folder}: {free / 2**30:.1f} GiB free")
    if free < max(sizes) * 2 + 2**30:
        raise SystemExit("not enough free disk for the largest size (twice it, plus 1 GiB)")
    try:
        with (
            fresh_database() as database_url,
            inference_stub() as inference_url,
            running_server(database_url, inference_url, folder) as (pid, port),
        ):
            # Warm-up, so that imports, pools and first allocations count as baseline.
            _, match = upload(port, 1 << 20)
            delete(port, match["id"])
            for size in sizes:
                measure(pid, port, folder, size, args.repeat)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
