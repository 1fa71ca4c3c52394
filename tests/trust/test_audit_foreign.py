"""Auditing an image gosmall did not build: a layer that expands past the cap is refused (exit 2, the layer and the cap
named) without the memory or the disk it asks for, and zstd layers, as buildx and podman write them, are read.

The bombs are built here, small: a tar header naming one large file of zeros, then the zeros as gzip (or zstd)
members concatenated, which both formats allow and every reader must accept, so a few KiB to a few MiB of blob
stand for as much as the test wants.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import resource
import shutil
import subprocess
import tarfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import zstandard

from gosmall.digest import Digest
from gosmall.images.model import MEDIA_CONFIG, MEDIA_LAYER_GZIP, MEDIA_MANIFEST, canonical_json
from gosmall.images.source import DEFAULT_MAX_LAYER_SIZE, MEDIA_LAYER_ZSTD
from tests.buildah_fixture import Buildah, missing, put
from tests.conftest import gosmall, gosmall_command, gosmall_env

if TYPE_CHECKING:
    import docker

    from tests.registry_fixture import LocalRegistry

MiB = 2**20
ZEROS = bytes(64 * MiB)
NO_HEALTHCHECK = ("--allow", "no-healthcheck")


def header(size: int) -> bytes:
    """A tar's first block: one regular file, /zeros, of `size` bytes."""
    info = tarfile.TarInfo("zeros")
    info.size, info.mode = size, 0o644
    return info.tobuf(format=tarfile.GNU_FORMAT)


def bomb(size: int, compress: Callable[[bytes], bytes]) -> bytes:
    """A layer blob whose tar holds one file of `size` zeros (a multiple of 64 MiB, or under it)."""
    whole, rest = divmod(size, len(ZEROS))
    zeros = compress(ZEROS)  # made once, repeated: the blob stays small whatever `size` is
    return compress(header(size)) + zeros * whole + compress(bytes(rest)) + compress(bytes(1024))


def gzip_fast(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)


def zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=19).compress(data)


def layout(directory: Path, *layers: tuple[bytes, str, Digest]) -> Path:
    """An OCI layout holding one image of these layers (blob, media type, diff_id), written by hand as another tool would."""
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    config = canonical_json(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"User": "65532", "Entrypoint": ["/zeros"]},
            "rootfs": {"type": "layers", "diff_ids": [str(diff_id) for _, _, diff_id in layers]},
        }
    )
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": {"mediaType": MEDIA_CONFIG, "digest": str(Digest.of(config)), "size": len(config)},
            "layers": [{"mediaType": media_type, "digest": str(Digest.of(blob)), "size": len(blob)} for blob, media_type, _ in layers],
        }
    )
    for data in (*(blob for blob, _, _ in layers), config, manifest):
        (blobs / Digest.of(data).hex).write_bytes(data)
    (directory / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    top = {"mediaType": MEDIA_MANIFEST, "digest": str(Digest.of(manifest)), "size": len(manifest)}
    (directory / "index.json").write_bytes(canonical_json({"schemaVersion": 2, "manifests": [top]}))
    return directory


def measured(args: list[str], tmp: Path, env: dict[str, str], max_file: int) -> tuple[int, str, int]:
    """Exit status, stderr and peak resident memory (bytes) of one `gosmall` run.

    Its temporary files go to `tmp`, and the kernel stops it (SIGXFSZ) if it writes any file past `max_file` bytes.
    """
    tmp.mkdir()

    def limit_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file, max_file))

    process = subprocess.Popen(
        [*gosmall_command(), *args],
        env=gosmall_env({**env, "TMPDIR": str(tmp)}),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=limit_files,
    )
    assert process.stderr is not None
    stderr = process.stderr.read().decode()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, for its own rusage
    return process.returncode, stderr, usage.ru_maxrss * 1024


