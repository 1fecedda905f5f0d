"""avemo-edge: real-time audio-visual emotion recognition for edge devices.

This package is the runtime that goes on the device. It never imports `training`, `export`
or `bench` at module level; the CLI imports them inside their subcommands.
"""

__version__ = "0.1.0"
