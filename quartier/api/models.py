"""Response models. SensorThings entities use the standard's JSON names (``@iot.id`` …)."""

from __future__ import annotations

from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
)


def _null(value: Any) -> bool:
    """Left out of a body when null, as FROST does (its Python client refuses ``null``
    properties of a Sensor or Location)."""
    return value is None


class _Entity(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: int = Field(alias="@iot.id")
    self_link: str = Field(alias="@iot.selfLink")


class Thing(_Entity):
    name: str
    description: str
    properties: dict[str, Any] | None = Field(default=None, exclude_if=_null)
    locations_link: str = Field(alias="Locations@iot.navigationLink")
    historical_locations_link: str = Field(alias="HistoricalLocations@iot.navigationLink")
    datastreams_link: str = Field(alias="Datastreams@iot.navigationLink")
    multi_datastreams_link: str = Field(alias="MultiDatastreams@iot.navigationLink")


class Location(_Entity):
    name: str
    description: str
    encoding_type: str = Field(alias="encodingType")
    location: dict[str, Any]
    properties: dict[str, Any] | None = Field(default=None, exclude_if=_null)
    things_link: str = Field(alias="Things@iot.navigationLink")
    historical_locations_link: str = Field(alias="HistoricalLocations@iot.navigationLink")


class HistoricalLocation(_Entity):
    time: str
    thing_link: str = Field(alias="Thing@iot.navigationLink")
    locations_link: str = Field(alias="Locations@iot.navigationLink")


class UnitOfMeasurement(BaseModel):
    name: str | None = None
    symbol: str | None = None
    definition: str | None = None


class Datastream(_Entity):
    name: str
    description: str
    observation_type: str = Field(alias="observationType")
    unit_of_measurement: UnitOfMeasurement = Field(alias="unitOfMeasurement")
    observed_area: dict[str, Any] | None = Field(default=None, alias="observedArea")
    phenomenon_time: str | None = Field(default=None, alias="phenomenonTime")
    properties: dict[str, Any] | None = Field(default=None, exclude_if=_null)
    thing_link: str = Field(alias="Thing@iot.navigationLink")
    sensor_link: str = Field(alias="Sensor@iot.navigationLink")
    observed_property_link: str = Field(alias="ObservedProperty@iot.navigationLink")
    observations_link: str = Field(alias="Observations@iot.navigationLink")


class Sensor(_Entity):
    name: str
    description: str
    encoding_type: str = Field(alias="encodingType")
    metadata: str
    properties: dict[str, Any] | None = Field(default=None, exclude_if=_null)
    datastreams_link: str = Field(alias="Datastreams@iot.navigationLink")
    multi_datastreams_link: str = Field(alias="MultiDatastreams@iot.navigationLink")


class ObservedProperty(_Entity):
    name: str
    definition: str
    description: str
    properties: dict[str, Any] | None = Field(default=None, exclude_if=_null)
    datastreams_link: str = Field(alias="Datastreams@iot.navigationLink")
    multi_datastreams_link: str = Field(alias="MultiDatastreams@iot.navigationLink")


class Observation(_Entity):
    #: derived from the primary key: "<datastream id>:<µs since 1970>" (a MultiDatastream's:
    #: "-<its id>:<µs since 1970>")
    id: str = Field(alias="@iot.id")  # type: ignore[assignment]

    phenomenon_time: str = Field(alias="phenomenonTime")
    result_time: str | None = Field(alias="resultTime")
    result: Any
    parameters: dict[str, Any] | None = None
    #: the Datastream, or (MultiDatastream extension) the MultiDatastream: exactly one of them
    datastream_link: str | None = Field(
        default=None, alias="Datastream@iot.navigationLink", exclude_if=lambda v: v is None
    )
    multi_datastream_link: str | None = Field(
        default=None, alias="MultiDatastream@iot.navigationLink", exclude_if=lambda v: v is None
    )
    #: only when the Observation has a FeatureOfInterest (ingest stores none)
    feature_of_interest_link: str | None = Field(
        default=None,
        alias="FeatureOfInterest@iot.navigationLink",
        exclude_if=lambda v: v is None,
    )


class FeatureOfInterest(_Entity):
    name: str
    description: str
    encoding_type: str = Field(alias="encodingType")
    feature: dict[str, Any]
    properties: dict[str, Any] | None = Field(default=None, exclude_if=_null)
    observations_link: str = Field(alias="Observations@iot.navigationLink")


class MultiDatastream(_Entity):
    """The MultiDatastream extension (OGC 18-088, A.5): one value per ObservedProperty in each
    Observation's result array, in the order of ``ObservedProperties``."""

    name: str
    description: str
    observation_type: str = Field(alias="observationType")
    multi_observation_data_types: list[str] = Field(alias="multiObservationDataTypes")
    unit_of_measurements: list[UnitOfMeasurement] = Field(alias="unitOfMeasurements")
    observed_area: dict[str, Any] | None = Field(default=None, alias="observedArea")
    phenomenon_time: str | None = Field(default=None, alias="phenomenonTime")
    properties: dict[str, Any] | None = Field(default=None, exclude_if=_null)
    thing_link: str = Field(alias="Thing@iot.navigationLink")
    sensor_link: str = Field(alias="Sensor@iot.navigationLink")
    observed_properties_link: str = Field(alias="ObservedProperties@iot.navigationLink")
    observations_link: str = Field(alias="Observations@iot.navigationLink")


class _Collection(BaseModel):
    """A collection; ``@iot.count`` and ``@iot.nextLink`` appear only when they have a value."""

    model_config = ConfigDict(populate_by_name=True)

    count: int | None = Field(default=None, alias="@iot.count")
    next_link: str | None = Field(default=None, alias="@iot.nextLink")
    #: present (true) only when @iot.count is an estimate (very large TimescaleDB datastreams)
    count_is_estimate: bool | None = Field(default=None, alias="@quartier.countIsEstimate")

    @model_serializer(mode="wrap")
    def _omit_empty_annotations(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for key in ("@iot.count", "@iot.nextLink", "@quartier.countIsEstimate"):
            if key in data and data[key] is None:
                del data[key]
        return data


class ThingCollection(_Collection):
    value: list[Thing]


class LocationCollection(_Collection):
    value: list[Location]


class HistoricalLocationCollection(_Collection):
    value: list[HistoricalLocation]


class FeatureOfInterestCollection(_Collection):
    value: list[FeatureOfInterest]


class DatastreamCollection(_Collection):
    value: list[Datastream]


class SensorCollection(_Collection):
    value: list[Sensor]


class ObservedPropertyCollection(_Collection):
    value: list[ObservedProperty]


class ObservationCollection(_Collection):
    value: list[Observation]


class MultiDatastreamCollection(_Collection):
    value: list[MultiDatastream]


class ServiceEndpoint(BaseModel):
    name: str
    url: str


class ServiceRoot(BaseModel):
    value: list[ServiceEndpoint]
    server_settings: dict[str, Any] = Field(alias="serverSettings")


class ComponentHealth(BaseModel):
    ok: bool
    detail: str


class Health(BaseModel):
    status: str
    database: ComponentHealth
    mqtt: ComponentHealth
