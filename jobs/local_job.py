"""Local entry point, with the ``sales_cdc`` package alone (as ``glue_job.py`` is on Glue):

    spark-submit jobs/local_job.py run --source-dir DIR --checkpoint-dir DIR --warehouse-url postgresql://...

Thin on purpose: the options and the run are ``sales_cdc.local_job`` (``run --help`` lists them). The local harness's
``sales-cdc run`` takes the same options and can start an embedded PostgreSQL.
"""

import sys

from sales_cdc.local_job import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
