"""Quartier: open-source smart-city data platform for German municipalities."""

__version__ = "0.1.0"
