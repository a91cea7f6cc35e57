"""Validation of brace templates is the runtime's parser: what validates is what runs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deploy.pipeline.braces import template_problem
from sinks.templates import Template, TemplateSyntaxError

PIECES = st.sampled_from([*"{}:.%Y-_ 1a", "arrival", "now", "user", "{arrival:%H}", "{user.id}"])


class TestTemplateProblem:
    def test_a_problem_reads_as_before(self):
        """The message names the text and the placeholders (tests/deploy/broken too)."""
        assert template_problem("dt={now}") == (
            "'{now}' needs a strftime format, e.g. {now:%Y-%m-%d}"
        )
        assert template_problem("dt={now:%Y}/{user.country}") is None

    @settings(deadline=None, max_examples=500)
    @given(st.lists(PIECES, max_size=10).map("".join))
    def test_a_template_validates_exactly_when_the_runtime_compiles_it(self, text):
        problem = template_problem(text)
        if problem is None:
            Template(text)
        else:
            with pytest.raises(TemplateSyntaxError) as caught:
                Template(text)
            assert str(caught.value) == problem
