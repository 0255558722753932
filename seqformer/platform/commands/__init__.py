"""One module per ``seqformer`` subcommand: ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.

Modules keep only standard-library imports at top level so that ``seqformer --help`` stays fast.
"""
