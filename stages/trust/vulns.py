"""Known vulnerabilities of the Go binaries in an image, from the Go vulnerability database, called or not.

The database is read in its published layout (go.dev/doc/security/vuln/database): `index/db.json`,
`index/modules.json` (which modules have records) and `ID/<id>.json` (one OSV record each), each also
accepted as `.json.gz`. It comes from a directory, a `file://` URL or an `https://` URL (`--db`, `GOVULNDB`,
or `vulndb` in [tool.gosmall]); only a URL uses the network, and only the records of modules a binary has
are read.

Every ELF file with Go build info in the image is checked: its modules (a replaced module as its
replacement), and its Go version as the `stdlib` and `toolchain` modules. A record whose OSV SEMVER ranges
hold the module's version is **called** when one of its symbols is a function in the binary: linked
(`elf.read_go_functions` reads the pclntab, which `-s -w` keeps) or inlined into one (read from the inline
trees, which govulncheck reads only from an unstripped binary). Names are matched the way govulncheck's
binary mode matches them: `pkg.Func`, `pkg.Type.Method` for `pkg.(*Type).Method`, generic instantiations
dropped. A record that names packages but no symbols is called when any function of those packages is
linked. Otherwise it is **imported**. A module without a version (a local directory replacement, `(devel)`)
is listed as "version unknown", never guessed at.
"""

from __future__ import annotations

import bisect
import gzip
import io
import json
import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from ..build.buildinfo import BuildInfo, BuildInfoError, Module, read_build_info
from ..elf import MAGIC, ElfError, GoFunctionTable, read_go_function_table
from ..errors import FOUND, GosmallError
from ..images.model import Image
from ..images.rootfs import flatten
from ..redact import printable, redact
from .sarif import LogicalLocation, SarifResult, SarifRule, artifact_uri, format_sarif

Format = Literal["text", "json", "sarif"]
Status = Literal["called", "imported", "unknown"]
Policy = Literal["error", "warn", "off"]

ENVIRONMENT = "GOVULNDB"  # govulncheck's variable
HOW_TO_GET_ONE = (
    "Give the Go vulnerability database with --db DIR|URL, the GOVULNDB environment variable (as govulncheck reads it), "
    'or vulndb = "..." in [tool.gosmall]: a directory or file:// URL holding its published layout (index/db.json, '
    "index/modules.json, ID/<id>.json), e.g. a copy of the one served at https://vuln.go.dev, or that https:// URL itself."
)
_FETCH_SECONDS = 30
_MAX_DOCUMENT = 256 * 1024 * 1024  # a database file bigger than this is not one (a gzip bomb, a wrong URL)
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


# -- versions ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, order=False)
class SemVer:
    """A semantic version as OSV's SEMVER ranges compare them: build metadata (`+incompatible`) ignored."""

    core: tuple[int, int, int]
    prerelease: tuple[int | str, ...]  # empty for a release; a pseudo-version's timestamp and hash are here

    @classmethod
    def parse(cls, text: str) -> SemVer | None:
        match = re.fullmatch(r"v?(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?", text.strip())
        if match is None:
            return None
        parts = tuple(int(p) if p.isdigit() else p for p in match.group(4).split(".")) if match.group(4) else ()
        return cls((int(match.group(1)), int(match.group(2)), int(match.group(3))), parts)

    def key(self) -> tuple[Any, ...]:
        # A release sorts after its pre-releases; numeric identifiers before alphanumeric ones (semver.org 11).
        pre = tuple((0, p, "") if isinstance(p, int) else (1, 0, p) for p in self.prerelease)
        return (self.core, not self.prerelease, pre)

    def __lt__(self, other: SemVer) -> bool:
        return self.key() < other.key()

    def __le__(self, other: SemVer) -> bool:
        return self.key() <= other.key()


def go_semver(go_version: str) -> str | None:
    """Go's version as the database's `stdlib` module names it: go1.27.3 -> v1.27.3, go1.21 -> v1.21.0, go1.21rc2 ->
    v1.21.0-rc.2; None for a development build."""
    word = go_version.split()[0] if go_version.split() else ""
    match = re.fullmatch(r"go(\d+)\.(\d+)(?:\.(\d+))?(?:(rc|beta)(\d+))?", word)
    if match is None:
        return None
    major, minor, patch, kind, number = match.groups()
    patch = patch or "0"
    if kind:
        return f"v{major}.{minor}.{patch}-{kind}.{number}"
    return f"v{major}.{minor}.{patch}"


