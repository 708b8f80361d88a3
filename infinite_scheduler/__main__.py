"""``python -m infinite_scheduler``: the same as the ``infinite-scheduler`` command."""

from __future__ import annotations

import sys

from infinite_scheduler.cli import main

sys.exit(main())
