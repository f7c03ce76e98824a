"""`python -m medmix.cli`: the same command table as the `medmix` script."""

from medmix.cli.main import app

app(prog_name="medmix")