def affected_version(version: SemVer, ranges: Iterable[Mapping[str, Any]]) -> tuple[bool, str | None]:
    """Whether any SEMVER range holds `version`, and the fix after it in that range (None when there is none)."""
    for rng in ranges:
        if not isinstance(rng, dict) or rng.get("type") != "SEMVER":
            continue
        events: list[tuple[SemVer, str, str]] = []
        for event in _list(rng.get("events")):
            if not isinstance(event, dict) or len(event) != 1:
                continue
            ((kind, text),) = event.items()
            # "0" is before every version, v0.0.0 pseudo-versions (pre-releases of v0.0.0) included.
            parsed = SemVer((-1, -1, -1), ()) if kind == "introduced" and text == "0" else SemVer.parse(str(text))
            if parsed is not None and kind in ("introduced", "fixed", "last_affected"):
                events.append((parsed, kind, str(text)))
        # OSV: events sorted by version; each one at or below the version turns the range on or off.
        events.sort(key=lambda e: (e[0].key(), e[1] != "introduced"))
        inside = False
        for at, kind, _ in events:
            if kind == "introduced" and at <= version:
                inside = True
            elif kind == "fixed" and at <= version:
                inside = False
            elif kind == "last_affected" and at < version:
                inside = False
        if inside:
            fixed = next((t if t.startswith("v") else f"v{t}" for at, k, t in events if k == "fixed" and version < at), None)
            return True, fixed
    return False, None


# -- the database ------------------------------------------------------------------------------------------


