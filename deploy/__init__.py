"""The operator's side of shardline: the pipeline file, compilation, deployment and the CLI.

Nothing in the Lambda runtime imports this package. The public names are re-exported lazily,
so ``import deploy.cli.main`` (the ``shardline`` command) pays for PyYAML only when a command
actually reads a pipeline file.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from deploy.pipeline.config import (
        ConfigError,
        PipelineConfig,
        Problem,
        compile_plan,
        load_config,
        load_plan_from_file,
        parse_config,
    )

__all__ = [
    "ConfigError",
    "PipelineConfig",
    "Problem",
    "compile_plan",
    "load_config",
    "load_plan_from_file",
    "parse_config",
]

_HOME = dict.fromkeys(__all__, "deploy.pipeline.config")


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        msg = f"module 'deploy' has no attribute {name!r}"
        raise AttributeError(msg)
    return getattr(importlib.import_module(home), name)