@pytest.mark.parametrize(("compress", "media_type"), [(gzip_fast, MEDIA_LAYER_GZIP), (zstd, MEDIA_LAYER_ZSTD)], ids=["gzip", "zstd"])
def test_a_few_kib_that_expand_past_the_cap_are_refused_naming_layer_and_cap(
    tmp_path: Path, compress: Callable[[bytes], bytes], media_type: str
) -> None:
    blob = bomb(8 * MiB, compress)
    assert len(blob) < 16 * 1024  # a few KiB
    target = layout(tmp_path / "layout", (blob, media_type, Digest.of(b"never reached")))
    expected = f"layer 1 ({Digest.of(blob)}), once decompressed, is larger than 1MiB (1048576 bytes)"
    for args, env in (((), {"GOSMALL_MAX_LAYER_SIZE": "1MiB"}), (("--max-layer-size", "1 MiB"), {"GOSMALL_MAX_LAYER_SIZE": "9GiB"})):
        status, stderr, _ = measured(["audit", str(target), *args], tmp_path / f"tmp{len(args)}", env, max_file=MiB)
        assert status == 2, stderr
        assert expected in stderr and "--max-layer-size or GOSMALL_MAX_LAYER_SIZE" in stderr, stderr
        assert len(stderr.strip().splitlines()) == 1, stderr  # one message, no traceback
        assert list((tmp_path / f"tmp{len(args)}").iterdir()) == []  # nothing left on disk, nothing written past the cap


def test_the_default_cap_holds_in_bounded_memory(tmp_path: Path) -> None:
    # 4 GiB and 64 MiB of zeros in a 4 MiB blob: past the default cap, and sixteen times the memory bound below.
    blob = bomb(DEFAULT_MAX_LAYER_SIZE + 64 * MiB, gzip_fast)
    target = layout(tmp_path / "layout", (blob, MEDIA_LAYER_GZIP, Digest.of(b"never reached")))
    status, stderr, peak = measured(["audit", str(target)], tmp_path / "tmp", {"GOSMALL_MAX_LAYER_SIZE": ""}, max_file=MiB)
    assert status == 2, stderr
    assert f"layer 1 ({Digest.of(blob)}), once decompressed, is larger than 4GiB (4294967296 bytes)" in stderr
    assert peak < 256 * MiB, f"peak resident memory {peak // MiB} MiB"  # 68 MiB measured; the bomb is 16 times the bound
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_bad_cap_is_refused_naming_where_it_came_from(tmp_path: Path) -> None:
    target = layout(tmp_path / "layout", (gzip_fast(header(0) + bytes(1024)), MEDIA_LAYER_GZIP, Digest.of(header(0) + bytes(1024))))
    done = gosmall("audit", str(target), "--max-layer-size", "lots", cwd=tmp_path)
    assert done.returncode == 2 and "--max-layer-size 'lots' is not a size" in done.stderr, done.stderr
    done = gosmall("audit", str(target), cwd=tmp_path, env={"GOSMALL_MAX_LAYER_SIZE": "0"})
    assert done.returncode == 2 and "GOSMALL_MAX_LAYER_SIZE '0' is not a size from 1 byte to 1 TiB" in done.stderr, done.stderr


def test_a_sparse_file_larger_than_the_cap_is_refused_before_it_is_read(tmp_path: Path) -> None:
    # GNU tar stores a file of holes as a map: 8 GiB of zeros in a few KiB of tar, under any cap on the layer.
    if shutil.which("tar") is None:
        missing("GNU tar is not installed")
    (tmp_path / "root").mkdir()
    with (tmp_path / "root" / "holes").open("wb") as stream:
        stream.truncate(8 * 2**30)
    subprocess.run(
        ["tar", "--sparse", "--format=gnu", "-C", str(tmp_path / "root"), "-cf", str(tmp_path / "layer.tar"), "holes"], check=True
    )
    tar = (tmp_path / "layer.tar").read_bytes()
    assert len(tar) < 64 * 1024
    blob = gzip_fast(tar)
    target = layout(tmp_path / "layout", (blob, MEDIA_LAYER_GZIP, Digest.of(tar)))
    status, stderr, peak = measured(["audit", str(target)], tmp_path / "tmp", {"GOSMALL_MAX_LAYER_SIZE": "1GiB"}, max_file=MiB)
    assert status == 2, stderr
    assert "linux/amd64: layer 1: holes is a sparse file of 8589934592 bytes, more than the 1GiB (1073741824 bytes)" in stderr
    assert peak < 200 * MiB