class VulnDatabase:
    """The Go vulnerability database at a directory, a file:// URL or an https:// URL, read on demand."""

    def __init__(self, location: str) -> None:
        self.location = location
        parts = urlsplit(location)
        self.url: str | None = None
        self.root: Path | None = None
        if parts.scheme == "https":
            self.url = location.rstrip("/")
        elif parts.scheme == "file":
            self.root = Path(unquote(parts.path))
        elif parts.scheme and len(parts.scheme) > 1:
            raise GosmallError(
                f"vulnerability database {printable(redact(location, limit=200))!r}: the {parts.scheme}:// scheme is not read; "
                "give a directory, a file:// URL or an https:// URL."
            )
        else:
            self.root = Path(location).expanduser()
        if self.root is not None and not self.root.is_dir():
            raise GosmallError(f"vulnerability database {self.root}: no such directory. {HOW_TO_GET_ONE}")
        self._entries: dict[str, dict[str, Any]] = {}
        self._modules: dict[str, tuple[str, ...]] | None = None

    def where(self, relative: str) -> str:
        return f"{self.url}/{relative}" if self.url is not None else os.path.join(self.root or "", relative)

    def _read(self, relative: str) -> tuple[bytes, str] | None:
        """The bytes of `relative` (.json, else .json.gz, gunzipped) and where they came from; None when neither is there."""
        for suffix in ("", ".gz"):
            where = self.where(relative + suffix)
            data = self._fetch(where) if self.url is not None else self._file(where)
            if data is None:
                continue
            if suffix:
                try:
                    with gzip.GzipFile(fileobj=io.BytesIO(data)) as unzipped:
                        data = unzipped.read(_MAX_DOCUMENT + 1)
                except (OSError, EOFError) as exc:
                    raise GosmallError(f"{where}: not a gzip file ({exc}). Replace it with the database's own copy.") from None
                if len(data) > _MAX_DOCUMENT:
                    raise GosmallError(f"{where}: unpacks to more than {_MAX_DOCUMENT} bytes, which no database file is.")
            return data, where
        return None

    @staticmethod
    def _file(path: str) -> bytes | None:
        """A regular file's bytes; None when there is none (non-blocking open: a FIFO is refused, never waited on)."""
        try:
            descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise GosmallError(f"{path}: cannot be read ({exc.strerror or exc}).") from None
        with os.fdopen(descriptor, "rb") as stream:
            if not stat.S_ISREG(os.fstat(descriptor).st_mode):
                raise GosmallError(f"{path}: is not a regular file, so it is no part of a vulnerability database.")
            try:
                return stream.read(_MAX_DOCUMENT + 1)
            except OSError as exc:
                raise GosmallError(f"{path}: cannot be read ({exc.strerror or exc}).") from None

    @staticmethod
    def _fetch(url: str) -> bytes | None:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(url, timeout=_FETCH_SECONDS) as response:  # noqa: S310 - https only, checked above
                return bytes(response.read(_MAX_DOCUMENT + 1))
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise GosmallError(f"{url}: the server answered {exc.code} {exc.reason}. Check the --db URL.") from None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise GosmallError(f"{url}: cannot be fetched ({reason}). Check the URL, or give a local copy of the database.") from None

    def _json(self, relative: str, *, required: bool) -> tuple[Any, str] | None:
        found = self._read(relative)
        if found is None:
            if required:
                raise GosmallError(
                    f"vulnerability database {self.location}: {self.where(relative)} is missing (nor is there a .gz copy). "
                    f"The database is incomplete; fetch it again. {HOW_TO_GET_ONE}"
                )
            return None
        data, where = found
        try:
            return json.loads(data), where
        except (ValueError, RecursionError) as exc:
            raise GosmallError(f"{where}: not valid JSON ({exc}). The database is damaged; fetch it again.") from None

    def check(self) -> str:
        """index/db.json's `modified`: that this is a database at all, and which state of it."""
        document, where = self._json("index/db.json", required=True) or ({}, "")
        if not isinstance(document, dict) or not isinstance(document.get("modified"), str):
            raise GosmallError(f'{where}: has no "modified" time, so it is not the index of a Go vulnerability database.')
        return str(document["modified"])

    def modules(self) -> Mapping[str, tuple[str, ...]]:
        """index/modules.json: module path -> the IDs of its records."""
        if self._modules is None:
            document, where = self._json("index/modules.json", required=True) or ([], "")
            if not isinstance(document, list):
                raise GosmallError(f"{where}: is not a list of modules; the database is damaged.")
            modules: dict[str, tuple[str, ...]] = {}
            for number, entry in enumerate(document):
                if not isinstance(entry, dict) or not isinstance(entry.get("path"), str) or not isinstance(entry.get("vulns", []), list):
                    raise GosmallError(f"{where}: entry {number} is not a module with a path and a list of vulns.")
                ids = tuple(str(v.get("id")) for v in entry.get("vulns") or () if isinstance(v, dict) and isinstance(v.get("id"), str))
                modules[entry["path"]] = modules.get(entry["path"], ()) + ids
            self._modules = modules
        return self._modules

    def entry(self, vuln_id: str) -> dict[str, Any]:
        """ID/<id>.json, checked to be the record it is named for."""
        if vuln_id not in self._entries:
            if not _ID.match(vuln_id):
                raise GosmallError(f"{self.where('index/modules.json')}: lists {printable(vuln_id)!r}, which is not a record ID.")
            document, where = self._json(f"ID/{vuln_id}.json", required=True) or ({}, "")
            if not isinstance(document, dict) or document.get("id") != vuln_id:
                found = document.get("id") if isinstance(document, dict) else None
                raise GosmallError(
                    f"{where}: its id is {printable(str(found))!r}, not {vuln_id!r} as its file name says. The database is damaged; "
                    "fetch it again."
                )
            self._entries[vuln_id] = document
        return self._entries[vuln_id]


def database_location(flag: str, environ: Mapping[str, str], configured: str | None, *, root: Path, cwd: Path) -> tuple[str, Path] | None:
    """Where the database is, and what a relative directory is relative to; later wins: [tool.gosmall] vulndb (the
    project's root), GOVULNDB, --db (the working directory). None when nowhere."""
    given = flag or environ.get(ENVIRONMENT, "").strip()
    if given:
        return given, cwd
    return (configured, root) if configured else None


# -- what a binary has -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModuleVersion:
    """A module as the database is asked about it."""

    path: str
    version: str | None  # None: no version to compare (a directory replacement, (devel))
    shown: str  # as the build info gives it, for the report


def binary_modules(info: BuildInfo) -> tuple[ModuleVersion, ...]:
    go = go_semver(info.go_version)
    shown = f"{go} ({info.go_version})" if go else f"{info.go_version}"
    out = [ModuleVersion("stdlib", go, f"stdlib@{shown}"), ModuleVersion("toolchain", go, f"toolchain@{shown}")]
    for module in (info.main, *info.deps):
        if module.path:
            out.append(_module_version(module))
    return tuple(out)


