"""Which paths the console's static route may serve (api.console.assets.resolve)."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.console.assets import resolve


@pytest.fixture
def root(tmp_path: Path) -> Path:
    static = tmp_path / "static"
    (static / "vendor").mkdir(parents=True)
    (static / "app.js").write_text("js")
    (static / "vendor" / "lib.css").write_text("css")
    (static / ".hidden.js").write_text("secret")
    (static / "notes.txt").write_text("text")
    (static / "page.html").write_text("<p>")
    (tmp_path / "outside.js").write_text("outside")
    (static / "link.js").symlink_to(tmp_path / "outside.js")
    (static / "inside.js").symlink_to(static / "app.js")
    (static / "folder.js").mkdir()
    return static


@pytest.mark.parametrize(
    ("path", "served"),
    [("app.js", "app.js"), ("vendor/lib.css", "vendor/lib.css"), ("inside.js", "app.js")],
)
def test_files_of_the_kinds_served_under_the_root(root: Path, path: str, served: str) -> None:
    assert resolve(path, root) == (root / served).resolve()


@pytest.mark.parametrize(
    "path",
    [
        "",
        "missing.js",
        ".hidden.js",
        "vendor/../.hidden.js",
        "../outside.js",
        "vendor/../../outside.js",
        "link.js",  # a symbolic link out of the root
        "/etc/passwd",
        "//etc/passwd.js",
        "vendor//lib.css",
        "vendor\\lib.css",
        "app.js\x00.png",
        "notes.txt",
        "page.html",
        "folder.js",
        "vendor",
        "vendor/",
    ],
)
def test_anything_else_is_refused(root: Path, path: str) -> None:
    assert resolve(path, root) is None
