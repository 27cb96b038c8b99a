"""The base layer: facts and helpers with no torch import (errors, console output, atomic files,
value coercion, the config and its parser, strategy specs and the catalog, ring and bucket
arithmetic, model shapes, device datasheets, Slurm, the run lock). Everything else builds on it;
``gradsync plan`` and ``--help`` need nothing more."""
