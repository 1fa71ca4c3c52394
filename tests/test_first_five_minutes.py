"""The first five minutes: a plain Go module, no config, `init` to keep it, `run` for the loop.

Real `go build`s through the console script, and a real engine for `--load`
and `run`. Every program prints this session's RUN, so its image ID is this
session's alone, though builds are reproducible and other sessions may build
the same programs on this engine at the same time.
"""

from __future__ import annotations

import gzip
import io
import json
import signal
import subprocess
import sys
import tarfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from gosmall.config import LOCAL_REGISTRY, unpushable_repository
from gosmall.publish.engine import SMOKE_LABEL
from tests.conftest import gosmall, gosmall_command, gosmall_env

pytestmark = pytest.mark.slow

RUN = uuid.uuid4().hex[:10]

HELLO = """package main

import (
	"fmt"
	"os"
	"strings"
)

func main() { fmt.Println("hello @RUN@ " + strings.Join(os.Args[1:], "|")) }
"""
ZONE = """package main

import (
	"fmt"
	"os"
	"time"
)

func main() {
	fmt.Fprintln(os.Stderr, "zone @RUN@")
	zone, err := time.LoadLocation(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(4)
	}
	fmt.Println(time.Date(2026, 1, 1, 0, 0, 0, 0, zone).Format("-0700"))
}
"""
SERVER = """package main

import (
	"fmt"
	"net/http"
)

func main() {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "server @RUN@") })
	_ = http.ListenAndServe(":8080", nil)
}
"""
EXIT3 = """package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Println("exit3 @RUN@")
	os.Exit(3)
}
"""
SLEEPER = """package main

import (
	"fmt"
	"time"
)

func main() {
	fmt.Println("ready @RUN@")
	for {
		time.Sleep(time.Hour)
	}
}
"""
LIBRARY = "package lib\n\n// Version is not a command.\nconst Version = 1\n"
# A main file that `go build` never builds: the directory is package lib, as go list says.
GENERATOR = "//go:build ignore\n\npackage main\n\nfunc main() {}\n"


def go_module(root: Path, files: dict[str, str]) -> Path:
    """A Go module and nothing else: go.mod and `files` (path -> source), no pyproject.toml, no git."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "go.mod").write_text("module example.com/first\n\ngo 1.22\n")
    for path, source in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(source.replace("@RUN@", RUN))
    return root


def report(root: Path, name: str) -> dict[str, Any]:
    return json.loads((root / "dist" / name / "report.json").read_text())


def layer_paths(root: Path, name: str) -> set[str]:
    """The paths in the image's (one) layer, read from the OCI layout by the digest report.json names."""
    (facts,) = report(root, name)["platforms"].values()
    blob = root / "dist" / name / "oci" / "blobs" / "sha256" / facts["layer_digest"].removeprefix("sha256:")
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob.read_bytes()))) as layer:
        return {member.name.lstrip("./") for member in layer.getmembers()}


def config_digest(root: Path, name: str) -> str:
    (facts,) = report(root, name)["platforms"].values()
    return str(facts["config_digest"])


def our_containers(client: Any, image_id: str) -> list[Any]:
    return [c for c in client.containers.list(all=True, filters={"label": SMOKE_LABEL}) if c.image.id == image_id]


@pytest.fixture
def engine_images(docker_client: Any) -> Iterator[list[str]]:
    """Image IDs a test loads, removed from the engine afterwards."""
    from docker.errors import APIError

    loaded: list[str] = []
    yield loaded
    for image_id in loaded:
        try:
            docker_client.images.remove(image_id, force=True)
        except APIError:
            pass  # already gone


# -- no config --------------------------------------------------------------------


@pytest.mark.docker
def test_a_plain_module_builds_with_no_config_and_the_image_loads_and_runs(
    tmp_path: Path, docker_client: Any, engine_images: list[str]
) -> None:
    root = go_module(tmp_path / "plain", {"cmd/app/main.go": HELLO})
    done = gosmall("build-small", "./cmd/app", "--load", cwd=root, env={"GOSMALL_REPO": "127.0.0.1:5000/x"})
    assert done.returncode == 0, done.stderr
    engine_images.append(config_digest(root, "app"))

    built = report(root, "app")
    assert (built["image"], built["repository"], built["tags"]) == ("app", "127.0.0.1:5000/x/app", ["latest"])
    assert not (root / "pyproject.toml").exists()  # nothing was written but the output
    image = docker_client.images.get("127.0.0.1:5000/x/app:latest")
    assert image.id == config_digest(root, "app")
    assert image.attrs["Config"]["User"] == "65532:65532"
    output = docker_client.containers.run(image.id, ["a", "b"], network_mode="none", remove=True)
    assert output.decode() == f"hello {RUN} a|b\n"


