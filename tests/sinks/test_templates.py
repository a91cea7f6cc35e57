"""Runtime brace templates: fields, nested fields, arrival and now, and clear failures."""

from __future__ import annotations

import pytest

from sinks.templates import (
    Placeholder,
    Template,
    TemplateError,
    TemplateSyntaxError,
    parse_template,
)
from stream.exceptions import DecodeError
from stream.records import Record

ARRIVAL = 1767229200.25  # 2026-01-01T01:00:00.25Z


def rec(data: bytes, arrival: float = ARRIVAL) -> Record:
    return Record(data, "k", "1", arrival=arrival)


class TestTemplate:
    def test_constant_text_renders_as_written_without_decoding(self):
        r = rec(b"not json")
        assert Template("raw/").render(r) == "raw/"
        assert not r.decoded

    def test_arrival_is_formatted_in_utc(self):
        t = Template("dt={arrival:%Y-%m-%d}/hour={arrival:%H}")
        assert t.render(rec(b"{}")) == "dt=2026-01-01/hour=01"

    def test_arrival_cache_follows_a_change_of_second(self):
        t = Template("{arrival:%H:%M:%S}")
        assert t.render(rec(b"{}", 0.0)) == "00:00:00"
        assert t.render(rec(b"{}", 1.9)) == "00:00:01"
        assert t.render(rec(b"{}", 3600.0)) == "01:00:00"

    def test_now_uses_the_injected_clock(self):
        t = Template("x-{now:%Y}", now=lambda: 0.0)
        assert t.render(rec(b"{}")) == "x-1970"

    def test_fields_and_nested_fields_are_read_from_the_document(self):
        t = Template("{kind}/{user.country}/{n}")
        assert t.fields == ("kind", "user.country", "n")
        assert t.render(rec(b'{"kind": "click", "user": {"country": "fr"}, "n": 7}')) == (
            "click/fr/7"
        )

    def test_a_missing_field_names_the_field_and_the_fix(self):
        with pytest.raises(TemplateError, match=r"no field 'user\.country'.*enrich"):
            Template("{user.country}").render(rec(b'{"user": {}}'))

    def test_an_object_field_is_refused(self):
        with pytest.raises(TemplateError, match="needs a string or number"):
            Template("{user}").render(rec(b'{"user": {"a": 1}}'))

    def test_a_field_of_a_record_that_is_not_json_raises_decode_error(self):
        with pytest.raises(DecodeError):
            Template("{kind}").render(rec(b"GET /"))

    def test_an_unclosed_brace_is_refused_at_construction(self):
        with pytest.raises(ValueError, match="unclosed"):
            Template("events-{arrival:%Y")


class TestParse:
    """The one parser of the syntax: the validator reports its errors, Template compiles its
    parts, so the runtime refuses what `shardline validate` refuses."""

    def test_parts_are_literals_and_placeholders_in_order(self):
        assert parse_template("dt={arrival:%Y}/{user.country}x") == (
            "dt=",
            Placeholder("arrival", "%Y"),
            "/",
            Placeholder("user.country"),
            "x",
        )

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("a}b", "unmatched '}' in 'a}b'"),
            ("{a{b}", "unclosed '{' in '{a{b}'"),
            ("x-{}", "empty placeholder '{}'"),
            ("{arrival}", "'{arrival}' needs a strftime format, e.g. {arrival:%Y-%m-%d}"),
            ("{now:}", "'{now:}' needs a strftime format, e.g. {now:%Y-%m-%d}"),
            ("{kind:%Y}", "'{kind:%Y}': only arrival and now take a format"),
            ("{a b}", "'{a b}' is not a record field"),
        ],
        ids=["stray-close", "brace-inside", "empty", "arrival-no-format", "now-empty-format",
             "format-on-field", "bad-field-name"],
    )  # fmt: skip
    def test_what_validation_refuses_the_runtime_refuses_too(self, text, message):
        """Each of these once compiled at run time (a stray '}' as text, '{arrival}' as a
        field named arrival, '{kind:%Y}' as the field kind) although validate refused it."""
        with pytest.raises(TemplateSyntaxError) as caught:
            Template(text)
        assert str(caught.value).startswith(message)
        assert isinstance(caught.value, ValueError)
