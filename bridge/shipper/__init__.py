"""The shipper: the sink worker in a second process, so publishing gets a core of its own.

One Python process reads the sockets, runs the pipeline and appends to the disk spool; on a
busy instance that alone keeps a core busy, and a sink worker sharing its event loop took a
quarter of it. With ``sink.separate_process`` (the default) the main
process starts ``python -m bridge.shipper``, which runs the spool's one reader, the tail
(:mod:`bridge.spool.tail`), publishes with the same supervised sink worker
(:class:`~bridge.delivery.WorkerDelivery`) and reports every acknowledgement back; the main
process keeps owning the spool's files (the writer), its accounting and every metric (the
shipper's counts are carried over with its acknowledgements). It is one of the two places a
:class:`~bridge.delivery.Delivery` runs its worker; the other is the main process itself.

The two talk over a socket pair, in tagged msgpack structs validated as they are read
(:mod:`bridge.shipper.link`; a malformed message ends the link, logged):

- main → shipper: ``Init`` (sink settings, the sink's password, where the tail starts),
  ``Mark`` (the spool's files are flushed up to here), ``Ask`` (a readiness question),
  ``Stop``.
- shipper → main: ``Ack`` (acknowledged stretches and the metrics that moved), ``Reading``
  (the segment the tail started reading), ``Moved`` (metrics), ``Answer`` (to an ``Ask``),
  ``Problem`` (why it is not delivering — a sink that cannot start, a crashed worker — or
  None).

The shipper never sees an instance token: its environment is reduced to what Python needs
and the init message carries the sink section only. It ignores SIGINT and SIGTERM (the main
process drains it on shutdown) and exits when the main process goes away.
"""
