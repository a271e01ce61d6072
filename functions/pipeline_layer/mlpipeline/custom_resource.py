"""The CloudFormation custom resource protocol: what a request must carry, and the answer's JSON.

https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/crpg-ref-requesttypes-delete.html (requests)
https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/crpg-ref-responses.html (responses)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

REQUEST_TYPES = ("Create", "Update", "Delete")
# "The total size of the response body can't exceed 4096 bytes." (crpg-ref-responses.html)
MAX_RESPONSE_BYTES = 4096
CUT_MARK = " [cut]"


class InvalidRequest(ValueError):
    """The custom resource's request is unusable; the message says what is wrong."""


def physical_resource_id(event: Mapping[str, Any]) -> str:
    """The same id in every answer for this resource: an Update answering another id would be a
    replacement, and CloudFormation would then send Delete for the old one (crpg-ref-responses.html)."""
    existing = event.get("PhysicalResourceId")
    if existing:
        return str(existing)
    return f"{event.get('StackId', 'stack')}/{event.get('LogicalResourceId', 'StackTeardown')}"


def response_body(event: Mapping[str, Any], status: str, reason: str, data: Mapping[str, Any] | None = None) -> bytes:
    """The JSON CloudFormation expects at ResponseURL, the reason cut so the body fits 4096 bytes."""
    if status not in ("SUCCESS", "FAILED"):
        raise ValueError(f"status must be SUCCESS or FAILED, not {status!r}")
    body: dict[str, Any] = {
        "Status": status,
        "Reason": reason,
        "PhysicalResourceId": physical_resource_id(event),
        "StackId": event.get("StackId", ""),
        "RequestId": event.get("RequestId", ""),
        "LogicalResourceId": event.get("LogicalResourceId", ""),
        "NoEcho": False,
        "Data": dict(data or {}),
    }
    encoded = json.dumps(body).encode()
    if len(encoded) <= MAX_RESPONSE_BYTES:
        return encoded
    # Too long (a reason listing many leftovers): drop Data, keep the longest head of the reason that fits,
    # measured as encoded JSON (escapes make a character up to 12 bytes).
    body["Data"] = {}
    low, high = 0, len(reason)
    while low < high:
        middle = (low + high + 1) // 2
        if len(json.dumps({**body, "Reason": reason[:middle] + CUT_MARK}).encode()) <= MAX_RESPONSE_BYTES:
            low = middle
        else:
            high = middle - 1
    return json.dumps({**body, "Reason": reason[:low] + CUT_MARK}).encode()


def require_protocol_fields(event: Mapping[str, Any]) -> str:
    """The request type, after checking the fields without which no answer can be sent."""
    request_type = event.get("RequestType")
    if request_type not in REQUEST_TYPES:
        raise InvalidRequest(f"RequestType must be Create, Update or Delete, not {request_type!r}")
    url = str(event.get("ResponseURL") or "")
    if urlsplit(url).scheme not in ("https", "http"):
        raise InvalidRequest("the request has no http(s) ResponseURL to answer")
    return str(request_type)
