"""Types of the arguments the client takes, for annotations (a module of names only)."""

import datetime
from typing import Iterable, Literal, Mapping, Optional, TypedDict, Union

Body = Union[bytes, bytearray, memoryview, str]
"""A message body: bytes as they are, or a str sent as UTF-8."""

Seconds = Union[float, int, datetime.timedelta]
"""A duration: a number of seconds or a datetime.timedelta."""


Report = Literal["arrival", "delivery", "exception"]
"""A delivery report's kind: stored in its destination queue, taken by an application there,
or dead-lettered anywhere."""

Reports = Union[str, Iterable[Report]]
"""The reports a put asks for: "arrival,delivery" or an iterable of kinds."""


class PutOptions(TypedDict, total=False):
    """The options of Client.put, as the dict of a put_batch item."""

    priority: int
    ttl: Optional[Seconds]
    headers: Optional[Mapping[str, str]]
    correlation_id: Optional[str]
    reply_to: Optional[str]
    persistent: bool
    reports: Optional[Reports]
