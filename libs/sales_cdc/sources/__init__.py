"""Where the job's records come from, each normalised to ``schema.SOURCE_FIELDS`` (a payload: the JSON of one
DynamoDB stream record, as the EventBridge Pipe puts it on Kinesis, and where it came from).

- ``files``: a folder of JSON-lines files (the local job, fixtures);
- ``kinesis``: the local Kinesis source, a Spark Python data source (Glue reads Kinesis natively: ``glue``).
"""
