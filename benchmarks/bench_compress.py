"""Layer compression: libdeflate (what gosmall uses), isal, zlib-ng and stdlib gzip.

Every compressor gets the same bytes, the real go_app layer tar, in the same
run; results are medians of N runs, shown as ratios to stdlib gzip -6 (what
`docker push` and most Python tools produce). Absolute times are printed for
context only: they depend on the machine, the ratios much less.

It also shows what gosmall's choice rests on. Each compressor is deterministic
on its own machine (same input, same bytes, every run), but:

- two implementations of the same deflate level give different bytes, so the
  layer digest depends on which library, and which version, did the
  compressing. Python's `gzip` uses whatever zlib the interpreter was linked
  against (printed below); a distro that upgrades zlib, or swaps it for
  zlib-ng's compat mode as Fedora 40 did, changes the digest.
- some libraries pick their compression kernels by CPU feature. `--cpus`
  reruns every compressor once under `qemu-x86_64 -cpu MODEL` (Debian
  qemu-user) for each model named and shows whether the bytes change with the
  CPU; isal's do (AVX-512, AVX2 and SSE each give their own output).

    python benchmarks/bench_compress.py [--runs 9] [--layer build|archive] [--cpus Haswell,Nehalem,qemu64]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]

BASELINE = "gzip -6"


@dataclass(frozen=True)
class Compressor:
    name: str
    library: str  # library and version: the bytes depend on both
    compress: Callable[[bytes], bytes]


@dataclass(frozen=True)
class Measurement:
    compressor: Compressor
    seconds: float  # median
    size: int
    digests: frozenset[str]  # one per distinct output seen across the runs


def compressors() -> tuple[Compressor, ...]:
    import deflate

    found = [
        Compressor(
            f"libdeflate -{level}", f"deflate {deflate.__version__}", lambda data, level=level: bytes(deflate.gzip_compress(data, level))
        )
        for level in (1, 6, 9, 12)
    ]
    try:
        from isal import __version__ as isal_version
        from isal import igzip
    except ImportError:
        print("isal is not installed (pip install isal; gosmall used isal -3 before libdeflate); its rows are left out.\n", file=sys.stderr)
    else:
        found += [
            Compressor(
                f"isal -{level}", f"isal {isal_version}", lambda data, level=level: igzip.compress(data, compresslevel=level, mtime=0)
            )
            for level in (0, 1, 2, 3)
        ]
    stdlib = f"zlib {zlib.ZLIB_RUNTIME_VERSION}"
    found += [
        Compressor(f"gzip -{level}", stdlib, lambda data, level=level: gzip.compress(data, compresslevel=level, mtime=0))
        for level in (1, 6, 9)
    ]
    try:
        from zlib_ng import gzip_ng, zlib_ng
    except ImportError:
        print("zlib-ng is not installed (pip install zlib-ng); its rows are left out.\n", file=sys.stderr)
    else:
        library = f"zlib-ng {zlib_ng.ZLIBNG_VERSION}"
        found += [
            Compressor(f"zlib-ng -{level}", library, lambda data, level=level: gzip_ng.compress(data, compresslevel=level, mtime=0))
            for level in (1, 6, 9)
        ]
    return tuple(found)


def gosmall_row() -> str:
    """The row that compresses as gosmall's assemble stage does."""
    from gosmall.build.compression import GZIP_LEVEL

    return f"libdeflate -{GZIP_LEVEL}"


# -- the input ------------------------------------------------------------------


def layer_from_archive(archive: Path) -> bytes:
    """The uncompressed layer gosmall wrote into image.tar (docker_archive stores it as is)."""
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        (layer_name,) = manifest[0]["Layers"]
        return tar.extractfile(layer_name).read()  # type: ignore[union-attr]


def layer_from_build() -> bytes:
    """Build go_app for linux/amd64 with gosmall's own stages and return its layer tar."""
    from gosmall.build.assemble import PlatformParts, build_layer_tar, layer_entries
    from gosmall.build.compile import compile_binary, plan_compile
    from gosmall.build.runtime_files import collect_runtime_files
    from gosmall.build.toolchain import find_module, find_toolchain
    from gosmall.config import load_project
    from gosmall.images.model import Platform

    project = load_project(REPO)
    (image,) = project.image("hello")
    module = find_module(image.package)
    toolchain = find_toolchain(module)
    with tempfile.TemporaryDirectory(prefix="gosmall-bench-") as workdir:
        plan = plan_compile(image, module, Platform.parse("linux/amd64"), "bench")
        binary = compile_binary(plan, toolchain, Path(workdir))
        part = PlatformParts(binary, collect_runtime_files(image, toolchain))
        return build_layer_tar(layer_entries(image, part), 0)


