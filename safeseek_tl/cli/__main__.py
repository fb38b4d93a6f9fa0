"""``python -m safeseek_tl.cli``: the ``safeseek`` command (also under torchrun)."""

from safeseek_tl.cli import main

main()
