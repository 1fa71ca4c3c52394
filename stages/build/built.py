"""The contract between building and publishing: one immutable `Build` per image.

`pipeline.build_image` returns it from memory; `read_build` gives the same value
back from an output directory (report.json read once, the OCI layout read and
checked once), so `load` and `push` alone publish exactly what `build-small`
wrote. Publishers (the output directory, the Docker engine, a registry) take a
`Build`; none re-reads another's output.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from ..config import ImageConfig, ProjectConfig
from ..digest import Digest
from ..errors import GosmallError
from ..images.model import Image, Platform, PlatformImage
from ..reporter import Reporter

Ecosystem = Literal["golang", "pypi", "deb"]  # purl types
ECOSYSTEMS: tuple[Ecosystem, ...] = ("golang", "pypi", "deb")
# What building said and what it was made of: carried by a Build for the next up-to-date check (fresh.py).
Said = tuple[tuple[str, str], ...]  # (reporter method, message), in order


@dataclass(frozen=True)
class PlatformInputs:
    build_id: str  # Go's, of the binary compiled now
    runtime: str  # sha256 of the runtime files' paths, modes, owners and bytes
    needs: tuple[Mapping[str, Any], ...] = ()  # needs.py's evidence, which only the binary decides


@dataclass(frozen=True)
class MadeFrom:
    """What an image is made of, as far as an up-to-date check can tell; equal values give equal outputs."""

    common: str  # gosmall, compressor, settings, output, source, toolchain
    platforms: tuple[tuple[str, PlatformInputs], ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "common": self.common,
            "platforms": {p: {"build_id": i.build_id, "runtime": i.runtime, "needs": list(i.needs)} for p, i in self.platforms},
        }


@dataclass(frozen=True)
class FileSource:
    """Where one file of a layer came from: a package and its version, as the build machine could tell."""

    path: str  # in the image
    ecosystem: Ecosystem
    name: str  # "stdlib" for Go's own files, "certifi", a Debian package name
    version: str
    namespace: str = ""  # deb: the distribution, as /etc/os-release's ID names it
    arch: str = ""  # deb: the package's architecture
    note: str = ""  # what was done to it on the way: "reduced to 2 zones", "debug sections stripped"

    def to_json(self) -> dict[str, str]:
        return {k: v for k, v in self.__dict__.items() if v}

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> FileSource:
        ecosystem = document["ecosystem"]
        if ecosystem not in ECOSYSTEMS:
            raise ValueError(f"a file source of ecosystem {ecosystem!r}")
        text = {k: str(document.get(k, "")) for k in ("namespace", "arch", "note")}
        return cls(str(document["path"]), ecosystem, str(document["name"]), str(document["version"]), **text)


@dataclass(frozen=True)
class PlatformFacts:
    """What building one platform knew that its image cannot say; report.json keeps it for `read_build`."""

    binary: str = ""  # the image path of the Go binary gosmall compiled
    ldflags: str = ""  # `go build -ldflags`: Go leaves them out of the build info under -trimpath
    sources: tuple[FileSource, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"go_build": {"binary": self.binary, "ldflags": self.ldflags}, "sources": [s.to_json() for s in self.sources]}

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> PlatformFacts:
        """From report.json's entry for the platform; an output of an older gosmall has none, and gets none."""
        go_build = entry.get("go_build", {})
        return cls(
            str(go_build.get("binary", "")),
            str(go_build.get("ldflags", "")),
            tuple(FileSource.from_json(s) for s in entry.get("sources", ())),
        )


