"""Files the product needs at run time, shipped inside the package (and so inside the wheel).

- ``mosquitto.conf``: Quartier's Mosquitto 2 configuration. ``quartier services up`` derives the
  local broker's config from it; ``docker-compose.yml`` mounts this same file into the container.
- ``strategy-koeln.yaml``: the example digitalisation strategy that ``quartier demo`` evaluates,
  and an example for ``quartier evaluate --strategy``.

Read them through :func:`resource` (``importlib.resources``), never through a path into the
repository checkout: an installed wheel has no checkout.
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable


def resource(name: str) -> Traversable:
    """The shipped file ``name``, e.g. ``resource("mosquitto.conf")``."""
    return files(__name__).joinpath(name)
