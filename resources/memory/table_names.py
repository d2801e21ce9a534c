"""The Lance memory's table names, importable without pyarrow (`resources.memory.schema` holds their
schemas and re-exports these): the lost-table check of every command reads them before anything
heavy is loaded."""

RECORDS = "records"
EDGES = "edges"
EVENTS = "events"
PROVENANCE = "provenance"
TABLE_NAMES = (RECORDS, EDGES, EVENTS, PROVENANCE)
