"""The Lambda zip (deploy.aws.package, ``shardline package``): what it holds, that it runs in a
clean interpreter, that it is built for the target, and that it is the same bytes each time.

Dependencies come from pip once per cache key; the cache lives in pytest's cache directory,
so only the first session on a machine waits for the registry.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner

from deploy.aws.package import (
    PackageError,
    PackageResult,
    build_package,
    native_architecture,
    stage_code,
)
from deploy.cli import main
from deploy.pipeline.config import load_plan_from_file
from stream import plugins
from stream.testing import EventFactory

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parents[2]
NATIVE_ARCH = native_architecture()
NATIVE_PY = f"{sys.version_info.major}.{sys.version_info.minor}"
ELF_MACHINE = {"arm64": 183, "x86_64": 62}  # e_machine: EM_AARCH64, EM_X86_64

PIPELINE = """\
name: packaged
stream: {name: packaged-events}
sinks:
  out: {type: stdout}
  nowhere: {type: discard}
functions:
  main:
    processors:
      - filter:
          expr: "amount > `0`"
      - enrich:
          set: {packaged: true}
      - route:
          - when: {kind: [keep]}
            to: [out]
          - default: [nowhere]
"""

MASKED = """\
name: masked
stream: {name: users}
sinks:
  out: {type: stdout}
functions:
  mask-emails:
    processors:
      - mask: {fields: [email], keep: 2}
    route: [out]
"""

# What the Lambda runtime brings at /var/runtime: boto3 and its dependencies.
RUNTIME_DISTS = ("boto3", "botocore", "s3transfer", "jmespath", "python-dateutil", "urllib3", "six")

# Runs in `python -I -S`: no site-packages, no environment; the path is the package (as
# /var/task) and then the runtime's boto3 (as /var/runtime), in Lambda's order.
RUN_HANDLER = """\
import importlib, json, sys
pkg, runtime, event_file, report_file = sys.argv[1:5]
sys.path[:0] = [pkg, runtime]
from stream import lambda_handler
with open(event_file) as fh:
    response = lambda_handler.handler(json.load(fh), None)
import boto3
boto3.session.Session().client("s3", region_name="us-east-1")
where = {}
for name in ("orjson", "opensearchpy", "aws_kinesis_agg", "google.protobuf", "urllib3",
             "boto3", "botocore", "jmespath", "deploy", "click", "yaml", "rich", "grpc"):
    try:
        where[name] = importlib.import_module(name).__file__
    except ImportError:
        where[name] = None
with open(report_file, "w") as fh:
    json.dump({"response": response, "where": where}, fh)
"""


@dataclass(frozen=True)
class Built:
    file: Path
    plan: dict[str, Any]
    result: PackageResult


def _python(version: str) -> str | None:
    """An interpreter of ``version`` to compile bytecode with, if this machine has one."""
    found = [shutil.which(f"python{version}")]
    found += sorted(map(str, Path.home().glob(f".pyenv/versions/{version}.*/bin/python{version}")))
    for exe in filter(None, found):
        code = "import sys; print('%d.%d' % sys.version_info[:2])"
        done = subprocess.run(
            [exe, "-c", code], capture_output=True, text=True, check=False, timeout=600
        )
        if done.returncode == 0 and done.stdout.strip() == version:
            return exe
    return None


@pytest.fixture(scope="session")
def cache_dir(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = getattr(pytestconfig, "cache", None)  # absent with -p no:cacheprovider
    if cache is not None:
        return Path(cache.mkdir("shardline-package"))
    return tmp_path_factory.mktemp("package-cache")


@pytest.fixture(scope="session")
def pipeline_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pipeline") / "pipeline.yaml"
    path.write_text(PIPELINE)
    return path


@pytest.fixture(scope="session")
def native(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path, pipeline_file: Path) -> Built:
    """Built for this machine with bytecode of this interpreter (asked for), so that it can
    be run and its .pyc used."""
    plan = load_plan_from_file(pipeline_file)
    out = tmp_path_factory.mktemp("native")
    result = build_package(
        plan, out, architecture=NATIVE_ARCH, python_version=NATIVE_PY, cache_dir=cache_dir,
        compile_with=sys.executable,
    )  # fmt: skip
    return Built(pipeline_file, plan, result)


@pytest.fixture(scope="session")
def arm(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path, pipeline_file: Path) -> Built:
    plan = load_plan_from_file(pipeline_file)
    out = tmp_path_factory.mktemp("arm64")
    result = build_package(
        plan,
        out,
        architecture="arm64",
        python_version="3.12",
        cache_dir=cache_dir,
        compile_with=_python("3.12"),
    )
    return Built(pipeline_file, plan, result)


@pytest.fixture(scope="session")
def runtime_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding only boto3 and its dependencies, linked from this environment."""
    folder = tmp_path_factory.mktemp("var-runtime")
    for name in RUNTIME_DISTS:
        dist = metadata.distribution(name)
        tops = {f.parts[0] for f in dist.files or () if f.parts[0] not in {"..", "bin"}}
        for top in tops:
            target = Path(str(dist.locate_file(top)))
            if target.exists() and not (folder / top).exists():
                (folder / top).symlink_to(target)
    return folder


