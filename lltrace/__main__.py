"""`python -m lltrace ...` is the `lltrace` command."""
import sys

from lltrace.commands.cli import main

sys.exit(main())
