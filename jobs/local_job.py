"""Local entry point: ``spark-submit jobs/local_job.py run --source-dir DIR --checkpoint-dir DIR [...]``.

Thin on purpose: everything is in the ``sales_cdc`` package (``sales-cdc --help`` lists the options).
"""

import sys

from sales_cdc.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
