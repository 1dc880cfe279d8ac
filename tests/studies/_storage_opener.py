"""Run by the storage tests, several at once: open a cnnlab tune storage at a given moment.

    python _storage_opener.py URL START_TIME RETRIES

prints ``ok`` or the one error line; RETRIES replaces ``tune.SCHEMA_RETRIES`` (0: none).
"""

import sys
import time

from cnnlab.errors import UserError
from cnnlab.studies import tune

url, start, retries = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
tune.SCHEMA_RETRIES = retries
while time.time() < start:  # every process imported optuna: now they race for the schema
    time.sleep(0.001)
try:
    tune.open_storage(url)
    print("ok")
except UserError as exc:
    print(f"ERR {exc}")
