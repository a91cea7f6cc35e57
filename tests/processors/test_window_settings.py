"""The settings both window steps share (``processors.window.settings_problem``): with two
mistakes, each step reports the first one it always reported, and so does ``validate``."""

from __future__ import annotations

from typing import Any

import pytest

from deploy.pipeline.config import parse_config
from deploy.pipeline.problems import ConfigError
from processors.aggregations import AggregationError
from processors.session import SessionWindow
from processors.window import Window, WindowConfigError

GOOD = {"key": "user", "aggregate": {"n": "count"}, "field": "ts", "state": "memory"}
MISTAKES: dict[str, dict[str, Any]] = {
    "state": {"state": "disk"},
    "table": {"state": "dynamodb", "table": None},
    "time": {"time": "someday"},
    "field": {"field": None},
    "key": {"key": ""},
    "aggregate": {"aggregate": {}},
    "quiet": {"quiet_s": 0},
    "kind": {"aggregate": {"n": "nope"}},
    "window-sizes": {"size_s": 60, "slide_s": 7},
    "session-sizes": {"gap_s": 0},
}

# What the steps reported before they shared the checks (recorded from the code before).
STATE = "state 'disk': expected one of memory, dynamodb"
TABLE = "state: dynamodb needs table"
TIME = "time 'someday': expected event"
FIELD = "time: event needs field"
KEY = "key: the record field whose value names the key"
EMPTY = "aggregate: name at least one result"
QUIET = "quiet_s must be a whole number of seconds of at least 1, got 0"
KIND = "unknown aggregation 'nope'"
SLIDE = "slide_s (7) must divide size_s (60)"
GAP = "gap_s must be a whole number of seconds of at least 1, got 0"


@pytest.mark.parametrize(
    ("step", "mistakes", "first"),
    [
        (Window, ("state", "time"), STATE),
        (Window, ("window-sizes", "time"), SLIDE),
        (Window, ("table", "window-sizes"), TABLE),
        (Window, ("state", "window-sizes"), STATE),
        (Window, ("key", "aggregate"), KEY),
        (Window, ("field", "key"), FIELD),
        (Window, ("kind", "quiet"), KIND),  # the aggregations are built before quiet_s
        (Window, ("time", "quiet"), TIME),
        (SessionWindow, ("state", "session-sizes"), GAP),  # a session's sizes come first
        (SessionWindow, ("quiet", "kind"), QUIET),  # and quiet_s before the aggregations
        (SessionWindow, ("time", "key"), TIME),
        (SessionWindow, ("aggregate", "quiet"), EMPTY),
        (SessionWindow, ("table", "field"), TABLE),
    ],
)
def test_two_mistakes_report_the_first_as_before(
    step: type[Any], mistakes: tuple[str, str], first: str
) -> None:
    sizes = {"size_s": 60} if step is Window else {"gap_s": 60}
    args = {**GOOD, **sizes, **MISTAKES[mistakes[0]], **MISTAKES[mistakes[1]]}
    with pytest.raises((WindowConfigError, AggregationError)) as caught:
        step(**args)
    assert str(caught.value).startswith(first)


FILE = """name: shop
stream:
  name: shop-events
sinks:
  hourly: {type: dynamodb, table: shop-hourly, key: window_id}
functions:
  per-user:
    processors:
      - window:
          key: user_id
%s
          field: ts
          aggregate: %s
    route: [hourly]
"""


@pytest.mark.parametrize(
    ("settings", "aggregate", "first"),
    [
        ("          size_s: 60\n          time: someday", "{}",
         "p.yaml:12: functions.per-user.processors[0].window.time: expected one of event, "
         "arrival, got 'someday'"),
        ("          gap_s: 0\n          state: disk", "{n: count}",
         "p.yaml:11: functions.per-user.processors[0].window.gap_s: must be at least 1, got 0"),
        ("          size_s: 60\n          slide_s: 7\n          quiet_s: 0", "{n: nope}",
         "p.yaml:12: functions.per-user.processors[0].window.slide_s: slide_s (7) must divide "
         "size_s (60): e.g. 6 or 10"),
    ],
)  # fmt: skip
def test_validate_reports_the_first_of_two_mistakes_as_before(
    settings: str, aggregate: str, first: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(FILE % (settings, aggregate), source="p.yaml", env={})
    assert str(caught.value).splitlines()[0] == first
    assert len(str(caught.value).splitlines()) >= 2  # the second mistake is reported too
