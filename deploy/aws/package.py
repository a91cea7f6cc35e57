"""``shardline package``: the Lambda zip, built the same way every time.

The zip holds what runs inside Lambda and nothing else:

* ``stream/``, ``processors/`` and ``sinks/`` (never ``deploy/``: the operator's side, with
  its CLI libraries, is not imported by the runtime);
* the compiled plan at ``stream/pipeline.json``, where the handler looks for it;
* the run-time dependencies, installed by pip for the target runtime's Python and CPU
  (``--only-binary=:all:``, manylinux wheels up to the runtime's glibc);
* the distributions of the plugins the plan names (entry points or ``use:`` paths), with
  their ``dist-info``, because the runtime finds entry points through it.

Left out: boto3, botocore, s3transfer and jmespath, which the Lambda runtime provides (our
``expr`` filter needs jmespath, and the runtime's boto3 brings it). They still take part in
dependency resolution, so the urllib3, python-dateutil and six that we do ship, and that
the runtime's botocore then imports from ``/var/task`` ahead of its own, satisfy botocore's
version bounds. Also left out: grpcio and opensearch-protobufs, declared by opensearch-py 3
for its gRPC transport only (18 MB unpacked); the HTTP client our sink uses never imports them.

Bytecode, only when asked (``compile_with``, ``shardline package --compile-with PYTHON``):
``/var/task`` is read-only, so Python cannot cache what it compiles and recompiles every
imported module at every cold start; with an interpreter of the *target* version given, each
``.py`` ships with a hash-checked (PEP 552) ``__pycache__/*.cpython-3XX.pyc``, which never
depends on file times and still notices an edited source. It is never chosen by looking at
the build machine (this interpreter's version, ``python3.X`` on PATH): two machines would
then build different zips from one file, one with bytecode and one without, and a deploy
from the other would replace the function's code for nothing. By default the zip holds
sources only, and :attr:`PackageResult.built` says how it was built either way.

Determinism: entries sorted, dated 1980-01-01, mode 0644, fixed compression level, and
(with bytecode) compiled with ``PYTHONHASHSEED=0``, so the same inputs give the same bytes
and an unchanged pipeline redeploys as a no-op. The pip install, the slow part, is cached under
``cache_dir`` by requirements, platform and Python.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING

from deploy.errors import DeployError
from deploy.pipeline.runtime_checks import local_module
from processors.registry import BUILTIN_PROCESSORS
from sinks.registry import BUILTIN_SINKS
from stream.plugins import PROCESSOR_GROUP, SINK_GROUP

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from stream.plan import Plan

__all__ = [
    "ARCHITECTURES",
    "LEFT_OUT",
    "PackageError",
    "PackageResult",
    "build_package",
    "format_size",
    "native_architecture",
    "stage_code",
]

#: Lambda architecture -> the CPU name in manylinux platform tags.
ARCHITECTURES: dict[str, str] = {"arm64": "aarch64", "x86_64": "x86_64"}

#: Distributions never shipped, and why (normalised names).
LEFT_OUT: dict[str, str] = {
    "boto3": "in the Lambda runtime",
    "botocore": "in the Lambda runtime",
    "s3transfer": "in the Lambda runtime",
    "jmespath": "in the Lambda runtime (a boto3 dependency)",
    "grpcio": "opensearch-py's gRPC transport only; the HTTP client never imports it",
    "opensearch-protobufs": "opensearch-py's gRPC transport only",
    "shardline": "our own packages are copied from source",
    "click": "CLI only",
    "rich": "CLI only",
    "pyyaml": "CLI only: Lambda reads the compiled JSON plan",
}

_OURS = ("processors", "sinks", "stream")
#: Our folders that never run in Lambda: the local event source mapping (ARCHITECTURE.md).
_LOCAL_ONLY = frozenset({("stream", "esm")})
_NEVER_TOP_LEVEL = frozenset({"bin", "deploy", "test", "tests"})
_DIST_INFO_NOISE = frozenset({"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"})
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_CACHE_LAYOUT = 1  # bump when what is stored under a cache key changes
_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_COMPILE = """\
import importlib.util, py_compile, sys
root = sys.argv[1]
mode = py_compile.PycInvalidationMode.CHECKED_HASH
print(sys.implementation.cache_tag)
for rel in sys.stdin.read().splitlines():
    src = root + "/" + rel
    try:
        py_compile.compile(src, importlib.util.cache_from_source(src), rel, True, -1, mode)
    except py_compile.PyCompileError:
        print(rel)
