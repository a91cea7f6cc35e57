"""What validation asks the runtime: patterns, expressions and the plugin registry.

The pipeline file is checked with the very code that will run it (``processors.match``,
``processors.expr``, ``processors.registry``), so "valid" here means "compiles there". This
module adapts their APIs to ``(path, message)`` pairs and one-line messages.
"""

from __future__ import annotations

import re
from difflib import get_close_matches
from typing import TYPE_CHECKING, Any, cast

from processors.expr import ExprError, compile_expr, compile_predicate
from processors.match import validate_pattern
from processors.registry import load_object, processor_names, sink_plugin_names

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path as Path_

    from deploy.pipeline.problems import Path
    from stream.plan import ProcessorEntry, SinkSpec

_PATH_PART = re.compile(r"\[(\d+)\]|([^.\[\]]+)")


def pattern_problems(pattern: Any) -> list[tuple[Path, str]]:
    """Problems of a match pattern, each with its path inside the pattern."""
    problems = [(_as_path(e.path), _one_line(str(e.message))) for e in validate_pattern(pattern)]
    if not problems:
        problem = _build_problem({"match": pattern})
        if problem is not None:
            problems.append(((), problem))
    return problems


def _build_problem(args: dict[str, Any]) -> str | None:
    """Why a filter step with ``args`` would not build as the runtime builds it (the step and
    its fused, generated loop), on one line; None when it builds. So that "valid" means "the
    function starts", whatever the code generators make of the condition."""
    from processors.chain import Chain, Step  # noqa: PLC0415
    from processors.filter import Filter  # noqa: PLC0415

    try:
        Chain([Step.of("filter", Filter(**args))])
    except Exception as exc:  # any failure at start is the problem to report
        return _one_line(f"does not build: {type(exc).__name__}: {exc}")
    return None


def expr_problem(source: str) -> str | None:
    """Why a JMESPath expression does not compile, on one line; None when it does.

    JMESPath itself reports an unknown function or a wrong argument count only when a
    record is evaluated; in a pipeline file that would dead-letter every record, so they
    are caught here, at validation.
    """
    try:
        compile_expr(source)
        compile_predicate(source)  # what filters and route conditions build at start
    except ExprError as exc:
        return _one_line(str(exc))
    from jmespath.functions import Functions  # noqa: PLC0415  # a dependency of boto3
    from jmespath.parser import Parser  # noqa: PLC0415

    table = Functions().FUNCTION_TABLE
    stack = [Parser().parse(source).parsed]
    while stack:
        node = stack.pop()
        # a slice's children are its start, stop and step: ints or None, not nodes
        stack.extend(child for child in node.get("children", ()) if isinstance(child, dict))
        if node.get("type") == "slice" and node["children"][2] == 0:
            return f"a slice step cannot be zero (every record would fail) in {source!r}"
        if node.get("type") != "function_expression":
            continue
        name, given = node["value"], len(node.get("children", ()))
        spec = table.get(name)
        if spec is None:
            close = get_close_matches(name, table, n=1)
            hint = f" (did you mean {close[0]}()?)" if close else ""
            return f"unknown JMESPath function {name}(){hint} in {source!r}"
        signature = spec["signature"]
        variadic = any(arg.get("variadic") for arg in signature)
        if given < len(signature) if variadic else given != len(signature):
            expected = f"at least {len(signature)}" if variadic else str(len(signature))
            return f"JMESPath function {name}() takes {expected} arguments, got {given}"
    return _build_problem({"expr": source})


def drops_every_record(step: Any) -> bool:
    """Whether a plugin step's code returns ``None`` on every path that returns: no
    ``return`` with a value anywhere (a ``__call__`` that edits the record in place and
    forgets ``return record``). ``None`` means "dropped", so such a step drops every record
    it does not fail, silently: the function reports success and the sinks get nothing.

    Read from the bytecode, conservatively: a return reached by a jump (``return x or
    None``), a generator, or a callable without Python code counts as returning a value;
    code with no return at all (it always raises: every record fails, none is dropped) is
    not refused.
    """
    import dis  # noqa: PLC0415  # validation only, never the handler
    import inspect  # noqa: PLC0415

    run = getattr(step.run, "__func__", step.run)  # a bound __call__: its function
    code = getattr(run, "__code__", None)
    flags = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR
    if code is None or code.co_flags & flags:
        return False
    previous = None
    returns = False  # code that only raises returns nothing: it fails records, drops none
    for ins in dis.get_instructions(code):
        if ins.opname == "RETURN_CONST":  # 3.12, 3.13
            returns = True
            if ins.argval is not None:
                return False
        elif ins.opname == "RETURN_VALUE":
            returns = True
            bare = (
                not ins.is_jump_target
                and previous is not None
                and previous.opname == "LOAD_CONST"
                and previous.argval is None
            )
            if not bare:
                return False
        previous = ins
    return returns