def run_handler(zip_path: Path, runtime: Path, event: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """Unpack the zip and run its handler on ``event`` in a clean interpreter.

    Returns the report (response, where modules came from), the handler's stdout and
    whether running wrote any file into the unpacked folder.
    """
    task = tmp / "task"
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(task)
    before = sorted(p for p in task.rglob("*"))
    (tmp / "event.json").write_text(json.dumps(event))
    env = {"PATH": os.environ.get("PATH", ""), "AWS_LAMBDA_FUNCTION_NAME": "packaged-main"}
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", RUN_HANDLER, str(task), str(runtime),
         str(tmp / "event.json"), str(tmp / "report.json")],
        capture_output=True, text=True, env=env, cwd=tmp, check=False, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads((tmp / "report.json").read_text())
    report["stdout"] = done.stdout
    report["written"] = sorted(set(task.rglob("*")) - set(before))
    report["task"] = str(task)
    return report


def zip_bytes(result: PackageResult) -> bytes:
    return result.path.read_bytes()


@pytest.fixture(scope="session")
def native_run(native: Built, runtime_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The native zip's handler, run once on plain records and a KPL aggregate."""
    f = EventFactory()
    event = f.event(
        [
            f.record({"kind": "keep", "amount": 5}, "a"),
            f.record({"kind": "drop", "amount": 5}, "b"),
            f.record({"kind": "keep", "amount": 0}, "c"),
            f.aggregate([("d", {"kind": "keep", "amount": 1, "n": 1}), ("e", {"n": 2})]),
        ]
    )
    return run_handler(native.result.path, runtime_dir, event, tmp_path_factory.mktemp("run"))


def records_only(docs: Any) -> list[Any]:
    """The stdout sink's records, without the EMF metrics and JSON log lines beside them."""
    return [d for d in docs if not (isinstance(d, dict) and ("_aws" in d or "level" in d))]


class TestNativeBuild:
    def test_the_unpacked_zip_runs_the_handler_with_only_boto3_beside_it(self, native_run):
        assert native_run["response"] == {"batchItemFailures": []}
        docs = [json.loads(line) for line in native_run["stdout"].splitlines()]
        assert any("_aws" in d for d in docs)  # EMF metrics, as in Lambda
        lines = records_only(docs)
        assert lines == [
            {"kind": "keep", "amount": 5, "packaged": True},
            {"kind": "keep", "amount": 1, "n": 1, "packaged": True},
        ]

    def test_dependencies_come_from_the_zip_and_boto3_from_the_runtime(
        self, native_run, runtime_dir
    ):
        where, task = native_run["where"], native_run["task"]
        for name in ("orjson", "opensearchpy", "aws_kinesis_agg", "google.protobuf", "urllib3"):
            assert where[name].startswith(task), (name, where[name])
        for name in ("boto3", "botocore", "jmespath"):
            assert where[name].startswith(str(runtime_dir)), (name, where[name])
        for name in ("deploy", "click", "yaml", "rich", "grpc"):
            assert where[name] is None, (name, where[name])

    def test_the_shipped_bytecode_is_used_so_nothing_is_written_at_run_time(self, native_run):
        assert native_run["written"] == []

    def test_every_module_has_hash_checked_bytecode_of_the_target_python(self, native):
        tag = sys.implementation.cache_tag
        assert native.result.bytecode == tag
        names = set(native.result.files)
        sources = [n for n in names if n.endswith(".py")]
        assert any(n.startswith("stream/") for n in sources)
        missing = [
            n for n in sources if importlib.util.cache_from_source(n) not in names
        ]  # fmt: skip
        assert missing == []
        with zipfile.ZipFile(native.result.path) as zf:
            for name in (n for n in names if n.endswith(".pyc")):
                assert name.endswith(f".{tag}.pyc"), name
                head = zf.read(name)[:8]
                assert head[:4] == importlib.util.MAGIC_NUMBER, name
                assert int.from_bytes(head[4:8], "little") == 0b11, name  # hash-based, checked

    def test_it_holds_our_code_the_plan_and_the_run_time_dependencies(self, native):
        names = set(native.result.files)
        assert {"stream/lambda_handler.py", "processors/chain.py", "sinks/stdout.py"} <= names
        assert {"orjson/__init__.py", "aws_kinesis_agg/__init__.py"} <= names
        with zipfile.ZipFile(native.result.path) as zf:
            assert json.loads(zf.read("stream/pipeline.json")) == native.plan
        dists = {d.split("==")[0] for d in native.result.distributions}
        assert {"orjson", "aws-kinesis-agg", "opensearch-py", "protobuf"} <= dists

    def test_boto3_deploy_the_cli_libraries_and_tests_are_left_out(self, native):
        tops = {name.split("/")[0] for name in native.result.files}
        left_out = {"boto3", "botocore", "s3transfer", "jmespath", "deploy", "click", "rich",
                    "yaml", "_yaml", "tests", "bin", "grpc"}  # fmt: skip
        assert tops & left_out == set()
        infos = {t.split("-")[0].lower() for t in tops if t.endswith(".dist-info")}
        assert infos & {"boto3", "botocore", "s3transfer", "jmespath", "click", "pyyaml"} == set()
        noise = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}
        assert [n for n in native.result.files if n.rsplit("/", 1)[-1] in noise] == []

    def test_entries_are_sorted_files_with_fixed_times_and_modes(self, native):
        with zipfile.ZipFile(native.result.path) as zf:
            infos = zf.infolist()
        names = [i.filename for i in infos]
        assert names == sorted(names)
        assert not any(i.is_dir() for i in infos)
        assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
        assert {(i.create_system, i.external_attr >> 16) for i in infos} == {(3, 0o100644)}

    def test_the_result_describes_the_file(self, native):
        result = native.result
        data = zip_bytes(result)
        assert result.path.name == "packaged.zip"
        assert result.size == len(data) > 0
        assert result.sha256 == hashlib.sha256(data).hexdigest()
        assert base64.b64decode(result.code_sha256) == hashlib.sha256(data).digest()
        with zipfile.ZipFile(result.path) as zf:
            assert result.files == tuple(zf.namelist())

    def test_a_changed_plan_gives_other_bytes(self, native, cache_dir, tmp_path):
        plan = copy.deepcopy(native.plan)
        plan["functions"]["main"]["batch"]["size"] += 1
        changed = build_package(
            plan, tmp_path, architecture=NATIVE_ARCH, python_version=NATIVE_PY,
            cache_dir=cache_dir, compile_with=sys.executable,
        )  # fmt: skip
        assert changed.sha256 != native.result.sha256

    def test_the_result_says_it_was_built_with_this_interpreters_bytecode(self, native):
        full = ".".join(map(str, sys.version_info[:3]))
        assert native.result.built == (
            f"bytecode {sys.implementation.cache_tag} by Python {full} ({sys.executable})"
        )


