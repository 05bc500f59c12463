"""A task's Python: a clean virtual environment per task, with the task's libraries installed
as a cluster installs them (dependencies included), from what is installed here - offline.

The environment holds the standard library, the submitted wheels and what they declare,
recursively; nothing else. A wheel that lacks a module, or uses a package it does not declare,
fails here as it would on a cluster, however the test environment happens to provide it
(the platform itself is installed here editable, from source). It stays fast:

- pip's own resolver resolves the libraries (``pip install --dry-run --report``) against a
  local index with one metadata-only wheel per distribution installed here (built once per
  workspace in ~0.2 s): a requirement nothing installed here satisfies fails like a package
  PyPI does not have;
- the distributions it chose are linked into the environment's site-packages (symlinks to
  their installed files, by their RECORD): the platform's ~2 GB dependency set in about a
  second, not a copy;
- the submitted wheels themselves are really installed (``pip install --no-deps``).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import sysconfig
import tempfile
import threading
import venv
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from packaging.utils import canonicalize_name

PYTHON_DIR = f"python{sys.version_info.major}.{sys.version_info.minor}"


class LibraryError(Exception):
    """The libraries cannot be installed; ``detail`` is what pip said."""

    def __init__(self, detail: str, command: list[str]) -> None:
        super().__init__(detail)
        self.detail = detail
        self.command = command


@dataclass(frozen=True)
class Environment:
    """A task's virtual environment."""

    root: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def site_packages(self) -> Path:
        return self.root / "lib" / PYTHON_DIR / "site-packages"

    def distribution(self, name: str) -> importlib.metadata.Distribution | None:
        """The distribution ``name`` installed (or linked) in this environment."""
        wanted = canonicalize_name(name)
        for dist in importlib.metadata.distributions(path=[str(self.site_packages)]):
            if canonicalize_name(dist.metadata["Name"] or "") == wanted:
                return dist
        return None

    def variables(self, env: dict[str, str]) -> dict[str, str]:
        """``env`` as the environment's interpreter should see it: its ``bin`` first on PATH,
        and nothing that would put the test environment's packages on its path."""
        env = {k: v for k, v in env.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        env["VIRTUAL_ENV"] = str(self.root)
        env["PATH"] = os.pathsep.join([str(self.root / "bin"), env.get("PATH", os.defpath)])
        return env


@dataclass
class LocalIndex:
    """What ``pip install`` may choose from: the distributions installed in this interpreter's
    environment (not editable ones), as metadata-only wheels in ``root`` built on first use."""

    root: Path
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _built: bool = False
    _resolved: dict[str, list[str]] = field(default_factory=dict)

    def wheelhouse(self) -> Path:
        with self._lock:
            if not self._built:
                self.root.mkdir(parents=True, exist_ok=True)
                for dist in _host().distributions.values():
                    _write_stub(dist, self.root)
                self._built = True
        return self.root

    def resolve(
        self, environment: Environment, wheels: list[Path], requirements: list[str]
    ) -> list[str]:
        """The names of the distributions ``wheels`` and ``requirements`` need (the wheels'
        own excluded), as pip resolves them for ``environment``; cached by the wheels' bytes."""
        key = hashlib.sha256(
            json.dumps([[_digest(w) for w in wheels], requirements]).encode()
        ).hexdigest()
        if key not in self._resolved:
            with tempfile.TemporaryDirectory(prefix="pip-report-") as scratch:
                report = Path(scratch) / "report.json"
                _pip(
                    environment,
                    "install",
                    "--dry-run",
                    "--no-index",
                    "--find-links",
                    str(self.wheelhouse()),
                    "--report",
                    str(report),
                    *map(str, wheels),
                    *requirements,
                )
                chosen = json.loads(report.read_text())["install"]
            self._resolved[key] = [
                canonicalize_name(item["metadata"]["name"])
                for item in chosen
                if not item.get("is_direct")
            ]
        return self._resolved[key]


def create_environment(
    root: Path, index: LocalIndex, wheels: list[Path], requirements: list[str]
) -> Environment:
    """A new virtual environment in ``root`` with ``wheels`` and ``requirements`` installed,
    dependencies included; LibraryError when pip cannot resolve or install them."""
    venv.EnvBuilder(with_pip=False, symlinks=True, clear=True).create(root)
    environment = Environment(root)
    if not wheels and not requirements:
        return environment
    names = index.resolve(environment, wheels, requirements)
    _link(names, environment.site_packages)
    if wheels:
        _pip(environment, "install", "--no-deps", "--no-index", *map(str, wheels))
    return environment


# --------------------------------------------------------------------------- pip


def _pip(environment: Environment, *arguments: str) -> None:
    command = [
        sys.executable,
        "-m",
        "pip",
        "--python",
        str(environment.python),
        "--isolated",
        "--disable-pip-version-check",
        "--no-input",
        "-q",
        *arguments,
    ]
    done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise LibraryError((done.stderr or done.stdout).strip()[-3000:], command)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- this environment


@dataclass(frozen=True)
class _Host:
    """The distributions installed here, and which of them own each installed path."""

    site: Path
    distributions: dict[str, importlib.metadata.Distribution]
    owners: dict[tuple[str, ...], frozenset[str]]
    children: dict[tuple[str, ...], list[tuple[str, ...]]]


@functools.cache
def _host() -> _Host:
    site = Path(sysconfig.get_paths()["purelib"])
    distributions: dict[str, importlib.metadata.Distribution] = {}
    owners: dict[tuple[str, ...], set[str]] = {}
    for dist in importlib.metadata.distributions(path=[str(site)]):
        name = canonicalize_name(dist.metadata["Name"] or "")
        if not name or name in distributions or _editable(dist):
            continue
        distributions[name] = dist
        for file in dist.files or []:
            try:
                parts = Path(os.path.normpath(site / file)).relative_to(site).parts
            except ValueError:  # scripts and data outside site-packages: not linked
                continue
            for depth in range(1, len(parts) + 1):
                owners.setdefault(parts[:depth], set()).add(name)
    children: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
    for path in owners:
        children.setdefault(path[:-1], []).append(path)
    frozen = {path: frozenset(names) for path, names in owners.items()}
    return _Host(site, distributions, frozen, children)


def _editable(dist: importlib.metadata.Distribution) -> bool:
    try:
        direct = json.loads(dist.read_text("direct_url.json") or "{}")
    except ValueError:
        return False
    return bool(direct.get("dir_info", {}).get("editable"))


def _write_stub(dist: importlib.metadata.Distribution, wheelhouse: Path) -> None:
    """A wheel with ``dist``'s metadata and tags and no files: enough for pip to resolve."""
    name = re.sub(r"[-_.]+", "_", dist.metadata["Name"])
    version = dist.version
    tags = [
        line.split(":", 1)[1].strip()
        for line in (dist.read_text("WHEEL") or "").splitlines()
        if line.startswith("Tag:")
    ] or ["py3-none-any"]
    compressed = "-".join(".".join(sorted({tag.split("-")[i] for tag in tags})) for i in range(3))
    info = f"{name}-{version}.dist-info"
    metadata = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
    wheel = "Wheel-Version: 1.0\nRoot-Is-Purelib: true\n" + "".join(f"Tag: {t}\n" for t in tags)
    target = wheelhouse / f"{name}-{version.replace('-', '_')}-{compressed}.whl"
    with zipfile.ZipFile(target, "w") as archive:
        archive.writestr(f"{info}/METADATA", metadata)
        archive.writestr(f"{info}/WHEEL", wheel)
        archive.writestr(f"{info}/RECORD", "")


def _link(names: Iterable[str], site_packages: Path) -> None:
    """Make the installed distributions ``names`` importable from ``site_packages``: a
    symlink per path whose installed files all belong to them (a package directory, a module,
    a dist-info), and real directories where they share one with others (namespaces)."""
    host = _host()
    chosen = frozenset(names)
    missing = chosen - host.distributions.keys()
    if missing:  # pip chose it from the wheelhouse, so it is installed here
        raise LibraryError(f"not installed here: {sorted(missing)}", [])

    def place(path: tuple[str, ...]) -> None:
        owners = host.owners[path]
        if not owners & chosen:
            return
        source, target = host.site.joinpath(*path), site_packages.joinpath(*path)
        if owners <= chosen or not source.is_dir() or source.is_symlink():
            if not target.exists() and not target.is_symlink():
                target.symlink_to(source)
            return
        target.mkdir(exist_ok=True)
        for child in host.children.get(path, []):
            place(child)

    for top in host.children.get((), []):
        place(top)
