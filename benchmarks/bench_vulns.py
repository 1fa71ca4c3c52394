"""`gosmall vulns`: go_app's image against a generated Go vulnerability database of 5,000 records.

The database is written in the published layout (index/db.json, index/modules.json, ID/<id>.json) into a
temporary directory: 300 `stdlib` records (the size of the real database's stdlib share), half of them on
functions go_app really links, the rest on 1,500 modules go_app does not have. Measured, medians of N runs
interleaved in the same run:

- the console command as a user types it, `gosmall vulns dist/hello --db DIR --format json` (Python's start,
  invoke, reading the OCI layout, the build info, the pclntab and inline trees, the records, the matching);
- the same check in one process (`check_targets`), without Python's start;
- one binary alone (the linux/amd64 go_app: build info, pclntab and inline trees, its records, the matching);
- Python's start with gosmall's task collection, the console command's floor;
- reading every one of the 5,000 records, what a checker that does not go by index/modules.json would do at
  the least, as the ratio's baseline.

    python benchmarks/bench_vulns.py [--runs 7] [--records 5000]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
STDLIB_RECORDS = 300
OTHER_MODULES = 1500


def go_app_layout(work: Path) -> Path:
    """dist/hello (go_app's output) when it is there, else go_app built now with `gosmall build-small`."""
    output = REPO / "dist" / "hello"
    if (output / "oci" / "index.json").exists():
        return output
    project = work / "project"
    shutil.copytree(REPO / "go_app", project / "go_app")
    text = (REPO / "pyproject.toml").read_text()
    (project / "pyproject.toml").write_text('[project]\nname = "sample"\nversion = "0"\n\n' + text[text.index("[tool.gosmall]") :])
    subprocess.run([sys.executable, "-c", "from gosmall.cli import main; main()", "build-small"], cwd=project, check=True)
    return project / "dist" / "hello"


def linked_functions(output: Path) -> tuple[str, list[str]]:
    """go_app's Go version and the functions it links, from its image.tar."""
    from gosmall.build.buildinfo import read_build_info
    from gosmall.elf import read_go_functions

    data = _amd64_binary(output)
    info = read_build_info(data)
    assert info is not None
    return info.go_version, sorted(read_go_functions(io.BytesIO(data)).all)


def write_database(root: Path, count: int, go_version: str, functions: list[str]) -> None:
    from gosmall.trust.vulns import go_semver

    rng = random.Random(27)
    major, minor, patch = (go_semver(go_version) or "v1.0.0").lstrip("v").split("-")[0].split(".")
    # (package, function) of the plain functions of standard packages, as OSV names them.
    named = [
        (f.rsplit(".", 1)[0], f.rsplit(".", 1)[1])
        for f in functions
        if "." not in f.split("/")[0] and not set("()[]*-:%").intersection(f) and f.count(".") == 1
    ]
    modules: dict[str, list[dict[str, str]]] = {}
    (root / "ID").mkdir(parents=True)
    (root / "index").mkdir()
    for number in range(count):
        vuln_id = f"GO-2026-{number:05d}"
        if number < STDLIB_RECORDS:
            module = "stdlib"
            package, symbol = rng.choice(named) if number % 2 else (rng.choice(named)[0], f"Missing{number}")
            fixed = f"{major}.{minor}.{int(patch) + rng.choice((-1, 1))}"
        else:
            module = f"example.com/m{number % OTHER_MODULES}"
            package, symbol, fixed = f"{module}/pkg", f"F{number}", "1.2.3"
        record: dict[str, Any] = {
            "schema_version": "1.3.1",
            "id": vuln_id,
            "modified": "2026-11-01T00:00:00Z",
            "aliases": [f"CVE-2026-{number:05d}"],
            "summary": f"generated record {number}",
            "details": "x" * 400,
            "affected": [
                {
                    "package": {"name": module, "ecosystem": "Go"},
                    "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": fixed}]}],
                    "ecosystem_specific": {"imports": [{"path": package, "symbols": [symbol]}]},
                }
            ],
        }
        (root / "ID" / f"{vuln_id}.json").write_text(json.dumps(record))
        modules.setdefault(module, []).append({"id": vuln_id, "modified": record["modified"]})
    (root / "index" / "modules.json").write_text(json.dumps([{"path": p, "vulns": v} for p, v in modules.items()]))
    (root / "index" / "db.json").write_text(json.dumps({"modified": "2026-11-01T00:00:00Z"}))


