"""A labeling tool that answers from known gold labels: the annotator of ``alloop simulate``.

It implements :class:`loop.contracts.LabelingTool`, so the controller runs exactly as it does
against Label Studio. Answers are given when items are sent and come back on the next
``fetch_labels``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from loop.errors import DataError
from loop.records import Label, LabelRequest, LabelSnapshot

SOURCE = "oracle"


class OracleTool:
    def __init__(self, gold: Mapping[str, str]) -> None:
        self.gold = dict(gold)
        self._answers: list[tuple[datetime, Label]] = []
        self._sent: set[str] = set()

    def send(self, requests: Sequence[LabelRequest]) -> None:
        now = datetime.now(UTC)
        for r in requests:
            if r.item.id in self._sent:
                continue
            if r.item.id not in self.gold:
                raise DataError(
                    f"the oracle has no gold label for item {r.item.id!r}.",
                    "simulate only on datasets with a label on every row.",
                )
            self._sent.add(r.item.id)
            self._answers.append(
                (
                    now,
                    Label(
                        item_id=r.item.id,
                        value=self.gold[r.item.id],
                        source=SOURCE,
                        annotation_id=f"oracle:{r.item.id}",
                        annotator="oracle",
                        created_at=now,
                    ),
                )
            )

    def fetch_labels(self, since: datetime | None) -> LabelSnapshot:
        now = datetime.now(UTC)
        got = [lab for t, lab in self._answers if since is None or t >= since]
        return LabelSnapshot(
            source=SOURCE, item_ids=tuple(lab.item_id for lab in got), labels=tuple(got), cursor=now
        )
