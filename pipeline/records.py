"""Staged tf.Example TFRecords that ImportExampleGen reads: sampling, fingerprint, writing.

Shared by the formats that write their own tf.Examples (images, texts, series). The
files are rewritten only when their inputs change, so ImportExampleGen's input
fingerprint, and with it TFX's cache, holds across identical runs.

TensorFlow is imported where it is used: the CLI points file descriptor 2 at the run's
log before TensorFlow is first imported (pipeline/progress.py).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

SPLITS = ("train", "eval")
FINGERPRINT_FILE = ".fingerprint"
STAGING_FILE = ".staging.json"
SHARD_BYTES = 50 * 2**20
_PROGRESS_EVERY = 10_000


class Labelled(Protocol):
    label: str


def sample[Item: Labelled](items: list[Item], limit: int | None, rng: random.Random) -> list[Item]:
    """At most `limit` items drawn at random, each class in its share; in listing order."""
    if limit is None or limit >= len(items):
        return items
    by_class: dict[str, list[Item]] = {}
    for item in items:
        by_class.setdefault(item.label, []).append(item)
    quotas = _quotas({label: len(members) for label, members in by_class.items()}, limit)
    chosen = set()
    for label in sorted(by_class):
        chosen.update(rng.sample(by_class[label], quotas[label]))
    return [item for item in items if item in chosen]


def _quotas(counts: dict[str, int], limit: int) -> dict[str, int]:
    """`limit` split across classes in proportion to `counts` (largest remainders round up).

    When the limit allows, every class keeps at least one item, so that none drops out of
    the label vocabulary.
    """
    total = sum(counts.values())
    exact = {label: limit * n / total for label, n in counts.items()}
    quotas = {label: math.floor(share) for label, share in exact.items()}
    by_remainder = sorted(counts, key=lambda label: (quotas[label] - exact[label], label))
    for label in by_remainder[: limit - sum(quotas.values())]:
        quotas[label] += 1
    if limit >= len(counts):
        for label in sorted(counts):
            if quotas[label] == 0:
                donor = max(sorted(quotas), key=lambda other: quotas[other])
                quotas[donor] -= 1
                quotas[label] += 1
    return quotas


def hash_bucket(key: str) -> float:
    """A stable number in [0, 1) for `key`: the split of an item named `key`."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


def fingerprint(inputs: Sequence[str], arguments: dict, version: int) -> str:
    """A digest of the input lines (name, size, mtime of each file), the staging's
    arguments and the format's `version` (bumped when the same inputs would be written
    differently)."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"version": version, **arguments}, sort_keys=True).encode())
    for line in inputs:
        digest.update(line.encode() + b"\n")
    return digest.hexdigest()


def staged(out: Path, fingerprint: str) -> dict | None:
    """The record of the staging in `out` when it was made with `fingerprint` and its
    files are all there as written; else None."""
    try:
        if (out / FINGERPRINT_FILE).read_text().strip() != fingerprint:
            return None
        record = json.loads((out / STAGING_FILE).read_text())
    except (OSError, ValueError):
        return None
    found = {
        path.relative_to(out).as_posix(): path.stat().st_size
        for split in SPLITS
        for path in (out / split).glob("*")
    }
    return record if found == record.get("files") else None


def write[Item: Labelled](
    out: Path,
    splits: dict[str, list[Item]],
    examples: Callable[[Sequence[Item]], Iterator[bytes]],
    seed: int,
    fingerprint: str,
    noun: str,
) -> dict:
    """Writes both splits to a scratch folder, then moves them into `out`, so that a
    failure (a bad input halfway) leaves `out` as it was.

    Args:
      out: the staging directory; `out/train/` and `out/eval/` are replaced.
      splits: the items of each split.
      examples: the serialized tf.Example of each item, in order (it checks them).
      seed: seeds the (shuffled) order the examples are written in.
      fingerprint: written last, so that a staging is only reused once complete.
      noun: what the items are ("images", "texts"): the files' prefix, the progress lines.

    Returns:
      The record: rows per split, size on disk, files and their sizes.
    """
    scratch = out / ".staging-tmp"
    shutil.rmtree(scratch, ignore_errors=True)
    progress = _Progress(sum(len(items) for items in splits.values()), noun)
    try:
        for split, items in splits.items():
            order = list(items)
            random.Random(f"{seed}:{split}:order").shuffle(order)
            _write_shards(scratch / split, progress.counted(examples(order)), noun)
        (out / FINGERPRINT_FILE).unlink(missing_ok=True)
        for split in SPLITS:
            shutil.rmtree(out / split, ignore_errors=True)
            (scratch / split).rename(out / split)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    files = {
        path.relative_to(out).as_posix(): path.stat().st_size
        for split in SPLITS
        for path in sorted((out / split).glob("*"))
    }
    record = {
        "rows": {split: len(items) for split, items in splits.items()},
        "size_bytes": sum(files.values()),
        "files": files,
    }
    (out / STAGING_FILE).write_text(json.dumps(record, indent=1) + "\n")
    (out / FINGERPRINT_FILE).write_text(fingerprint + "\n")
    return record


def _write_shards(folder: Path, examples: Iterator[bytes], noun: str) -> None:
    """`<noun>-0000i-of-0000N.tfrecord.gz` files of about SHARD_BYTES of examples each."""
    import tensorflow as tf

    folder.mkdir(parents=True)
    shards: list[Path] = []
    writer, written = None, 0
    for example in examples:
        if writer is None or written >= SHARD_BYTES:
            if writer is not None:
                writer.close()
            shards.append(folder / f"shard-{len(shards):05d}")
            writer = tf.io.TFRecordWriter(str(shards[-1]), options="GZIP")
            written = 0
        writer.write(example)
        written += len(example)
    if writer is not None:
        writer.close()
    for i, shard in enumerate(shards):
        shard.rename(folder / f"{noun}-{i:05d}-of-{len(shards):05d}.tfrecord.gz")


class _Progress:
    """Prints "staged n/total <noun>" every _PROGRESS_EVERY items, and at the end."""

    def __init__(self, total: int, noun: str):
        self.total = total
        self.noun = noun
        self.done = 0

    def counted(self, items: Iterator[bytes]) -> Iterator[bytes]:
        for item in items:
            yield item
            self.done += 1
            if self.done % _PROGRESS_EVERY == 0 or (
                self.done == self.total and self.total >= _PROGRESS_EVERY
            ):
                print(f"staged {self.done}/{self.total} {self.noun}", flush=True)
