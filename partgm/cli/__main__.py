"""``python -m partgm.cli``: the ``partgm`` command (benchmarks/gpu.sh calls it this way)."""

from partgm.cli import main

raise SystemExit(main())
