"""Command line of jettracks: ``python -m runner`` (a thin shell over :mod:`jettracks`)."""
