"""The entry points: one module per ``endoarss`` subcommand, named after it (``replay``, ``play``, ``synth``, ...),
each with ``add_arguments(parser)`` and ``run(args) -> int``. A subcommand made of parts is a package named for
its job (``bench/``, ``demo/``, ``replay_many/``, ``evaluation/``, ``check/``) with the subcommand's module at its
root beside its parts. The library below (``model`` .. ``inference``, ``bag``, ``ros``) never imports from here."""
