"""Comparing recorded settings (an annotate JSON's predictor description, a predictions folder's run record) with
the current ones, down to the value that differs, for one-line messages."""

from __future__ import annotations


def leaf_differences(before: object, now: object, name: str) -> list[tuple[str, object, object]]:
    """Where two recorded settings differ, down to the values inside nested dicts: (dotted name, before, now),
    e.g. ("options.audio_threshold", 0.0, 0.5). Empty when they are the same settings.

    A key one side lacks and the other records as None is no difference: an option added in a later version
    records None for "the default", which is what a record written before it existed ran with. So decide
    "same or not" by this list being empty, not by comparing the dicts."""
    if isinstance(before, dict) and isinstance(now, dict):
        return [leaf for key in dict.fromkeys([*before, *now])
                for leaf in leaf_differences(before.get(key), now.get(key), f"{name}.{key}")]
    return [] if before == now else [(name, before, now)]