class TestDefaultBuild:
    """Without --compile-with the zip is a function of its inputs only: sources only, even
    where an interpreter of the target version is at hand (this one, or one on PATH)."""

    def test_sources_only_even_when_this_interpreter_matches_the_target(
        self, native, cache_dir, tmp_path, monkeypatch
    ):
        plain = build_package(
            native.plan, tmp_path / "a", architecture=NATIVE_ARCH, python_version=NATIVE_PY,
            cache_dir=cache_dir,
        )  # fmt: skip
        assert plain.bytecode is None
        assert plain.built == "sources only"
        assert not [n for n in plain.files if n.endswith(".pyc") or "__pycache__" in n]
        monkeypatch.setenv("PATH", "")  # no python3.X to find: the same bytes regardless
        again = build_package(
            native.plan, tmp_path / "b", architecture=NATIVE_ARCH, python_version=NATIVE_PY,
            cache_dir=cache_dir,
        )  # fmt: skip
        assert again.sha256 == plain.sha256
        assert plain.sha256 != native.result.sha256  # bytecode is an input when asked for


class TestArm64Build:
    def test_native_code_is_aarch64_only(self, arm):
        with zipfile.ZipFile(arm.result.path) as zf:
            libraries = [n for n in zf.namelist() if n.endswith(".so") or ".so." in n]
            assert any(n.startswith("orjson/") for n in libraries)
            for name in libraries:
                head = zf.read(name)[:20]
                assert head[:4] == b"\x7fELF", name
                assert head[5] == 1, name  # little-endian
                assert int.from_bytes(head[18:20], "little") == ELF_MACHINE["arm64"], name

    def test_every_wheel_shipped_is_for_aarch64_or_any_platform(self, arm):
        with zipfile.ZipFile(arm.result.path) as zf:
            wheels = [n for n in zf.namelist() if n.endswith(".dist-info/WHEEL")]
            tags = [
                line.split(":", 1)[1].strip()
                for name in wheels
                for line in zf.read(name).decode().splitlines()
                if line.startswith("Tag:")
            ]
        assert len(wheels) >= 5
        assert tags
        assert [t for t in tags if not t.endswith(("-any", "aarch64"))] == []
        assert any(t.startswith("cp312-") for t in tags)  # built for the runtime's Python

    def test_no_bytecode_of_another_python_is_shipped(self, arm):
        pycs = [n for n in arm.result.files if n.endswith(".pyc")]
        if arm.result.bytecode is None:  # no Python 3.12 on this machine: sources only
            assert pycs == []
            assert any("sources only" in note for note in arm.result.notes)
            return
        assert arm.result.bytecode == "cpython-312"
        assert pycs
        assert all(n.endswith(".cpython-312.pyc") for n in pycs)
        with zipfile.ZipFile(arm.result.path) as zf:
            magics = {zf.read(n)[:4] for n in pycs}
        assert len(magics) == 1
        assert importlib.util.MAGIC_NUMBER not in magics


