"""``python -m bench coldstart`` measures the code as it ships, in a clean interpreter.

No timing is asserted: only where the handler was imported from, what the interpreter had
loaded, and that the first invocation ran.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import coldstart

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def report() -> dict[str, object]:
    """One run of each row, the working tree against HEAD."""
    return coldstart.measure(1, against="HEAD", batch=4)


class TestColdstartBench:
    def test_the_handler_is_imported_from_the_laid_out_code_folder(
        self, report: dict[str, object]
    ) -> None:
        """Not from the checkout: from the folder stage_code lays out, as the zip holds it."""
        folders = report["folders"]
        assert isinstance(folders, list)
        assert [f["code"] for f in folders] == ["HEAD", "working tree"]
        for folder in folders:
            for mode in coldstart.MODES:
                path = Path(folder[mode]["handler_file"])
                assert path.parts[-3:] == ("task", "stream", "lambda_handler.py"), path
                assert ROOT not in path.parents, path

    def test_no_editable_finder_and_no_client_library_is_loaded(
        self, report: dict[str, object]
    ) -> None:
        """The clean venv runs no .pth: the editable install's finder never loads."""
        folders = report["folders"]
        assert isinstance(folders, list)
        for folder in folders:
            for mode in coldstart.MODES:
                assert folder[mode]["editable_finders"] == []
                assert folder[mode]["heavy_loaded"] == []

    def test_after_the_runtime_the_import_leaves_out_what_the_runtime_loaded(
        self, report: dict[str, object]
    ) -> None:
        """The runtime rows' listing holds no module the bootstrap imports (logging, json)."""
        folders = report["folders"]
        assert isinstance(folders, list)
        listed = {m["module"] for m in folders[-1]["runtime"]["top_self"]}
        assert coldstart.HANDLER in {m["module"] for m in folders[-1]["bare"]["top_self"]} | listed
        assert not listed & {"logging", "json", "simplejson", "traceback"}
        assert folders[-1]["runtime"]["importtime_orjson_ms"] > 0

    def test_text_output_names_each_row(self, capsys: pytest.CaptureFixture[str]) -> None:
        """The printed table has a bare and an after-runtime row and the orjson line."""
        assert coldstart.main(["--repeat", "1", "--batch", "2"]) == 0
        out = capsys.readouterr().out
        assert "working tree    bare" in out
        assert "working tree    after runtime" in out
        assert "orjson's own import" in out

    def test_json_output_parses(self, capsys: pytest.CaptureFixture[str]) -> None:
        """--json prints the same figures for scripts."""
        assert coldstart.main(["--repeat", "1", "--batch", "2", "--json"]) == 0
        data = json.loads(capsys.readouterr().out)
        assert data["folders"][0]["runtime"]["import_ms"]["median"] > 0