def test_without_gosmall_repo_the_repository_loads_locally_and_push_refuses_it(tmp_path: Path) -> None:
    root = go_module(tmp_path / "local", {"main.go": HELLO})
    done = gosmall("build-small", ".", cwd=root, env={"GOSMALL_REPO": ""})
    assert done.returncode == 0, done.stderr
    # `.` is named after the module directory.
    assert report(root, "local")["repository"] == f"{LOCAL_REGISTRY}/local"
    refusal = unpushable_repository(f"{LOCAL_REGISTRY}/local")
    assert refusal is not None and "GOSMALL_REPO" in refusal
    assert unpushable_repository("127.0.0.1:5000/x/local") is None


def test_runtime_files_follow_what_the_binary_links(tmp_path: Path) -> None:
    root = go_module(tmp_path / "needs", {"cmd/zone/main.go": ZONE, "cmd/server/main.go": SERVER})
    done = gosmall("build-small", "./cmd/zone", "./cmd/server", cwd=root)
    assert done.returncode == 0, done.stderr
    assert "WARNING" not in done.stderr

    (zone,) = report(root, "zone")["platforms"].values()
    assert [n["need"] for n in zone["needs"]] == ["tzdata"]
    assert "usr/share/zoneinfo.zip" in layer_paths(root, "zone")
    assert "etc/ssl/certs/ca-certificates.crt" not in layer_paths(root, "zone")

    # A net/http server that never loads a zone: no tz database, and the CA bundle its TLS client could need.
    (server,) = report(root, "server")["platforms"].values()
    assert [n["need"] for n in server["needs"]] == ["ca_certs"]
    assert "usr/share/zoneinfo.zip" not in layer_paths(root, "server")
    assert "etc/ssl/certs/ca-certificates.crt" in layer_paths(root, "server")


@pytest.mark.parametrize(
    ("package", "message"),
    [
        ("./lib", "'./lib' is package lib (example.com/first/lib), not a main package"),
        ("./gen", "'./gen' is package lib (example.com/first/gen), not a main package"),
        ("../elsewhere", "'../elsewhere' ({tmp}/elsewhere) is outside the Go module in {tmp}/module"),
        ("./nested/cmd", "'./nested/cmd' ({tmp}/module/nested/cmd) belongs to another Go module"),
        ("./empty", "'./empty' ({tmp}/module/empty) is not a main package: it holds no Go files"),
        ("./missing", "'./missing' is not a directory"),
    ],
)
def test_a_path_that_is_not_a_main_package_of_the_module_is_one_error(tmp_path: Path, package: str, message: str) -> None:
    root = go_module(
        tmp_path / "module",
        {
            "lib/lib.go": LIBRARY,
            "gen/lib.go": LIBRARY,
            "gen/gen.go": GENERATOR,
            "nested/go.mod": "module example.com/nested\n",
            "nested/cmd/main.go": HELLO,
        },
    )
    (root / "empty").mkdir()
    (tmp_path / "elsewhere").mkdir()
    done = gosmall("build-small", package, cwd=root)
    assert done.returncode == 2
    assert done.stderr.startswith("gosmall: error: " + message.format(tmp=tmp_path.resolve())), done.stderr
    assert "Traceback" not in done.stderr
    assert not (root / "dist").exists()


