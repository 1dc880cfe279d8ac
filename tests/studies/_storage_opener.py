"""Run by the storage tests, several at once: open a cnnlab tune storage at a given moment.

    python _storage_opener.py URL START_TIME

prints ``ok`` or the one error line.
"""

import sys
import time

from cnnlab.errors import UserError
from cnnlab.studies import tune

url, start = sys.argv[1], float(sys.argv[2])
while time.time() < start:  # every process imported optuna: now they race for the schema
    time.sleep(0.001)
try:
    tune.open_storage(url)
    print("ok")
except UserError as exc:
    print(f"ERR {exc}")
