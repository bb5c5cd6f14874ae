"""``python -m quartier.cli``."""

from quartier.cli.main import run

run()
