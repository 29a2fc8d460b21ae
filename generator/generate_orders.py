"""Entry point of the Faker order generator: ``python generator/generate_orders.py --table OrdersRawTable ...``.

The logic is in ``sales_cdc_local.generator``; this is ``sales-cdc generate`` under another name.
"""

import sys

from sales_cdc_local.cli import main

if __name__ == "__main__":
    sys.exit(main(["generate", *sys.argv[1:]]))