def processor_plugin_names() -> set[str]:
    """Built-in processor names plus those of installed plugins."""
    return set(processor_names())


def aggregation_names() -> set[str]:
    """Built-in aggregation names of the window step plus those of installed plugins."""
    from processors.aggregations import aggregation_names as names  # noqa: PLC0415

    return names()


def sink_plugin_types() -> set[str]:
    """Sink types registered by installed plugins (the built-ins are checked in schema)."""
    return set(sink_plugin_names())


def sink_option_problems(spec: Mapping[str, Any]) -> list[tuple[Path, str]]:
    """Problems of a plugin sink's options against what its class declares
    (``option_types``, ``required_options``; see :class:`sinks.base.Sink`), each with its
    path inside the sink's mapping. None when the class declares nothing or does not load
    (the caller reports a sink type that is not installed)."""
    from sinks.registry import sink_class, sink_options  # noqa: PLC0415

    try:
        cls = sink_class(cast("SinkSpec", spec))  # the file's mapping: a plugin's spec
    except ValueError:  # PluginError: reported where the type is checked
        return []
    declared = getattr(cls, "option_types", None)
    if declared is None:
        return []
    options = sink_options(spec)
    kind = spec.get("type") or spec.get("use")
    known = ", ".join(sorted(declared)) or "none"
    problems: list[tuple[Path, str]] = [
        ((key,), f"unknown option for sink type {kind!r} (it takes: {known})"
         + (f" — did you mean {close[0]!r}?" if (close := get_close_matches(key, declared, 1))
            else ""))
        for key in options
        if key not in declared
    ]  # fmt: skip
    for key, expected in declared.items():
        if key not in options:
            if key in getattr(cls, "required_options", ()):
                problems.append(((), f"sink type {kind!r} requires option {key!r}"))
            continue
        value = options[key]
        types = expected if isinstance(expected, tuple) else (expected,)
        bool_for_number = isinstance(value, bool) and bool not in types
        if not isinstance(value, types) or bool_for_number:
            names = " or ".join(t.__name__ for t in types)
            problems.append(((key,), f"expected {names}, got {type(value).__name__} {value!r}"))
    return problems


def plugin_iam_statements(sink: str, spec: SinkSpec) -> list[dict[str, Any]]:
    """The IAM statements a plugin sink's class asks for (:meth:`sinks.base.Sink.
    iam_statements`), checked: each a mapping with ``Action`` and ``Resource``, ``Effect``
    ``Allow`` when not given; ``[]`` for a class without the hook.

    Raises:
        ValueError: a statement the class returned is not one IAM would take; the message
            names the sink and the class.
    """
    from sinks.registry import sink_class, sink_options  # noqa: PLC0415

    cls = sink_class(spec)
    return _asked_statements(f"sink {sink!r}", cls, sink_options(spec))


def processor_iam_statements(entry: ProcessorEntry) -> list[dict[str, Any]]:
    """The IAM statements a plugin processor asks for, checked as a sink's are: its class
    (or function) may define ``iam_statements(options)``, a class method called with the
    step's arguments (``with:`` for ``use:``), as :meth:`sinks.base.Sink.iam_statements`.
    ``[]`` for a built-in (the template knows what those need) or a plugin without it.

    Raises:
        ValueError: the plugin does not load (``PluginError``), or a statement is not one
            IAM would take.
    """
    from processors.registry import plugin_target  # noqa: PLC0415

    found = plugin_target(entry)
    if found is None:
        return []
    target, args = found
    name = entry.get("use") or next(iter(entry))
    return _asked_statements(f"processor {name!r}", target, args if args is not None else {})


def _asked_statements(what: str, owner: Any, options: Any) -> list[dict[str, Any]]:
    """What ``owner.iam_statements(options)`` returns, each checked and with ``Effect``."""
    hook = getattr(owner, "iam_statements", None)
    if hook is None:
        return []
    try:
        asked = list(hook(options) or ())
    except ValueError:
        raise
    except Exception as exc:  # the plugin's bug: reported at its step or sink, not a crash
        name = getattr(owner, "__name__", owner)
        msg = f"{what}: {name}.iam_statements({options!r}) raised {exc!r}"
        raise ValueError(msg) from exc
    statements = []
    for n, raw in enumerate(asked):
        where = f"{what}: {getattr(owner, '__name__', owner)}.iam_statements()[{n}]"
        if not isinstance(raw, dict) or not raw.get("Action") or not raw.get("Resource"):
            msg = f"{where} is {raw!r}; a statement is a mapping with Action and Resource"
            raise ValueError(msg)
        if raw.get("Effect", "Allow") != "Allow":
            msg = f"{where}: Effect {raw['Effect']!r}; a function's role only gets Allow statements"
            raise ValueError(msg)
        statements.append({"Effect": "Allow", **raw})
    return statements


