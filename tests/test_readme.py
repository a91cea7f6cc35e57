"""The README's code for plugin writers runs as shown: each ```python block of the sections
below is executed, in order, in one namespace per section."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
SECTIONS = ("Writing a processor", "Writing a sink", "Producing from Python")
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
#: Blocks that need a live stream; they are run by integration tests in other forms.
_NEEDS_AWS = ("Producer(",)


def section(title: str) -> str:
    """The text of the README section ``## title``, up to the next ``## `` heading."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


@pytest.mark.parametrize("title", SECTIONS)
def test_the_sections_code_blocks_run(title: str) -> None:
    """Every Python block of the section runs without error (the blocks assert their output)."""
    blocks = [b for b in _BLOCK.findall(section(title)) if not any(s in b for s in _NEEDS_AWS)]
    assert blocks, f"README section {title!r} has no runnable ```python block"
    namespace: dict[str, object] = {"__name__": f"readme_{len(title)}"}
    for block in blocks:
        exec(compile(block, f"README.md ({title})", "exec"), namespace)
