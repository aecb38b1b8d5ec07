"""`python -m serving serve|predict|manifests`; see serving.cli."""

from serving.cli import main

raise SystemExit(main())
