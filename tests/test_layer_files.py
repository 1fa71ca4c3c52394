"""What may enter a layer: one entry type, regular files only, one merge that lets nothing win silently."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from gosmall.errors import GosmallError
from gosmall.layer_files import FileEntry, file_mode, host_file, merge_entries, read_regular_file


def test_only_the_executable_bit_survives() -> None:
    assert [oct(file_mode(m)) for m in (0o600, 0o666, 0o700, 0o4755, 0o100)] == ["0o444", "0o444", "0o555", "0o555", "0o555"]


def test_a_regular_file_is_read_with_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "run.sh"
    path.write_bytes(b"#!/bin/sh\n")
    path.chmod(0o700)
    entry = host_file(path, "/run.sh", "files", "files[0]")
    assert (entry.data, entry.mode, entry.uid, entry.gid, entry.origin) == (b"#!/bin/sh\n", 0o555, 0, 0, str(path))


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    outcome: list[BaseException | None] = []

    def read() -> None:
        try:
            read_regular_file(fifo, "files[0]")
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - reported to the main thread
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=30)
    assert outcome, "reading a FIFO blocked"
    assert isinstance(outcome[0], GosmallError) and f"{fifo} is a FIFO (named pipe)" in outcome[0].message


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null"])
def test_a_device_is_refused(device: str) -> None:
    with pytest.raises(GosmallError, match=f"{device} is a character device; only regular files"):
        read_regular_file(Path(device), "files[0]")


def test_a_link_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "real").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(GosmallError, match="is a symbolic link"):
        read_regular_file(tmp_path / "link", "files[0]")


def test_a_socket_is_refused(tmp_path: Path) -> None:
    import socket

    path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        with pytest.raises(GosmallError, match="is a socket"):
            read_regular_file(path, "files[0]")


def test_merge_adds_parents_and_sorts() -> None:
    merged = merge_entries([FileEntry("/srv/b/c", "file", 0o444, "files"), FileEntry("/etc/passwd", "file", 0o444, "users")])
    assert [(e.path, e.kind, oct(e.mode)) for e in merged] == [
        ("/etc", "dir", "0o755"),
        ("/etc/passwd", "file", "0o444"),
        ("/srv", "dir", "0o755"),
        ("/srv/b", "dir", "0o755"),
        ("/srv/b/c", "file", "0o444"),
    ]


def test_two_sources_for_one_path_name_both() -> None:
    users = FileEntry("/etc/passwd", "file", 0o444, "users", data=b"root")
    mine = FileEntry("/etc/passwd", "file", 0o444, "files", data=b"evil", origin="files[0] /p/passwd")
    with pytest.raises(GosmallError) as caught:
        merge_entries([users, mine])
    assert "/etc/passwd would be written twice" in caught.value.message
    assert "gosmall's users" in caught.value.message and "files (files[0] /p/passwd)" in caught.value.message


def test_a_file_where_a_directory_must_be_is_an_error() -> None:
    with pytest.raises(GosmallError, match="needs /etc to be a directory"):
        merge_entries(
            [FileEntry("/etc", "file", 0o444, "files", origin="files[0] /p/etc"), FileEntry("/etc/group", "file", 0o444, "users")]
        )


def test_the_same_entry_twice_is_one_entry() -> None:
    entry = FileEntry("/srv", "dir", 0o555, "files")
    assert merge_entries([entry, entry]) == (entry,)
