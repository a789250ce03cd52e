"""Soak: the shapes stack under 16 concurrent Compare callers for a long time.

    python -m bench.soak [--duration 10m] [--warmup 60] [--callers 16] [--deadline 60]

Starts the local stack exactly as `vcompare stack up` does (visioncompare.tools.stack.LocalStack:
docker-compose.yml's commands and settings with deploy/local.env, i.e. both model
services on the shapes reference weights and the gateway, as processes, on ports
shifted by --port-offset so it can run beside another stack). Then every caller
sends Compare (instance segmentation of visioncompare/gateway/samples/shapes-scene.png, the
sample `stack up` compares) in a loop, each call with its own deadline. After
--warmup seconds under the same load the start sample is taken; the soak then
runs for --duration and prints:
  - calls and calls/s; status codes, of Compare and of each model's result;
  - Compare latency p50/p99 (and each model's, as the gateway saw it);
  - RSS of every process (each model service, the gateway) at start and end,
    with growth in %, and samples over time;
  - PASS/FAIL for the goals: no unexpected status code (warm-up included) and RSS
    growth under --max-growth % for each process. Exits 1 on any FAIL.
The stack is stopped with SIGTERM at the end, on an error, and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from visioncompare.runtime.channels import channel_options
from visioncompare.testing.processes import free_port
from visioncompare.tools.cli import DEFAULT_SAMPLE
from visioncompare.tools.compose import MODEL_SERVICES, ROOT
from visioncompare.tools.stack import LocalStack, stop_on_signals
from visioncompare.v1 import common_pb2 as pb
from visioncompare.v1 import comparison_service_pb2 as cs
from visioncompare.v1 import comparison_service_pb2_grpc as cs_grpc

CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}
PROCESSES = (*MODEL_SERVICES, "gateway")


def seconds(text: str) -> float:
    """'600', '90s', '10m', '1h' -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: expected seconds, or a number with s, m or h")
    return float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[match[2]]


