import os

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from . import CALLS


class _DataFrameReader:
    def __init__(self, spark):
        self.spark = spark

    def from_options(self, connection_type, connection_options, transformation_ctx=None):
        CALLS.append(("create_data_frame.from_options", connection_type, dict(connection_options)))
        frame = self.spark.readStream.schema(connection_options["schema"]).json(os.environ["GLUE_STUB_KINESIS_DIR"])
        if connection_options.get("addRecordTimestamp") == "true":
            frame = frame.withColumn("__src_timestamp", (F.unix_timestamp(F.current_timestamp()) * 1000).cast("string"))
        return frame


class GlueContext:
    def __init__(self, spark_context):
        self.spark_session = SparkSession.builder.getOrCreate()
        self.create_data_frame = _DataFrameReader(self.spark_session)

    def forEachBatch(self, frame, batch_function, options):
        CALLS.append(("forEachBatch", dict(options)))
        query = (frame.writeStream.foreachBatch(batch_function).option("checkpointLocation", options["checkpointLocation"])
                 .trigger(availableNow=True).start())
        query.awaitTermination()