"""


class PackageError(DeployError):
    """The package cannot be built; the message names the cause and the fix."""


@dataclass(frozen=True)
class PackageResult:
    """What :func:`build_package` wrote.

    Attributes:
        path: the zip, ``OUT_DIR/NAME.zip``.
        size: its size in bytes.
        sha256: hex SHA-256 of its bytes (equal for equal inputs).
        files: every entry, sorted.
        bytecode: cache tag of the shipped ``.pyc`` (``cpython-312``); None: sources only.
        distributions: ``name==version`` of every third-party distribution shipped.
        notes: what the operator should know (files that did not compile).
        built: how it was built, for the output: ``sources only`` or ``bytecode cpython-312
            by Python 3.12.3 (/usr/bin/python3.12)``; the zip is a function of the inputs,
            and with bytecode the interpreter is one of them.
    """

    path: Path
    size: int
    sha256: str
    files: tuple[str, ...]
    bytecode: str | None = None
    distributions: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    built: str = "sources only"

    @property
    def code_sha256(self) -> str:
        """The digest as Lambda reports it (``CodeSha256``: base64, not hex)."""
        return base64.b64encode(bytes.fromhex(self.sha256)).decode()


def native_architecture() -> str:
    """This machine's CPU as a Lambda architecture (``arm64`` or ``x86_64``)."""
    machine = platform.machine().lower()
    return "arm64" if machine in {"aarch64", "arm64"} else "x86_64"