# --- zstd layers, from an image another builder made ------------------------------------------


def skopeo(*args: str) -> None:
    if shutil.which("skopeo") is None:
        missing("skopeo is not installed (apt-get install skopeo)")
    done = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def layer_types(directory: Path) -> list[str]:
    index = json.loads((directory / "index.json").read_text())
    digest = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads((directory / "blobs" / "sha256" / digest).read_text())
    return [layer["mediaType"] for layer in manifest["layers"]]


@pytest.fixture
def twins(buildah: Buildah, static_app: bytes, tmp_path: Path) -> tuple[Path, Path]:
    """One buildah image with two defects, copied by skopeo to a gzip layout and to a zstd layout."""

    def plant(root: Path) -> None:
        put(root, "/app", static_app)
        put(root, "/usr/bin/helper", static_app, 0o4755)
        put(root, "/etc/app.conf", b"x", 0o644, uid=1000)

    built = buildah.image(plant)
    copies = []
    for compression in ("gzip", "zstd"):
        copy = tmp_path / compression
        skopeo("copy", "--dest-compress-format", compression, f"oci:{built}", f"oci:{copy}:twin")
        copies.append(copy)
    assert layer_types(copies[0]) == [MEDIA_LAYER_GZIP] and layer_types(copies[1]) == [MEDIA_LAYER_ZSTD]
    return copies[0], copies[1]


def test_a_zstd_image_has_the_findings_of_its_gzip_twin(twins: tuple[Path, Path], tmp_path: Path) -> None:
    gzipped, zstd_layout = (gosmall("audit", str(t), *NO_HEALTHCHECK, cwd=tmp_path) for t in twins)
    assert gzipped.returncode == 1, gzipped.stderr
    assert gzipped.stdout.splitlines() == [
        "linux/amd64: /etc/app.conf: non-root-owner: is owned by UID 1000, and the image's user has no home in /etc/passwd",
        "linux/amd64: /usr/bin/helper: setuid: is setuid (mode 4755, owner 0:0): it runs with its owner's privileges",
    ]
    assert (zstd_layout.returncode, zstd_layout.stdout) == (gzipped.returncode, gzipped.stdout), zstd_layout.stderr


def test_a_zstd_image_in_a_registry_has_the_findings_of_its_gzip_twin(
    twins: tuple[Path, Path], registry: LocalRegistry, tmp_path: Path
) -> None:
    gzipped, zstd_layout = twins
    skopeo(
        "copy",
        "--dest-tls-verify=false",
        "--dest-compress-format",
        "zstd",
        f"oci:{zstd_layout}:twin",
        f"docker://{registry.host}/foreign/zstd:1",
    )
    served = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{registry.host}/foreign/zstd:1"], capture_output=True, timeout=120
    )
    assert [layer["mediaType"] for layer in json.loads(served.stdout)["layers"]] == [MEDIA_LAYER_ZSTD]
    pulled = gosmall("audit", f"docker://{registry.host}/foreign/zstd:1", *NO_HEALTHCHECK, cwd=tmp_path)
    local = gosmall("audit", str(gzipped), *NO_HEALTHCHECK, cwd=tmp_path)
    # What the image holds; a registry image also gets findings about what is stored beside it (SBOM, signature).
    held = [line for line in pulled.stdout.splitlines() if line.startswith("linux/amd64: ")]
    assert (pulled.returncode, held) == (1, local.stdout.splitlines()), pulled.stderr
    # The cap holds for a registry too, before the blob is pulled.
    capped = gosmall("audit", f"docker://{registry.host}/foreign/zstd:1", cwd=tmp_path, env={"GOSMALL_MAX_LAYER_SIZE": "1KiB"})
    assert capped.returncode == 2 and "is larger than 1KiB (1024 bytes)" in capped.stderr, capped.stderr


