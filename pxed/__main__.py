"""python -m pxed."""

from __future__ import annotations

import sys

from pxed.cli import main

sys.exit(main())
