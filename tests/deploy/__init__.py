"""Tests of the operator's side: the pipeline file, its plan, and the CLI."""
