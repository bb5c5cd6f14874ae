-- coverage_cell partitioned per run, stored compactly (written with one fixed-width binary COPY):
-- every run's cells are one table, coverage_cell_run_<id>, created, filled (COPY FREEZE) and
-- indexed by the transaction that stores the run and attached to coverage_cell_data. Deleting a
-- run drops its table. Text columns are stored as codes into per-run vocabularies in coverage_run
-- (district_codes, class_keys, fixed_technologies); "none" is -1, NaN or cluster 0. The view
-- coverage_cell shows them exactly as before (same columns, types and nulls), so readers do not
-- change.

alter table coverage_run
    add column district_codes     text[] not null default '{}',
    add column class_keys         text[] not null default '{}',
    add column fixed_technologies text[] not null
        default '{ftth,fttb,hfc,vdsl,adsl,fwa,other}';
update coverage_run
set class_keys = array(select c ->> 'key' from jsonb_array_elements(classes) c);

create table coverage_cell_data (
    run_id             bigint not null,
    e                  integer not null,
    n                  integer not null,
    district           integer not null,  -- index into coverage_run.district_codes, -1 none
    households         integer not null,
    addresses          integer not null,
    max_down_mbps      real not null,     -- NaN: no offer
    max_up_mbps        real not null,     -- NaN: no offer or upload unknown
    n_tests            integer not null,
    measured_down_mbps real not null,     -- NaN: fewer than min_tests tests
    measured_ratio     real not null,     -- NaN: none
    n_signal           integer not null,
    mobile_mask        integer not null,
    cluster_id         integer not null,  -- 0: not a gap cell
    best_technology    smallint not null, -- index into coverage_run.fixed_technologies, -1 none
    class              smallint not null, -- index into coverage_run.class_keys, -1 none
    disagreement       smallint not null, -- -1 none, 0 below, 1 above
    operators_measured smallint not null,
    operators_4g       smallint not null,
    operators_5g       smallint not null,
    is_gap             boolean not null,
    dead_zone          boolean not null,
    single_operator    boolean not null,
    primary key (run_id, n, e)
) partition by list (run_id);

-- the cells stored so far, one partition per run
do $$
declare
    r record;
    part text;
begin
    for r in select id from coverage_run order by id loop
        update coverage_run set district_codes = coalesce((
            select array_agg(distinct district_code order by district_code) from coverage_cell
            where run_id = r.id and district_code is not null), '{}')
        where id = r.id;
        part := 'coverage_cell_run_' || r.id;
        execute format('create table %I (like coverage_cell_data)', part);
        execute format(
            'insert into %I select c.run_id, c.e, c.n,'
            ' coalesce(array_position(run.district_codes, c.district_code), 0) - 1,'
            ' c.households, c.addresses, coalesce(c.max_down_mbps, ''NaN''),'
            ' coalesce(c.max_up_mbps, ''NaN''), c.n_tests, coalesce(c.measured_down_mbps, ''NaN''),'
            ' coalesce(c.measured_ratio, ''NaN''), c.n_signal, c.mobile_mask,'
            ' coalesce(c.cluster_id, 0),'
            ' coalesce(array_position(run.fixed_technologies, c.best_technology), 0) - 1,'
            ' coalesce(array_position(run.class_keys, c.class_key), 0) - 1,'
            ' case c.disagreement when ''below'' then 0 when ''above'' then 1 else -1 end,'
            ' c.operators_measured, c.operators_4g, c.operators_5g, c.is_gap, c.dead_zone,'
            ' c.single_operator'
            ' from coverage_cell c join coverage_run run on run.id = c.run_id'
            ' where c.run_id = %s', part, r.id);
        execute format('alter table coverage_cell_data attach partition %I for values in (%s)',
                       part, r.id);
    end loop;
end $$;

drop view coverage_cell_geom;
drop table coverage_cell;

