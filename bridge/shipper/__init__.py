"""The shipper: the sink worker in a second process, so publishing gets a core of its own.

One Python process reads the sockets, runs the pipeline and appends to the disk spool; on a
busy instance that alone keeps a core busy, and a sink worker sharing its event loop took a
quarter of it. With ``sink.separate_process`` (the default with the disk spool) the main
process starts ``python -m bridge.shipper``, which tails the spool's segments
(:mod:`bridge.spool.tail`), publishes them with the same sink worker and reports every
acknowledgement back; the main process keeps owning the spool's files, its accounting and
every metric (the shipper's counts are carried over with its acknowledgements).

The two talk over a socket pair, length-prefixed msgpack messages (:mod:`bridge.shipper.link`):

- main → shipper: ``init`` (sink settings, the sink's password, where to start), ``mark``
  (the spool's files are flushed up to here), ``reachable`` (a readiness question), ``stop``.
- shipper → main: ``ack`` (acknowledged stretches and the metrics that moved), ``reading``
  (the segment it started reading), ``metrics``, ``reachable`` (the answer), ``problem``
  (why it is not delivering — a sink that cannot start, a crashed worker — or None).

The shipper never sees an instance token: its environment is reduced to what Python needs
and the init message carries the sink section only. It ignores SIGINT and SIGTERM (the main
process drains it on shutdown) and exits when the main process goes away.
"""
