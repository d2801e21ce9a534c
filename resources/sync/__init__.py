"""Personal sync: every machine of one person, one usage warehouse, through a bucket or a shared folder.

``SESSIONLAKE_SYNC_URI`` names an ``s3://`` bucket or a folder. Each machine writes only its own files,
under ``usage/<machine>/<id>/`` (``id``: this data home's, so two machines with one host name never
share a folder), each immutable, named by its content, a Parquet file of usage rows (`files`). A sync
(`run.sync`) reads the sessions on disk (usage only), pulls every file it has not read, then pushes
the rows no file holds yet, and compacts this machine's files when they pile up. The warehouse side
(`warehouse`) counts a response once by its usage key and attributes it to the machine that synced it
first, by a logical clock that does not depend on the machines' wall clocks.
"""
