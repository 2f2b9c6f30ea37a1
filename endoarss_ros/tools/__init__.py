"""The entry points: one module per ``endoarss`` subcommand, named after it (``replay``, ``play``, ``demo``, ...),
each with ``add_arguments(parser)`` and ``run(args) -> int``, plus the parts a subcommand is made of
(``demo_live``, ``bench_ros``, ...). The library below (``model`` .. ``inference``, ``bag``, ``ros``) never imports
from here."""
