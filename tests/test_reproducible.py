"""One digest on every builder: other CPUs (under qemu-user) and other days (under faketime).

Both run the whole `gosmall build-small` process, not a stand-in for it, and compare report.json
byte for byte, which holds every digest (index, manifests, configs, layers, diff_ids) and size.

- CPUs: `qemu-x86_64 -cpu MODEL` runs this Python, with every C extension gosmall loads, on an
  emulated CPU whose CPUID shows only that model's features, so code that dispatches on SIMD
  (as isal did: AVX-512, AVX2 and SSE gave three layer digests) takes the model's path. Children
  (`go`, `git`) are exec'd natively: the compiler's determinism is Go's and is checked by the
  two-clones test. A CPUID probe run under each model proves the emulation is in effect.
- Days: Debian's faketime (libfaketime via LD_PRELOAD) moves the clock of every dynamically
  linked process: Python, so any clock gosmall read would show, and git. The Go toolchain is
  statically linked and never sees the fake clock, so its build cache cannot be confused by
  file times from the future or the past; nothing needs to be filtered from its environment.

- arm64: `qemu-aarch64` runs Debian's arm64 python3.11 (unpacked into GOSMALL_ARM64_ROOT, with
  the pinned deflate's aarch64 wheel in its gosmall-site/, as .ci/run prepares them) to compress
  the real layer tar of a native build the way assemble does, on two CPU models; the bytes must
  be the native layer's. That proves the compressor on arm64, not the rest of gosmall there.

Without qemu-x86_64 or faketime these skip with the reason, except in CI (CI=true or
GOSMALL_REQUIRE_DOCKER=1, as .ci/run sets), where a missing tool fails instead.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import COMMIT_DATE, gosmall_command, gosmall_env, make_project

pytestmark = pytest.mark.slow

# CPUID.(EAX=7,ECX=0):EBX, through a page of machine code: push rbx; mov eax,7; xor ecx,ecx;
# cpuid; mov eax,ebx; pop rbx; ret. Bit 5 is AVX2, bit 16 AVX-512F.
CPUID_PROBE = """
import ctypes, json, mmap
page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
page.write(bytes.fromhex("53b80700000031c90fa289d85bc3"))
ebx = ctypes.CFUNCTYPE(ctypes.c_uint32)(ctypes.addressof(ctypes.c_char.from_buffer(page)))()
print(json.dumps({"avx2": bool(ebx >> 5 & 1), "avx512f": bool(ebx >> 16 & 1)}))
"""


def required_here() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true") or os.environ.get("GOSMALL_REQUIRE_DOCKER", "").lower() in ("1", "true", "yes")


def tool(name: str, package: str) -> str:
    found = shutil.which(name)
    if found is None:
        reason = f"{name} is not installed (Debian: apt-get install {package})"
        if required_here():
            pytest.fail(f"{reason}; CI must install it (.ci/run does)")
        pytest.skip(reason)
    return found


def emulated(qemu: str, cpu: str, *args: str) -> list[str]:
    """This Python's command line under qemu: `-0` keeps argv[0] the venv's python, so the venv (and its pinned wheels) is found."""
    return [qemu, "-cpu", cpu, "-0", sys.executable, os.path.realpath(sys.executable), *args]


def gosmall_for_python() -> list[str]:
    """What follows `python` to run the console script: its path, or -c and the entry point."""
    command = gosmall_command()
    return command[1:] if command[0] == sys.executable else command


def build_small(root: Path, command: list[str]) -> bytes:
    """`command build-small` in `root` with SOURCE_DATE_EPOCH unset; report.json's bytes.

    TMPDIR is the test's own: under qemu-user the emulated /proc/self/stat gives another process
    start time than the host's /proc/<pid>/stat, so a gosmall running elsewhere on this machine
    would take the work directory for a killed build's and remove it.
    """
    tmp = root.parent / "tmp"
    tmp.mkdir(exist_ok=True)
    env = gosmall_env({"SOURCE_DATE_EPOCH": "", "TMPDIR": str(tmp)})
    done = subprocess.run([*command, "build-small"], cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{' '.join(command)}: {done.stderr[-3000:]}"
    return (root / "dist" / "hello" / "report.json").read_bytes()


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="qemu-x86_64 emulates x86-64 CPUs for this x86-64 Python only")
def test_build_small_gives_one_digest_on_nehalem_haswell_and_this_cpu(tmp_path: Path) -> None:
    qemu = tool("qemu-x86_64", "qemu-user")
    root = make_project(tmp_path / "project")
    native = build_small(root, gosmall_command())
    features = {}
    for cpu in ("Nehalem", "Haswell"):
        probe = subprocess.run(emulated(qemu, cpu, "-c", CPUID_PROBE), capture_output=True, text=True, timeout=120)
        assert probe.returncode == 0, probe.stderr
        features[cpu] = json.loads(probe.stdout)
        assert build_small(root, emulated(qemu, cpu, *gosmall_for_python())) == native, f"-cpu {cpu} built other bytes"
    # The emulation is real: Nehalem has no AVX2 (SSE4.2 only), Haswell AVX2 without AVX-512.
    assert features == {"Nehalem": {"avx2": False, "avx512f": False}, "Haswell": {"avx2": True, "avx512f": False}}
    report = json.loads(native)
    assert report["builder"]["compressor"]["name"] == "deflate"


@pytest.mark.parametrize("shift", ["+3 days", "-400 days"])
def test_build_small_gives_one_digest_on_other_days(tmp_path: Path, shift: str) -> None:
    faketime = tool("faketime", "faketime")
    root = make_project(tmp_path / "project")
    today = build_small(root, gosmall_command())
    # The fake clock is in effect for Python (what gosmall runs in), days away from the real one.
    shown = subprocess.run([faketime, shift, sys.executable, "-c", "import time; print(time.time())"], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    days = (float(shown.stdout) - time.time()) / 86400
    assert (days > 2.5) if shift.startswith("+") else (days < -399), f"faketime {shift!r} moved the clock {days:.1f} days"
    assert build_small(root, [faketime, shift, *gosmall_command()]) == today
    # With SOURCE_DATE_EPOCH unset, every timestamp is the commit's.
    report = json.loads(today)
    committed = subprocess.run(["git", "log", "-1", "--format=%ct"], cwd=root, capture_output=True, text=True).stdout.strip()
    assert report["source"]["source_date_epoch"] == int(committed) == datetime.fromisoformat(COMMIT_DATE).timestamp()


# Run by the arm64 Python: the compressor call of assemble.compress_layer, on the layer tar in image.tar.
ARM64_COMPRESS = """
import hashlib, json, sys, tarfile
root, archive, level = sys.argv[1], sys.argv[2], int(sys.argv[3])
sys.path.insert(0, root + "/gosmall-site")
import deflate
with tarfile.open(archive) as tar:
    (layer,) = json.load(tar.extractfile("manifest.json"))[0]["Layers"]
    data = tar.extractfile(layer).read()
