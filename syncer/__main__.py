"""`python -m syncer` is the `syncer` command."""

from syncer.cli import main

main()
