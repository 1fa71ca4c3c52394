"""Stage 0: find and validate `[tool.gosmall]` in pyproject.toml.

Everything past this module gets frozen, typed values; every mistake in the
table becomes one `GosmallError` naming the file, the key path and what is
allowed, before anything is built or written.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, Literal, NoReturn

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .audit_rules import RULE_IDS
from .elf import MACHINES
from .errors import GosmallError, did_you_mean
from .images.model import Format, Platform
from .secret_names import credential_word

# Go's GOOS/GOARCH pairs that an OCI image for Linux can carry: the rows of the
# machine table, which also says the ELF machine each must be built for (checked by `prove`).
SUPPORTED_PLATFORMS = tuple(str(m.platform) for m in MACHINES)

TzData = Literal["zip", "embed", "system", "none"]
Pinning = Literal["error", "warn", "off"]
NONROOT_ID = 65532
FORMATS = ("oci", "docker")
MAX_ID = 4294967294
# What `{name}` in ldflags may name, filled in from the source (build/source.py SourceInfo.ldflags_values).
LDFLAGS_NAMES = ("version", "commit", "short_commit", "tag", "date")
# A `{name}` in ldflags; braces around anything else (`{}`, JSON) are left as they are.
LDFLAGS_TEMPLATE = re.compile(r"\{([A-Za-z_.][A-Za-z0-9_.]*)\}")
# What ko's templates ({{.Git.FullCommit}}) call the same values.
_KO_NAMES = {".Git.FullCommit": "commit", ".Git.ShortCommit": "short_commit", ".Git.Tag": "tag", ".Date": "date", ".Version": "version"}


@dataclass(frozen=True)
class FileMapping:
    src: Path  # absolute, inside the project
    dst: str  # absolute path in the image


@dataclass(frozen=True)
class SmokeConfig:
    path: str = "/healthz"
    expect_status: int = 200
    timeout: float = 20.0
    env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ImageConfig:
    name: str
    package: Path  # absolute directory of the Go main package
    repository: str
    tags: tuple[str, ...]
    platforms: tuple[Platform, ...]
    cgo: bool = False
    build_tags: tuple[str, ...] = ()
    ldflags: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    entrypoint: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    user: str = "nonroot"
    uid: int = NONROOT_ID
    gid: int = NONROOT_ID
    workdir: str = "/"
    ports: tuple[str, ...] = ()  # "8080/tcp"
    labels: tuple[tuple[str, str], ...] = ()
    tzdata: TzData = "zip"
    zones: tuple[str, ...] = ()
    ca_certs: bool = False
    extra_ca_certs: tuple[Path, ...] = ()
    files: tuple[FileMapping, ...] = ()
    healthcheck: tuple[str, ...] = ()
    max_size: int | None = None
    smoke: SmokeConfig = field(default_factory=SmokeConfig)
    libs: tuple[str, ...] = ()
    lib_search_paths: tuple[Path, ...] = ()
    strip_libs: bool = False
    cc: tuple[tuple[str, str], ...] = ()  # (platform, C compiler) for cross cgo
    format: Format = "oci"  # media types of every document: "oci", or "docker" (schema 2) for podman's healthcheck
    sysroot: tuple[tuple[str, Path], ...] = ()  # (platform, that platform's root) where cross cgo's libraries are found
    audit_allow: tuple[str, ...] = ()  # audit rule ids whose findings do not fail build-small's audit of this image
    project_root: Path | None = None  # links under a `files` src may lead anywhere inside it, never out
    # No config: tzdata and ca_certs are what the binary needs, decided after prove (needs.ship_what_is_needed).
    follow_needs: bool = False
    # The keys the project wrote for this image (its table's, and a top-level format): advice about a
    # default (ca_certs, format) is not repeated about a decision.
    written: tuple[str, ...] = ()

    def cc_for(self, platform: Platform) -> str | None:
        return dict(self.cc).get(str(platform))

    def sysroot_for(self, platform: Platform) -> Path | None:
        return dict(self.sysroot).get(str(platform))


@dataclass(frozen=True)
class ProjectConfig:
    root: Path
    pyproject: Path
    output: Path
    platforms: tuple[Platform, ...]
    pinning: Pinning
    images: tuple[ImageConfig, ...]
    go_version: tuple[int, int, int] | None = None  # go_version = "1.27.3": the only Go allowed to build
    remote_cache: str | None = None  # remote_cache = "HOST/REPO": Go's build cache shared through that repository
    remote_cache_write: bool = True  # remote_cache_write = false: read the shared cache, never write it
    vulndb: str | None = None  # vulndb = "DIR|URL": the Go vulnerability database build-small checks each binary against
    vulns: str = "warn"  # vulns = "error" | "warn" | "off": whether a called vulnerability fails build-small

    def image(self, name: str | None) -> tuple[ImageConfig, ...]:
        """All images, or the one named (an error names the ones there are)."""
        if name is None:
            return self.images
        for image in self.images:
            if image.name == name:
                return (image,)
        names = [i.name for i in self.images]
        raise GosmallError(
            f"{self.pyproject}: there is no image '{name}' in [tool.gosmall.images]; "
            f"the images are: {', '.join(names)}.{did_you_mean(name, names)}"
        )

    def output_dir(self, image: ImageConfig) -> Path:
        return self.output / image.name


class NoProjectError(GosmallError):
    """No pyproject.toml with [tool.gosmall] at or above the start: verify-pins and pin then scan paths as they are."""


def find_pyproject(start: Path) -> Path:
    """The nearest pyproject.toml at or above `start` that has [tool.gosmall]."""
    start = start.resolve()
    for directory in (start, *start.parents):
        candidate = directory / "pyproject.toml"
        if candidate.is_file() and "gosmall" in _tool_table(candidate):
            return candidate
    raise NoProjectError(
        f"No pyproject.toml with a [tool.gosmall] table was found in {start} or any directory above it. "
        "Name the main packages to build with the defaults (`gosmall build-small ./cmd/app`), or run `gosmall init` "
        "in your Go module to write a [tool.gosmall] table with one image per main package."
    )


def load_project(start: Path | None = None, *, images_required: bool = True, environ: Mapping[str, str] | None = None) -> ProjectConfig:
    """The project at or above `start`; `images_required=False` for tasks that need only its top-level keys.

    The environment layer: an image whose table sets no repository gets `$GOSMALL_REPO/<name>` when it is set.
    """
    pyproject = find_pyproject(start or Path.cwd())
    table = _tool_table(pyproject)["gosmall"]
    project = parse_project(table, pyproject, images_required=images_required)
    bodies = table.get("images", {}) if isinstance(table, dict) else {}
    images = tuple(
        image if "repository" in bodies.get(image.name, {}) else replace(image, repository=default_repository(image.name, environ))
        for image in project.images
    )
    return replace(project, images=images)


def _tool_table(pyproject: Path) -> Mapping[str, Any]:
    tool = _read_toml(pyproject).get("tool", {})
    if not isinstance(tool, dict):
        raise GosmallError(f"{pyproject}: `tool` must be a table ([tool.gosmall], [tool.other], ...), not {_toml_type(tool)}.")
    return tool


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise GosmallError(f"{path} is not valid TOML: {exc}. Fix the syntax and run again.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GosmallError(f"{path} cannot be read: {exc}.") from None


# -- validation ---------------------------------------------------------------


class _Table:
    """A TOML table being validated: each accessor checks one key's type."""

    def __init__(self, data: Mapping[str, Any], where: str, pyproject: Path, allowed: tuple[str, ...]) -> None:
        self.data = data
        self.where = where
        self.pyproject = pyproject
        for key in data:
            if key not in allowed:
                self.fail(key, f"is not a known key; the keys here are: {', '.join(allowed)}.{did_you_mean(key, allowed)}")

    def fail(self, key: str, why: str) -> NoReturn:
        raise GosmallError(f"{self.pyproject} [{self.where}] {key}: {why}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any, what: str) -> Any:
        if key not in self.data:
            return default
        value = self.data[key]
        # bool is an int in Python; a TOML `true` must not pass for a number.
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
            self.fail(key, f"must be {what}, not {_toml_type(value)} {value!r}.")
        return value

    def strings(self, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        values = self.get(key, list, list(default), "a list of strings")
        for i, value in enumerate(values):
            if not isinstance(value, str):
                self.fail(f"{key}[{i}]", f"must be a string, not {_toml_type(value)} {value!r}.")
        return tuple(values)

    def string_map(self, key: str) -> tuple[tuple[str, str], ...]:
        values = self.get(key, dict, {}, 'a table of strings, e.g. { KEY = "value" }')
        for k, v in values.items():
            if not isinstance(v, str):
                self.fail(f"{key}.{k}", f"must be a string, not {_toml_type(v)} {v!r}.")
        return tuple(sorted(values.items()))

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.get(key, str, default, f"one of {', '.join(repr(c) for c in choices)}")
        if value not in choices:
            self.fail(key, f"{value!r} is not allowed; use one of {', '.join(repr(c) for c in choices)}.{did_you_mean(value, choices)}")
        return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _toml_type(value: object) -> str:
    return {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "an array", dict: "a table"}.get(
        type(value), type(value).__name__
    )


_TOP_KEYS = ("output", "platforms", "pinning", "images", "go_version", "format", "remote_cache", "remote_cache_write", "vulndb", "vulns")
_IMAGE_KEYS = (
    "package", "repository", "tags", "platforms", "cgo", "build_tags", "ldflags", "env", "entrypoint", "args",
    "user", "workdir", "ports", "labels", "tzdata", "zones", "ca_certs", "extra_ca_certs", "files",
    "healthcheck", "max_size", "smoke", "libs", "lib_search_paths", "strip_libs", "cc", "sysroot", "format", "allow_env_secrets",
    "audit_allow",
)  # fmt: skip
_SMOKE_KEYS = ("path", "expect_status", "timeout", "env")
_REPOSITORY = re.compile(
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$"
)
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_IMAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*$")
MAX_SIZE = 2**40
_SIZE_UNITS = {None: 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m)?\s*$")
_ZONE = re.compile(r"^[A-Za-z0-9_+-]+(?:/[A-Za-z0-9_+-]+)*$")


def parse_project(table: Any, pyproject: Path, *, images_required: bool = True) -> ProjectConfig:
    root = pyproject.parent.resolve()
    if not isinstance(table, dict):
        raise GosmallError(f"{pyproject} [tool.gosmall] must be a table.")
    top = _Table(table, "tool.gosmall", pyproject, _TOP_KEYS)
    output = top.get("output", str, "dist", "a directory path relative to the project")
    if not output.strip():
        top.fail("output", "must not be empty.")
    platforms = _platforms(top, "platforms", (Platform.parse("linux/amd64"),))
    pinning = top.choice("pinning", ("error", "warn", "off"), "error")
    default_format = top.choice("format", FORMATS, "oci")
    go_version = _go_version(top)
    images_table = top.get("images", dict, {}, "a table of image tables")
    if not images_table and images_required:
        top.fail("images", 'no image is defined; add one, e.g. [tool.gosmall.images.app] with package = "./cmd/app".')
    images = tuple(_image(name, body, pyproject, root, platforms, default_format) for name, body in sorted(images_table.items()))
    if "format" in table:  # a top-level format is every image's decision
        images = tuple(replace(i, written=tuple(sorted({*i.written, "format"}))) for i in images)
    remote_cache = top.get("remote_cache", str, None, 'a repository like "registry.example.com/team/gocache"')
    if remote_cache is not None:
        remote_cache = remote_cache_repository(remote_cache, f"{pyproject} [tool.gosmall] remote_cache")
    remote_cache_write = top.get("remote_cache_write", bool, True, "true or false")
    vulndb = top.get("vulndb", str, "", "a directory, or a file:// or https:// URL, of the Go vulnerability database").strip() or None
    vulns = top.choice("vulns", ("error", "warn", "off"), "warn")
    return ProjectConfig(
        root, pyproject, _output_dir(top, output, root, images), platforms, pinning, images, go_version,  # type: ignore[arg-type]
        remote_cache, remote_cache_write, vulndb=vulndb, vulns=vulns,
    )  # fmt: skip


def remote_cache_repository(text: str, where: str) -> str:
    """`HOST/REPO` for Go's shared build cache: a registry host (a dot, a port or localhost) and a repository, no tag."""
    text = text.strip()
    host = text.split("/", 1)[0]
    if not _REPOSITORY.match(text) or "/" not in text or not ("." in host or ":" in host or host == "localhost"):
        raise GosmallError(
            f"{where}: {text!r} is not a registry repository; write HOST/REPO with the registry's host (and port), "
            'e.g. "registry.example.com/team/gocache" or "127.0.0.1:5000/gocache", with no tag or digest.'
        )
    return text


def _go_version(top: _Table) -> tuple[int, int, int] | None:
    text = top.get("go_version", str, None, 'a Go release like "1.27.3"')
    if text is None:
        return None
    match = re.match(r"^(?:go)?([0-9]+)\.([0-9]+)\.([0-9]+)$", text.strip())
    if not match:
        top.fail(
            "go_version",
            f'{text!r} is not a Go release; write all three numbers, e.g. "1.27.3", as `go env GOVERSION` prints them after "go".',
        )
    return int(match.group(1)), int(match.group(2)), int(match.group(3))


def _output_dir(top: _Table, text: str, root: Path, images: tuple[ImageConfig, ...]) -> Path:
    """Where <output>/<image> may be replaced: never the project, its parents, .git, or any source gosmall reads."""
    written = Path(text).expanduser() if text.startswith("~") else Path(text)
    if not written.is_absolute():
        lexical = Path(os.path.normpath(root / written))
        if lexical != root and root not in lexical.parents:
            top.fail("output", f"{text!r} leads out of the project {root}; write an absolute path if you mean a directory outside it.")
        resolved = lexical.resolve()
        if resolved != root and root not in resolved.parents:
            top.fail(
                "output",
                f"{text!r} is inside the project, but a symbolic link takes it to {resolved}, outside; gosmall never follows a "
                "link out of the project. Remove the link, or write that absolute path as output if you mean it.",
            )
    else:
        resolved = Path(os.path.normpath(written)).resolve()
    if resolved == root or resolved in root.parents:
        top.fail(
            "output",
            f"{text!r} is {'the project root' if resolved == root else 'a parent of the project'} ({resolved}); gosmall replaces "
            '<output>/<image> on every build, so output must be a directory of its own, e.g. "dist".',
        )
    if ".git" in resolved.parts:
        top.fail("output", f'{text!r} is inside a git repository\'s metadata ({resolved}); use a directory of its own, e.g. "dist".')
    for image in images:
        sources = [("package", image.package), *((f"files[{i}].src", f.src) for i, f in enumerate(image.files))]
        sources += [(f"extra_ca_certs[{i}]", p) for i, p in enumerate(image.extra_ca_certs)]
        for key, source in sources:
            if source == resolved or resolved in source.parents:
                top.fail(
                    "output",
                    f"{text!r} ({resolved}) holds [tool.gosmall.images.{image.name}] {key} ({source}); gosmall would replace "
                    'sources it reads. Give output a directory of its own, e.g. "dist".',
                )
    return resolved


def _platforms(table: _Table, key: str, default: tuple[Platform, ...]) -> tuple[Platform, ...]:
    if key not in table.data:
        return default
    values = table.strings(key)
    if not values:
        table.fail(key, 'must name at least one platform, e.g. ["linux/amd64"].')
    for i, value in enumerate(values):
        if value not in SUPPORTED_PLATFORMS:
            table.fail(
                f"{key}[{i}]",
                f"{value!r} is not a platform gosmall can build; use one of {', '.join(SUPPORTED_PLATFORMS)}."
                f"{did_you_mean(value, SUPPORTED_PLATFORMS)}",
            )
    if len(set(values)) != len(values):
        table.fail(key, "lists a platform twice.")
    return tuple(Platform.parse(v) for v in values)


def _project_path(table: _Table, key: str, value: str, root: Path) -> Path:
    """A path inside the project: relative, no '..' escaping it."""
    if PurePosixPath(value).is_absolute() or Path(value).is_absolute():
        table.fail(key, f"{value!r} is absolute; give a path relative to the project root {root}.")
    resolved = (root / value).resolve()
    if resolved != root and root not in resolved.parents:
        table.fail(key, f"{value!r} points outside the project root {root}; keep it inside the project.")
    return resolved


def _image(
    name: str, body: Any, pyproject: Path, root: Path, default_platforms: tuple[Platform, ...], default_format: str = "oci"
) -> ImageConfig:
    where = f"tool.gosmall.images.{name}"
    if not isinstance(body, dict):
        raise GosmallError(f'{pyproject} [{where}] must be a table, e.g. [{where}] with package = "./cmd/{name}".')
    t = _Table(body, where, pyproject, _IMAGE_KEYS)
    if not _IMAGE_NAME.match(name):
        raise GosmallError(
            f"{pyproject} [{where}]: the image name {name!r} must be lowercase letters, digits, '.', '_' or '-' "
            "(it becomes a directory under the output)."
        )

    if "package" not in body:
        t.fail("package", 'is required: the Go main package, relative to the project root, e.g. "./cmd/app".')
    package_text = t.get("package", str, None, 'a path string like "./cmd/app"')
    package = _project_path(t, "package", package_text, root)
    if not package.is_dir():
        t.fail(
            "package", f"{package_text!r} is not a directory ({package} does not exist); point it at the directory of your Go main package."
        )

    repository = t.get("repository", str, f"gosmall.local/{name}", 'an image repository name like "example.com/app"')
    if not _REPOSITORY.match(repository) or len(repository) > 255:
        t.fail(
            "repository",
            f"{repository!r} is not a valid repository name: lowercase path components separated by '/', optionally after a registry host, e.g. \"example.com/app\".",
        )
    tags = t.strings("tags", ("latest",))
    if not tags:
        t.fail("tags", 'must name at least one tag, e.g. ["latest"].')
    for i, tag in enumerate(tags):
        if not _TAG.match(tag):
            t.fail(f"tags[{i}]", f"{tag!r} is not a valid tag: up to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'.")

    platforms = _platforms(t, "platforms", default_platforms)
    cgo = t.get("cgo", bool, False, "true or false")
    build_tags = t.strings("build_tags")
    for i, tag in enumerate(build_tags):
        if not re.match(r"^[A-Za-z0-9_.]+$", tag):
            t.fail(f"build_tags[{i}]", f"{tag!r} is not a Go build tag (letters, digits, '_' and '.').")
    ldflags = t.strings("ldflags")
    for i, flag in enumerate(ldflags):
        _check_ldflags_names(t, f"ldflags[{i}]", flag)
    env = t.string_map("env")
    for key, _ in env:
        if not key or "=" in key:
            t.fail(f"env.{key}", "an environment variable name must be non-empty and contain no '='.")
    allowed_secrets = t.strings("allow_env_secrets")
    for key, value in env:
        word = credential_word(key)
        if word and value and key not in allowed_secrets:
            # The value is never shown: it may be the secret itself.
            t.fail(
                f"env.{key}",
                f"looks like a credential ({word}), and a value set here is baked into every copy of the image, "
                f"readable by anyone who can pull it. Pass it at run time instead (docker run -e {key}, a Kubernetes "
                f'Secret); if it really is not secret, add allow_env_secrets = ["{key}"] to this image.',
            )
    audit_allow = t.strings("audit_allow")
    for i, rule in enumerate(audit_allow):
        if rule not in RULE_IDS:
            t.fail(
                f"audit_allow[{i}]", f"{rule!r} is not an audit rule; the rules are: {', '.join(RULE_IDS)}.{did_you_mean(rule, RULE_IDS)}"
            )

    user = t.get("user", str, "nonroot", '"nonroot", "root" or "UID:GID"')
    match = re.match(r"^([0-9]+):([0-9]+)$", user)
    if user == "nonroot":
        uid = gid = NONROOT_ID
    elif user == "root":
        uid = gid = 0
    elif match:
        uid, gid = int(match.group(1)), int(match.group(2))
        if uid > MAX_ID or gid > MAX_ID:
            t.fail("user", f"{user!r}: a UID or GID is at most {MAX_ID} (4294967295 is the kernel's 'no user').")
    else:
        t.fail(
            "user",
            f'{user!r} is not allowed; use "nonroot" (65532:65532), "root", or numeric "UID:GID" such as "1000:1000" (a scratch image has no user database to look names up in).',
        )

    workdir = t.get("workdir", str, "/", "an absolute path in the image")
    if not workdir.startswith("/"):
        t.fail("workdir", f'{workdir!r} must be an absolute path in the image, e.g. "/".')

    ports: list[str] = []
    for i, port in enumerate(t.get("ports", list, [], "a list of port numbers, e.g. [8080]")):
        number, proto = (port, "tcp") if isinstance(port, int) and not isinstance(port, bool) else _port_string(port)
        if number is None or not 1 <= number <= 65535:
            t.fail(f"ports[{i}]", f'{port!r} is not a port; use a number from 1 to 65535 or a string like "53/udp".')
        ports.append(f"{number}/{proto}")

    tzdata = t.choice("tzdata", ("zip", "embed", "system", "none"), "zip")
    zones = t.strings("zones")
    for i, zone in enumerate(zones):
        if not _ZONE.match(zone) or ".." in zone or zone.split("/")[-1] == "localtime":
            t.fail(f"zones[{i}]", f'{zone!r} is not an IANA time zone name such as "Europe/Berlin".')
    if zones and tzdata in ("embed", "none"):
        t.fail("zones", f'only applies to tzdata = "zip" or "system", not {tzdata!r}; remove zones or change tzdata.')

    ca_certs = t.get("ca_certs", bool, False, "true or false")
    extra_ca_certs = tuple(_project_path(t, f"extra_ca_certs[{i}]", p, root) for i, p in enumerate(t.strings("extra_ca_certs")))
    for i, path in enumerate(extra_ca_certs):
        if not path.is_file():
            t.fail(f"extra_ca_certs[{i}]", f"{path} is not a file; give PEM files relative to the project root.")
    if extra_ca_certs and not ca_certs:
        t.fail("extra_ca_certs", "needs ca_certs = true (the extra certificates are appended to that bundle).")

    files = []
    for i, entry in enumerate(t.get("files", list, [], 'a list of tables like { src = "static", dst = "/static" }')):
        key = f"files[{i}]"
        if not isinstance(entry, dict):
            t.fail(key, f'must be a table like {{ src = "static", dst = "/static" }}, not {_toml_type(entry)}.')
        ft = _Table(entry, f"{where}.files[{i}]", pyproject, ("src", "dst"))
        if "src" not in entry or "dst" not in entry:
            t.fail(key, "needs both src (in the project) and dst (absolute, in the image).")
        src = _project_path(ft, "src", ft.get("src", str, "", "a path string"), root)
        dst = ft.get("dst", str, "", "an absolute path string in the image")
        if not src.exists():
            ft.fail("src", f"{src} does not exist.")
        if not dst.startswith("/") or ".." in PurePosixPath(dst).parts or dst.rstrip("/") == "":
            ft.fail("dst", f"{dst!r} must be an absolute path in the image without '..', e.g. \"/static\".")
        files.append(FileMapping(src, str(PurePosixPath(dst))))

    max_size_text = t.get("max_size", (str, int), "", 'a size like "12MiB"')
    max_size = _size(t, max_size_text) if max_size_text != "" else None

    smoke = _smoke(body.get("smoke", {}), t, where, pyproject)
    libs = t.strings("libs")
    lib_search_paths = tuple(Path(p) for p in t.strings("lib_search_paths"))
    for i, path in enumerate(lib_search_paths):
        if not path.is_absolute():
            t.fail(f"lib_search_paths[{i}]", f'{str(path)!r} must be an absolute directory on the build machine, e.g. "/opt/lib".')
    cc = t.string_map("cc")
    for key, _ in cc:
        if key not in SUPPORTED_PLATFORMS:
            t.fail(f"cc.{key}", f"keys are platforms; use one of {', '.join(SUPPORTED_PLATFORMS)}.")
    sysroot = t.string_map("sysroot")
    for key, value in sysroot:
        if key not in SUPPORTED_PLATFORMS:
            t.fail(f"sysroot.{key}", f"keys are platforms; use one of {', '.join(SUPPORTED_PLATFORMS)}.")
        if not Path(value).is_absolute() or not Path(value).is_dir():
            t.fail(
                f"sysroot.{key}",
                f'{value!r} must be an existing absolute directory holding that platform\'s C library, e.g. "/usr/aarch64-linux-gnu".',
            )
    entrypoint = t.strings("entrypoint")
    if "entrypoint" in body and not entrypoint:
        t.fail("entrypoint", "is empty; remove it to run the binary, or name an absolute path in the image first.")
    if entrypoint and (not entrypoint[0].startswith("/") or entrypoint[0].rstrip("/") == ""):
        t.fail(
            "entrypoint",
            f'{entrypoint[0]!r} must be an absolute path of an executable in the image (a scratch image has no shell and no PATH), e.g. "/app".',
        )

    return ImageConfig(
        name=name,
        package=package,
        repository=repository,
        tags=tags,
        platforms=platforms,
        cgo=cgo,
        build_tags=build_tags,
        ldflags=ldflags,
        env=env,
        entrypoint=entrypoint,
        args=t.strings("args"),
        user=user,
        uid=uid,
        gid=gid,
        workdir=workdir,
        ports=tuple(sorted(set(ports))),
        labels=t.string_map("labels"),
        tzdata=tzdata,  # type: ignore[arg-type]
        zones=zones,
        ca_certs=ca_certs,
        extra_ca_certs=extra_ca_certs,
        files=tuple(sorted(files, key=lambda f: f.dst)),
        healthcheck=t.strings("healthcheck"),
        max_size=max_size,
        smoke=smoke,
        libs=libs,
        lib_search_paths=lib_search_paths,
        strip_libs=t.get("strip_libs", bool, False, "true or false"),
        cc=cc,
        sysroot=tuple((k, Path(v)) for k, v in sysroot),
        format=t.choice("format", FORMATS, default_format),  # type: ignore[arg-type]
        audit_allow=audit_allow,
        project_root=root,
        written=tuple(sorted(body)),
    )


def _check_ldflags_names(t: _Table, key: str, flag: str) -> None:
    """Every `{name}` in an ldflags entry is one the source fills in: a typo would otherwise reach the binary."""
    for match in LDFLAGS_TEMPLATE.finditer(flag):
        name = match.group(1)
        if name in LDFLAGS_NAMES:
            continue
        known = ", ".join(f"{{{n}}}" for n in LDFLAGS_NAMES)
        hint = f" ko's {{{{{name}}}}} is {{{_KO_NAMES[name]}}} here." if name in _KO_NAMES else did_you_mean(name, LDFLAGS_NAMES)
        t.fail(key, f"{flag!r} names {{{name}}}, which gosmall does not fill in; the names are {known}.{hint}")


def _port_string(value: Any) -> tuple[int | None, str]:
    if isinstance(value, str):
        m = re.match(r"^([0-9]+)(?:/(tcp|udp|sctp))?$", value)
        if m:
            return int(m.group(1)), m.group(2) or "tcp"
    return None, "tcp"


def parse_size(text: str) -> int | None:
    """Bytes in a size like "12MiB", "4 GiB" or "1000" (B, KB, MB, GB, KiB, MiB, GiB); None when it is not one."""
    m = _SIZE.match(text)
    if not m or len(m.group(1)) > 30:
        return None
    from decimal import Decimal  # only a size needs it

    # Decimal, not float: "0.1MiB" is exact and 400 nines cannot overflow.
    return int(Decimal(m.group(1)) * _SIZE_UNITS[m.group(2)])


def _size(t: _Table, value: str | int) -> int:
    size = value if isinstance(value, int) else parse_size(value)
    if size is None:
        t.fail("max_size", f'{str(value)[:40]!r} is not a size; write a number with a unit B, KB, MB, GB, KiB, MiB or GiB, e.g. "12MiB".')
    if not 0 < size <= MAX_SIZE:
        t.fail("max_size", f"{str(value)[:40]!r} must be more than 0 bytes and at most 1 TiB.")
    return size


def _smoke(body: Any, image: _Table, where: str, pyproject: Path) -> SmokeConfig:
    if not isinstance(body, dict):
        image.fail("smoke", 'must be a table like { path = "/healthz", expect_status = 200, timeout = "20s" }.')
    t = _Table(body, f"{where}.smoke", pyproject, _SMOKE_KEYS)
    path = t.get("path", str, "/healthz", 'an HTTP path like "/healthz"')
    if not path.startswith("/"):
        t.fail("path", f"{path!r} must start with '/'.")
    status = t.get("expect_status", int, 200, "an HTTP status code like 200")
    if not 100 <= status <= 599:
        t.fail("expect_status", f"{status} is not an HTTP status code (100-599).")
    timeout_text = t.get("timeout", (str, int), "20s", 'a duration like "20s"')
    m = _DURATION.match(str(timeout_text))
    if not m or float(m.group(1)) <= 0:
        t.fail("timeout", f'{timeout_text!r} is not a duration; write e.g. "20s", "500ms" or "2m".')
    seconds = float(m.group(1)) * {None: 1, "s": 1, "ms": 0.001, "m": 60}[m.group(2)]
    return SmokeConfig(path, status, seconds, t.string_map("env"))


# -- no config: the defaults of a package no table names -------------------------------

REPO_ENV = "GOSMALL_REPO"
# The registry of a repository gosmall made up: `.local` is reserved for local names (RFC 6762), so no
# registry answers there, and push refuses it before trying (unpushable_repository).
LOCAL_REGISTRY = "gosmall.local"
# What a Go module with no [tool.gosmall] is built with; `gosmall init` writes the same keys down.
NO_CONFIG_TABLE: Mapping[str, Any] = {"output": "dist", "pinning": "warn"}


def default_repository(name: str, environ: Mapping[str, str] | None = None) -> str:
    """`$GOSMALL_REPO/<name>`, else `gosmall.local/<name>`: it loads into a local engine and is never pushed."""
    base = (os.environ if environ is None else environ).get(REPO_ENV, "").strip().rstrip("/")
    if not base:
        return f"{LOCAL_REGISTRY}/{name}"
    repository = f"{base}/{name}"
    if not _REPOSITORY.match(repository) or len(repository) > 255:
        raise GosmallError(
            f"{REPO_ENV}={base!r}: {repository!r} is not a valid repository name. Set {REPO_ENV} to a registry and "
            "namespace in lowercase, e.g. GOSMALL_REPO=ghcr.io/you or GOSMALL_REPO=127.0.0.1:5000/team."
        )
    return repository


def unpushable_repository(repository: str) -> str | None:
    """Why `repository` may not be pushed (it is gosmall's made-up local name), or None when it may."""
    if repository.split("/", 1)[0] != LOCAL_REGISTRY:
        return None
    name = repository.rsplit("/", 1)[-1]
    return (
        f"{repository} is the local-only name gosmall gives an image that has no repository: it loads into a local "
        f"engine but is never pushed. Set {REPO_ENV} to your registry and namespace (e.g. {REPO_ENV}=ghcr.io/you "
        f'gives ghcr.io/you/{name}), or write repository = "ghcr.io/you/{name}" in its [tool.gosmall.images] table.'
    )


def image_name_for(package: Path) -> str:
    """A package's image name with no config: its directory's base name (the module directory's for `.`), lowercased."""
    base = package.name
    name = re.sub(r"[^a-z0-9_.-]+", "-", base.lower()).strip("-_.")
    if not _IMAGE_NAME.match(name):
        raise GosmallError(
            f"{package}: the directory name {base!r} does not make an image name (lowercase letters, digits, '.', '_', '-'). "
            "Give the package an image in [tool.gosmall.images] (gosmall init writes one)."
        )
    return name


def project_without_table(module_root: Path, platforms: tuple[Platform, ...]) -> ProjectConfig:
    """The project of a Go module with no [tool.gosmall]: the defaults, validated like a table."""
    table = {**NO_CONFIG_TABLE, "platforms": [str(p) for p in platforms]}
    return parse_project(table, module_root / "pyproject.toml", images_required=False)


def package_image(
    project: ProjectConfig, package: Path, name: str, platforms: tuple[Platform, ...], environ: Mapping[str, str] | None = None
) -> ImageConfig:
    """The image of a main package no table names: the defaults, its runtime files decided by what the binary links."""
    relative = package.relative_to(project.root).as_posix()
    image = _image(name, {"package": relative}, project.pyproject, project.root, platforms)
    return replace(image, repository=default_repository(name, environ), tzdata="none", ca_certs=False, follow_needs=True)


def load_package_project(
    start: Path, module_root: Path, host: Platform, environ: Mapping[str, str] | None = None
) -> tuple[ProjectConfig, tuple[Platform, ...]]:
    """The project that packages named on the command line belong to, and the platforms of a package no image names:
    the nearest [tool.gosmall] (its top-level platforms, else this machine's), else the module's defaults."""
    try:
        pyproject = find_pyproject(start)
    except NoProjectError:
        return project_without_table(module_root, (host,)), (host,)
    project = load_project(pyproject.parent, images_required=False, environ=environ)
    table = _tool_table(pyproject)["gosmall"]
    return project, project.platforms if isinstance(table, dict) and "platforms" in table else (host,)


def with_platforms(project: ProjectConfig, platforms: tuple[Platform, ...]) -> ProjectConfig:
    """Every image built for `platforms` instead (`--platform`)."""
    return replace(project, images=tuple(replace(image, platforms=platforms) for image in project.images))


def parse_platform_flags(texts: tuple[str, ...]) -> tuple[Platform, ...]:
    """`--platform` values (repeatable), checked like a table's platforms."""
    for text in texts:
        if text not in SUPPORTED_PLATFORMS:
            raise GosmallError(
                f"--platform {text!r} is not a platform gosmall can build; use one of {', '.join(SUPPORTED_PLATFORMS)}."
                f"{did_you_mean(text, SUPPORTED_PLATFORMS)}"
            )
    return tuple(Platform.parse(t) for t in dict.fromkeys(texts))
