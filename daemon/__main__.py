"""``python -m daemon`` == ``ringrift-daemon``."""

from daemon.cli import main

raise SystemExit(main())
