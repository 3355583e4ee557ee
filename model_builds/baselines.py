"""Reference classifiers on the same splits: what a trivial and a classic model score on the task.

The majority class says how much a model learned at all (the teacher must beat it significantly, see
`train`); TF-IDF + logistic regression says whether a transformer earns its cost on this task.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

TFIDF_SETTINGS = {
    "ngram_range": (1, 2),  # words and word pairs: glosses are short definitions
    "min_df": 2,  # a feature seen once cannot generalise
    "sublinear_tf": True,
    "max_features": 200_000,
}
LOGREG_C = 10.0  # weak regularisation: many sparse features, few per example (not tuned on test)


def majority_label(train_labels: np.ndarray) -> int:
    """The most frequent train label (the smallest label id among ties, so the choice is deterministic)."""
    counts = Counter(int(label) for label in train_labels)
    return min(counts, key=lambda label: (-counts[label], label))


def tfidf_logreg_predictions(
    train_texts: list[str], train_labels: np.ndarray, texts: list[str], seed: int
) -> np.ndarray:
    """Fit TF-IDF + multinomial logistic regression on the train split; predict `texts`."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = TfidfVectorizer(**TFIDF_SETTINGS)
    features = vectorizer.fit_transform(train_texts)
    model = LogisticRegression(C=LOGREG_C, max_iter=300, random_state=seed)
    model.fit(features, train_labels)
    return np.asarray(model.predict(vectorizer.transform(texts)), dtype=np.int64)
