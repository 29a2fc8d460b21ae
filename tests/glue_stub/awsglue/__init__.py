"""A stand-in for AWS Glue's ``awsglue`` package, at the boundary only (Glue is not installable here).

It behaves like Glue where the job relies on it: ``getResolvedOptions`` parses ``--name value`` pairs
and fails on a missing one; ``GlueContext.create_data_frame.from_options`` returns a streaming frame with
the columns Glue's Kinesis source gives for the job's connection options (here read from JSON-lines
files named by ``GLUE_STUB_KINESIS_DIR``, with Spark's JSON reader and the job's schema); and
``forEachBatch`` runs the batch function over it with the given checkpoint. Calls are recorded in ``CALLS``.
"""

CALLS: list[tuple] = []
