"""Validates the gateway's OpenAPI document with openapi-spec-validator (OpenAPI 3.1).

stdin: the document. stdout: "ok", or the validation error; exit code 1 on error.
"""

import json
import sys

from openapi_spec_validator import validate

doc = json.load(sys.stdin)
try:
    validate(doc)
except Exception as e:  # the validator's verdict, reported back
    print(f"{type(e).__name__}: {e}")
    sys.exit(1)
print("ok")
