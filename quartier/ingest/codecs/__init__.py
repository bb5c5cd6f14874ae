"""Payload codecs for LoRaWAN device models, used by the The Things Stack decoder (``ttn``).

Each codec is a small module with ``NAME``, ``MODELS``, ``QUANTITIES``, a pure
``decode(f_port, data) -> dict[str, float]`` (``ValueError`` on bytes that do not fit) and a
``CODEC`` built from them; it is listed in ``REGISTRY`` below. How to add one:
``docs/decoders.md``.
"""

from __future__ import annotations

from collections.abc import Mapping

from quartier.ingest.codecs import (
    bosch_parking_lot_sensor,
    decentlab_dl_lp8p,
    decentlab_dl_pm,
    decentlab_dl_sht35,
    milesight_am103,
)
from quartier.ingest.codecs.base import Codec, FieldMap

__all__ = ["REGISTRY", "Codec", "FieldMap", "codec_for_model"]

#: codec name → codec
REGISTRY: dict[str, Codec] = {
    c.name: c
    for c in (
        decentlab_dl_pm.CODEC,
        decentlab_dl_lp8p.CODEC,
        decentlab_dl_sht35.CODEC,
        milesight_am103.CODEC,
        bosch_parking_lot_sensor.CODEC,
    )
}


def codec_for_model(
    brand_id: str, model_id: str, registry: Mapping[str, Codec] | None = None
) -> Codec | None:
    """The codec whose ``MODELS`` list the Device Repository's ``(brand_id, model_id)``."""
    for codec in (REGISTRY if registry is None else registry).values():
        if (brand_id, model_id) in codec.models:
            return codec
    return None
