"""``python -m deploy.cli``: the ``shardline`` command."""

from deploy.cli.main import main

main(prog_name="shardline")
