"""Team deployments: machines push their packs and a manifest to a team bucket (`push`), and the
central deployment finds the manifests (`manifests`) and ingests the packs' content
(``resources/team/ingest.py``, ``pipelines/defs/team/definitions.py``).

Bucket layout under ``SESSIONLAKE_TEAM_URI``::

    packs/<sha256-hex>.mpack                      the packs, content-addressed (shared by every machine)
    manifests/<UTC time>-<digest>.json            one per push: user, machine, the packs it names
"""
