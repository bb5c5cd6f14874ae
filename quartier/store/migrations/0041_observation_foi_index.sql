-- FeatureOfInterest navigation (`/v1.1/FeaturesOfInterest(id)/Observations`, and `$filter` on
-- FeatureOfInterest/id) without a scan of every observation (issue #13 item 7; measured in
-- docs/sensorthings.md "Observation ids", bench/sta_ids.py).
--
-- Partial: only observations that have a FeatureOfInterest are in it (those made over REST,
-- CreateObservations or the MQTT create topics; the ingester stores none), so ingest pays no index
-- entry and no byte per observation. Its columns follow the collection's order
-- (datastream_id, phenomenon_time), so a page is an ordered index range, also for a
-- FeatureOfInterest with millions of observations.
--
-- Observation ids (decided here, nothing else changes): they stay derived from
-- (datastream_id, phenomenon_time); no id column, no discriminator (see docs/sensorthings.md).
create index observation_foi_idx on observation (foi_id, datastream_id, phenomenon_time)
    where foi_id is not null;