def test_with_a_table_a_package_is_its_configured_image_else_the_defaults_and_the_top_level_settings(tmp_path: Path) -> None:
    root = go_module(tmp_path / "table", {"cmd/hello/main.go": HELLO, "cmd/exit3/main.go": EXIT3})
    (root / "pyproject.toml").write_text(
        '[tool.gosmall]\noutput = "out"\n\n[tool.gosmall.images.custom]\npackage = "./cmd/hello"\nrepository = "example.com/custom"\n'
    )
    done = gosmall("build-small", "./cmd/hello", "cmd/exit3", cwd=root, env={"GOSMALL_REPO": "127.0.0.1:5000/team"})
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (root / "out").iterdir()) == ["custom", "exit3"]
    custom = json.loads((root / "out" / "custom" / "report.json").read_text())
    default = json.loads((root / "out" / "exit3" / "report.json").read_text())
    assert custom["repository"] == "example.com/custom"
    assert default["repository"] == "127.0.0.1:5000/team/exit3"
    assert not (root / "dist").exists()


def test_platform_overrides_the_build_machines(tmp_path: Path) -> None:
    root = go_module(tmp_path / "cross", {"cmd/app/main.go": HELLO})
    done = gosmall("build-small", "./cmd/app", "--platform", "linux/arm64", cwd=root)
    assert done.returncode == 0, done.stderr
    assert list(report(root, "app")["platforms"]) == ["linux/arm64"]
    wrong = gosmall("build-small", "./cmd/app", "--platform", "linux/amd46", cwd=root)
    assert wrong.returncode == 2
    assert "--platform 'linux/amd46' is not a platform gosmall can build" in wrong.stderr and "Did you mean 'linux/amd64'?" in wrong.stderr


# -- init -------------------------------------------------------------------------

PYPROJECT = """# Tools for this repository.
[project]
name = "svc"  # the service
version = "1.0"

[tool.black]
line-length = 100
# no newline at the end"""


def test_init_appends_a_table_that_keeps_every_byte_and_builds(tmp_path: Path) -> None:
    root = go_module(
        tmp_path / "kept",
        {"cmd/zone/main.go": ZONE, "cmd/server/main.go": SERVER, "lib/lib.go": LIBRARY, "testdata/cmd/fixture/main.go": HELLO},
    )
    (root / "pyproject.toml").write_text(PYPROJECT)
    before = (root / "pyproject.toml").read_bytes()

    done = gosmall("init", cwd=root, env={"GOSMALL_REPO": ""})
    assert done.returncode == 0, done.stderr
    after = (root / "pyproject.toml").read_bytes()
    assert after.startswith(before)
    document = tomllib.loads(after.decode())
    assert document["project"] == {"name": "svc", "version": "1.0"}
    images = document["tool"]["gosmall"]["images"]
    assert sorted(images) == ["server", "zone"]  # testdata/ and the library are not images
    assert images["zone"] == {
        "package": "./cmd/zone", "repository": f"{LOCAL_REGISTRY}/zone", "tags": ["latest"], "user": "nonroot",
        "tzdata": "zip", "ca_certs": False,
    }  # fmt: skip
    assert (images["server"]["tzdata"], images["server"]["ca_certs"]) == ("none", True)
    added = after[len(before) :].decode().splitlines()
    keys = [i for i, line in enumerate(added) if " = " in line and not line.startswith("#")]
    assert keys and all(added[i - 1].startswith("# ") for i in keys), "every key has a comment above it"

    built = gosmall("build-small", cwd=root)
    assert built.returncode == 0, built.stderr
    assert [n["need"] for n in next(iter(report(root, "zone")["platforms"].values()))["needs"]] == ["tzdata"]
    assert "usr/share/zoneinfo.zip" not in layer_paths(root, "server")

    again = gosmall("init", cwd=root)
    assert again.returncode == 2
    assert "already has a [tool.gosmall] table; init leaves it as it is. To add an image by hand" in again.stderr
    assert (root / "pyproject.toml").read_bytes() == after


def test_init_then_build_small_in_a_fresh_module(tmp_path: Path) -> None:
    root = go_module(tmp_path / "fresh", {"cmd/app/main.go": HELLO})
    done = gosmall("init", cwd=root / "cmd", env={"GOSMALL_REPO": "127.0.0.1:5000/x"})
    assert done.returncode == 0, done.stderr
    table = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["gosmall"]
    assert table["images"]["app"]["repository"] == "127.0.0.1:5000/x/app"
    built = gosmall("build-small", cwd=root)
    assert built.returncode == 0, built.stderr
    assert report(root, "app")["repository"] == "127.0.0.1:5000/x/app"


