"""``python -m seqformer`` runs the command line."""

from seqformer.platform.cli import console_main

console_main()