def format_size(size: int) -> str:
    """``5242880`` -> ``"5.0 MiB"``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024 or unit == "MiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} MiB"  # pragma: no cover  # the loop always returns


def build_package(
    plan: Plan,
    out_dir: str | Path,
    *,
    architecture: str = "arm64",
    python_version: str = "3.12",
    plugins: Iterable[str] = (),
    cache_dir: str | Path | None = None,
    requirements: Iterable[str] | None = None,
    compile_with: str | None = None,
    log: Callable[[str], None] | None = None,
) -> PackageResult:
    """Write the zip for the compiled ``plan`` and describe it.

    Args:
        plan: the compiled plan (:func:`deploy.pipeline.config.compile_plan`).
        out_dir: the zip file itself when it ends in ``.zip`` (as ``-o`` names a single
            output everywhere else), else a folder for ``NAME.zip``; created if missing.
        architecture: the functions' Lambda architecture, ``arm64`` or ``x86_64``.
        python_version: the Lambda runtime's Python, e.g. ``"3.12"`` for ``python3.12``.
        plugins: further installed distributions to ship; those providing the plan's
            entry points and ``use:`` paths are found without being named.
        cache_dir: where installed dependencies are kept (default ``.shardline/cache``).
        requirements: the run-time requirements; default: shardline's own (without extras).
        compile_with: an interpreter of ``python_version`` to compile bytecode with;
            default: none, sources only (never guessed from this machine, so that the zip
            depends on the arguments alone).
        log: called with a line of progress before each slow step.

    Raises:
        PackageError: bad arguments, a plugin that is not installed, or pip failed.
    """
    say = log or (lambda _line: None)
    if architecture not in ARCHITECTURES:
        msg = f"architecture {architecture!r}: expected one of {', '.join(ARCHITECTURES)}"
        raise PackageError(msg)
    if not re.fullmatch(r"3\.\d+", python_version):
        msg = f"python_version {python_version!r}: expected 3.X, as in the runtime python3.12"
        raise PackageError(msg)
    interpreter = _interpreter(python_version, compile_with)
    notes: list[str] = []
    dists = _plugin_distributions(plan, plugins)
    wanted = list(_default_requirements() if requirements is None else requirements)
    wanted += _step_requirements(plan)
    for dist in dists:
        wanted += [r for r in dist.requires or () if "extra" not in r.partition(";")[2]]
    # Ours and the plugins are copied from this machine: pip must not fetch them by name.
    local = {"shardline"} | {_dist_name(d) for d in dists}
    deps = _dependencies(
        sorted({r for r in wanted if _requirement_name(r) not in local}),
        architecture=architecture,
        python_version=python_version,
        interpreter=interpreter,
        cache_dir=Path(cache_dir if cache_dir is not None else ".shardline/cache"),
        say=say,
        notes=notes,
    )
    with tempfile.TemporaryDirectory(prefix="shardline-package-") as tmp:
        staged = Path(tmp)
        notes += stage_code(plan, staged)
        for dist in dists:
            _copy_distribution(dist, staged, architecture, python_version)
        if interpreter is not None:
            _compile(staged, interpreter, notes)
        entries = _entries(staged)
        for arcname, path in _entries(deps).items():
            if arcname in entries:
                msg = f"{arcname}: shipped by a dependency and by shardline or a plugin"
                raise PackageError(msg)
            entries[arcname] = path
        out = Path(out_dir)
        path = out if out.suffix == ".zip" else out / f"{plan['name']}.zip"
        path.parent.mkdir(parents=True, exist_ok=True)
        digest = _write_zip(path, entries)
    tag = f"cpython-{python_version.replace('.', '')}"
    shipped = sorted(
        _shipped_distributions(deps) | {f"{_dist_name(d)}=={d.version}" for d in dists}
    )
    return PackageResult(
        path=path,
        size=path.stat().st_size,
        sha256=digest,
        files=tuple(sorted(entries)),
        bytecode=None if interpreter is None else tag,
        distributions=tuple(shipped),
        notes=tuple(notes),
        built=(
            "sources only"
            if interpreter is None
            else f"bytecode {tag} by Python {interpreter[1]} ({interpreter[0]})"
        ),
    )


def stage_code(plan: Plan, dest: Path, *, source_root: Path | None = None) -> list[str]:
    """Lay out our part of the function's code in ``dest``, as the zip holds it; return notes.

    That is ``stream/``, ``processors/`` and ``sinks/`` as sources (without ``stream/esm/``),
    the ``use:`` modules beside the pipeline file, and the plan at ``stream/pipeline.json``.
    :func:`build_package` zips this folder with the dependencies; ``python -m bench
    coldstart`` imports the handler from it in a clean interpreter, so that the cold start it
    measures is the one of the code that ships, not of the checkout (whose editable install
    runs its own finder at interpreter start).

    Args:
        plan: the compiled plan.
        dest: the folder to fill (created if missing).
        source_root: take our three packages from this folder (a checkout of another
            revision, for a before/after comparison) instead of from where they import here.
    """
    notes: list[str] = []
    for name in _OURS:
        _copy_package(name, dest, sources_only=True, root=source_root)
    for top, where in sorted(_local_modules(plan).items()):
        files = sorted(where.rglob("*.py")) if where.is_dir() else [where]
        for file in files:
            if "__pycache__" not in file.parts:
                _copy(file, dest / file.relative_to(where.parent))
        notes.append(f"shipped {where} (beside the pipeline file) as module {top!r}")
    (dest / "stream" / "pipeline.json").write_text(
        json.dumps(plan, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return notes


# --- what to ship ----------------------------------------------------------------------


def _default_requirements() -> list[str]:
    try:
        requires = metadata.requires("shardline") or []
    except metadata.PackageNotFoundError:
        msg = "shardline is not installed, so its requirements are unknown: pip install -e ."
        raise PackageError(msg) from None
    return [r for r in requires if "extra" not in r.partition(";")[2]]


#: The libraries of the ``contracts`` extra that each kind of ``schema`` step needs (a
#: registry version may be Avro or JSON: which one is known only when a record names it).
SCHEMA_LIBRARIES = {
    "json_schema": ("jsonschema-rs",),
    "avro": ("fastavro",),
    "registry": ("fastavro", "jsonschema-rs"),
}


def _step_requirements(plan: Plan) -> list[str]:
    """The ``contracts`` extra's requirements that the plan's ``schema`` steps need (none
    when no function has one: the package stays as small as the pipeline allows)."""
    needed = {
        _normalise(library)
        for function in plan["functions"].values()
        for entry in function.get("processors") or ()
        if isinstance(entry.get("schema"), dict)
        for kind, libraries in SCHEMA_LIBRARIES.items()
        if kind in entry["schema"]
        for library in libraries
    }
    if not needed:
        return []
    try:
        requires = metadata.requires("shardline") or []
    except metadata.PackageNotFoundError:
        requires = []
    found = [
        requirement.strip()
        for requirement, _, marker in (r.partition(";") for r in requires)
        if "contracts" in marker and _normalise(_requirement_name(requirement)) in needed
    ]
    named = {_normalise(_requirement_name(r)) for r in found}
    # not installed from this checkout's metadata: the bare names still ship the step
    return found + sorted(needed - named)


def _plugin_distributions(
    plan: Plan, extra: Iterable[str]
) -> list[metadata.Distribution]:
    """The installed distributions that provide the plan's plugins, plus ``extra``."""
    found: dict[str, metadata.Distribution] = {}
    for place, group, name in _entry_point_refs(plan):
        eps = metadata.entry_points(group=group).select(name=name)
        ep = next(iter(eps), None)
        if ep is None:
            msg = (
                f"{place}: no plugin {name!r} in entry-point group {group!r}: install the "
                "package that provides it, then package again"
            )
            raise PackageError(msg)
        if ep.dist is not None:
            found.setdefault(_dist_name(ep.dist), ep.dist)
    for place, path in _use_refs(plan):
        top = path.partition(":")[0].split(".")[0]
        if top in _OURS or top in sys.stdlib_module_names:  # both are there in Lambda
            continue
        names = metadata.packages_distributions().get(top)
        if not names and local_module(top) is not None:
            continue  # beside the pipeline file: shipped as it is (_local_modules)
        if not names:
            msg = (
                f"{place}: module {top!r} of {path!r} belongs to no installed distribution: "
                "make it a package (pyproject.toml) and pip install it, or put it beside "
                "the pipeline file, then package again"
            )
            raise PackageError(msg)
        for dist_name in names:
            found.setdefault(_normalise(dist_name), metadata.distribution(dist_name))
    for dist_name in extra:
        try:
            found.setdefault(_normalise(dist_name), metadata.distribution(dist_name))
        except metadata.PackageNotFoundError:
            msg = f"plugins: distribution {dist_name!r} is not installed: pip install it"
            raise PackageError(msg) from None
    return [d for key, d in sorted(found.items()) if key not in LEFT_OUT]


