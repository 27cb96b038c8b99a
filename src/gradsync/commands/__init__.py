"""The ``gradsync`` commands, one module each with ``add_args(parser)`` and
``run(ns, extra) -> int``. :mod:`gradsync.cli` lists them and imports only the one asked for;
nothing else in gradsync imports a command."""