@pytest.fixture
def plugin_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request) -> Iterator[Path]:
    """The example plugin as an installed distribution: its package and dist-info on
    sys.path. ``editable``: the RECORD lists no code, as with ``pip install -e``, so the
    code must be found by import."""
    editable = getattr(request, "param", False)
    site = tmp_path / ("site-editable" if editable else "site")
    shutil.copytree(ROOT / "examples" / "plugin" / "shardline_mask", site / "shardline_mask")
    info = site / "shardline_mask-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: shardline-mask\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[shardline.processors]\nmask = shardline_mask:Mask\n")
    (info / "top_level.txt").write_text("shardline_mask\n")
    record = [
        "shardline_mask-0.1.0.dist-info/METADATA,,",
        "shardline_mask-0.1.0.dist-info/RECORD,,",
    ]
    if not editable:
        record.append("shardline_mask/__init__.py,,")
    (info / "RECORD").write_text("\n".join(record) + "\n")
    monkeypatch.syspath_prepend(str(site))
    plugins._group.cache_clear()
    yield site
    plugins._group.cache_clear()
    sys.modules.pop("shardline_mask", None)


class TestPlugins:
    @pytest.mark.parametrize("plugin_site", [False, True], ids=["wheel", "editable"], indirect=True)
    def test_a_plugin_from_an_entry_point_is_packaged_with_its_distribution_and_runs(
        self, plugin_site, cache_dir, runtime_dir, tmp_path
    ):
        (tmp_path / "masked.yaml").write_text(MASKED)
        plan = load_plan_from_file(tmp_path / "masked.yaml")
        result = build_package(
            plan, tmp_path / "out", architecture=NATIVE_ARCH, python_version=NATIVE_PY,
            cache_dir=cache_dir, compile_with=sys.executable,
        )  # fmt: skip
        names = set(result.files)
        assert "shardline_mask/__init__.py" in names
        assert f"shardline_mask/__pycache__/__init__.{sys.implementation.cache_tag}.pyc" in names
        assert "shardline_mask-0.1.0.dist-info/entry_points.txt" in names
        assert "shardline_mask-0.1.0.dist-info/RECORD" not in names
        assert "shardline-mask==0.1.0" in result.distributions
        if plugin_site.name == "site-editable":
            return  # the same files as from a wheel, which the other case runs
        f = EventFactory()
        event = f.batch([("u1", {"email": "ada@example.com"}), ("u2", {"email": "x"})])
        report = run_handler(result.path, runtime_dir, event, tmp_path / "run")
        assert report["response"] == {"batchItemFailures": []}
        lines = records_only(json.loads(line) for line in report["stdout"].splitlines())
        assert lines == [{"email": "ad*************"}, {"email": "x"}]

    def test_a_plugin_that_is_not_installed_is_named_with_its_place(self, native, tmp_path):
        plan = copy.deepcopy(native.plan)
        plan["functions"]["main"]["processors"].insert(0, {"nope": {}})
        with pytest.raises(
            PackageError, match=r"functions\.main\.processors\[0\]: no plugin 'nope'"
        ):
            build_package(plan, tmp_path, architecture=NATIVE_ARCH, python_version=NATIVE_PY)
        assert list(tmp_path.iterdir()) == []

    def test_a_use_path_outside_any_distribution_is_refused_with_the_fix(
        self, native, tmp_path, monkeypatch
    ):
        (tmp_path / "loose_module.py").write_text("class Step:\n    pass\n")
        monkeypatch.syspath_prepend(str(tmp_path))
        plan = copy.deepcopy(native.plan)
        plan["functions"]["main"]["processors"].insert(0, {"use": "loose_module:Step", "with": {}})
        with pytest.raises(PackageError, match="belongs to no installed distribution: make it"):
            build_package(
                plan, tmp_path / "out", architecture=NATIVE_ARCH, python_version=NATIVE_PY
            )