def _local_modules(plan: Plan) -> dict[str, Path]:
    """The ``use:`` modules that no distribution provides and that sit beside the pipeline
    file (validated in this process): top-level name -> file or package folder."""
    found: dict[str, Path] = {}
    for _place, path in _use_refs(plan):
        top = path.partition(":")[0].split(".")[0]
        if top in _OURS or top in sys.stdlib_module_names:
            continue
        where = local_module(top)
        if where is not None and not metadata.packages_distributions().get(top):
            found[top] = where
    return found


def _entry_point_refs(plan: Plan) -> list[tuple[str, str, str]]:
    refs = []
    for fname, function in plan["functions"].items():
        for i, entry in enumerate(function.get("processors") or ()):
            for kind in entry:
                if kind not in BUILTIN_PROCESSORS and kind not in {"use", "with"}:
                    refs.append((f"functions.{fname}.processors[{i}]", PROCESSOR_GROUP, kind))
    for sname, spec in plan["sinks"].items():
        if "use" not in spec and spec.get("type") not in BUILTIN_SINKS:
            refs.append((f"sinks.{sname}.type", SINK_GROUP, str(spec.get("type"))))
    return refs


def _use_refs(plan: Plan) -> list[tuple[str, str]]:
    refs = []
    for fname, function in plan["functions"].items():
        for i, entry in enumerate(function.get("processors") or ()):
            if "use" in entry:
                refs.append((f"functions.{fname}.processors[{i}].use", str(entry["use"])))
    refs += [(f"sinks.{n}.use", str(s["use"])) for n, s in plan["sinks"].items() if "use" in s]
    return refs


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _dist_name(dist: metadata.Distribution) -> str:
    return _normalise(dist.metadata["Name"])