def _module_version(module: Module) -> ModuleVersion:
    replacement = module.replace
    if replacement is not None:
        shown = f"{module.path}@{module.version} => {replacement.path}{'@' + replacement.version if replacement.version else ''}"
        if replacement.path.startswith((".", "/")) or _known(replacement.version) is None:
            # A directory (Go writes its version as "(devel)" or nothing): what is in it has no version.
            return ModuleVersion(module.path, None, shown)
        return ModuleVersion(replacement.path, _known(replacement.version), shown)
    return ModuleVersion(module.path, _known(module.version), f"{module.path}@{module.version}")


def _known(version: str) -> str | None:
    return version if SemVer.parse(version) is not None else None


class Symbols:
    """The binary's functions, asked as govulncheck's binary mode names them: `pkg` and `Func` or `Type.Method`.

    The pclntab is read the first time a record that affects the binary's version asks, so a binary no record
    affects costs no more than its build info. A question costs a few lookups, not a pass over the names:
    `Type.Method` is looked up as the linker writes it, `pkg.Type.Method` or `pkg.(*Type).Method` (or a method
    value's `-fm` wrapper), with generic instantiations (`[...]`) taken out. A name no function has is looked
    for in the inline trees (`GoFunctionTable.is_inlined`), only when the name table has it at all."""

    def __init__(self, load: Callable[[], GoFunctionTable], main_path: str) -> None:
        self._load = load
        self._main_path = main_path
        self._table: GoFunctionTable | None = None
        self._generic: dict[str, list[str]] = {}  # a generic's name without instantiations -> the names the table has
        self._sorted: list[str] = []

    @property
    def inline_trees(self) -> bool:
        return self._table is None or self._table.inline_trees

    def _functions(self) -> GoFunctionTable:
        if self._table is None:
            self._table = self._load()
            for name in [n for n in self._table.names if "[" in n]:
                self._generic.setdefault(_without_instantiation(name), []).append(name)
            self._sorted = sorted(self._table.names)
        return self._table

    def _prefixes(self, package: str) -> tuple[str, ...]:
        return (symbol_prefix(package), "main.") if package == self._main_path else (symbol_prefix(package),)

    def _present(self, names: Sequence[str]) -> bool:
        """Whether any of these names (as the table has them) is a linked function, else an inlined one."""
        table = self._functions()
        return any(name in table.linked for name in names) or any(table.is_inlined(name) for name in names)

    def has(self, package: str, symbol: str) -> bool:
        """Whether the binary has the function OSV calls `symbol` in `package`, linked or inlined."""
        table = self._functions()
        kind, dot, method = symbol.partition(".")
        forms = (symbol, f"(*{kind}).{method}") if dot else (symbol,)
        plain = [f"{prefix}{form}{wrapper}" for prefix in self._prefixes(package) for form in forms for wrapper in ("", "-fm")]
        return self._present([name for p in plain for name in ([p] if p in table.names else []) + self._generic.get(p, [])])

    def any_in(self, package: str) -> bool:
        """Whether any function of `package` is in the binary, linked or inlined."""
        self._functions()
        found: list[str] = []
        for prefix in self._prefixes(package):
            at = bisect.bisect_left(self._sorted, prefix)
            while at < len(self._sorted) and self._sorted[at].startswith(prefix):
                found.append(self._sorted[at])
                at += 1
        return self._present(found)


def symbol_prefix(package: str) -> str:
    """How the linker writes a package path before its symbols (cmd/internal/objabi.PathToPrefix): control
    characters, space, '%', '"' and non-ASCII escaped everywhere, and '.' in the last element, then the dot."""
    encoded = package.encode()
    slash = encoded.rfind(b"/")
    out = []
    for i, byte in enumerate(encoded):
        if byte <= 0x20 or byte in (0x25, 0x22) or byte >= 0x7F or (byte == 0x2E and i > slash):
            out.append(f"%{byte:02x}")
        else:
            out.append(chr(byte))
    return "".join(out) + "."


def _without_instantiation(name: str) -> str:
    """The name with each `[...]` (a generic instantiation) removed, as OSV names the generic function; the name as
    it is when its brackets do not balance."""
    if "[" not in name:
        return name
    bare = name
    while (inner := _INSTANTIATION.sub("", bare)) != bare:  # innermost first, so nested ones go too
        bare = inner
    return name if "[" in bare or "]" in bare else bare


