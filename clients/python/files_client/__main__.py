"""`python -m files_client upload ...`: the `files` command's user verbs."""

import sys

from files_client.cli import main

sys.exit(main())
