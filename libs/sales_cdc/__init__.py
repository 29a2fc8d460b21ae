"""Sales CDC pipeline: DynamoDB stream -> Kinesis -> Spark -> lake + warehouse."""