_INSTANTIATION = re.compile(r"\[[^\[\]]*\]")


# -- findings ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One record about one binary."""

    id: str
    aliases: tuple[str, ...]
    summary: str
    module: str
    version: str | None  # the module's version as compared; None when unknown
    shown: str  # module@version as the build info gives it
    fixed: str | None  # the first version that fixes it, when the record gives one
    status: Status
    symbols: tuple[str, ...]  # affected functions the binary has (`pkg.Symbol`), or packages as `pkg.*`

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "aliases": list(self.aliases),
            "summary": self.summary,
            "module": self.module,
            "version": self.version,
            "fixed": self.fixed,
            "status": self.status,
            "symbols": list(self.symbols),
        }


@dataclass(frozen=True)
class BinaryVulns:
    """The findings for one Go binary of one platform of an image."""

    platform: str
    path: str  # in the image
    go_version: str
    findings: tuple[Finding, ...]
    inline_trees: bool  # False: inlined functions were read from the name table, the inline trees not found

    def of(self, status: Status) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.status == status)

    def to_json(self) -> dict[str, Any]:
        return {
            "platform": self.platform,
            "path": self.path,
            "go_version": self.go_version,
            "findings": [f.to_json() for f in self.findings],
        }


def check_binary(data: bytes, info: BuildInfo, db: VulnDatabase, *, platform: str, path: str) -> BinaryVulns:
    """The records of the binary's modules, each called, imported or version unknown (records that do not affect
    the versions it has are left out)."""
    goos, goarch = info.setting("GOOS"), info.setting("GOARCH")
    index = db.modules()
    modules = [m for m in binary_modules(info) if m.path in index]

    def load() -> GoFunctionTable:
        try:
            return read_go_function_table(io.BytesIO(data))
        except ElfError as exc:
            raise GosmallError(f"{path} ({platform}): its function table cannot be read ({exc}).") from None

    symbols = Symbols(load, info.path)
    findings: list[Finding] = []
    for module in modules:
        for vuln_id in dict.fromkeys(index[module.path]):
            finding = _judge(db.entry(vuln_id), module, symbols, goos, goarch, db.where(f"ID/{vuln_id}.json"))
            if finding is not None:
                findings.append(finding)
    order = {"called": 0, "imported": 1, "unknown": 2}
    findings.sort(key=lambda f: (order[f.status], f.id))
    return BinaryVulns(platform, path, info.go_version, tuple(findings), symbols.inline_trees)


def _judge(
    entry: Mapping[str, Any], module: ModuleVersion, symbols: Symbols, goos: str | None, goarch: str | None, where: str
) -> Finding | None:
    affected_any, fixed, found = False, None, list[str]()
    unknown = module.version is None
    affected_list = entry.get("affected")
    if not isinstance(affected_list, list):
        raise GosmallError(f'{where}: has no "affected" list, so it is not an OSV record of the Go database.')
    for affected in affected_list:
        package = affected.get("package") if isinstance(affected, dict) else None
        if not isinstance(package, dict) or package.get("name") != module.path:
            continue
        fix = None
        if not unknown:
            version = SemVer.parse(module.version or "")
            if version is None:
                continue
            hit, fix = affected_version(version, _list(affected.get("ranges")))
            if not hit:
                continue
        specific = affected.get("ecosystem_specific")
        imports = [i for i in _list(specific.get("imports") if isinstance(specific, dict) else None) if isinstance(i, dict)]
        applicable = [i for i in imports if isinstance(i.get("path"), str) and _for_platform(i, goos, goarch)]
        if imports and not applicable:
            continue  # only other platforms' code is affected (govulncheck's affectingVulnerabilities drops it too)
        affected_any = True
        fixed = fixed or fix
        for imported in applicable:
            package_path = imported["path"]
            wanted = [s for s in _list(imported.get("symbols")) if isinstance(s, str)]
            if wanted:
                found += (f"{package_path}.{s}" for s in wanted if symbols.has(package_path, s))
            elif symbols.any_in(package_path):
                found.append(f"{package_path}.*")
    if not affected_any:
        return None
    aliases = tuple(str(a) for a in _list(entry.get("aliases")) if isinstance(a, str))
    status: Status = "unknown" if unknown else "called" if found else "imported"
    return Finding(
        str(entry["id"]),
        aliases,
        str(entry.get("summary") or entry.get("details") or "")[:300],
        module.path,
        module.version,
        module.shown,
        fixed,
        status,
        tuple(dict.fromkeys(found)),
    )