def command(output: Path, db: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", "from gosmall.cli import main; main()", "vulns", str(output), "--db", str(db), "--format", "json"],
        capture_output=True,
        text=True,
        env={**os.environ, "GOVULNDB": ""},
    )
    seconds = time.perf_counter() - start
    assert done.returncode in (0, 1), done.stderr
    return seconds


def in_process(output: Path, db: Path) -> tuple[float, int]:
    from gosmall.trust.vulns import check_targets, open_database

    start = time.perf_counter()
    results = check_targets([str(output)], open_database(str(db), Path.cwd()))
    seconds = time.perf_counter() - start
    return seconds, sum(len(b.findings) for r in results for b in r.binaries)


def one_binary(output: Path, db: Path) -> float:
    """check_binary on the linux/amd64 go_app alone: build info, pclntab, inline trees, its records, the matching."""
    from gosmall.build.buildinfo import read_build_info
    from gosmall.trust.vulns import check_binary, open_database

    data = _amd64_binary(output)
    start = time.perf_counter()
    info = read_build_info(data)
    assert info is not None
    check_binary(data, info, open_database(str(db), Path.cwd()), platform="linux/amd64", path="/go_app")
    return time.perf_counter() - start


def python_start() -> float:
    """What the console command costs before it does anything: Python and gosmall's task collection."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import gosmall.cli"], check=True)
    return time.perf_counter() - start


def _amd64_binary(output: Path) -> bytes:
    with tarfile.open(output / "image.tar") as archive:
        manifest = json.loads(archive.extractfile("manifest.json").read())  # type: ignore[union-attr]
        layer = archive.extractfile(manifest[0]["Layers"][0]).read()  # type: ignore[union-attr]
    with tarfile.open(fileobj=io.BytesIO(layer)) as inner:
        return inner.extractfile("go_app").read()  # type: ignore[union-attr]


def every_record(db: Path) -> float:
    start = time.perf_counter()
    for path in (db / "ID").iterdir():
        json.loads(path.read_bytes())
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--records", type=int, default=5000)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-vulns-") as temporary:
        work = Path(temporary)
        output = go_app_layout(work)
        go_version, functions = linked_functions(output)
        db = work / "vulndb"
        write_database(db, args.records, go_version, functions)
        in_process(output, db)  # imports, once
        rows: dict[str, list[float]] = {"command": [], "python start": [], "in process": [], "one binary": [], "every record": []}
        found = 0
        for _ in range(args.runs):
            rows["command"].append(command(output, db))
            seconds, found = in_process(output, db)
            rows["in process"].append(seconds)
            rows["python start"].append(python_start())
            rows["one binary"].append(one_binary(output, db))
            rows["every record"].append(every_record(db))
        medians = {name: statistics.median(times) for name, times in rows.items()}
        print(
            f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} CPUs, Python "
            f"{platform.python_version()}, load average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
        )
        print(f"go_app ({go_version}, {len(functions)} functions linked or inlined) against {args.records} records; {found} findings")
        print(f"{'measured':<48} {'median s':>9} {'× every record':>15}")
        base = medians["every record"]
        labels = {
            "command": "gosmall vulns dist/hello --db DIR (console)",
            "python start": "python -c 'import gosmall.cli' (its floor)",
            "in process": "check_targets, both platforms (no start)",
            "one binary": "check_binary, linux/amd64 go_app alone",
            "every record": "json.loads of all records (baseline)",
        }
        for name, label in labels.items():
            print(f"{label:<48} {medians[name]:>9.3f} {medians[name] / base:>15.2f}")


if __name__ == "__main__":
    main()