create view coverage_cell as
select c.run_id, c.e, c.n,
       r.district_codes[c.district + 1] as district_code,
       c.households, c.addresses,
       r.fixed_technologies[c.best_technology + 1] as best_technology,
       nullif(c.max_down_mbps, 'NaN') as max_down_mbps,
       nullif(c.max_up_mbps, 'NaN') as max_up_mbps,
       r.class_keys[c.class + 1] as class_key,
       c.is_gap, c.n_tests,
       nullif(c.measured_down_mbps, 'NaN') as measured_down_mbps,
       nullif(c.measured_ratio, 'NaN') as measured_ratio,
       (array['below', 'above'])[c.disagreement + 1] as disagreement,
       c.n_signal, c.mobile_mask, c.operators_measured, c.operators_4g, c.operators_5g,
       c.dead_zone, c.single_operator,
       nullif(c.cluster_id, 0) as cluster_id
from coverage_cell_data c join coverage_run r on r.id = c.run_id;

create view coverage_cell_geom as
select 'CRS3035RES100mN' || c.n || 'E' || c.e as cell_id, c.*,
       ST_Transform(ST_MakeEnvelope(c.e, c.n, c.e + 100, c.n + 100, 3035), 4326) as geom
from coverage_cell c;

-- deleting a run drops its cells' table (instead of deleting 3 M rows one by one)
create or replace function coverage_run_delete_cells() returns trigger language plpgsql as $$
begin
    execute format('drop table if exists %I', 'coverage_cell_run_' || old.id);
    return old;
end $$;

-- Rows inserted into the view (one by one, e.g. by tests of other parts or by hand) go into the
-- run's table (created if missing), with new texts added to the run's vocabularies and missing
-- counts and flags as 0 / false. save_result does not come this way: it writes the table itself.
create function coverage_cell_insert() returns trigger language plpgsql as $$
declare
    part text := 'coverage_cell_run_' || new.run_id;
    r coverage_run;
    d integer := 0;
    k integer := 0;
    t integer := 0;
begin
    select * into r from coverage_run where id = new.run_id for update;
    if not found then
        raise foreign_key_violation using message = format('no coverage run %s', new.run_id);
    end if;
    if to_regclass(quote_ident(part)) is null then
        execute format('create table %I (like coverage_cell_data)', part);
        execute format('alter table coverage_cell_data attach partition %I for values in (%s)',
                       part, new.run_id);
    end if;
    if new.district_code is not null then
        d := array_position(r.district_codes, new.district_code);
        if d is null then
            update coverage_run set district_codes = district_codes || new.district_code
            where id = new.run_id returning cardinality(district_codes) into d;
        end if;
    end if;
    if new.class_key is not null then
        k := array_position(r.class_keys, new.class_key);
        if k is null then
            update coverage_run set class_keys = class_keys || new.class_key
            where id = new.run_id returning cardinality(class_keys) into k;
        end if;
    end if;
    if new.best_technology is not null then
        t := array_position(r.fixed_technologies, new.best_technology);
        if t is null then
            update coverage_run set fixed_technologies = fixed_technologies || new.best_technology
            where id = new.run_id returning cardinality(fixed_technologies) into t;
        end if;
    end if;
    insert into coverage_cell_data values (
        new.run_id, new.e, new.n, d - 1, coalesce(new.households, 0),
        coalesce(new.addresses, 0), coalesce(new.max_down_mbps, 'NaN'),
        coalesce(new.max_up_mbps, 'NaN'), coalesce(new.n_tests, 0),
        coalesce(new.measured_down_mbps, 'NaN'), coalesce(new.measured_ratio, 'NaN'),
        coalesce(new.n_signal, 0), coalesce(new.mobile_mask, 0), coalesce(new.cluster_id, 0),
        t - 1, k - 1,
        case new.disagreement when 'below' then 0 when 'above' then 1 else -1 end,
        coalesce(new.operators_measured, 0), coalesce(new.operators_4g, 0),
        coalesce(new.operators_5g, 0), coalesce(new.is_gap, false), coalesce(new.dead_zone, false),
        coalesce(new.single_operator, false));
    return new;
end $$;

create trigger coverage_cell_insert instead of insert on coverage_cell
    for each row execute function coverage_cell_insert();
