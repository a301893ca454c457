"""coffea processors of jettracks (an installed package, shipped to workers by value)."""

from .jet_tracks import JetTrackProcessor

__all__ = ["JetTrackProcessor"]
