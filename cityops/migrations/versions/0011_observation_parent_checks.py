"""Sensing, PostgreSQL: the references of ``sta_observations`` to its Datastream and FeatureOfInterest are
checked once per statement instead of once per row.

A foreign key checks each inserted row with its own lookup and lock of the parent row; at bulk ingest rates
(50,000 observations a batch, all from a few hundred datastreams) those per-row checks were 60 % of the
insert. The two foreign keys are replaced by triggers that keep the same guarantees set-based:

* on INSERT/UPDATE of observations, the statement's distinct datastreams and features are locked
  ``FOR KEY SHARE`` (as a foreign-key check locks them, so a concurrent delete waits for this transaction)
  and any that does not exist fails the statement with SQLSTATE 23503 (foreign_key_violation);
* deleting a datastream deletes its observations (was ON DELETE CASCADE); deleting a feature of interest
  clears the observations' reference (was ON DELETE SET NULL); a parent's id never changes.

SQLite keeps the foreign keys: its checks are index probes inside the engine, a small part of its insert.

Revision ID: 0011
Revises: 0010
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_CHECK = """
CREATE OR REPLACE FUNCTION cityops_observations_check_parents() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    missing bigint;
BEGIN
    PERFORM 1 FROM sta_datastreams d WHERE d.id IN (SELECT DISTINCT datastream_id FROM new_rows) FOR KEY SHARE OF d;
    SELECT n.datastream_id INTO missing FROM (SELECT DISTINCT datastream_id FROM new_rows) n
        WHERE NOT EXISTS (SELECT 1 FROM sta_datastreams d WHERE d.id = n.datastream_id) LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'insert or update on table "sta_observations": Datastream % does not exist', missing
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    PERFORM 1 FROM sta_features f WHERE f.id IN (SELECT DISTINCT foi_id FROM new_rows WHERE foi_id IS NOT NULL) FOR KEY SHARE OF f;
    SELECT n.foi_id INTO missing FROM (SELECT DISTINCT foi_id FROM new_rows WHERE foi_id IS NOT NULL) n
        WHERE NOT EXISTS (SELECT 1 FROM sta_features f WHERE f.id = n.foi_id) LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'insert or update on table "sta_observations": FeatureOfInterest % does not exist', missing
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER sta_observations_parents_insert AFTER INSERT ON sta_observations REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION cityops_observations_check_parents();
CREATE TRIGGER sta_observations_parents_update AFTER UPDATE ON sta_observations REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION cityops_observations_check_parents();

CREATE OR REPLACE FUNCTION cityops_datastreams_deleted() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
    DELETE FROM sta_observations WHERE datastream_id IN (SELECT id FROM old_rows);
    RETURN NULL;
END $$;
CREATE TRIGGER sta_datastreams_delete_observations AFTER DELETE ON sta_datastreams REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION cityops_datastreams_deleted();

CREATE OR REPLACE FUNCTION cityops_features_deleted() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
    UPDATE sta_observations SET foi_id = NULL WHERE foi_id IN (SELECT id FROM old_rows);
    RETURN NULL;
END $$;
CREATE TRIGGER sta_features_unlink_observations AFTER DELETE ON sta_features REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION cityops_features_deleted();

CREATE OR REPLACE FUNCTION cityops_parent_id_fixed() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
    IF NEW.id <> OLD.id THEN
        RAISE EXCEPTION '%: the id of a row observations refer to cannot change', TG_TABLE_NAME USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER sta_datastreams_id_fixed BEFORE UPDATE OF id ON sta_datastreams FOR EACH ROW EXECUTE FUNCTION cityops_parent_id_fixed();
CREATE TRIGGER sta_features_id_fixed BEFORE UPDATE OF id ON sta_features FOR EACH ROW EXECUTE FUNCTION cityops_parent_id_fixed();
"""

_DROP = """
DROP TRIGGER IF EXISTS sta_observations_parents_insert ON sta_observations;
DROP TRIGGER IF EXISTS sta_observations_parents_update ON sta_observations;
DROP TRIGGER IF EXISTS sta_datastreams_delete_observations ON sta_datastreams;
DROP TRIGGER IF EXISTS sta_features_unlink_observations ON sta_features;
DROP TRIGGER IF EXISTS sta_datastreams_id_fixed ON sta_datastreams;
DROP TRIGGER IF EXISTS sta_features_id_fixed ON sta_features;
DROP FUNCTION IF EXISTS cityops_observations_check_parents();
DROP FUNCTION IF EXISTS cityops_datastreams_deleted();
DROP FUNCTION IF EXISTS cityops_features_deleted();
DROP FUNCTION IF EXISTS cityops_parent_id_fixed();
"""


def _foreign_keys(bind) -> list[str]:
    return [name for (name,) in bind.exec_driver_sql(
        "SELECT conname FROM pg_constraint WHERE conrelid = 'sta_observations'::regclass AND contype = 'f' ORDER BY conname")]


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    for name in _foreign_keys(bind):
        op.execute(f'ALTER TABLE sta_observations DROP CONSTRAINT "{name}"')
    op.execute(_CHECK)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    op.execute(_DROP)
    op.execute("ALTER TABLE sta_observations ADD CONSTRAINT sta_observations_datastream_id_fkey FOREIGN KEY (datastream_id) "
               "REFERENCES sta_datastreams (id) ON DELETE CASCADE")
    op.execute("ALTER TABLE sta_observations ADD CONSTRAINT sta_observations_foi_id_fkey FOREIGN KEY (foi_id) "
               "REFERENCES sta_features (id) ON DELETE SET NULL")
