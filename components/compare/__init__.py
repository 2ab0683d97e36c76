"""Panels of the Compare tab (wiring only; the logic lives in ``studio.compare``)."""
