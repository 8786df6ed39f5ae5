"""A concept's name and top terms by class-based TF-IDF (c-TF-IDF, as BERTopic names topics).

Each cluster's members are one "class document"; a term weighs
``tf(t, c) / words(c) * log(1 + A / f(t))``, where ``A`` is the mean number of words per
class and ``f(t)`` the term's frequency over all classes: frequent in this cluster, rare in
the others. Only the members nearest each centroid are read (``NAMING_MEMBERS``): naming then
costs the same at 100k chunks as at 1k, and the central members are the ones that say what
the cluster is about.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.feature_extraction.text import CountVectorizer

NAMING_MEMBERS = 200
TOP_TERMS = 10
NAME_TERMS = 3
# Words of three letters or more that start with a letter: identifiers and numbers alone
# name nothing.
TOKEN_PATTERN = r"(?u)\b[^\W\d_][\w]{2,}\b"  # noqa: S105 (a regular expression)


def top_terms(classes: Sequence[Sequence[str]], count: int = TOP_TERMS) -> list[list[str]]:
    """The ``count`` most distinctive terms of each class (a list of member texts)."""
    joined = [" ".join(texts) for texts in classes]
    if not any(text.strip() for text in joined):
        return [[] for _ in classes]
    vectorizer = CountVectorizer(stop_words="english", token_pattern=TOKEN_PATTERN)
    try:
        counts = vectorizer.fit_transform(joined)
    except ValueError:  # only stop words
        return [[] for _ in classes]
    terms = vectorizer.get_feature_names_out()
    words = np.asarray(counts.sum(axis=1)).ravel().astype(np.float64)
    mean_words = float(words.mean()) or 1.0
    idf = np.log1p(mean_words / np.maximum(np.asarray(counts.sum(axis=0)).ravel(), 1.0))
    out: list[list[str]] = []
    for c in range(counts.shape[0]):  # sparse rows: k x vocabulary would not fit at k = 256
        row = counts.getrow(c)
        if not row.nnz:
            out.append([])
            continue
        weight = row.data / words[c] * idf[row.indices]
        found = terms[row.indices]
        best = np.lexsort((found, -weight))[:count]  # ties broken by the term: names are stable
        out.append([str(found[i]) for i in best])
    return out


def name_of(terms: Sequence[str], fallback: str) -> str:
    """The name shown for a concept: its first terms, or ``fallback`` with none."""
    return ", ".join(terms[:NAME_TERMS]) or fallback
