"""SensorThings API v1.1 system query options as a pure core: parse (``grammar``) into a typed
tree (``ast``), check it against the entity model (``model``), compile it to parameterised SQL
(``compile``) or evaluate it over plain rows (``evaluate``, the reference the compiler is tested
against). No I/O here; the routes call :func:`parse_query_options` and the ``compile_*``
functions.
"""

from quartier.api.sta.grammar import (
    parse_expand,
    parse_filter,
    parse_orderby,
    parse_query_options,
    parse_select,
)

__all__ = [
    "parse_expand",
    "parse_filter",
    "parse_orderby",
    "parse_query_options",
    "parse_select",
]
