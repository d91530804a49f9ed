"""``python -m bridge.simulator`` is ``ryze-bridge simulate``."""

from bridge.simulator.cli import main

raise SystemExit(main())