# --- copying sources -------------------------------------------------------------------


def _copy_package(
    name: str, dest: Path, *, sources_only: bool, root: Path | None = None
) -> list[str]:
    """Copy the importable top-level package or module ``name`` (the package ``root/name``
    when ``root`` is given) into ``dest``; return the paths copied, relative to ``dest``."""
    if root is not None:
        if not (root / name / "__init__.py").is_file():
            msg = f"{root / name} is not a package to copy"
            raise PackageError(msg)
        return _copy_tree(name, [str(root / name)], dest, sources_only=sources_only)
    spec = find_spec(name)
    if spec is None or (spec.origin is None and not spec.submodule_search_locations):
        msg = f"cannot find the module {name!r} to package: is it installed?"
        raise PackageError(msg)
    if spec.submodule_search_locations:
        return _copy_tree(name, spec.submodule_search_locations, dest, sources_only=sources_only)
    assert spec.origin is not None  # checked above
    _copy(Path(spec.origin), dest / Path(spec.origin).name)
    return [Path(spec.origin).name]


def _copy_tree(name: str, locations: Iterable[str], dest: Path, *, sources_only: bool) -> list[str]:
    """Copy the package ``name`` found at ``locations`` into ``dest/name``."""
    copied: list[str] = []
    for location in locations:
        top = Path(location)
        for path in sorted(top.rglob("*")):
            rel = path.relative_to(top)
            if not path.is_file() or "__pycache__" in rel.parts or path.suffix == ".pyc":
                continue
            if sources_only and path.suffix != ".py":
                continue
            if (name, rel.parts[0]) in _LOCAL_ONLY:
                continue
            _copy(path, dest / name / rel)
            copied.append(f"{name}/{rel.as_posix()}")
    return copied


def _copy_distribution(
    dist: metadata.Distribution, dest: Path, architecture: str, python_version: str
) -> None:
    """Copy a plugin distribution's code and a minimal ``dist-info`` (for its entry points).

    An installed wheel lists its files; an editable install does not hold them, so its
    top-level packages are found by import instead.
    """
    files = [f for f in dist.files or () if _is_code(f.parts)]
    copied: list[str] = []
    if files:
        for file in files:
            _copy(Path(str(file.locate())), dest / Path(*file.parts))
            copied.append(str(file))
    else:
        tops = (dist.read_text("top_level.txt") or "").split()
        tops += [ep.module.split(".")[0] for ep in dist.entry_points]
        for top in sorted(set(tops)):
            copied += _copy_package(top, dest, sources_only=False)
    compiled = sorted(p for p in copied if p.endswith((".so", ".pyd")))
    here = (native_architecture(), f"{sys.version_info[0]}.{sys.version_info[1]}")
    if compiled and here != (architecture, python_version):
        msg = (
            f"plugin {dist.metadata['Name']} holds compiled code ({compiled[0]}) built for "
            f"{here[0]}/Python {here[1]}, not {architecture}/Python {python_version}: publish "
            "it as a wheel and pass it in requirements, or package on a matching machine"
        )
        raise PackageError(msg)
    info = dest / f"{_dist_name(dist).replace('-', '_')}-{dist.version}.dist-info"
    for member in ("METADATA", "entry_points.txt", "top_level.txt"):
        text = dist.read_text(member)
        if member == "METADATA" and text is None:
            text = dist.read_text("PKG-INFO")  # an egg-info (legacy editable) install
        if text is not None:
            info.mkdir(parents=True, exist_ok=True)
            (info / member).write_text(text, encoding="utf-8")


def _is_code(parts: tuple[str, ...]) -> bool:
    head = parts[0]
    return not (
        head == ".."
        or head.endswith((".dist-info", ".egg-info", ".pth"))
        or head.startswith("__editable__")
        or head in _NEVER_TOP_LEVEL
        or "__pycache__" in parts
        or parts[-1].endswith(".pyc")
    )


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


