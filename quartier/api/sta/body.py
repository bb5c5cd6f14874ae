"""The bodies of SensorThings writes (POST, PATCH, PUT) checked and turned into plain data, no
I/O: an entity to create (with the entities nested in it, deep insert), links to existing
entities by ``@iot.id``, an Observation, a ``CreateObservations`` dataArray. Every problem is a
:class:`~quartier.errors.BadRequestError` naming the field by its JSON path
(``Datastreams[0]/unitOfMeasurement``).

What Quartier does not store is refused rather than dropped: an Observation's ``validTime``
and ``resultQuality``, an interval ``phenomenonTime`` (observations are stored at an instant).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from quartier.errors import BadRequestError
from quartier.ingest.fields import parse_time
from quartier.ingest.model import Observation
from quartier.ingest.validate import EARLIEST

# ----------------------------------------------------------------------------- values


def _where(path: str, name: str) -> str:
    return f"{path}/{name}" if path else name


def _object(raw: Any, path: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        what = path or "the body"
        raise BadRequestError(f"{what} must be a JSON object, not {_kind(raw)}")
    # Navigation properties start with a capital (Datastream, Locations, ...), none of the others
    # do: a nested entity there that carries an @iot.id links that entity, and its other
    # properties are ignored, as FROST reads it (its clients send a linked entity whole)
    return {k: _as_link(v) if k[:1].isupper() else v for k, v in raw.items()}


def _as_link(raw: Any) -> Any:
    if isinstance(raw, list):
        return [_as_link(x) for x in raw]
    if isinstance(raw, dict) and raw.get("@iot.id") is not None:
        return {"@iot.id": raw["@iot.id"]}
    return raw


def _kind(raw: Any) -> str:
    if raw is None:
        return "null"
    if isinstance(raw, bool):
        return "a boolean"
    if isinstance(raw, int | float):
        return "a number"
    if isinstance(raw, str):
        return "a string"
    if isinstance(raw, list):
        return "an array"
    return "an object"


def _text(raw: Any, path: str) -> str:
    if not isinstance(raw, str):
        raise BadRequestError(f"{path} must be a string, not {_kind(raw)}")
    if "\x00" in raw:
        raise BadRequestError(f"{path} must not contain NUL characters")
    return raw


def _json_object(raw: Any, path: str) -> dict[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise BadRequestError(f"{path} must be a JSON object or null, not {_kind(raw)}")
    return raw


def instant(
    raw: Any, path: str, latest: datetime | None = None, interval_ok: bool = False
) -> datetime:
    """An RFC 3339 instant with a zone (UTC), between 1990 and ``latest``. An interval
    (``a/b``) is refused: Quartier stores observations at an instant."""
    if isinstance(raw, str) and "/" in raw and not interval_ok:
        raise BadRequestError(
            f"{path} {raw!r} is an interval; Quartier stores an observation at an instant: send"
            " one time (RFC 3339 with a zone)"
        )
    if not isinstance(raw, str):
        raise BadRequestError(f"{path} must be an RFC 3339 time string, not {_kind(raw)}")
    try:
        t = parse_time(raw)
    except ValueError as exc:
        raise BadRequestError(f"{path}: {exc}") from None
    if t < EARLIEST:
        raise BadRequestError(f"{path} {raw!r} is before {EARLIEST.date()}")
    if latest is not None and t > latest:
        raise BadRequestError(f"{path} {raw!r} is in the future")
    return t


def entity_id(raw: Any, path: str) -> int:
    """An integer ``@iot.id`` (as a number or as digits in a string)."""
    if isinstance(raw, str) and raw.isdigit():
        raw = int(raw)
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 < raw < 2**63:
        raise BadRequestError(f"{path} must be a positive integer @iot.id, not {raw!r}")
    return raw


def without_own_id(raw: Any, own: int) -> Any:
    """A PUT body without its ``@iot.id`` when that is the id of the entity it replaces (FROST's
    clients send the entity whole); another id is refused."""
    if not isinstance(raw, dict) or raw.get("@iot.id") is None:
        return raw
    if entity_id(raw["@iot.id"], "@iot.id") != own:
        raise BadRequestError(f"@iot.id {raw['@iot.id']!r} is not the id of the entity replaced")
    return {k: v for k, v in raw.items() if k != "@iot.id"}


def merge_patch(raw: Any) -> Any:
    """A PATCH body as JSON (the standard's form) from a JSON Patch (RFC 6902, FROST's
    ``application/json-patch+json``, which its Python client sends): ``add`` and ``replace``
    set a property, ``remove`` sets it to null; a JSON body is returned as it is."""
    if not isinstance(raw, list):
        return raw
    merged: dict[str, Any] = {}
    for i, op in enumerate(raw):
        where = f"[{i}]"
        if not isinstance(op, dict) or not isinstance(op.get("path"), str):
            raise BadRequestError(f"{where} must be a JSON Patch operation with a path")
        name = op["path"].removeprefix("/")
        if not name or "/" in name:
            raise BadRequestError(
                f"{where}/path {op['path']!r}: Quartier patches whole properties (/name,"
                " /properties); send the new value of the property"
            )
        if op.get("op") in ("add", "replace") and "value" in op:
            merged[name] = op["value"]
        elif op.get("op") == "remove":
            merged[name] = None
        else:
            raise BadRequestError(
                f"{where}/op {op.get('op')!r}: Quartier takes add, replace and remove"
            )
    return merged


def geometry(raw: Any, path: str) -> dict[str, Any]:
    """A GeoJSON geometry (or a Feature's geometry), checked for shape; PostGIS checks the
    coordinates when it is stored."""
    obj = _object(raw, path)
    if obj.get("type") == "Feature":
        return geometry(obj.get("geometry"), f"{path}/geometry")
    kinds = (
        "Point",
        "MultiPoint",
        "LineString",
        "MultiLineString",
        "Polygon",
        "MultiPolygon",
        "GeometryCollection",
    )
    if obj.get("type") not in kinds:
        raise BadRequestError(f"{path}/type must be a GeoJSON geometry type ({', '.join(kinds)})")
    key = "geometries" if obj["type"] == "GeometryCollection" else "coordinates"
    if not isinstance(obj.get(key), list):
        raise BadRequestError(f"{path}/{key} must be an array")
    return obj


# ----------------------------------------------------------------------------- Observations


@dataclass(frozen=True)
class FeatureRef:
    """An Observation's FeatureOfInterest: an existing one (``id``) or one to create."""

    id: int | None = None
    new: NewEntity | None = None


@dataclass(frozen=True)
class NewObservation:
    """An Observation to create; ``datastream_id`` None when the path names the Datastream;
    ``multi_datastream_id`` when the body links a MultiDatastream instead (its result an
    array, see :func:`multi_result`)."""

    datastream_id: int | None
    time: datetime
    result: Any
    result_time: datetime | None = None
    parameters: dict[str, Any] | None = None
    feature: FeatureRef | None = None
    multi_datastream_id: int | None = None

    @property
    def number(self) -> float | None:
        """The result when it is a number (stored in ``result``; anything else as JSON)."""
        r = self.result
        return float(r) if isinstance(r, int | float) and not isinstance(r, bool) else None

    @property
    def feature_id(self) -> int | None:
        """The FeatureOfInterest it links by ``@iot.id``, if any."""
        return None if self.feature is None else self.feature.id

    @property
    def feature_values(self) -> dict[str, Any] | None:
        """The columns of the FeatureOfInterest it describes (to create), if any."""
        return None if self.feature is None or self.feature.new is None else self.feature.new.values

    def stored(self, datastream_id: int, foi_id: int | None) -> Observation:
        """The ingest writer's Observation of this one, stored under ``datastream_id`` (a
        MultiDatastream's: -<its id>) with FeatureOfInterest ``foi_id``
        (``quartier.store.sta_write.observation_feature`` resolves it)."""
        number = self.number
        return Observation(
            datastream_id,
            self.time,
            number,
            None if number is not None else self.result,
            self.result_time,
            self.parameters,
            foi_id,
        )


_OBSERVATION_FIELDS = {
    "Datastream",
    "MultiDatastream",
    "phenomenonTime",
    "result",
    "resultTime",
    "parameters",
    "FeatureOfInterest",
    "validTime",
    "resultQuality",
    "@iot.id",
}


def observation(raw: Any, now: datetime, max_future_seconds: int, path: str = "") -> NewObservation:
    """An Observation body. ``phenomenonTime`` defaults to ``now`` (the standard: the server
    assigns the time when the client sends none)."""
    body = _object(raw, path)
    unknown = sorted(set(body) - _OBSERVATION_FIELDS)
    if unknown:
        raise BadRequestError(
            f"{_where(path, unknown[0])}: an Observation has no property {unknown[0]!r}; known: "
            + ", ".join(sorted(_OBSERVATION_FIELDS - {"@iot.id"}))
        )
    for name in ("validTime", "resultQuality"):
        if body.get(name) is not None:
            raise BadRequestError(f"{_where(path, name)}: Quartier does not store {name}")
    if body.get("@iot.id") is not None:
        raise BadRequestError(
            f"{_where(path, '@iot.id')}: an Observation's id is derived from its Datastream and"
            " phenomenonTime; leave it out"
        )
    latest = now + timedelta(seconds=max_future_seconds)
    ds: int | None = None
    mds: int | None = None
    if "Datastream" in body and "MultiDatastream" in body:
        raise BadRequestError(
            f"{_where(path, 'MultiDatastream')}: an Observation belongs to a Datastream or to a"
            " MultiDatastream, not to both"
        )
    for name in ("Datastream", "MultiDatastream"):
        if name not in body:
            continue
        ref = _object(body[name], _where(path, name))
        if set(ref) != {"@iot.id"}:
            raise BadRequestError(
                f'{_where(path, name)} must link an existing {name}: {{"@iot.id": <id>}}'
            )
        linked = entity_id(ref["@iot.id"], _where(path, f"{name}/@iot.id"))
        ds, mds = (linked, None) if name == "Datastream" else (None, linked)
    raw_time = body.get("phenomenonTime")
    time = (
        now.astimezone(UTC)
        if raw_time is None
        else instant(raw_time, _where(path, "phenomenonTime"), latest)
    )
    if "result" not in body or body["result"] is None:
        raise BadRequestError(f"{_where(path, 'result')} is required")
    result = body["result"]
    if isinstance(result, float) and not math.isfinite(result):
        raise BadRequestError(f"{_where(path, 'result')} is not a finite number")
    rt = body.get("resultTime")
    result_time = None if rt is None else instant(rt, _where(path, "resultTime"))
    params = _json_object(body.get("parameters"), _where(path, "parameters"))
    feature = None
    if body.get("FeatureOfInterest") is not None:
        fpath = _where(path, "FeatureOfInterest")
        fbody = _object(body["FeatureOfInterest"], fpath)
        if set(fbody) == {"@iot.id"}:
            feature = FeatureRef(id=entity_id(fbody["@iot.id"], f"{fpath}/@iot.id"))
        else:
            feature = FeatureRef(new=entity("FeaturesOfInterest", fbody, fpath))
    return NewObservation(ds, time, result, result_time, params, feature, mds)


def multi_result(result: Any, types: list[str], where: str, path: str = "") -> None:
    """The result of an Observation of a MultiDatastream (``where``: which one, for the message)
    with ``types``, its multiObservationDataTypes: an array of one value per type (and
    ObservedProperty), in their order (OGC 18-088, A.5)."""
    rpath = _where(path, "result")
    if not isinstance(result, list):
        raise BadRequestError(
            f"{rpath} must be an array of {len(types)} values, one per ObservedProperty of"
            f" {where} (its multiObservationDataTypes), not {_kind(result)}"
        )
    if len(result) != len(types):
        raise BadRequestError(
            f"{rpath} has {len(result)} value(s), but {where} has {len(types)}"
            f" multiObservationDataTypes ({', '.join(t.rsplit('/', 1)[-1] for t in types)}):"
            " one value per ObservedProperty, in their order"
        )
    for i, v in enumerate(result):
        if isinstance(v, float) and not math.isfinite(v):
            raise BadRequestError(f"{rpath}[{i}] is not a finite number")


# ----------------------------------------------------------------------------- other entities


@dataclass(frozen=True)
class Field:
    """A property of an entity body: its column and kind, whether a create needs it, and the
    value a create stores when it is left out."""

    column: str
    kind: str  # "text", "object" (JSON object or null), "geometry", "unit", "time", "units",
    # "texts" (a non-empty array of strings), "complex" (a MultiDatastream's observationType)
    required: bool = True
    default: Any = None


#: The one observationType of a MultiDatastream (OGC 18-088, A.5).
COMPLEX_OBSERVATION = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_ComplexObservation"
#: The properties of each entity set that a body may set (Observations: :func:`observation`).
FIELDS: dict[str, dict[str, Field]] = {
    "Things": {
        "name": Field("name", "text"),
        "description": Field("description", "text"),
        "properties": Field("properties", "object", False),
    },
    "Locations": {
        "name": Field("name", "text"),
        "description": Field("description", "text"),
        "encodingType": Field("encoding_type", "text"),
        "location": Field("location", "geometry"),
        "properties": Field("properties", "object", False),
    },
    "Sensors": {
        "name": Field("name", "text"),
        "description": Field("description", "text"),
        "encodingType": Field("encoding_type", "text"),
        "metadata": Field("metadata", "text"),
        "properties": Field("properties", "object", False),
    },
    "ObservedProperties": {
        "name": Field("name", "text"),
        "definition": Field("definition", "text"),
        "description": Field("description", "text"),
        "properties": Field("properties", "object", False),
    },
    "Datastreams": {
        "name": Field("name", "text"),
        "description": Field("description", "text"),
        "observationType": Field("observation_type", "text"),
        "unitOfMeasurement": Field("unit_of_measurement", "unit"),
        "observedArea": Field("observed_area", "geometry", False),
        "properties": Field("properties", "object", False),
    },
    "MultiDatastreams": {
        "name": Field("name", "text"),
        "description": Field("description", "text"),
        "observationType": Field("observation_type", "complex", False, COMPLEX_OBSERVATION),
        "multiObservationDataTypes": Field("multi_observation_data_types", "texts"),
        "unitOfMeasurements": Field("unit_of_measurements", "units"),
        "observedArea": Field("observed_area", "geometry", False),
        "properties": Field("properties", "object", False),
    },
    "HistoricalLocations": {"time": Field("time", "time")},
    "FeaturesOfInterest": {
        "name": Field("name", "text"),
        "description": Field("description", "text"),
        "encodingType": Field("encoding_type", "text"),
        "feature": Field("feature", "geometry"),
        "properties": Field("properties", "object", False),
    },
}
#: Derived by the server: refused in a body that tries to set them.
READ_ONLY = {"phenomenonTime", "resultTime"}
#: The navigations a body may carry, per entity set: (entity set of the target, to-many).
LINKS: dict[str, dict[str, tuple[str, bool]]] = {
    "Things": {
        "Locations": ("Locations", True),
        "Datastreams": ("Datastreams", True),
        "MultiDatastreams": ("MultiDatastreams", True),
    },
    "Locations": {"Things": ("Things", True)},
    "Sensors": {
        "Datastreams": ("Datastreams", True),
        "MultiDatastreams": ("MultiDatastreams", True),
    },
    "ObservedProperties": {"Datastreams": ("Datastreams", True)},
    "Datastreams": {
        "Thing": ("Things", False),
        "Sensor": ("Sensors", False),
        "ObservedProperty": ("ObservedProperties", False),
        "Observations": ("Observations", True),
    },
    "FeaturesOfInterest": {"Observations": ("Observations", True)},
    "MultiDatastreams": {
        "Thing": ("Things", False),
        "Sensor": ("Sensors", False),
        "ObservedProperties": ("ObservedProperties", True),
        "Observations": ("Observations", True),
    },
    # a HistoricalLocation created by a client records where its Thing was (A.3)
    "HistoricalLocations": {"Thing": ("Things", False), "Locations": ("Locations", True)},
}
#: The links a created entity cannot do without (the schema's foreign keys).
REQUIRED_LINKS = {
    "Datastreams": ("Thing", "Sensor", "ObservedProperty"),
    "MultiDatastreams": ("Thing", "Sensor", "ObservedProperties"),
}
_UNITS = {"name", "symbol", "definition"}


@dataclass(frozen=True)
class NewEntity:
    """An entity to create (``values``: column → value) with its nested entities and links:
    ``links`` maps a navigation to existing ids, ``nested`` to entities to create with it,
    ``observations`` the Observations of a new Datastream. ``ordered``: a to-many navigation's
    links and nested entities together, in the body's order (a MultiDatastream's
    ObservedProperties, whose order is that of its results)."""

    entity_set: str
    values: dict[str, Any]
    links: dict[str, list[int]] = field(default_factory=dict)
    nested: dict[str, list[NewEntity]] = field(default_factory=dict)
    observations: list[Any] = field(default_factory=list)
    ordered: dict[str, list[int | NewEntity]] = field(default_factory=dict)


def _value(f: Field, raw: Any, path: str) -> Any:
    if f.kind == "text":
        return _text(raw, path)
    if f.kind == "object":
        return _json_object(raw, path)
    if f.kind == "time":
        return instant(raw, path)
    if f.kind == "geometry":
        if raw is None and not f.required:
            return None
        return geometry(raw, path)
    if f.kind == "complex":
        if raw != COMPLEX_OBSERVATION:
            raise BadRequestError(
                f"{path} of a MultiDatastream is {COMPLEX_OBSERVATION!r} (its Observations'"
                " results are arrays), not " + repr(raw)
            )
        return raw
    if f.kind in ("texts", "units"):
        if not isinstance(raw, list) or not raw:
            raise BadRequestError(f"{path} must be a non-empty array, not {_kind(raw)}")
        if f.kind == "texts":
            return [_text(x, f"{path}[{i}]") for i, x in enumerate(raw)]
        unit = Field(f.column, "unit")
        return [_value(unit, x, f"{path}[{i}]") for i, x in enumerate(raw)]
    obj = _object(raw, path)  # unit
    bad = sorted(set(obj) - _UNITS)
    if bad:
        raise BadRequestError(f"{path}/{bad[0]}: a unitOfMeasurement has name, symbol, definition")
    for k, v in obj.items():
        if v is not None:
            _text(v, f"{path}/{k}")
    return obj


def _check_names(entity_set: str, body: dict[str, Any], path: str) -> None:
    known = set(FIELDS[entity_set]) | set(LINKS.get(entity_set, {}))
    for name in body:
        if name in known or name == "@iot.id":
            continue
        if name in READ_ONLY:
            raise BadRequestError(f"{_where(path, name)} is computed by the server; leave it out")
        raise BadRequestError(
            f"{_where(path, name)}: {entity_set} have no property {name!r}; known: "
            + ", ".join(sorted(known))
        )


def entity(
    entity_set: str,
    raw: Any,
    path: str = "",
    now: datetime | None = None,
    max_future_seconds: int = 300,
) -> NewEntity:
    """A body that creates an entity of ``entity_set``, with the entities it nests (deep insert)
    and the existing ones it links by ``@iot.id``."""
    body = _object(raw, path)
    _check_names(entity_set, body, path)
    if body.get("@iot.id") is not None:
        raise BadRequestError(
            f"{_where(path, '@iot.id')}: ids are assigned by the server; to link an existing"
            " entity, send only its @iot.id"
        )
    values: dict[str, Any] = {}
    for name, f in FIELDS[entity_set].items():
        if name not in body:
            if f.required:
                raise BadRequestError(f"{_where(path, name)} is required")
            continue
        values[f.column] = _value(f, body[name], _where(path, name))
    new = NewEntity(entity_set, values)
    for nav, (target, many) in LINKS.get(entity_set, {}).items():
        if nav not in body:
            continue
        npath = _where(path, nav)
        raw_nav = body[nav]
        items: list[Any]
        if many:
            if not isinstance(raw_nav, list):
                raise BadRequestError(f"{npath} must be an array, not {_kind(raw_nav)}")
            items = [(f"{npath}[{i}]", x) for i, x in enumerate(raw_nav)]
        else:
            items = [(npath, raw_nav)]
        for ipath, item in items:
            obj = _object(item, ipath)
            if target == "Observations":
                if now is None:
                    raise BadRequestError(f"{ipath}: Observations cannot be nested here")
                if "@iot.id" in obj:
                    raise BadRequestError(f"{ipath}: an existing Observation cannot be linked")
                new.observations.append(observation(obj, now, max_future_seconds, ipath))
            elif set(obj) == {"@iot.id"}:
                linked = entity_id(obj["@iot.id"], f"{ipath}/@iot.id")
                new.links.setdefault(nav, []).append(linked)
                new.ordered.setdefault(nav, []).append(linked)
            else:
                child = entity(target, obj, ipath, now, max_future_seconds)
                new.nested.setdefault(nav, []).append(child)
                new.ordered.setdefault(nav, []).append(child)
    if entity_set == "MultiDatastreams":
        _check_multi(new, path)
    return new


def _check_multi(new: NewEntity, path: str) -> None:
    """A new MultiDatastream: as many unitOfMeasurements as multiObservationDataTypes and
    ObservedProperties (when the body names them), and its Observations' results arrays of
    that length."""
    types: list[str] = new.values["multi_observation_data_types"]
    units = new.values["unit_of_measurements"]
    if len(units) != len(types):
        raise BadRequestError(
            f"{_where(path, 'unitOfMeasurements')} has {len(units)} entries and"
            f" multiObservationDataTypes {len(types)}: one of each per ObservedProperty, in"
            " the same order"
        )
    props = new.ordered.get("ObservedProperties")
    if props is not None and len(props) != len(types):
        raise BadRequestError(
            f"{_where(path, 'ObservedProperties')} has {len(props)} entries and"
            f" multiObservationDataTypes {len(types)}: one ObservedProperty per value of the"
            " results, in the same order"
        )
    for i, o in enumerate(new.observations):
        multi_result(o.result, types, "this MultiDatastream", _where(path, f"Observations[{i}]"))


def patch(entity_set: str, raw: Any) -> tuple[dict[str, Any], dict[str, int]]:
    """A PATCH body: the columns to set and the to-one links to change (navigation → id).
    Properties left out keep their value; a required property cannot be set to null."""
    body = _object(raw, "")
    _check_names(entity_set, body, "")
    if "@iot.id" in body:
        raise BadRequestError("@iot.id cannot be changed")
    values: dict[str, Any] = {}
    for name, f in FIELDS[entity_set].items():
        if name in body:
            if body[name] is None and f.required:
                raise BadRequestError(f"{name} cannot be null")
            values[f.column] = _value(f, body[name], name)
    links: dict[str, int] = {}
    for nav, (_, many) in LINKS.get(entity_set, {}).items():
        if nav not in body:
            continue
        if (entity_set, nav) in (("Things", "Locations"), ("HistoricalLocations", "Locations")):
            # the Thing moves; a HistoricalLocation's record of where it was is corrected
            refs = body[nav]
            if not isinstance(refs, list) or not refs:
                raise BadRequestError(f"{nav} must be a non-empty array of links")
            moved = [
                entity_id(_object(x, f"{nav}[{i}]").get("@iot.id"), f"{nav}[{i}]/@iot.id")
                for i, x in enumerate(refs)
            ]
            values["_locations"] = moved
            continue
        if many:
            raise BadRequestError(
                f"{nav}: PATCH changes an entity's own properties and to-one links; change"
                f" {nav} through their own entities"
            )
        ref = _object(body[nav], nav)
        if set(ref) != {"@iot.id"}:
            raise BadRequestError(f'{nav} must link an existing entity: {{"@iot.id": <id>}}')
        links[nav] = entity_id(ref["@iot.id"], f"{nav}/@iot.id")
    if not values and not links:
        raise BadRequestError("the PATCH body changes nothing")
    return values, links


def observation_patch(raw: Any, current: datetime) -> tuple[dict[str, Any], int | None]:
    """A PATCH body of an Observation: the columns to set, and the FeatureOfInterest to link.
    Its Datastream and phenomenonTime make its id and cannot change."""
    body = _object(raw, "")
    unknown = sorted(set(body) - _OBSERVATION_FIELDS)
    if unknown:
        raise BadRequestError(f"{unknown[0]}: an Observation has no property {unknown[0]!r}")
    for name in ("validTime", "resultQuality"):
        if body.get(name) is not None:
            raise BadRequestError(f"{name}: Quartier does not store {name}")
    if "phenomenonTime" in body and instant(body["phenomenonTime"], "phenomenonTime") != current:
        raise BadRequestError(
            "phenomenonTime: an Observation's id is made of its Datastream and phenomenonTime,"
            " so it cannot change; delete the Observation and create it at the new time"
        )
    for name in ("Datastream", "MultiDatastream"):
        if name in body:
            raise BadRequestError(
                f"{name}: an Observation cannot move to another {name} (its id would change)"
            )
    if "@iot.id" in body:
        raise BadRequestError("@iot.id cannot be changed")
    values: dict[str, Any] = {}
    if "result" in body:
        r = body["result"]
        if r is None:
            raise BadRequestError("result cannot be null")
        if isinstance(r, float) and not math.isfinite(r):
            raise BadRequestError("result is not a finite number")
        number = isinstance(r, int | float) and not isinstance(r, bool)
        values["result"] = float(r) if number else None
        values["result_json"] = None if number else r
    if "resultTime" in body:
        rt = body["resultTime"]
        values["result_time"] = None if rt is None else instant(rt, "resultTime")
    if "parameters" in body:
        values["parameters"] = _json_object(body["parameters"], "parameters")
    foi: int | None = None
    if body.get("FeatureOfInterest") is not None:
        ref = _object(body["FeatureOfInterest"], "FeatureOfInterest")
        if set(ref) != {"@iot.id"}:
            raise BadRequestError('FeatureOfInterest must link an existing one: {"@iot.id": <id>}')
        foi = entity_id(ref["@iot.id"], "FeatureOfInterest/@iot.id")
        values["foi_id"] = foi
    if not values:
        raise BadRequestError("the PATCH body changes nothing")
    return values, foi


def observation_put(
    raw: Any, own_id: str, datastream_id: int, current: datetime
) -> tuple[dict[str, Any], int | None]:
    """A PUT body of an Observation (OGC 18-088, A.3: the entity replaced): the columns to set
    and the FeatureOfInterest to link. ``result`` is required; ``resultTime`` and
    ``parameters`` left out are reset to null; the FeatureOfInterest left out stays (an
    Observation always has one). Its own ``@iot.id``, ``phenomenonTime`` and (Multi)Datastream
    may be sent (clients send the entity whole) but cannot change: they make its id."""
    body = dict(_object(raw, ""))
    if body.get("@iot.id") is not None:
        if str(body["@iot.id"]) != own_id:
            raise BadRequestError(
                f"@iot.id {body['@iot.id']!r} is not the id of the Observation replaced"
            )
        del body["@iot.id"]
    owner, owner_id = ("Datastream", datastream_id)
    if datastream_id < 0:
        owner, owner_id = ("MultiDatastream", -datastream_id)
    ref = body.get(owner)
    if (
        isinstance(ref, dict)
        and set(ref) == {"@iot.id"}
        and entity_id(ref["@iot.id"], f"{owner}/@iot.id") == owner_id
    ):
        del body[owner]  # its own: no change
    if body.get("result") is None:
        raise BadRequestError(
            "result is required: PUT replaces the whole Observation (PATCH changes a part)"
        )
    values, foi = observation_patch(body, current)
    values.setdefault("result_time", None)
    values.setdefault("parameters", None)
    return values, foi


# ----------------------------------------------------------------------------- CreateObservations
#: The components a CreateObservations dataArray may carry (OGC 18-088, 14.2).
COMPONENTS = {
    "phenomenonTime",
    "result",
    "resultTime",
    "parameters",
    "FeatureOfInterest/id",
    "validTime",
    "resultQuality",
}


@dataclass(frozen=True)
class DataArray:
    """One Datastream's (or MultiDatastream's, ``multi``) rows of a CreateObservations body:
    each an Observation, or the :class:`BadRequestError` that refused it (its answer is
    ``"error"``). A MultiDatastream's results are arrays, checked against its
    multiObservationDataTypes where those are known (:func:`multi_result`)."""

    datastream_id: int
    rows: list[NewObservation | BadRequestError]
    multi: bool = False

    @property
    def stored_id(self) -> int:
        """The ``datastream_id`` its observations are stored under (a MultiDatastream's:
        -<its id>)."""
        return -self.datastream_id if self.multi else self.datastream_id

    @property
    def owner(self) -> str:
        """``Datastream 3`` or ``MultiDatastream 3`` (for messages)."""
        return f"{'MultiDatastream' if self.multi else 'Datastream'} {self.datastream_id}"


def create_observations(raw: Any, now: datetime, max_future_seconds: int) -> list[DataArray]:
    """A ``CreateObservations`` body: an array of ``{Datastream, components, dataArray}``. A
    problem with the structure is a 400; a row that is not a valid Observation is refused alone
    (the other rows are stored)."""
    if not isinstance(raw, list) or not raw:
        raise BadRequestError(
            "the body must be a non-empty JSON array of {Datastream, components, dataArray}"
        )
    out = []
    for i, item in enumerate(raw):
        path = f"[{i}]"
        obj = _object(item, path)
        known = {"Datastream", "MultiDatastream", "components", "dataArray", "dataArray@iot.count"}
        extra = sorted(set(obj) - known)
        if extra:
            raise BadRequestError(f"{path}/{extra[0]}: not a part of CreateObservations")
        if "Datastream" in obj and "MultiDatastream" in obj:
            raise BadRequestError(
                f"{path}/MultiDatastream: a dataArray belongs to a Datastream or to a"
                " MultiDatastream, not to both"
            )
        owner = "MultiDatastream" if "MultiDatastream" in obj else "Datastream"
        ref = _object(obj.get(owner), f"{path}/{owner}")
        ds = entity_id(ref.get("@iot.id"), f"{path}/{owner}/@iot.id")
        components = obj.get("components")
        if not isinstance(components, list) or not all(isinstance(c, str) for c in components):
            raise BadRequestError(f"{path}/components must be an array of property names")
        for c in components:
            if c not in COMPONENTS:
                raise BadRequestError(
                    f"{path}/components: {c!r} is not one of " + ", ".join(sorted(COMPONENTS))
                )
        if "result" not in components or len(set(components)) != len(components):
            raise BadRequestError(f"{path}/components must name result, each component once")
        data = obj.get("dataArray")
        if not isinstance(data, list):
            raise BadRequestError(f"{path}/dataArray must be an array of arrays")
        rows: list[NewObservation | BadRequestError] = []
        fast = _fast_rows(ds, components, now, max_future_seconds, owner == "MultiDatastream")
        for j, values in enumerate(data):
            if fast is not None:
                quick = fast(values)
                if quick is not None:
                    rows.append(quick)
                    continue
            rpath = f"{path}/dataArray[{j}]"
            try:
                if not isinstance(values, list) or len(values) != len(components):
                    raise BadRequestError(f"{rpath} must have {len(components)} values")
                body = dict(zip(components, values, strict=True))
                foi = body.pop("FeatureOfInterest/id", None)
                if foi is not None:
                    body["FeatureOfInterest"] = {"@iot.id": foi}
                rows.append(observation(body, now, max_future_seconds, rpath))
            except BadRequestError as exc:
                rows.append(exc)
        out.append(DataArray(ds, rows, owner == "MultiDatastream"))
    return out


_FAST_COMPONENTS = frozenset({"phenomenonTime", "result", "resultTime"})


def _fast_rows(
    ds: int, components: list[str], now: datetime, max_future_seconds: int, multi: bool = False
) -> Callable[[Any], NewObservation | None] | None:
    """For dataArrays of times and numbers only (of a MultiDatastream, ``multi``: times and
    arrays, whose values the route checks against its multiObservationDataTypes): a row parser
    that takes plainly valid rows (RFC 3339 times with a zone, in range; a finite number, or an
    array) and returns None for any other, which :func:`observation` then parses (and names what
    is wrong). The same Observation either way (tests/test_api_sta_write.py and
    tests/test_api_sta_write_bulk.py feed both the same rows)."""
    if not set(components) <= _FAST_COMPONENTS:
        return None
    n = len(components)
    it = components.index("phenomenonTime") if "phenomenonTime" in components else -1
    ir = components.index("result")
    irt = components.index("resultTime") if "resultTime" in components else -1
    latest = now + timedelta(seconds=max_future_seconds)
    default_time = now.astimezone(UTC)

    def when(raw: Any, upper: datetime | None) -> datetime | None:
        if type(raw) is not str or "/" in raw:
            return None
        try:
            t = datetime.fromisoformat(raw)
        except ValueError:
            return None
        if t.tzinfo is None:
            return None
        try:
            t = t.astimezone(UTC)
        except OverflowError:
            return None
        if t < EARLIEST or (upper is not None and t > upper):
            return None
        return t

    def parse(values: Any) -> NewObservation | None:
        if type(values) is not list or len(values) != n:
            return None
        r = values[ir]
        if multi:
            if type(r) is not list:
                return None
        elif type(r) is float:
            if not math.isfinite(r):
                return None
        elif type(r) is not int:
            return None
        t = default_time if it < 0 or values[it] is None else when(values[it], latest)
        if t is None:
            return None
        rt = None
        if irt >= 0 and values[irt] is not None:
            rt = when(values[irt], None)
            if rt is None:
                return None
        return NewObservation(None, t, r, rt)

    return parse
