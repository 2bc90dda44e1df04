"""pipeline: manifests, Ray execution, results, report and the `stxpipe` CLI."""

from stylecore import __version__

__all__ = ["__version__"]