# --- dependencies ----------------------------------------------------------------------


def _platforms(architecture: str, python_version: str) -> list[str]:
    """Platform tags the runtime's glibc accepts: 2.34 from python3.12 (Amazon Linux 2023),
    2.26 before (Amazon Linux 2). Newest first: pip prefers earlier tags."""
    cpu = ARCHITECTURES[architecture]
    glibc = 34 if tuple(map(int, python_version.split("."))) >= (3, 12) else 26
    return [f"manylinux_2_{minor}_{cpu}" for minor in range(glibc, 16, -1)] + [
        f"manylinux2014_{cpu}"
    ]


def _dependencies(
    requirements: list[str],
    *,
    architecture: str,
    python_version: str,
    interpreter: tuple[str, str] | None,
    cache_dir: Path,
    say: Callable[[str], None],
    notes: list[str],
) -> Path:
    """The installed, trimmed (and compiled) dependency tree, from the cache or made now."""
    platforms = _platforms(architecture, python_version)
    key_doc = {
        "layout": _CACHE_LAYOUT,
        "requirements": requirements,
        "platforms": platforms,
        "python": python_version,
        "left_out": sorted(LEFT_OUT),
        "compiler": None if interpreter is None else interpreter[1],
    }
    key = hashlib.sha256(json.dumps(key_doc, sort_keys=True).encode()).hexdigest()[:20]
    final = cache_dir / "deps" / f"py{python_version}-{architecture}-{key}"
    if (final / ".complete").is_file():
        notes.extend(json.loads((final / ".complete").read_text())["notes"])
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".tmp-", dir=final.parent))
    try:
        if requirements:
            count = len(requirements)
            say(f"installing {count} requirements for {platforms[-1]}, py{python_version}")
            _pip_install(requirements, platforms, python_version, work / "site")
        else:  # our code alone (shardline dev: moto stores the code, never runs it)
            (work / "site").mkdir()
        _trim(work / "site", requirements)
        own_notes: list[str] = []
        if interpreter is not None:
            say(f"compiling dependencies with Python {interpreter[1]}")
            _compile(work / "site", interpreter, own_notes)
        (work / "site" / ".complete").write_text(
            json.dumps({"key": key_doc, "notes": own_notes}, indent=2)
        )
        try:
            (work / "site").rename(final)
        except OSError:  # another build filled this key meanwhile: keep theirs
            if not (final / ".complete").is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    notes.extend(own_notes)
    return final


def _pip_install(requirements: list[str], platforms: list[str], version: str, dest: Path) -> None:
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "--no-compile", "--no-warn-conflicts", "--no-warn-script-location",
        "--only-binary=:all:", "--implementation", "cp", "--python-version", version,
        *(arg for tag in platforms for arg in ("--platform", tag)),
        "--target", str(dest), *requirements,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-12:])
        msg = (
            f"pip could not install {' '.join(requirements)} for {platforms[-1]} and Python "
            f"{version} (wheels only: a dependency without a wheel for that platform fails "
            f"here; pin a version that has one):\n{tail}"
        )
        raise PackageError(msg)


def _trim(site: Path, roots: list[str]) -> None:
    """Keep what the roots need through ``Requires-Dist``, never entering :data:`LEFT_OUT`;
    drop the rest, pip's bookkeeping and ``bin/``.

    Markers are not evaluated: pip installed a dependency only if its marker held for the
    target, so following every installed one keeps exactly what the target needs.
    """
    installed = {_dist_name(d): d for d in map(metadata.Distribution.at, site.glob("*.dist-info"))}
    keep: set[str] = set()
    todo = [_requirement_name(r) for r in roots]
    while todo:
        name = todo.pop()
        if name in keep or name in LEFT_OUT or name not in installed:
            continue
        keep.add(name)
        todo += [
            _requirement_name(r)
            for r in installed[name].requires or ()
            if "extra" not in r.partition(";")[2]
        ]
    for name, dist in installed.items():
        if name in keep:
            continue
        for file in dist.files or ():
            path = site / Path(*file.parts)
            if file.parts[0] != ".." and path.is_file():
                path.unlink()
    for info in site.glob("*.dist-info"):
        if not info.is_dir() or not any(p.name == "METADATA" for p in info.iterdir()):
            shutil.rmtree(info)
            continue
        for noise in _DIST_INFO_NOISE:
            (info / noise).unlink(missing_ok=True)
    for top in _NEVER_TOP_LEVEL:
        shutil.rmtree(site / top, ignore_errors=True)
    for folder, _subdirs, _files in os.walk(site, topdown=False):
        if Path(folder) != site and not any(Path(folder).iterdir()):
            Path(folder).rmdir()