def _for_platform(imported: Mapping[str, Any], goos: str | None, goarch: str | None) -> bool:
    oses, arches = _list(imported.get("goos")), _list(imported.get("goarch"))
    return (not oses or goos is None or goos in oses) and (not arches or goarch is None or goarch in arches)


# -- images ---------------------------------------------------------------------------------------------


def check_image(image: Image, db: VulnDatabase) -> tuple[BinaryVulns, ...]:
    """Every Go binary of every platform of `image`, checked."""
    out: list[BinaryVulns] = []
    for platform_image in image.manifests:
        platform = str(platform_image.platform)
        root = flatten([layer.tar for layer in platform_image.layers], where=platform)
        for entry in root:
            if entry.kind != "file" or entry.data[:4] != MAGIC:
                continue
            try:
                info = read_build_info(entry.data)
            except BuildInfoError as exc:
                raise GosmallError(f"{printable(entry.path)} ({platform}): its Go build info cannot be read ({exc}).") from None
            if info is not None:
                out.append(check_binary(entry.data, info, db, platform=platform, path=entry.path))
    return tuple(out)


@dataclass(frozen=True)
class TargetVulns:
    target: str
    binaries: tuple[BinaryVulns, ...]


def exit_status(results: Iterable[TargetVulns], *, everything: bool) -> int:
    """1 when a vulnerability is called (with --all: when any affects a binary), else 0."""
    wanted: tuple[Status, ...] = ("called", "imported") if everything else ("called",)
    found = any(f.status in wanted for r in results for b in r.binaries for f in b.findings)
    return FOUND if found else 0


# -- output ---------------------------------------------------------------------------------------------


def format_results(results: Sequence[TargetVulns], fmt: Format, *, everything: bool, cwd: Path) -> str:
    if fmt == "json":
        return json.dumps(
            [{"target": r.target, "binaries": [b.to_json() for b in r.binaries]} for r in results], indent=2, ensure_ascii=False
        )
    if fmt == "sarif":
        return _sarif(results, cwd)
    return _text(results)


def _text(results: Sequence[TargetVulns]) -> str:
    lines: list[str] = []
    for result in results:
        for binary in result.binaries:
            called, imported, unknown = binary.of("called"), binary.of("imported"), binary.of("unknown")
            head = f"{printable(result.target)} {binary.platform} {printable(binary.path)} ({binary.go_version})"
            lines.append(
                f"{head}: {len(called)} called, {len(imported)} imported, not called"
                + (f", {len(unknown)} version unknown" if unknown else "")
            )
            for finding in (*called, *imported, *unknown):
                aliases = f" ({', '.join(finding.aliases)})" if finding.aliases else ""
                fixed = f"fixed in {finding.fixed}" if finding.fixed else "no fix"
                version = finding.shown if finding.version is not None else f"{finding.shown}, version unknown"
                lines.append(f"  {finding.status.upper()} {finding.id}{aliases}: {printable(finding.summary)}")
                lines.append(f"    {printable(version)}; {fixed}")
                if finding.symbols:
                    lines.append(f"    found: {', '.join(map(printable, finding.symbols))}")
            if not binary.inline_trees:
                lines.append("  note: the inline trees could not be found; inlined functions were read from the name table instead")
    return "\n".join(lines)


def sarif_rules(results: Sequence[TargetVulns]) -> tuple[SarifRule, ...]:
    rules: dict[str, SarifRule] = {}
    for result in results:
        for binary in result.binaries:
            for f in binary.findings:
                if f.id not in rules:
                    aliases = f" ({', '.join(f.aliases)})" if f.aliases else ""
                    rules[f.id] = SarifRule(
                        f.id,
                        "error" if f.status == "called" else "warning",
                        f"{f.id}{aliases}: {f.summary or 'a known vulnerability'}",
                        f"{f.summary} Upgrade {f.module}" + (f" to {f.fixed} or later." if f.fixed else "; no fixed version is known."),
                        {"tags": ["security", "vulnerability"], "aliases": list(f.aliases)},
                    )
    return tuple(rules.values())


