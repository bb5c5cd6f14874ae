"""SensorThings API v1.1 system query options as a pure core: parse (``grammar``) into a typed
tree (``ast``), check it against the entity model (``model``), compile it to parameterised SQL
(``compile``) or evaluate it over plain rows (``evaluate``, the reference the compiler is tested
against). No I/O here. A route does::

    options = parse_query_options(request.query_params)   # 400 / 501 on bad or unsupported
    check_options(options, "Things")                      # names checked against the model
    where = compile_filter(options.filter, "Things", "t")  # if options.filter is not None
    order = compile_orderby(options.orderby, "Things", "t")
    sql.SQL("select … from thing t where {} order by {}").format(where.sql, order.sql)
    conn.execute(query, {**where.params, **order.params})
"""

from quartier.api.sta.ast import Expand, OrderItem, QueryOptions
from quartier.api.sta.compile import (
    OrderKey,
    SqlFragment,
    cast_of,
    check_options,
    compile_filter,
    compile_navigation,
    compile_orderby,
    order_keys,
)
from quartier.api.sta.evaluate import Graph, evaluate_filter
from quartier.api.sta.grammar import (
    parse_expand,
    parse_filter,
    parse_orderby,
    parse_query_options,
    parse_select,
)
from quartier.api.sta.model import ENTITIES, ENTITY_SETS

__all__ = [
    "ENTITIES",
    "ENTITY_SETS",
    "Expand",
    "Graph",
    "OrderItem",
    "OrderKey",
    "QueryOptions",
    "SqlFragment",
    "cast_of",
    "check_options",
    "compile_filter",
    "compile_navigation",
    "compile_orderby",
    "evaluate_filter",
    "order_keys",
    "parse_expand",
    "parse_filter",
    "parse_orderby",
    "parse_query_options",
    "parse_select",
]
