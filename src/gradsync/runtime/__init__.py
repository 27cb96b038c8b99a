"""The runtime layer: joining the process group (:mod:`~gradsync.runtime.dist`, with timeouts and
byte counting on every collective), node groups, launching workers through torch elastic, the
generic worker entry that runs a named job, the store watchdog and a scheduler's stop signal."""
