"""``shardline init [DIR]``: a pipeline to start from, its tests and a processor plugin.

Writes ``pipeline.yaml`` (a stream, a filter and an enrich step, a DynamoDB sink and a
dead-letter queue), ``pipeline.test.yaml`` (cases that ``shardline test`` passes as
written, so the first edit that breaks one shows it) and ``plugin/``, an installable
processor plugin skeleton registered under the entry-point group ``shardline.processors``,
which the pipeline names in a comment to uncomment once it is installed. It never
overwrites a file: when one exists, nothing is written and the exit status is 1.
"""

from __future__ import annotations

import re
from pathlib import Path

import click

__all__ = ["init_command", "scaffold"]

_PIPELINE = """\
# A shardline pipeline: shardline validate pipeline.yaml; shardline test pipeline.yaml
name: {name}

stream:
  name: {name}-events
  mode: on_demand

sinks:
  store:
    type: dynamodb
    table: {name}-items
    key: id                       # the item key, a field of each record
    mode: latest
  dlq:
    type: sqs
    queue: {name}-dlq

functions:
  process:
    on_failure: dlq               # records that cannot be processed, with the reason
    processors:
      - filter:
          match: {{type: [order]}}  # keep orders only
      - enrich:
          set: {{pipeline: {name}}}
      # after `pip install ./plugin` (the skeleton beside this file), uncomment:
      # - tag: {{field: source, value: shardline}}
    route: [store]
"""

_TESTS = """\
# Config unit tests of pipeline.yaml, in this process, no AWS: shardline test pipeline.yaml
pipeline: pipeline.yaml

tests:
  - name: an order is stored with the pipeline's name
    input:
      - json: {{id: o1, type: order, amount: 5}}
        partition_key: o1
    expect:
      sinks:
        store:
          - {{id: o1, type: order, amount: 5, pipeline: {name}}}

  - name: other records are filtered out
    input:
      - json: {{id: v1, type: view}}
    expect:
      dropped: 1

  - name: a record that is not JSON goes to the dead-letter queue with the reason
    input:
      - text: "not json"
    expect:
      dead_letters:
        - {{reason: "is not JSON", step: "processors[0].filter"}}
"""

_PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.1.0"
description = "Processors for the {name} pipeline."
requires-python = ">=3.11"

[project.entry-points."shardline.processors"]
tag = "{package}:Tag"

[tool.setuptools]
packages = ["{package}"]
"""

_PLUGIN = '''\
"""Processors for the {name} pipeline: ``- tag: {{field: source, value: shardline}}``.

A processor is a callable ``record -> record | list[record] | None`` (README, "Writing a
processor"); ``__init__`` takes the step's arguments from the pipeline file and checks them
once, at Lambda init. Installed (``pip install ./plugin``), it is found through the
entry-point group ``shardline.processors`` under the name ``tag`` (see pyproject.toml).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stream.records import Record

__all__ = ["Tag"]


class Tag:
    """Set ``field`` to ``value`` on every record (a record that is not a JSON object is
    dead-lettered with the reason, by ``record.as_dict()``)."""

    def __init__(self, field: str, value: object = True) -> None:
        if not isinstance(field, str) or not field:
            msg = f"tag.field must be a field name, got {{field!r}}"
            raise ValueError(msg)
        self.field = field
        self.value = value

    def __call__(self, record: Record) -> Record | None:
        record.as_dict()[self.field] = self.value  # in place: the chain re-encodes it
        return record
'''


def _name(folder: Path) -> str:
    """A pipeline name from the folder's: letters, digits and hyphens, a letter first."""
    slug = re.sub(r"[^a-z0-9]+", "-", folder.resolve().name.lower()).strip("-")
    slug = re.sub(r"^[^a-z]+", "", slug)
    return slug[:40].rstrip("-") or "my-pipeline"


def scaffold(folder: Path, name: str | None = None) -> list[Path]:
    """The files ``init`` writes into ``folder``, written; returns their paths.

    Raises:
        FileExistsError: one of them exists already (then nothing is written).
    """
    name = name or _name(folder)
    package = name.replace("-", "_") + "_processors"
    files = {
        folder / "pipeline.yaml": _PIPELINE.format(name=name),
        folder / "pipeline.test.yaml": _TESTS.format(name=name),
        folder / "plugin" / "pyproject.toml": _PYPROJECT.format(
            name=name, dist=f"{name}-processors", package=package
        ),
        folder / "plugin" / package / "__init__.py": _PLUGIN.format(name=name),
    }
    existing = [path for path in files if path.exists()]
    if existing:
        msg = ", ".join(map(str, existing))
        raise FileExistsError(msg)
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return list(files)


@click.command("init")
@click.argument("directory", default=".", type=click.Path(file_okay=False))
@click.option("--name", help="The pipeline's name (default: from DIRECTORY's name).")
def init_command(directory: str, name: str | None) -> None:
    """Write a pipeline, its config unit tests and a processor plugin skeleton into
    DIRECTORY (default: here), then say what to run next. Never overwrites a file."""
    if name is not None and not re.fullmatch(r"[A-Za-z][A-Za-z0-9-]{0,39}", name):
        msg = f"--name {name!r}: use letters, digits and hyphens, starting with a letter"
        raise click.BadParameter(msg)
    folder = Path(directory)
    try:
        written = scaffold(folder, name)
    except FileExistsError as exc:
        click.echo(f"{exc} exists already: init writes only new files (choose another "
                   "directory, or move them away)", err=True)  # fmt: skip
        raise SystemExit(1) from None
    for path in written:
        click.echo(f"wrote {path}")
    pipeline = folder / "pipeline.yaml"
    click.echo(f"next: shardline validate {pipeline} && shardline test {pipeline}")