# -- measuring ------------------------------------------------------------------


def measure_all(data: bytes, runs: int) -> list[Measurement]:
    chosen = compressors()
    times: dict[str, list[float]] = {c.name: [] for c in chosen}
    digests: dict[str, set[str]] = {c.name: set() for c in chosen}
    sizes: dict[str, int] = {}
    # Round-robin, one run of each compressor per round, so a noisy neighbour
    # or a clock-speed change hits all of them alike instead of one row.
    for _ in range(runs):
        for compressor in chosen:
            start = time.perf_counter()
            output = compressor.compress(data)
            times[compressor.name].append(time.perf_counter() - start)
            digests[compressor.name].add(hashlib.sha256(output).hexdigest())
            if compressor.name not in sizes:
                # A stream that does not round-trip would make every number meaningless.
                if zlib.decompress(output, wbits=31) != data:
                    raise SystemExit(f"{compressor.name} produced a stream that does not decompress to its input")
                sizes[compressor.name] = len(output)
    return [Measurement(c, statistics.median(times[c.name]), sizes[c.name], frozenset(digests[c.name])) for c in chosen]


# -- showing --------------------------------------------------------------------


def show(measurements: list[Measurement], data: bytes, runs: int, source: str) -> None:
    baseline = next(m for m in measurements if m.compressor.name == BASELINE)
    print(f"# Layer compression, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    print()
    print(f"- machine: {machine()}")
    print(f"- SIMD the deflate libraries may dispatch on: {simd_features()}")
    print(f"- python {platform.python_version()}, zlib compiled {zlib.ZLIB_VERSION}, zlib at run time {zlib.ZLIB_RUNTIME_VERSION}")
    print(f"- input: the go_app linux/amd64 layer tar ({source}), {len(data):,} bytes, sha256:{hashlib.sha256(data).hexdigest()[:16]}…")
    print(f"- {runs} runs each, interleaved; time is the median; ratios are against {BASELINE}")
    print()
    print(
        "| compressor | library | median ms | MB/s | size bytes | time / gzip -6 | size / gzip -6 | same bytes every run | output sha256 |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---|---|")
    for m in measurements:
        mark = " (gosmall)" if m.compressor.name == gosmall_row() else ""
        print(
            f"| {m.compressor.name}{mark} | {m.compressor.library} | {m.seconds * 1000:.1f} | {len(data) / m.seconds / 1e6:.0f} "
            f"| {m.size:,} | {m.seconds / baseline.seconds:.2f} | {m.size / baseline.size:.3f} "
            f"| {'yes' if len(m.digests) == 1 else f'NO ({len(m.digests)} digests)'} | {min(m.digests)[:12]} |"
        )
    print()
    show_digest_dependence(measurements)


def show_digest_dependence(measurements: list[Measurement]) -> None:
    """Same deflate level, different library: do the bytes (and so the layer digest) agree?"""
    by_name = {m.compressor.name: m for m in measurements}
    print("Same level, different implementation (the layer digest is the sha256 of these bytes):")
    print()
    for level in (1, 6, 9):
        a, b = by_name.get(f"gzip -{level}"), by_name.get(f"zlib-ng -{level}")
        if a and b:
            same = a.digests == b.digests
            print(
                f"- level {level}: {a.compressor.library} -> {min(a.digests)[:12]} ({a.size:,} B), "
                f"{b.compressor.library} -> {min(b.digests)[:12]} ({b.size:,} B): {'identical' if same else 'DIFFERENT bytes'}"
            )
    print(
        f"- stdlib gzip here runs zlib {zlib.ZLIB_RUNTIME_VERSION}; its output is only as stable as that library, "
        "which the OS, not gosmall, chooses. libdeflate comes pinned in pyproject.toml (the deflate package bundles it)."
    )


def check_against_report(measurements: list[Measurement], archive: Path) -> None:
    """When image.tar and report.json are one build, gosmall's row must give its layer digest."""
    report_path = archive.with_name("report.json")
    if not report_path.is_file():
        return
    shown = report_path.relative_to(REPO) if report_path.is_relative_to(REPO) else report_path
    report = json.loads(report_path.read_text())
    entry = report["platforms"].get(report.get("docker_platform", ""), {})
    ours = next(m for m in measurements if m.compressor.name == gosmall_row())
    if entry.get("layer_digest") == f"sha256:{min(ours.digests)}":
        print(
            f"- {ours.compressor.name} output is {entry['layer_digest'][:19]}…, the layer digest in {shown}: the bench compresses as gosmall does."
        )
    else:
        print(
            f"- note: {ours.compressor.name} output differs from the layer digest in {shown} ({report.get('builder', {}).get('compressor', '?')})."
        )


# -- across CPUs ------------------------------------------------------------------


def digests_once(data: bytes) -> dict[str, str]:
    """One run of every compressor: name -> sha256 of its output (what `--digests-of` prints for --cpus)."""
    return {c.name: hashlib.sha256(c.compress(data)).hexdigest() for c in compressors()}


def digests_under_qemu(layer: Path, cpu: str) -> dict[str, str]:
    """The same as digests_once, in this Python run under `qemu-x86_64 -cpu CPU`.

    `-0` hands the venv's python path over as argv[0], so the emulated
    interpreter still finds the venv (and its pinned wheels) through pyvenv.cfg.
    """
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        raise SystemExit("--cpus needs qemu-x86_64 (Debian: apt-get install qemu-user)")
    done = subprocess.run(
        [qemu, "-cpu", cpu, "-0", sys.executable, os.path.realpath(sys.executable), __file__, "--digests-of", str(layer)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"under qemu -cpu {cpu}: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout)


def show_across_cpus(data: bytes, cpus: list[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="gosmall-bench-") as tmp:
        layer = Path(tmp) / "layer.tar"
        layer.write_bytes(data)
        columns = {"native": digests_once(data)}
        for cpu in cpus:
            columns[f"qemu -cpu {cpu}"] = digests_under_qemu(layer, cpu)
    native = columns["native"]
    print()
    print(f"Output sha256 (first 12 hex) by CPU; native is {simd_features()}:")
    print()
    print("| compressor | " + " | ".join(columns) + " | same on every CPU |")
    print("|---|" + "---|" * len(columns) + "---|")
    for name in native:
        row = [columns[c][name][:12] for c in columns]
        mark = " (gosmall)" if name == gosmall_row() else ""
        print(f"| {name}{mark} | " + " | ".join(row) + f" | {'yes' if len(set(row)) == 1 else f'NO ({len(set(row))} outputs)'} |")


def simd_features() -> str:
    """isal and zlib-ng pick kernels by CPU feature (libdeflate only its checksums); worth knowing when comparing digests across machines."""
    try:
        flags = (
            next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith(("flags", "Features")))
            .split(":", 1)[1]
            .split()
        )
    except (OSError, StopIteration):
        return "unknown"
    wanted = ("sse4_2", "pclmulqdq", "avx2", "avx512f", "avx512bw", "vpclmulqdq", "asimd", "pmull", "crc32")
    return ", ".join(f for f in wanted if f in flags) or "none of " + ", ".join(wanted)


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())
    return f"{platform.machine()} {model or platform.processor() or '?'}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}{load}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=9, help="runs per compressor (median is reported)")
    parser.add_argument(
        "--layer", choices=("auto", "archive", "build"), default="auto",
        help="archive: the layer in dist/hello/image.tar; build: build go_app now; auto: archive if present",
    )  # fmt: skip
    parser.add_argument("--archive", type=Path, default=REPO / "dist" / "hello" / "image.tar")
    parser.add_argument(
        "--cpus", default="", help="comma-separated qemu-x86_64 CPU models to compare output bytes on, e.g. Haswell,Nehalem,qemu64"
    )
    parser.add_argument("--digests-of", type=Path, help=argparse.SUPPRESS)  # the child side of --cpus
    args = parser.parse_args(argv)
    if args.digests_of:
        print(json.dumps(digests_once(args.digests_of.read_bytes())))
        return

    use_archive = args.layer == "archive" or (args.layer == "auto" and args.archive.is_file())
    if use_archive:
        data, source = (
            layer_from_archive(args.archive),
            f"from {args.archive.relative_to(REPO) if args.archive.is_relative_to(REPO) else args.archive}",
        )
    else:
        data, source = layer_from_build(), "built now with gosmall's stages"
    measurements = measure_all(data, args.runs)
    show(measurements, data, args.runs, source)
    if use_archive:
        check_against_report(measurements, args.archive)
    if args.cpus:
        show_across_cpus(data, [c for c in args.cpus.split(",") if c])


if __name__ == "__main__":
    main()
