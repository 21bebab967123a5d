#!/usr/bin/env python3
"""Validate OpenAPI documents with openapi-spec-validator.

Usage: check_openapi.py FILE.json [FILE.json ...]
Prints one line per file; exits 1 if any is not a valid OpenAPI 3.1 document.
"""
import json
import sys

from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

failed = 0
for path in sys.argv[1:]:
    with open(path) as f:
        doc = json.load(f)
    try:
        if not str(doc.get("openapi", "")).startswith("3.1"):
            raise OpenAPIValidationError(f"openapi is {doc.get('openapi')!r}, not 3.1.x")
        validate(doc)
        print(f"valid   {path}")
    except Exception as e:  # noqa: BLE001
        failed += 1
        print(f"INVALID {path}: {str(e).splitlines()[0]}")
sys.exit(1 if failed else 0)
