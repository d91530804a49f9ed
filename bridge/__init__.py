"""ryze-bridge: RyzeAPI WebSocket events into Kafka topics and Redis streams.

The version is written once, in pyproject.toml; ``__version__`` is read from the installed
package's metadata. ``0+unknown`` only when the source tree is imported without being installed.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ryze-bridge")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"