class TestStageCode:
    """The code folder the zip holds of ours, which ``bench coldstart`` also imports from."""

    def test_it_holds_our_three_packages_and_the_plan_without_the_local_mapping(
        self, tmp_path: Path, pipeline_file: Path
    ) -> None:
        plan = load_plan_from_file(pipeline_file)
        dest = tmp_path / "task"
        assert stage_code(plan, dest) == []
        assert (dest / "stream" / "lambda_handler.py").is_file()
        assert (dest / "processors" / "chain.py").is_file()
        assert (dest / "sinks" / "stdout.py").is_file()
        assert not (dest / "stream" / "esm").exists()
        assert not list(dest.rglob("*.pyc"))
        assert json.loads((dest / "stream" / "pipeline.json").read_text()) == plan

    def test_a_source_root_gives_its_own_packages(
        self, tmp_path: Path, pipeline_file: Path
    ) -> None:
        """Another revision's checkout: its files are copied, not the importable ones."""
        src = tmp_path / "src"
        for name in ("stream", "processors", "sinks"):
            (src / name).mkdir(parents=True)
            (src / name / "__init__.py").write_text(f"WHICH = {name!r}\n")
        (src / "stream" / "esm").mkdir()
        (src / "stream" / "esm" / "mapping.py").write_text("")
        plan = load_plan_from_file(pipeline_file)
        dest = tmp_path / "task"
        stage_code(plan, dest, source_root=src)
        assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*.py")) == [
            "processors/__init__.py",
            "sinks/__init__.py",
            "stream/__init__.py",
        ]
        assert (dest / "stream" / "__init__.py").read_text() == "WHICH = 'stream'\n"

    def test_a_source_root_without_the_packages_is_refused(
        self, tmp_path: Path, pipeline_file: Path
    ) -> None:
        plan = load_plan_from_file(pipeline_file)
        with pytest.raises(PackageError, match="not a package"):
            stage_code(plan, tmp_path / "task", source_root=tmp_path / "empty")


