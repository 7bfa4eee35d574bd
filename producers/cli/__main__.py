"""``python -m producers.cli``: the ``maildispatch`` command."""

import sys

from producers.cli import main

sys.exit(main())
