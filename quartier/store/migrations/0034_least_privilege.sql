-- Least privilege (docs/security.md, "Database: roles and secrets"; roles and grants are set by
-- quartier.store.roles after every migration run).
--
-- The ingester logs in as quartier_ingest, which owns nothing, yet must create the month
-- partition of a reading it sees first: the function does so with its owner's rights (security
-- definer, with a fixed search_path so no one can slip their own objects in front), and only
-- the roles granted it may call it. Dropping partitions stays the owner's (maintenance).
alter function quartier_ensure_observation_partitions(timestamptz, timestamptz)
    security definer set search_path = public, pg_temp;
revoke execute on function quartier_ensure_observation_partitions(timestamptz, timestamptz)
    from public;
revoke execute on function quartier_drop_observation_partitions(timestamptz) from public;