def test_init_in_a_module_without_a_main_package_writes_nothing(tmp_path: Path) -> None:
    root = go_module(tmp_path / "library", {"lib/lib.go": LIBRARY})
    done = gosmall("init", cwd=root)
    assert done.returncode == 2
    assert "has no main package" in done.stderr
    assert not (root / "pyproject.toml").exists()


# -- run --------------------------------------------------------------------------


@pytest.mark.docker
def test_run_prints_the_zone_offset_from_inside_the_image(tmp_path: Path, engine_images: list[str]) -> None:
    root = go_module(tmp_path / "kathmandu", {"cmd/zone/main.go": ZONE})
    done = gosmall("run", "./cmd/zone", "--", "Asia/Kathmandu", cwd=root)
    engine_images.append(config_digest(root, "zone"))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "+0545\n"  # only the container's stdout; gosmall's messages and tables go to stderr
    assert f"zone {RUN}" in done.stderr  # the container's stderr
    assert [n["need"] for n in next(iter(report(root, "zone")["platforms"].values()))["needs"]] == ["tzdata"]


@pytest.mark.docker
def test_run_passes_each_argument_as_one_word_on_no_network(tmp_path: Path, engine_images: list[str]) -> None:
    root = go_module(tmp_path / "words", {"cmd/hello/main.go": HELLO})
    done = gosmall("run", "./cmd/hello", "--network", "none", "--", "-v", "a=b", "two words", cwd=root)
    engine_images.append(config_digest(root, "hello"))
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"hello {RUN} -v|a=b|two words\n"
    assert "network none" in done.stderr


@pytest.mark.docker
def test_run_exits_with_the_containers_status_and_leaves_no_container(tmp_path: Path, docker_client: Any, engine_images: list[str]) -> None:
    root = go_module(tmp_path / "three", {"cmd/exit3/main.go": EXIT3})
    done = gosmall("run", "./cmd/exit3", cwd=root)
    engine_images.append(config_digest(root, "exit3"))
    assert done.returncode == 3, done.stderr
    assert done.stdout == f"exit3 {RUN}\n"
    assert our_containers(docker_client, config_digest(root, "exit3")) == []


@pytest.mark.docker
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_run_removes_the_container_when_interrupted(tmp_path: Path, docker_client: Any, engine_images: list[str], signum: int) -> None:
    root = go_module(tmp_path / "sleeper", {"cmd/sleeper/main.go": SLEEPER})
    with (tmp_path / "stderr").open("w+") as stderr:
        process = subprocess.Popen(
            [*gosmall_command(), "run", "./cmd/sleeper"], cwd=root, env=gosmall_env(), stdout=subprocess.PIPE, stderr=stderr, text=True
        )
        try:
            assert read_line(process) == f"ready {RUN}\n", (tmp_path / "stderr").read_text()
            image_id = config_digest(root, "sleeper")
            engine_images.append(image_id)
            (running,) = our_containers(docker_client, image_id)
            assert running.status == "running"
            process.send_signal(signum)
            assert process.wait(timeout=120) == 128 + signum
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert "gosmall: stopped; the container was removed." in (tmp_path / "stderr").read_text()
    assert our_containers(docker_client, image_id) == []


def read_line(process: subprocess.Popen[str]) -> str:
    """The next line of its stdout ("" at its end); a safety net so a hung run fails instead of hanging the suite."""
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(process.stdout.readline() if process.stdout else ""), daemon=True)
    reader.start()
    reader.join(timeout=300)
    if not line:
        process.kill()
        pytest.fail("gosmall run printed no line in 300 s")
    return line[0]


def test_run_of_a_project_with_several_images_asks_which(tmp_path: Path) -> None:
    root = go_module(tmp_path / "several", {"cmd/a/main.go": HELLO, "cmd/b/main.go": EXIT3})
    (root / "pyproject.toml").write_text('[tool.gosmall.images.a]\npackage = "./cmd/a"\n\n[tool.gosmall.images.b]\npackage = "./cmd/b"\n')
    done = gosmall("run", cwd=root)
    assert done.returncode == 2
    assert "has 2 images (a, b); name one with --image NAME, or a package: gosmall run ./cmd/app." in done.stderr
    assert not (root / "dist").exists()
