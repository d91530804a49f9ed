"""``python -m bridge`` is ``ryze-bridge``."""

from bridge.cli import main

raise SystemExit(main())
