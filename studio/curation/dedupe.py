"""Near-duplicate detection with MinHash and locality-sensitive hashing (``datasketch``).

Each text becomes a set of shingles (``shingle_size`` consecutive words, or characters), each set a MinHash
signature of ``num_perm`` values. Rows are visited in order: a row whose signature the LSH index finds close to
an earlier kept row — estimated Jaccard similarity at or above ``threshold`` — joins that row's cluster (the most
similar one when several are); otherwise it is kept and indexed. So the first row of every cluster is the one
kept, and a row is compared with the kept rows only (a chain a≈b≈c where a and c differ keeps c).

LSH answers candidates in sub-linear time; the similarity is then checked on the signatures themselves, so the
index's false positives never merge two rows (see ``CANDIDATE_THRESHOLD``). A text too short to make one shingle of
the chosen size is one shingle of all its words; a text without words is never a duplicate. The hash seed is fixed:
the same data and parameters always give the same clusters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from studio.curation.steps import words
from studio.errors import BackendUnavailableError

SEED = 1
#: the LSH index looks for candidates at this similarity or the pipeline's threshold, whichever is lower: above it
#: datasketch's band layout degenerates to one band for few permutations (and refuses). Candidates are checked
#: against the real threshold, so a lower one here only finds more of them to check.
CANDIDATE_THRESHOLD = 0.8


def shingles(text: str, size: int, unit: Literal["words", "chars"] = "words") -> set[str]:
    """The shingles of ``text``: every run of ``size`` words (lower-cased) or characters (of the words joined by
    single spaces); the whole text as one shingle when it is shorter than ``size``."""
    tokens = words(text)
    if not tokens:
        return set()
    if unit == "chars":
        joined = " ".join(tokens)
        return {joined[i : i + size] for i in range(max(1, len(joined) - size + 1))}
    return {" ".join(tokens[i : i + size]) for i in range(max(1, len(tokens) - size + 1))}


def _datasketch() -> Any:
    try:
        import datasketch
    except ImportError as exc:
        raise BackendUnavailableError(
            f"near-duplicate removal needs datasketch: pip install datasketch==2.0.0 ({exc})"
        ) from None
    return datasketch


def near_duplicate_clusters(
    texts: Sequence[str],
    *,
    threshold: float = 0.8,
    num_perm: int = 128,
    shingle_size: int = 3,
    unit: Literal["words", "chars"] = "words",
) -> list[list[int]]:
    """Clusters of near-duplicate texts as lists of indices into ``texts``, each with at least two members, the
    kept (first) one first, in the order of their first member."""
    ds = _datasketch()
    lsh = ds.MinHashLSH(threshold=min(threshold, CANDIDATE_THRESHOLD), num_perm=num_perm)
    kept: dict[int, Any] = {}
    members: dict[int, list[int]] = {}
    for i, text in enumerate(texts):
        grams = shingles(text, shingle_size, unit)
        if not grams:
            continue
        signature = ds.MinHash(num_perm=num_perm, seed=SEED)
        signature.update_batch([g.encode("utf-8") for g in sorted(grams)])
        # the most similar kept row; of equally similar ones, the earliest
        scored = [(-signature.jaccard(kept[c]), c) for c in lsh.query(signature)]
        best_negative, best = min(scored, default=(0.0, None))
        if best is not None and -best_negative >= threshold:
            members[best].append(i)
            continue
        lsh.insert(i, signature)
        kept[i] = signature
        members[i] = [i]
    return [group for _first, group in sorted(members.items()) if len(group) > 1]
