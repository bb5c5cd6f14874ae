-- Observation on plain PostgreSQL: native monthly range partitions on phenomenon_time, created
-- ahead of time by quartier_ensure_observation_partitions(); a default partition catches the rest
-- (its rows move into a month's partition when that partition is created).

create sequence observation_id_seq cache 1000;

create table observation (
    id              bigint not null default nextval('observation_id_seq'),
    datastream_id   bigint not null,
    phenomenon_time timestamptz not null,
    result          double precision,
    result_json     jsonb,
    result_time     timestamptz,
    parameters      jsonb,
    foi_id          bigint,
    primary key (datastream_id, phenomenon_time)
) partition by range (phenomenon_time);

create table observation_default partition of observation default;

create function quartier_ensure_observation_partitions(from_ts timestamptz, to_ts timestamptz)
returns integer language plpgsql as $$
declare
    m      timestamptz := date_trunc('month', from_ts at time zone 'UTC') at time zone 'UTC';
    nxt    timestamptz;
    name   text;
    made   integer := 0;
begin
    while m < to_ts loop
        nxt := (date_trunc('month', m at time zone 'UTC') + interval '1 month') at time zone 'UTC';
        name := 'observation_p' || to_char(m at time zone 'UTC', 'YYYYMM');
        if to_regclass(name) is null then
            execute format('create table %I (like observation including defaults including constraints)', name);
            execute format(
                'with moved as (delete from observation_default where phenomenon_time >= %L and phenomenon_time < %L returning *) insert into %I select * from moved',
                m, nxt, name);
            execute format('alter table observation attach partition %I for values from (%L) to (%L)', name, m, nxt);
            made := made + 1;
        end if;
        m := nxt;
    end loop;
    return made;
end $$;