print(json.dumps({"version": deflate.__version__, "layer_digest": "sha256:" + hashlib.sha256(bytes(deflate.gzip_compress(data, level))).hexdigest()}))
"""


def test_the_layer_compresses_to_the_same_bytes_on_arm64(tmp_path: Path) -> None:
    qemu = tool("qemu-aarch64", "qemu-user")
    root_text = os.environ.get("GOSMALL_ARM64_ROOT", "")
    python = Path(root_text) / "usr" / "bin" / "python3.11"
    if not root_text or not python.is_file():
        reason = "GOSMALL_ARM64_ROOT names no directory with Debian's arm64 python3.11 and deflate in gosmall-site/ (.ci/run makes one)"
        if required_here():
            pytest.fail(reason)
        pytest.skip(reason)
    project = make_project(tmp_path / "project")
    report = json.loads(build_small(project, gosmall_command()))
    native = report["platforms"][report["docker_platform"]]["layer_digest"]
    compressor = report["builder"]["compressor"]
    for cpu in ("cortex-a53", "max"):  # ARMv8.0 with NEON, CRC32 and PMULL; and every feature qemu has (SVE2, ...)
        done = subprocess.run(
            [qemu, "-cpu", cpu, "-L", root_text, str(python), "-I", "-c", ARM64_COMPRESS, root_text,
             str(project / "dist" / "hello" / "image.tar"), str(compressor["level"])],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"version": compressor["version"], "layer_digest": native}, f"-cpu {cpu}"