def _requirement_name(requirement: str) -> str:
    match = _NAME.match(requirement)
    if match is None:
        msg = f"requirement {requirement!r} has no distribution name"
        raise PackageError(msg)
    return _normalise(match.group(1))


def _shipped_distributions(site: Path) -> set[str]:
    dists = map(metadata.Distribution.at, site.glob("*.dist-info"))
    return {f"{_dist_name(d)}=={d.version}" for d in dists}


# --- bytecode --------------------------------------------------------------------------


def _interpreter(version: str, given: str | None) -> tuple[str, str] | None:
    """``(executable, full version)`` of the interpreter given to compile with, or None
    (sources only) when none is given: never one found on this machine by itself."""
    if not given:
        return None
    exe = shutil.which(given) or given
    full = _version_of(exe)
    if full is not None and full.rsplit(".", 1)[0] == version:
        return exe, full
    msg = f"compile_with {given!r} is not a Python {version} interpreter"
    raise PackageError(msg)


def _version_of(exe: str) -> str | None:
    """The CPython version of ``exe`` (``3.12.1``); None if it is no CPython or fails."""
    code = (
        "import sys; print(sys.implementation.name == 'cpython' "
        "and '%d.%d.%d' % sys.version_info[:3])"
    )
    try:
        done = subprocess.run(
            [exe, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    out = done.stdout.strip()
    return out if done.returncode == 0 and re.fullmatch(r"\d+\.\d+\.\d+", out) else None


def _compile(root: Path, interpreter: tuple[str, str], notes: list[str]) -> None:
    """Compile every ``.py`` under ``root`` beside it, with the target's interpreter.

    ``PYTHONHASHSEED=0`` makes the bytes repeatable (set and frozenset constants are
    written in hash order); paths are recorded relative, never the build directory.
    """
    sources = sorted(str(p.relative_to(root)) for p in root.rglob("*.py"))
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(
        [interpreter[0], "-I", "-S", "-c", _COMPILE, str(root)],
        input="\n".join(sources),
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        msg = f"compiling bytecode with {interpreter[0]} failed:\n{done.stderr.strip()}"
        raise PackageError(msg)
    failed = done.stdout.split()[1:]
    if failed:
        shown = ", ".join(failed[:3]) + (f" and {len(failed) - 3} more" if len(failed) > 3 else "")
        notes.append(
            f"{len(failed)} files do not compile with Python {interpreter[1]} and ship as "
            f"source only (never imported, or the import fails there too): {shown}"
        )


# --- the zip ---------------------------------------------------------------------------


def _entries(root: Path) -> dict[str, Path]:
    return {
        p.relative_to(root).as_posix(): p
        for p in root.rglob("*")
        if p.is_file() and p.name != ".complete"
    }


def _write_zip(path: Path, entries: Mapping[str, Path]) -> str:
    """Write the entries sorted, with fixed times and modes; return the hex SHA-256."""
    partial = path.with_name(f".{path.name}.partial")
    with zipfile.ZipFile(partial, "w") as zf:
        for arcname in sorted(entries):
            info = zipfile.ZipInfo(arcname, date_time=_ZIP_TIME)
            info.create_system = 3  # Unix, so that the mode below is honoured
            info.external_attr = 0o100644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, entries[arcname].read_bytes(), compresslevel=6)
    os.replace(partial, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()
