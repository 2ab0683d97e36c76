"""Playground sub-panels. ``components/playground_tab.py`` lays them out and hands each a ``PlaygroundShared``."""
