"""The distribution: a wheel built from the checkout ships every package, the type markers
and the migrations, and `conveyor migrate` from that wheel, installed into a fresh
environment away from the checkout, migrates a fresh schema.

The wheel is built without build isolation (with this environment's setuptools), so the
test needs no package index; the throwaway environment borrows this one's dependencies
through a ``.pth`` line, which adds the directory but none of its own ``.pth`` hooks (so
not the checkout's editable install): what it imports as ``engine`` is the wheel's.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import text

from engine.settings import Settings
from engine.store.database import create_engine
from engine.store.migrations import alembic_config
from tests.conftest import unique

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("engine", "api", "workflows")
SOURCES = ("pyproject.toml", "README.md", "alembic", *PACKAGES)
TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class Installed:
    wheel: Path
    venv: Path
    workdir: Path  # outside the checkout: nothing there is importable

    @property
    def bin(self) -> Path:
        return self.venv / "bin"


def _run(*cmd: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [str(c) for c in cmd],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    base = tmp_path_factory.mktemp("packaging")
    source = base / "source"  # a copy: an in-tree build would write into the checkout
    source.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, source / name)
    dist = base / "dist"
    pip = (sys.executable, "-m", "pip")
    _run(*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", dist, source, cwd=base)
    (wheel,) = dist.glob("conveyor-*.whl")

    venv = base / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=base)
    (site,) = (venv / "lib").glob("python3*/site-packages")
    (site / "conveyor_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(*pip, "--python", venv / "bin" / "python", "install", "-q", "--no-deps", wheel, cwd=base)
    workdir = base / "elsewhere"
    workdir.mkdir()
    yield Installed(wheel, venv, workdir)
    shutil.rmtree(base, ignore_errors=True)


def _source_packages() -> set[str]:
    return {
        ".".join(init.parent.relative_to(ROOT).parts)
        for name in PACKAGES
        for init in (ROOT / name).rglob("__init__.py")
    }


def test_the_wheel_ships_every_package_the_type_markers_and_the_migrations(
    installed: Installed,
) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
    wheel_packages = {
        ".".join(Path(name).parent.parts) for name in names if name.endswith("/__init__.py")
    }
    assert wheel_packages == _source_packages()
    top_level = {
        name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")
    }
    assert top_level == set(PACKAGES)  # no `alembic` (the library's name), no tests
    for package in PACKAGES:
        assert f"{package}/py.typed" in names
    migrations = {
        f"engine/migrations/versions/{script.name}"
        for script in (ROOT / "alembic" / "versions").glob("*.py")
    }
    assert migrations
    assert migrations | {"engine/migrations/env.py", "engine/migrations/script.py.mako"} <= names


def test_the_installed_wheel_uses_its_own_code_and_migrations(installed: Installed) -> None:
    probe = (
        "import engine, engine.store.migrations as m; "
        "print(engine.__file__); print(m.script_location())"
    )
    out = _run(installed.bin / "python", "-c", probe, cwd=installed.workdir, env=_clean_env())
    module, scripts = out.split()
    assert Path(module).is_relative_to(installed.venv)
    assert Path(scripts).is_relative_to(installed.venv)
    assert Path(scripts).name == "migrations"
    help_text = _run(
        installed.bin / "conveyor", "migrate", "--help", cwd=installed.workdir, env=_clean_env()
    )
    assert "--revision" in help_text


async def test_conveyor_migrate_from_the_installed_wheel_migrates_a_fresh_schema(
    installed: Installed, base_settings: Settings
) -> None:
    schema = unique("pkg")
    env = {**_clean_env(), "CONVEYOR_DATABASE_SCHEMA": schema}
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    admin = create_engine(base_settings, pool_size=1)
    try:
        out = await asyncio.to_thread(
            _run, installed.bin / "conveyor", "migrate", cwd=installed.workdir, env=env
        )
        assert f"schema {schema}" in out
        async with admin.connect() as conn:
            version = (
                await conn.execute(text(f'select version_num from "{schema}".alembic_version'))
            ).scalar_one()
            instances = (
                await conn.execute(text("select to_regclass(:t)"), {"t": f'"{schema}".instances'})
            ).scalar_one()
        assert version == head
        assert instances is not None
    finally:
        async with admin.begin() as conn:
            await conn.execute(text(f'drop schema if exists "{schema}" cascade'))
        await admin.dispose()