def rss_mib(pid: int) -> float:
    """Resident set size of a live process (Linux /proc; psutil is not a dependency)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for pid {pid}")


def percentile(values: list[float], p: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


@dataclass
class Stats:
    codes: Counter[str] = field(default_factory=Counter)
    model_codes: dict[str, Counter[str]] = field(default_factory=dict)
    latency_ms: list[float] = field(default_factory=list)
    model_latency_ms: dict[str, list[float]] = field(default_factory=dict)

    @property
    def calls(self) -> int:
        return sum(self.codes.values())

    def record(self, code: str, elapsed_ms: float, response: cs.CompareResponse | None) -> None:
        self.codes[code] += 1
        self.latency_ms.append(elapsed_ms)
        for result in response.results if response is not None else ():
            name = CODE_NAMES.get(result.status.code, str(result.status.code))
            self.model_codes.setdefault(result.model_name, Counter())[name] += 1
            self.model_latency_ms.setdefault(result.model_name, []).append(result.latency_ms)

    def unexpected(self, expected: set[str]) -> list[str]:
        found = [f"Compare {c} x{n}" for c, n in self.codes.items() if c not in expected]
        for model, codes in self.model_codes.items():
            found += [f"{model} {c} x{n}" for c, n in codes.items() if c not in expected]
        return found


def codes_text(codes: Counter[str]) -> str:
    return ", ".join(f"{c} {n}" for c, n in codes.most_common()) or "none"


class Soak:
    def __init__(self, args: argparse.Namespace, stack: LocalStack) -> None:
        self.args = args
        self.stack = stack
        self.pids = {name: stack.processes[name].pid for name in PROCESSES}
        self.warmup = Stats()
        self.measured = Stats()
        self.current = self.warmup
        self.stopping = False
        self.samples: list[tuple[float, int, dict[str, float]]] = []

    def sample(self, t: float) -> None:
        self.samples.append((t, self.measured.calls, {n: rss_mib(pid) for n, pid in self.pids.items()}))

    async def caller(self, stub: cs_grpc.ComparisonServiceStub, request: cs.CompareRequest) -> None:
        while not self.stopping:
            start = time.perf_counter()
            response = None
            try:
                response = await stub.Compare(request, timeout=self.args.deadline)
                code = "OK"
            except grpc.aio.AioRpcError as exc:
                code = exc.code().name
            self.current.record(code, (time.perf_counter() - start) * 1000.0, response)

    async def ready(self, stub: cs_grpc.ComparisonServiceStub, request: cs.CompareRequest) -> None:
        """Until the gateway watches both targets and each answers OK (not counted)."""
        end = time.monotonic() + self.args.timeout
        while True:
            try:
                response = await stub.Compare(request, timeout=self.args.deadline)
                if len(response.results) == len(MODEL_SERVICES) and all(r.status.code == 0 for r in response.results):
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > end:
                raise RuntimeError("the gateway did not answer Compare with both models OK")
            await asyncio.sleep(0.5)

    async def run(self) -> None:
        args = self.args
        request = cs.CompareRequest(image=pb.Image(encoded=args.image.read_bytes()), task=pb.TASK_INSTANCE_SEGMENTATION)
        address = f"127.0.0.1:{self.stack.port('gateway')}"
        async with grpc.aio.insecure_channel(address, options=channel_options(64 * 1024 * 1024)) as channel:
            stub = cs_grpc.ComparisonServiceStub(channel)
            await self.ready(stub, request)
            callers = [asyncio.create_task(self.caller(stub, request)) for _ in range(args.callers)]
            print(f"warm-up: {args.warmup:.0f} s under the same load ...", flush=True)
            await asyncio.sleep(args.warmup)
            self.current = self.measured
            start = time.monotonic()
            self.sample(0.0)
            print(f"soak: {args.duration:.0f} s; RSS sampled every {args.duration / args.samples:.0f} s", flush=True)
            for i in range(1, args.samples + 1):
                await asyncio.sleep(max(start + args.duration * i / args.samples - time.monotonic(), 0))
                self.sample(time.monotonic() - start)
                t, calls, rss = self.samples[-1]
                print(
                    f"  t={t:5.0f} s  calls {calls:6d}  " + "  ".join(f"{n} {v:.1f} MiB" for n, v in rss.items()),
                    flush=True,
                )
            self.elapsed = time.monotonic() - start
            self.current = Stats()  # calls finishing after the end sample are not counted
            self.stopping = True
            await asyncio.gather(*callers)

    def report(self) -> bool:
        args, m = self.args, self.measured
        print(
            f"\n== soak: {args.callers} callers x Compare(instance-segmentation, {args.image.name}), "
            f"deadline {args.deadline:.0f} s, {self.elapsed:.0f} s after {args.warmup:.0f} s warm-up =="
        )
        print(f"warm-up calls: {self.warmup.calls} (Compare: {codes_text(self.warmup.codes)})")
        print(f"calls: {m.calls} ({m.calls / self.elapsed:.2f} Compare/s)")
        print(f"status codes, Compare: {codes_text(m.codes)}")
        for model, codes in sorted(m.model_codes.items()):
            print(f"status codes, {model} result: {codes_text(codes)}")
        print(
            f"latency, Compare: p50 {percentile(m.latency_ms, 50):.0f} ms, "
            f"p99 {percentile(m.latency_ms, 99):.0f} ms, max {max(m.latency_ms, default=float('nan')):.0f} ms"
        )
        for model, values in sorted(m.model_latency_ms.items()):
            print(
                f"latency, {model} (as the gateway saw it): p50 {percentile(values, 50):.0f} ms, "
                f"p99 {percentile(values, 99):.0f} ms"
            )

        print("\nRSS over time (MiB):")
        print(f"  {'t (s)':>6} {'calls':>7} " + " ".join(f"{n:>9}" for n in PROCESSES))
        for t, calls, rss in self.samples:
            print(f"  {t:6.0f} {calls:7d} " + " ".join(f"{rss[n]:9.1f}" for n in PROCESSES))
        print("RSS, start -> end:")
        growth = {}
        for name in PROCESSES:
            first, last = self.samples[0][2][name], self.samples[-1][2][name]
            peak = max(s[2][name] for s in self.samples)
            growth[name] = (last - first) / first * 100.0
            print(
                f"  {name:>9} (pid {self.pids[name]}): {first:.1f} -> {last:.1f} MiB ({growth[name]:+.2f}%), "
                f"peak sample {peak:.1f} MiB"
            )

        expected = set(args.expect)
        unexpected = self.warmup.unexpected(expected) + m.unexpected(expected)
        ok_codes = not unexpected and m.calls > 0
        print("\ngoals:")
        print(
            f"  {'PASS' if ok_codes else 'FAIL'}: no unexpected status code (expected: {', '.join(sorted(expected))})"
            + (f"; found {'; '.join(unexpected)}" if unexpected else "")
            + ("" if m.calls else "; no calls")
        )
        ok_rss = True
        for name in PROCESSES:
            ok = growth[name] < args.max_growth
            ok_rss &= ok
            print(
                f"  {'PASS' if ok else 'FAIL'}: {name} RSS growth {growth[name]:+.2f}% < {args.max_growth:g}% "
                f"over {self.elapsed / 60:.1f} min"
            )
        return ok_codes and ok_rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=seconds, default=600.0, help="soak time after warm-up (default 10m)")
    parser.add_argument("--warmup", type=seconds, default=60.0, help="load before the start sample (default 60s)")
    parser.add_argument("--callers", type=int, default=16)
    parser.add_argument("--deadline", type=seconds, default=60.0, help="deadline of each Compare call")
    parser.add_argument("--samples", type=int, default=10, help="RSS samples after the start one")
    parser.add_argument("--max-growth", type=float, default=5.0, help="RSS growth goal, %% per process")
    parser.add_argument("--expect", nargs="+", default=["OK"], help="status codes that are not a failure")
    parser.add_argument("--image", type=Path, default=DEFAULT_SAMPLE)
    parser.add_argument("--port-offset", type=int, default=None, help="default: a free one in 12000-12999")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for each service")
    args = parser.parse_args()

    offset = args.port_offset if args.port_offset is not None else free_port() % 1000 + 12_000
    stack = LocalStack(port_offset=offset, log_dir=ROOT / "artifacts" / "soak")
    stop_on_signals(stack)  # Ctrl-C / SIGTERM: SIGTERM every process, then exit
    print(
        f"starting maskrcnn, samclip and gateway as `vcompare stack up` does (port offset {offset}, "
        f"logs in {stack.log_dir}) ...",
        flush=True,
    )
    passed = False
    try:
        stack.up(args.timeout)
        print("  " + ", ".join(f"{n} pid {p.pid} port {stack.port(n)}" for n, p in stack.processes.items()), flush=True)
        soak = Soak(args, stack)
        asyncio.run(soak.run())
        passed = soak.report()
    except RuntimeError as exc:
        print(f"soak: {exc}", file=sys.stderr)
    finally:
        processes = dict(stack.processes)
        start = time.monotonic()
        stack.stop()
        if processes:
            print(
                f"\nstack stopped with SIGTERM in {time.monotonic() - start:.1f} s; exit codes: "
                + ", ".join(f"{n} {p.returncode}" for n, p in processes.items())
            )
    print("\nPASS" if passed else "\nFAIL")
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