#: shardline's own top-level packages: a module of the user's with one of these names would
#: replace ours wherever its folder comes first on the import path (a Lambda runtime's).
OWN_PACKAGES = ("deploy", "processors", "sinks", "stream")
#: Folders of pipeline files whose modules a ``use:`` names, in the order they were met.
_LOCAL_FOLDERS: list[Path_] = []


def _module_in(folder: Path_, top: str) -> Path_ | None:
    """``folder/top.py`` or the package ``folder/top/``, if there is one."""
    module, package = folder / f"{top}.py", folder / top
    if module.is_file():
        return module
    return package if (package / "__init__.py").is_file() else None


def _clash(folder: Path_, name: str) -> Path_ | None:
    """``folder/name.py`` or any folder ``folder/name`` (a namespace package imports too)."""
    module, package = folder / f"{name}.py", folder / name
    return module if module.is_file() else package if package.is_dir() else None


def local_module(top: str) -> Path_ | None:
    """The file or package folder of module ``top`` beside a pipeline file that this
    process validated and whose ``use:`` named it (what ``package`` ships), else None."""
    for folder in _LOCAL_FOLDERS:
        found = _module_in(folder, top)
        if found is not None:
            return found
    return None


def use_pipeline_folder(import_path: str, pipeline_file: str) -> str | None:
    """Make a ``use:`` module that sits beside the pipeline file importable; return why
    it cannot be, on one line, or None.

    The folder goes at the end of ``sys.path`` (after shardline's packages and everything
    installed, so it never shadows them) and of ``PYTHONPATH`` (so that the Lambda
    runtimes ``run`` and ``dev`` start import it too; their path puts it before installed
    packages, which is why a folder holding a module named like one of
    :data:`OWN_PACKAGES` is refused). Nothing is done for a module not found beside the file.
    """
    import os  # noqa: PLC0415
    import sys  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    if not Path(pipeline_file).is_file():  # text validated without a file: nothing beside
        return None
    folder = Path(pipeline_file).resolve().parent
    top = import_path.partition(":")[0].split(".")[0]
    if top in OWN_PACKAGES:
        clash = _clash(folder, top)
        if clash is not None:
            return (
                f"{clash} beside the pipeline file has the name of shardline's own package "
                f"{top!r}: rename it (and the use: path), e.g. to 'my_{top}'"
            )
        return None
    if _module_in(folder, top) is None:
        return None
    clashes = [c for c in (_clash(folder, name) for name in OWN_PACKAGES) if c is not None]
    if clashes:
        return (
            f"module {top!r} is beside the pipeline file, but so is {clashes[0]}, which has "
            f"the name of shardline's own package {clashes[0].stem!r} and would replace it "
            "in the Lambda runtimes that import from this folder: rename it"
        )
    if folder not in _LOCAL_FOLDERS:
        _LOCAL_FOLDERS.append(folder)
    if str(folder) not in sys.path:
        sys.path.append(str(folder))
        import importlib  # noqa: PLC0415

        importlib.invalidate_caches()
    entries = [e for e in os.environ.get("PYTHONPATH", "").split(os.pathsep) if e]
    if str(folder) not in entries:
        os.environ["PYTHONPATH"] = os.pathsep.join([*entries, str(folder)])
    return None


def load_problem(import_path: str, pipeline_file: str | None = None) -> str | None:
    """Why ``"pkg.mod:Name"`` cannot be imported, on one line; None when it can. With
    ``pipeline_file``, a module beside it is found (:func:`use_pipeline_folder`)."""
    if pipeline_file is not None:
        problem = use_pipeline_folder(import_path, pipeline_file)
        if problem is not None:
            return problem
    try:
        load_object(import_path)
    except ValueError as exc:  # registry.PluginError: not installed, or no such name
        problem = _one_line(str(exc))
        if "pip install" not in problem:
            top = import_path.split(":", 1)[0].split(".", 1)[0]
            problem += f" (pip install the package that provides {top!r}, or fix the path)"
        return problem
    except Exception as exc:  # the user's module itself failed while importing
        return _one_line(f"importing {import_path!r} raised {type(exc).__name__}: {exc}")
    return None


def _as_path(raw: object) -> Path:
    """A pattern error's path as a tuple, whether given as a tuple or as ``"a.b[0]"``."""
    if raw is None:
        return ()
    if isinstance(raw, (tuple, list)):
        return tuple(p if isinstance(p, int) else str(p) for p in raw)
    return tuple(int(index) if index else key for index, key in _PATH_PART.findall(str(raw)))


def _one_line(message: str) -> str:
    """The first line: each problem prints on one line (JMESPath errors add a caret line)."""
    return message.strip().splitlines()[0] if message.strip() else message
