"""``python -m pipeline.docs_schemas [--check]``: rewrite (or check) docs/artifacts.md's column tables."""

from pipeline.docs_schemas import main

raise SystemExit(main())
