"""Quality maps: where in a photo the technical quality (iqa) is high or low.

:mod:`.grid` computes a map (the data model :class:`QualityMap`), :mod:`.render` draws it over the
photo with a legend, :mod:`.files` writes ``<stem>.map.png`` and ``<stem>.map.json`` safely.
"""

from .grid import Cell, QualityMap, QualityMapError, auto_grid, check_map_support, make_map, parse_grid

__all__ = ["Cell", "QualityMap", "QualityMapError", "auto_grid", "check_map_support", "make_map", "parse_grid"]
