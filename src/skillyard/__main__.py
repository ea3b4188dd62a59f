"""`python -m skillyard` is the `skillyard` command."""

from skillyard.cli.main import main

main()