class TestArguments:
    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"architecture": "sparc"}, "expected one of arm64, x86_64"),
            ({"python_version": "3"}, "expected 3.X"),
            ({"compile_with": sys.executable, "python_version": "3.99"}, "not a Python 3.99"),
        ],
    )
    def test_bad_arguments_are_refused_before_any_work(self, native, tmp_path, kwargs, message):
        with pytest.raises(PackageError, match=message):
            build_package(native.plan, tmp_path / "out", **kwargs)
        assert not (tmp_path / "out").exists()


class TestCommand:
    def test_a_second_build_in_another_process_gives_the_same_bytes_and_prints_the_size(
        self, native, cache_dir, tmp_path
    ):
        done = subprocess.run(
            [sys.executable, "-m", "deploy.cli", "package", str(native.file), "-o",
             str(tmp_path), "--architecture", NATIVE_ARCH, "--python-version", NATIVE_PY,
             "--cache-dir", str(cache_dir), "--compile-with", sys.executable],
            capture_output=True, text=True, check=False, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        built = tmp_path / "packaged.zip"
        assert built.read_bytes() == zip_bytes(native.result)  # another process, hash seed
        size = native.result.size
        assert f"{built}: " in done.stdout
        assert f"({size} bytes)" in done.stdout
        assert native.result.sha256 in done.stdout
        assert f", {native.result.built}, " in done.stdout

    def test_the_output_says_sources_only_by_default(self, native, cache_dir, tmp_path):
        result = CliRunner().invoke(
            main,
            ["package", str(native.file), "-o", str(tmp_path), "--architecture", NATIVE_ARCH,
             "--python-version", NATIVE_PY, "--cache-dir", str(cache_dir)],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert f", python{NATIVE_PY}, sources only, sha256 " in result.stdout

    def test_o_naming_a_zip_writes_that_file(self, native, cache_dir, tmp_path):
        """-o names the output file, as for compile, event and report; a folder still works."""
        target = tmp_path / "dist" / "fn.zip"
        result = CliRunner().invoke(
            main,
            ["package", str(native.file), "-o", str(target), "--architecture", NATIVE_ARCH,
             "--python-version", NATIVE_PY, "--cache-dir", str(cache_dir),
             "--compile-with", sys.executable],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith(f"{target}: ")
        assert target.read_bytes() == zip_bytes(native.result)
        assert sorted(p.name for p in target.parent.iterdir()) == ["fn.zip"]

    def test_an_unknown_architecture_is_a_usage_error(self, native, tmp_path):
        result = CliRunner().invoke(
            main, ["package", str(native.file), "-o", str(tmp_path), "--architecture", "sparc"]
        )
        assert result.exit_code == 2
        assert "'sparc' is not one of 'arm64', 'x86_64'" in result.output

    def test_an_invalid_file_prints_its_problems_and_exits_2(self, tmp_path):
        (tmp_path / "bad.yaml").write_text(PIPELINE.replace("name: packaged", "name: a b"))
        out = tmp_path / "out"
        result = CliRunner().invoke(main, ["package", str(tmp_path / "bad.yaml"), "-o", str(out)])
        assert result.exit_code == 2
        assert "bad.yaml:1: name:" in result.output
        assert not out.exists()