@dataclass(frozen=True)
class Build:
    config: ImageConfig
    image: Image
    report: Mapping[str, Any]  # report.json's content
    output_dir: Path  # <output>/<image>
    facts: tuple[tuple[Platform, PlatformFacts], ...] = ()
    made_from: MadeFrom | None = None  # what it was built of, for the next build's up-to-date check (fresh.py)
    said: Said = ()  # what building it told the user, said again when a later build finds it up to date
    up_to_date: bool = False  # already in output_dir, as it would be written now

    def facts_for(self, platform: Platform) -> PlatformFacts:
        return next((facts for p, facts in self.facts if p == platform), PlatformFacts())

    @property
    def digest(self) -> Digest:
        return self.image.digest

    @property
    def docker_platform(self) -> Platform:
        return Platform.parse(str(self.report["docker_platform"]))

    @property
    def epoch(self) -> int:
        return int(self.report["source"]["source_date_epoch"])

    @property
    def tags(self) -> tuple[str, ...]:
        """`repository:tag` for every configured tag."""
        return tuple(f"{self.config.repository}:{tag}" for tag in self.config.tags)

    def docker_image(self) -> PlatformImage:
        platform_image = self.image.for_platform(self.docker_platform)
        if platform_image is None:
            raise GosmallError(
                f"{self.output_dir}: report.json names docker_platform {self.docker_platform}, which the image does not have."
            )
        return platform_image

    def docker_archive(self) -> bytes:
        """What image.tar holds, made from the value: the same bytes, byte for byte."""
        from ..images.docker_archive import write_docker_archive  # tarfile: not for a build found up to date

        stream = io.BytesIO()
        write_docker_archive(self.docker_image(), stream, self.config.repository, self.config.tags, self.epoch)
        return stream.getvalue()


def read_build(config: ImageConfig, output_dir: Path) -> Build:
    """The Build a `build-small` run wrote to `output_dir`, checked to belong together and to the config."""
    report_path = output_dir / "report.json"
    layout = output_dir / "oci"
    for path in (report_path, layout / "index.json"):
        if not path.is_file():
            raise GosmallError(
                f"Image '{config.name}' has not been built: {path} does not exist. Run "
                f"`gosmall build-small --image {config.name}` first (or `gosmall build-small --load`), then try again."
            )
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
        digest = Digest.parse(report["digest"])
        repository, tags = report["repository"], tuple(report["tags"])
        Platform.parse(str(report["docker_platform"]))
        int(report["source"]["source_date_epoch"])
        known = {name: PlatformFacts.from_json(entry) for name, entry in report["platforms"].items()}
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise GosmallError(
            f"{report_path} cannot be read as a gosmall build report ({type(exc).__name__}: {exc}); it may come from "
            f"another gosmall version or an interrupted build. Run `gosmall build-small --image {config.name}` again."
        ) from None
    if repository != config.repository or tags != config.tags:
        raise GosmallError(
            f"{report_path} describes {repository}:{','.join(tags)}, but pyproject.toml now says image "
            f"'{config.name}' is {config.repository}:{','.join(config.tags)}; the build is stale. "
            f"Run `gosmall build-small --image {config.name}`."
        )
    from ..images.source import read_oci_layout

    image = read_oci_layout(layout)
    claims = [("digest", str(digest), str(image.digest))]
    for platform_image in image.manifests:
        entry = report.get("platforms", {}).get(str(platform_image.platform), {})
        claims.append((f"{platform_image.platform} config_digest", entry.get("config_digest"), str(platform_image.config.digest)))
        claims.append((f"{platform_image.platform} manifest_digest", entry.get("manifest_digest"), str(platform_image.manifest.digest)))
    for what, said, held in claims:
        if said != held:
            raise GosmallError(
                f"{report_path} says {what} {said}, but {layout} holds {held}: the two are not from one build, or "
                f"one was changed. Run `gosmall build-small --image {config.name}` again."
            )
    facts = tuple((m.platform, known.get(str(m.platform), PlatformFacts())) for m in image.manifests)
    return Build(config, image, report, output_dir, facts)


class Publisher(Protocol):
    """A destination for a Build: the output directory, the Docker engine, a registry."""

    def publish(self, build: Build, reporter: Reporter) -> None: ...


class BuildSmall(Protocol):
    """pipeline.build_small's shape: what lock and resolve are handed to build with (they sit below the pipeline)."""

    def __call__(
        self,
        project: ProjectConfig,
        reporter: Reporter,
        *,
        names: tuple[str, ...] = (),
        environ: Mapping[str, str] | None = None,
        publishers: Sequence[Publisher] = (),
    ) -> tuple[Build, ...]: ...
