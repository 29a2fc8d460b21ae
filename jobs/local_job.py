"""Local entry point: ``spark-submit jobs/local_job.py run --source-dir DIR --checkpoint-dir DIR [...]``.

Thin on purpose: the job is the ``sales_cdc`` package, the CLI is ``sales_cdc_local``
(``sales-cdc --help`` lists the options).
"""

import sys

from sales_cdc_local.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
