"""The Spark engine (the ``featurestore[spark]`` extra): :class:`SparkEngine` on an existing
SparkSession or one started from :class:`SparkSettings`. Importing this package does not import
pyspark; the first use of a session does.

Example::

    from featurestore.engine.spark import SparkEngine, SparkSettings
    engine = SparkEngine(settings=SparkSettings.parse("local[2]", ["spark.sql.shuffle.partitions=8"]))
    # or SparkEngine(spark) with a session you have
"""

from featurestore.engine.spark.engine import SparkEngine
from featurestore.engine.spark.session import SparkSettings

__all__ = ["SparkEngine", "SparkSettings"]