def _sarif(results: Sequence[TargetVulns], cwd: Path) -> str:
    out: list[SarifResult] = []
    for result in results:
        path = Path(result.target).expanduser()
        if path.exists():
            try:
                uri = artifact_uri(path.resolve().relative_to(cwd.resolve()).as_posix())
            except ValueError:
                uri = artifact_uri(path.resolve().as_posix())
        else:
            uri = artifact_uri(result.target)
        for binary in result.binaries:
            for f in binary.findings:
                said = {"called": "calls", "imported": "links, but does not call,", "unknown": "has, at an unknown version,"}[f.status]
                symbols = f" ({', '.join(f.symbols)})" if f.symbols else ""
                out.append(
                    SarifResult(
                        f.id,
                        "error" if f.status == "called" else "warning" if f.status == "imported" else "note",
                        f"{binary.path} ({binary.platform}) {said} {f.shown}{symbols}: {f.summary}",
                        uri,
                        logical=LogicalLocation(binary.path, f"{result.target}:{binary.platform}:{binary.path}", "resource"),
                        properties={"platform": binary.platform, "status": f.status, "module": f.module, "fixed": f.fixed or ""},
                    )
                )
    return format_sarif(sarif_rules(results), out)


# -- build-small ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlatformVulns:
    """What build-small records for one platform: the binary's called and imported records."""

    called: tuple[str, ...]
    imported: tuple[str, ...]
    unknown: tuple[str, ...] = field(default=())

    def line(self) -> str:
        return f"{len(self.called)} called / {len(self.imported)} imported"

    def to_json(self) -> dict[str, Any]:
        return {"called": list(self.called), "imported": list(self.imported), "version_unknown": list(self.unknown)}


def platform_vulns(binaries: Iterable[BinaryVulns]) -> PlatformVulns:
    called = tuple(dict.fromkeys(f.id for b in binaries for f in b.of("called")))
    imported = tuple(dict.fromkeys(f.id for b in binaries for f in b.of("imported") if f.id not in called))
    unknown = tuple(dict.fromkeys(f.id for b in binaries for f in b.of("unknown")))
    return PlatformVulns(called, imported, unknown)


def enforce_vulns(image_name: str, policy: Policy, found: Mapping[str, PlatformVulns]) -> None:
    """vulns = "error": a called vulnerability stops the build before anything is written, as max_size does."""
    if policy != "error":
        return
    failed = {platform: v.called for platform, v in found.items() if v.called}
    if failed:
        listed = "; ".join(f"{platform}: {', '.join(ids)}" for platform, ids in failed.items())
        raise GosmallError(
            f"[tool.gosmall.images.{image_name}]: the binary calls known vulnerabilities ({listed}), and "
            '[tool.gosmall] vulns = "error", so nothing was written. Upgrade the modules `gosmall vulns` names, or set '
            'vulns = "warn" to build anyway.',
            code=FOUND,
        )


def open_database(location: str, base: Path) -> VulnDatabase:
    """The database at `location` (a relative directory is relative to `base`, the project), checked to be one."""
    parts = urlsplit(location)
    if not parts.scheme or len(parts.scheme) == 1:
        path = Path(location).expanduser()
        location = str(path if path.is_absolute() else base / path)
    db = VulnDatabase(location)
    db.check()
    return db


def check_built_binary(binary: Path, db: VulnDatabase, *, platform: str) -> PlatformVulns:
    """build-small's check of a binary it just built."""
    try:
        data = binary.read_bytes()
    except OSError as exc:
        raise GosmallError(f"{binary}: cannot be read ({exc.strerror or exc}).") from None
    try:
        info = read_build_info(data)
    except BuildInfoError as exc:
        raise GosmallError(f"{binary}: its Go build info cannot be read ({exc}).") from None
    if info is None:
        raise GosmallError(f"{binary}: has no Go build info, so its modules are not known.")
    return platform_vulns([check_binary(data, info, db, platform=platform, path=f"/{binary.name}")])


def check_targets(targets: Sequence[str], db: VulnDatabase) -> tuple[TargetVulns, ...]:
    """`gosmall vulns TARGET...`: each target read as `audit` reads it (images.source.read_target)."""
    from ..images.source import read_target

    return tuple(TargetVulns(target, check_image(read_target(target), db)) for target in targets)


def _list(value: object) -> list[Any]:
    """A record's array, or nothing: a record is data, and a string or an object where OSV has an array is no array."""
    return value if isinstance(value, list) else []
