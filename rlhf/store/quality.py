"""Labeler quality in the store: the loop's latest estimates and the operator's weights (``rlhf_labeler_quality``).

A mixin of :class:`~rlhf.store.store.PreferenceStore`. The estimates are a snapshot that each recording replaces
whole; an operator's weight is kept until the operator clears it, and reading an estimate applies the weight that
holds now, so the admin page shows an operator's change at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from sqlalchemy import select, update

from rlhf.store import statements as sql
from rlhf.store.engine import Transactions
from rlhf.store.records import Labeler, LabelerQuality, UnknownLabelerError, check_weight
from rlhf.store.schema import labeler_quality_table, labelers_table, upsert

_quality = labeler_quality_table
_ESTIMATE_COLUMNS = ("labels", "model_agreement", "peer_agreement", "accuracy", "estimated_weight", "estimated_at")
_NO_ESTIMATE = dict.fromkeys(_ESTIMATE_COLUMNS)


class LabelerQualityMethods:
    """The labeler-quality methods of the preference store."""

    url: str
    _transaction: Transactions
    _clock: Callable[[], float]

    def record_labeler_quality(self, qualities: Mapping[int, LabelerQuality] | Iterable[LabelerQuality]) -> None:
        """Replace the stored estimates with ``qualities`` (what :func:`rlhf.labelers.estimate_labeler_quality`
        returns); a labeler left out has no estimate afterwards. Their ``weight`` and ``overridden`` are not stored:
        the operator's weights are (:meth:`set_labeler_weight`).

        Raises:
            UnknownLabelerError: a labeler id the store does not hold.
        """
        records = list(qualities.values() if isinstance(qualities, Mapping) else qualities)
        now = self._clock()
        with self._transaction(write=True) as conn:
            known = set(conn.execute(select(labelers_table.c.id)).scalars())
            unknown = sorted({quality.labeler_id for quality in records} - known)
            if unknown:
                raise UnknownLabelerError(f"quality of unknown labeler ids {unknown} in the store at {self.url}")
            conn.execute(update(_quality).values(_NO_ESTIMATE))
            for quality in records:
                values = {name: getattr(quality, name) for name in _ESTIMATE_COLUMNS[:-1]}
                upsert(conn, _quality, quality.labeler_id, {**values, "estimated_at": now}, key_column="labeler_id")

    def labeler_quality(self) -> dict[int, LabelerQuality]:
        """The latest recorded estimate per labeler id, with the operator's weight applied where one is set."""
        statement = (
            select(_quality, labelers_table.c.name)
            .join(labelers_table, labelers_table.c.id == _quality.c.labeler_id)
            .where(_quality.c.accuracy.is_not(None))
            .order_by(_quality.c.labeler_id)
        )
        with self._transaction() as conn:
            rows = conn.execute(statement).all()
        return {
            int(row.labeler_id): LabelerQuality(
                labeler_id=int(row.labeler_id),
                name=str(row.name),
                labels=int(row.labels),
                model_agreement=row.model_agreement,
                peer_agreement=row.peer_agreement,
                accuracy=float(row.accuracy),
                estimated_weight=float(row.estimated_weight),
                weight=float(row.estimated_weight if row.weight_override is None else row.weight_override),
                overridden=row.weight_override is not None,
            )
            for row in rows
        }

    def labeler_weight_overrides(self) -> dict[int, float]:
        """The operator's weight per labeler id, for the labelers that have one (the ``overrides`` of
        :func:`rlhf.labelers.estimate_labeler_quality`)."""
        statement = select(_quality.c.labeler_id, _quality.c.weight_override).where(
            _quality.c.weight_override.is_not(None)
        )
        with self._transaction() as conn:
            return {int(labeler_id): float(weight) for labeler_id, weight in conn.execute(statement)}

    def set_labeler_weight(self, labeler: int | str, weight: float | None) -> Labeler:
        """Set the weight of a labeler's labels in reward training (``None``: back to the estimated weight).

        Args:
            labeler: the labeler's id or name.
            weight: a finite number >= 0 (0: their labels do not train; 1: as much as an average label), or None.

        Returns:
            The labeler.

        Raises:
            StoreError: the weight is NaN, infinite, negative or not a number.
            UnknownLabelerError: no such labeler.
        """
        checked = None if weight is None else check_weight(weight, "a labeler's weight")
        column = labelers_table.c.id if isinstance(labeler, int) else labelers_table.c.name
        with self._transaction(write=True) as conn:
            row = conn.execute(select(labelers_table).where(column == labeler)).first()
            if row is None:
                names = list(conn.execute(select(labelers_table.c.name).order_by(labelers_table.c.id)).scalars())
                listed = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "") if names else "none yet"
                what = f"id {labeler}" if isinstance(labeler, int) else f"named {labeler!r}"
                raise UnknownLabelerError(f"no labeler {what} in the store at {self.url} (labelers: {listed})")
            found = sql.labeler_from_row(row)
            values = {"weight_override": checked, "override_at": self._clock()}
            upsert(conn, _quality, found.id, values, key_column="labeler_id")
        return found
