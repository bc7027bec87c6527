"""Release check: are the built sdist and wheel what we mean to publish?

Run by ``tox -e release`` after ``python -m build`` (see CONTRIBUTING.md,
"Releasing"): ``python .ci/check_dist.py DIST_DIR``. DIST_DIR must hold
exactly one sdist and one wheel. Checks that both pass ``twine check
--strict``, carry the version in ``pytest_smtpsink/__init__.py``, the
LICENSE, ``py.typed`` and every module of the package, that the wheel
registers the pytest plugin and the ``smtpsink`` command, and that nothing
else slipped in. Prints each problem and exits 1 if there is any.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import zipfile
from email.parser import HeaderParser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "pytest_smtpsink"

#: Top-level entries of the sdist besides the package (pyproject.toml's
#: ``[tool.hatch.build.targets.sdist] include``, plus what hatchling adds).
SDIST_TOP = {
    PACKAGE,
    "tests",
    "docs",
    "benchmarks",
    ".ci",
    "README.md",
    "tox.ini",
    "CHANGELOG.md",
    "CONTRIBUTING.md",
    "LICENSE",
    "pyproject.toml",
    "PKG-INFO",
    ".gitignore",
}
#: Files the sdist needs to run the tests and build the docs from it.
SDIST_FILES = {
    "LICENSE",
    "README.md",
    "CHANGELOG.md",
    "CONTRIBUTING.md",
    "pyproject.toml",
    "PKG-INFO",
    "tox.ini",
    "docs/conf.py",
    "docs/index.rst",
    "docs/changelog.md",
    "tests/conftest.py",
    "tests/external.py",
}


def source_version() -> str:
    text = (ROOT / PACKAGE / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__ = "([^"]+)"$', text, re.MULTILINE)
    if match is None:
        raise SystemExit(f"no __version__ in {PACKAGE}/__init__.py")
    return match.group(1)


def package_files() -> set[str]:
    """What both archives must hold: every module in the source tree, and the
    PEP 561 marker that tells type checkers the package is typed."""
    modules = {
        path.relative_to(ROOT).as_posix() for path in (ROOT / PACKAGE).glob("*.py")
    }
    return modules | {f"{PACKAGE}/py.typed"}


def check_sdist(path: Path, version: str) -> list[str]:
    problems = []
    prefix = f"{PACKAGE}-{version}/"
    with tarfile.open(path) as archive:
        names = [m.name for m in archive.getmembers() if m.isfile()]
        pkg_info = archive.extractfile(prefix + "PKG-INFO")  # KeyError if absent
        metadata = pkg_info.read().decode() if pkg_info else ""
    outside = [name for name in names if not name.startswith(prefix)]
    if outside:
        problems.append(f"sdist: files outside {prefix}: {outside[:5]}")
    files = {name.removeprefix(prefix) for name in names}
    for name in sorted(SDIST_FILES | package_files()):
        if name not in files:
            problems.append(f"sdist: {name} is missing")
    unexpected = sorted({name.split("/", 1)[0] for name in files} - SDIST_TOP)
    if unexpected:
        problems.append(f"sdist: unexpected top-level entries {unexpected}")
    junk = sorted(name for name in files if "__pycache__" in name or ".venv" in name)
    if junk:
        problems.append(f"sdist: build or cache files {junk[:5]}")
    problems += check_metadata("sdist PKG-INFO", metadata, version)
    return problems


def check_wheel(path: Path, version: str) -> list[str]:
    problems = []
    dist_info = f"{PACKAGE}-{version}.dist-info/"
    with zipfile.ZipFile(path) as archive:
        files = set(archive.namelist())
        metadata = archive.read(dist_info + "METADATA").decode()
        entry_points = (
            archive.read(dist_info + "entry_points.txt").decode()
            if dist_info + "entry_points.txt" in files
            else ""
        )
    for name in sorted(package_files() | {dist_info + "licenses/LICENSE"}):
        if name not in files:
            problems.append(f"wheel: {name} is missing")
    package = {name for name in files if not name.startswith(dist_info)}
    if package != package_files():
        problems.append(
            f"wheel: package files differ from the source tree: "
            f"extra {sorted(package - package_files())}, "
            f"missing {sorted(package_files() - package)}"
        )
    if not re.search(rf"^smtpsink = {PACKAGE}\.plugin$", entry_points, re.MULTILINE):
        problems.append("wheel: no pytest11 entry point 'smtpsink'")
    if not re.search(
        rf"^smtpsink = {PACKAGE}\.__main__:main$", entry_points, re.MULTILINE
    ):
        problems.append("wheel: no console script 'smtpsink'")
    problems += check_metadata("wheel METADATA", metadata, version)
    return problems


def check_metadata(where: str, text: str, version: str) -> list[str]:
    headers = HeaderParser().parsestr(text)
    expected = {
        "Name": PACKAGE.replace("_", "-"),
        "Version": version,
        "License-Expression": "MIT",
        "License-File": "LICENSE",
    }
    return [
        f"{where}: {field} is {headers.get(field)!r}, expected {value!r}"
        for field, value in expected.items()
        if headers.get(field) != value
    ]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: check_dist.py DIST_DIR", file=sys.stderr)
        return 2
    dist = Path(argv[0])
    sdists, wheels = sorted(dist.glob("*.tar.gz")), sorted(dist.glob("*.whl"))
    if len(sdists) != 1 or len(wheels) != 1:
        print(
            f"expected one sdist and one wheel in {dist}, found "
            f"{[p.name for p in sdists + wheels]}",
            file=sys.stderr,
        )
        return 1
    sdist, wheel = sdists[0], wheels[0]
    version = source_version()
    expected = (f"{PACKAGE}-{version}.tar.gz", f"{PACKAGE}-{version}-py3-none-any.whl")
    if (sdist.name, wheel.name) != expected:
        print(
            f"expected {expected[0]} and {expected[1]} (the version in "
            f"{PACKAGE}/__init__.py), found {sdist.name} and {wheel.name}",
            file=sys.stderr,
        )
        return 1
    # twine prints its own verdict per file; --strict makes warnings fail.
    twine = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", sdist, wheel],
        check=False,
    )
    problems = [] if twine.returncode == 0 else ["twine check --strict failed"]
    problems += check_sdist(sdist, version)
    problems += check_wheel(wheel, version)
    for problem in problems:
        print(f"check_dist: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"check_dist: {sdist.name} and {wheel.name} are complete")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