def docker_archive(layer_size: int) -> tuple[bytes, Digest]:
    """A docker archive, as `docker save` writes one, of an image whose one layer holds `layer_size` zeros; its diff_id."""
    tar = header(layer_size) + bytes(layer_size) + bytes(1024)
    diff_id = Digest.of(tar)
    config = canonical_json({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [str(diff_id)]}})
    entry = {"Config": f"blobs/sha256/{Digest.of(config).hex}", "Layers": [f"blobs/sha256/{diff_id.hex}"]}
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as out:
        for name, data in ((entry["Layers"][0], tar), (entry["Config"], config), ("manifest.json", json.dumps([entry]).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
    return archive.getvalue(), diff_id


def test_a_layer_over_the_cap_in_a_docker_archive_is_refused_at_its_header(tmp_path: Path) -> None:
    archive, diff_id = docker_archive(2 * MiB)
    (tmp_path / "image.tar").write_bytes(archive)
    done = gosmall("audit", str(tmp_path / "image.tar"), cwd=tmp_path, env={"GOSMALL_MAX_LAYER_SIZE": "1MiB"})
    assert done.returncode == 2, done.stderr
    assert f"blobs/sha256/{diff_id.hex} ({2 * MiB + 1536} bytes) is larger than 1MiB (1048576 bytes)" in done.stderr
    assert gosmall("audit", str(tmp_path / "image.tar"), cwd=tmp_path).returncode == 1  # under the default cap it is audited


@pytest.mark.docker
def test_an_engine_image_is_read_as_it_streams_and_refused_at_the_cap(tmp_path: Path, docker_client: docker.DockerClient) -> None:
    archive, diff_id = docker_archive(8 * MiB)
    (loaded,) = docker_client.images.load(archive)
    tag = f"gosmall-audit-foreign:{uuid.uuid4().hex[:8]}"
    loaded.tag(tag)
    try:
        # Nothing may be spooled: any file gosmall wrote past 1 MiB would stop it (SIGXFSZ).
        status, stderr, _ = measured(["audit", tag], tmp_path / "tmp", {"GOSMALL_MAX_LAYER_SIZE": "4MiB"}, max_file=MiB)
        assert status == 2, stderr
        assert "(Docker engine)" in stderr and "is larger than 4MiB (4194304 bytes)" in stderr, stderr
        status, stderr, _ = measured(["audit", tag], tmp_path / "tmp2", {"GOSMALL_MAX_LAYER_SIZE": "9MiB"}, max_file=MiB)
        assert status == 1, stderr  # under the cap: read whole without spooling, and audited (it runs as root)
        assert list((tmp_path / "tmp").iterdir()) == list((tmp_path / "tmp2").iterdir()) == []
    finally:
        docker_client.images.remove(tag)


def test_what_the_library_check_writes_to_disk_is_capped_too(tmp_path: Path) -> None:
    # A dynamic entrypoint's libraries are looked for in a tree on disk that holds the image's ELF files: two
    # layers under a 4 MiB cap each hold 3 MiB of ELF, so the tree would be 6 MiB.
    program = Path("/bin/true").read_bytes()
    assert b"ld-linux" in program  # dynamic

    def elf_layer(*files: tuple[str, bytes]) -> tuple[bytes, str, Digest]:
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for name, data in files:
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(data), 0o755
                tar.addfile(info, io.BytesIO(data))
        return gzip_fast(out.getvalue()), MEDIA_LAYER_GZIP, Digest.of(out.getvalue())

    big = b"\x7fELF" + bytes(3 * MiB)
    target = layout(tmp_path / "layout", elf_layer(("zeros", program), ("lib/one.so", big)), elf_layer(("lib/two.so", big)))
    status, stderr, _ = measured(["audit", str(target)], tmp_path / "tmp", {"GOSMALL_MAX_LAYER_SIZE": "4MiB"}, max_file=4 * MiB)
    assert status == 2, stderr
    assert "/zeros: checking the libraries it needs: the 3 files to write to disk come to" in stderr, stderr
    assert "more than 4MiB (4194304 bytes)" in stderr and list((tmp_path / "tmp").iterdir()) == []
    done = gosmall("audit", str(target), cwd=tmp_path, env={"GOSMALL_MAX_LAYER_SIZE": "8MiB"})
    # Under a cap that holds them, the check runs and finds what is missing.
    assert done.returncode == 1 and "/zeros: entrypoint: its loader /lib64/ld-linux-x86-64.so.2 (PT_INTERP) is not in" in done.stdout, (
        done.stderr
    )
