"""stream.values: the value classes behave as the dataclasses they replace."""

from __future__ import annotations

import copy
import pickle
from dataclasses import FrozenInstanceError

import pytest

from processors.step import Step, StepFailure
from sinks.base import DeadLetter
from stream.batch import BatchResult
from stream.records import Record
from stream.runtime import BuildFailure


class TestFrozenValue:
    def test_equal_and_hashable_by_fields_and_class(self) -> None:
        a, b = StepFailure(None, "s", None, False), StepFailure(None, "s", None, False)  # type: ignore[arg-type]
        assert a == b
        assert hash(a) == hash(b)
        assert a != StepFailure(None, "t", None, False)  # type: ignore[arg-type]
        assert Step("s", print) != BuildFailure(("s",), ValueError())

    def test_fields_are_read_only(self) -> None:
        step = Step("s", print)
        with pytest.raises(FrozenInstanceError, match="'name'"):
            step.name = "t"  # type: ignore[misc]
        with pytest.raises(FrozenInstanceError):
            del step.run  # type: ignore[misc]

    def test_copy_and_pickle_keep_every_field(self) -> None:
        failure = BuildFailure(("sinks", "out"), ValueError("boom"))
        for again in (copy.copy(failure), pickle.loads(pickle.dumps(failure))):
            assert again.where == ("sinks", "out")
            assert str(again.error) == "boom"

    def test_repr_names_the_class_and_each_field(self) -> None:
        assert repr(BuildFailure(("processors", 2), KeyError("x"))) == (
            "BuildFailure(error=KeyError('x'), where=('processors', 2))"
        )


class TestDeadLetter:
    def test_defaults_keywords_and_equality_as_the_dataclass(self) -> None:
        rec = Record(b"{}", "k", "1")
        letter = DeadLetter(rec, "boom", "ValueError", "processors[0]", failed_at=2.0)
        assert (letter.function, letter.pipeline, letter.redrives) == ("", "", 0)
        assert letter == DeadLetter(rec, "boom", "ValueError", "processors[0]", "", "", 2.0, 0)
        assert letter != DeadLetter(rec, "boom", "ValueError", "processors[0]")
        with pytest.raises(FrozenInstanceError):
            letter.redrives = 1  # type: ignore[misc]

    def test_replace_changes_only_the_fields_named(self) -> None:
        rec = Record(b"{}", "k", "1")
        letter = DeadLetter(rec, "boom", "ValueError", "sink:out", "fn", "p", 3.0)
        again = letter.replace(redrives=2)
        assert again == DeadLetter(rec, "boom", "ValueError", "sink:out", "fn", "p", 3.0, 2)
        assert letter.redrives == 0
        with pytest.raises(TypeError):
            letter.replace(nope=1)


class TestValue:
    def test_mutable_equal_by_fields_and_not_hashable(self) -> None:
        a, b = BatchResult({"batchItemFailures": []}, 2), BatchResult({"batchItemFailures": []}, 2)
        assert a == b
        a.written["out"] = 1
        assert a != b
        assert b.written == {}  # each its own dict
        with pytest.raises(TypeError):
            hash(a)
