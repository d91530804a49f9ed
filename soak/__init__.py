"""The chaos soak (``make soak``): a seeded random fault schedule against a three-broker
Kafka cluster, Redis and the simulator, with real ``ryze-bridge run`` processes, and the
delivery invariants checked over what was sent, consumed and counted (docs/soak.md).

Pure parts: :mod:`soak.schedule` (the schedule from a seed), :mod:`soak.invariants` (the
checks over collected data), :mod:`soak.table` (the text table). The rest drives processes.
"""
