"""An example shardline sink plugin: each record as one event on an EventBridge bus.

    sinks:
      events: {type: eventbridge, bus: orders, source: shop.orders, detail_type: order}

Installed, it is found through the entry-point group ``shardline.sinks`` under the name
``eventbridge``. It follows the sink contract of ``sinks.base.Sink``: ``__init__(name,
**options)`` takes the options from the file; ``_write`` writes one chunk of at most
``max_batch`` records (PutEvents takes 10 entries) and returns one outcome per record;
``option_types`` lets ``shardline validate`` check the options with their line;
``iam_statements`` is what ``shardline template`` grants the functions that route here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from sinks.base import OK, Sink, permanent, retryable

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from sinks.base import Outcome
    from stream.records import Record

__all__ = ["EventBridgeSink"]

#: PutEvents entry errors that a later attempt may not meet (the rest are the entry's fault).
_TRANSIENT = frozenset({"ThrottlingException", "InternalException", "InternalFailure"})


class EventBridgeSink(Sink):
    """Puts each record's JSON document as the ``detail`` of an event on ``bus``.

    Args:
        name: the sink's name in the pipeline file.
        bus: the event bus name (``default`` for the account's default bus).
        source: the events' ``source``.
        detail_type: the events' ``detail-type``.
        client: an EventBridge client; default a shared boto3 one, made on first use.
    """

    max_batch: ClassVar[int] = 10  # PutEvents takes at most 10 entries
    per_key_safe: ClassVar[bool] = False  # entries fail one by one: the base keeps key order
    option_types: ClassVar[Mapping[str, type | tuple[type, ...]]] = {
        "bus": str,
        "source": str,
        "detail_type": str,
    }
    required_options: ClassVar[frozenset[str]] = frozenset({"bus"})

    def __init__(
        self,
        name: str,
        bus: str,
        source: str = "shardline",
        detail_type: str = "record",
        client: Any = None,
    ) -> None:
        super().__init__(name)
        if not bus:
            msg = f"sink {name!r}: bus must name an event bus"
            raise ValueError(msg)
        self.bus, self.source, self.detail_type = bus, source, detail_type
        self._client = client

    @classmethod
    def iam_statements(cls, options: Mapping[str, Any]) -> list[dict[str, Any]]:
        """``events:PutEvents`` on the bus, in the stack's partition, region and account."""
        bus = options["bus"]
        arn = f"arn:${{AWS::Partition}}:events:${{AWS::Region}}:${{AWS::AccountId}}:event-bus/{bus}"
        return [{"Action": ["events:PutEvents"], "Resource": {"Fn::Sub": arn}}]

    def _write(self, items: Sequence[Record]) -> list[Outcome]:
        if self._client is None:
            from stream.aws import aws_client  # noqa: PLC0415  # boto3 on first use

            self._client = aws_client("events")
        entries = [
            {
                "EventBusName": self.bus,
                "Source": self.source,
                "DetailType": self.detail_type,
                "Detail": record.data.decode(),
            }
            for record in items
        ]
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        try:
            answer = self._client.put_events(Entries=entries)
        except (BotoCoreError, ClientError) as exc:  # the call failed: every record alike
            code = getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__)
            # a missing bus or a denied call is the pipeline's fault: stream.faults reports
            # these codes for retry whatever the status, never dead-letters them
            return [retryable(f"PutEvents to bus {self.bus!r} failed: {exc}", code)] * len(items)
        outcomes: list[Outcome] = []
        for entry in answer["Entries"]:
            code = entry.get("ErrorCode")
            if not code:
                outcomes.append(OK)
                continue
            reason = f"event bus {self.bus!r}: {code}: {entry.get('ErrorMessage', '')}"
            transient = code in _TRANSIENT
            outcomes.append(retryable(reason, code) if transient else permanent(reason, code))
        return outcomes
