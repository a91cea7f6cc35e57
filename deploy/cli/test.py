"""``shardline test`` and ``shardline schema``: commands that check a pipeline without AWS.

Two plain :class:`click.Command` objects, added to the ``shardline`` group by
:mod:`deploy.cli.main`. Each imports what it needs when it runs, so ``shardline --help`` loads
neither PyYAML nor the runtime.

``shardline test`` exits 0 when every case passes, 1 when one fails (its differences are
printed), and 2 when the test file or its pipeline is invalid (``FILE:LINE: path: message``
on stderr, as ``shardline validate`` prints them).
"""

from __future__ import annotations

import json

import click

__all__ = ["schema", "test"]

EXIT_FAILED = 1
EXIT_INVALID = 2


@click.command("test")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
def test(files: tuple[str, ...]) -> None:
    """Run the config unit tests of each FILE, in this process, with no servers.

    FILE is a test file (NAME.test.yaml), or a pipeline file whose NAME.test.yaml sits
    beside it. Every case prints one line; a failing case adds what it expected and got.
    """
    from deploy.pipeline.cases import find_test_file, load_suite, run_suite  # noqa: PLC0415
    from deploy.pipeline.problems import ConfigError  # noqa: PLC0415

    passed = failed = 0
    for file in files:
        path = find_test_file(file)
        missing = _no_test_file(file, path)
        if missing is not None:
            click.echo(missing, err=True)
            raise SystemExit(EXIT_INVALID)
        try:
            suite = load_suite(path)
        except ConfigError as exc:
            for problem in exc.errors:
                click.echo(str(problem), err=True)
            raise SystemExit(EXIT_INVALID) from None
        if len(files) > 1:
            click.echo(f"{path}:")
        for result in run_suite(suite):
            click.echo(result.report())
            passed += result.passed
            failed += not result.passed
    click.echo(f"{passed} passed, {failed} failed")
    if failed:
        raise SystemExit(EXIT_FAILED)


def _no_test_file(given: str, path: object) -> str | None:
    """Why ``given`` has no test file to run, or None: a pipeline file (it has
    ``functions:`` and no ``tests:``) whose ``NAME.test.yaml`` does not exist."""
    from pathlib import Path  # noqa: PLC0415

    import yaml  # noqa: PLC0415

    file = Path(given)
    if ".test." in file.name or Path(str(path)) != file:
        return None
    try:
        doc = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None  # loading it as a test file reports what is wrong
    if not isinstance(doc, dict) or "tests" in doc or "functions" not in doc:
        return None
    sibling = file.with_name(f"{file.stem}.test{file.suffix}")
    return (
        f"{given}: a pipeline file with no test file: looked for {sibling}; write one "
        "there (`pipeline:` and `tests:`, see examples/clickstream/pipeline.test.yaml), or "
        "name the test file"
    )


@click.command("schema")
def schema() -> None:
    """Print the JSON Schema of the pipeline file, for editors and CI checks.

    Save it and name it in the pipeline file's first line, e.g.
    `# yaml-language-server: $schema=./pipeline.schema.json`.
    """
    from deploy.pipeline.jsonschema import pipeline_schema  # noqa: PLC0415

    click.echo(json.dumps(pipeline_schema(), indent=2, ensure_ascii=False))
