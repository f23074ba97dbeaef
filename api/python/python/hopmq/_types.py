"""Types of the arguments the client takes, for annotations (a module of names only)."""

import datetime
from typing import Mapping, Optional, TypedDict, Union

Body = Union[bytes, bytearray, memoryview, str]
"""A message body: bytes as they are, or a str sent as UTF-8."""

Seconds = Union[float, int, datetime.timedelta]
"""A duration: a number of seconds or a datetime.timedelta."""


class PutOptions(TypedDict, total=False):
    """The options of Client.put, as the dict of a put_batch item."""

    priority: int
    ttl: Optional[Seconds]
    headers: Optional[Mapping[str, str]]
    correlation_id: Optional[str]
    reply_to: Optional[str]
    persistent: bool
