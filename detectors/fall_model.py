"""A learned fall model in plain numpy: decision trees read from a JSON file.

The trees are trained by ``detectors/training/train_wrist.py`` (scikit-learn, at training time
only) and shipped as package data (``detectors/models/*.json``). Inference walks every tree for
every candidate at once: ``depth`` steps of gathers over a ``(k, n_trees)`` array of node
numbers, with no Python loop over candidates or trees.

File format (``format: "anxin-trees/1"``): ``features`` (names, in column order),
``nan_value`` (what a NaN feature is replaced with, as in training), ``base_score`` (log-odds
added to the sum of leaves), ``threshold`` (the score, a probability, at or above which a
candidate is a fall), ``rate_hz`` (the sample rate it was trained at: its features are
computed from samples at that rate), ``depth`` (longest root-to-leaf path), and per tree the arrays
``feature``, ``threshold``, ``left``, ``right``, ``value`` of equal length (nodes; a leaf has
``left == right == its own index`` and its ``value`` already scaled by the learning rate).
Optional ``aggregate``: ``"sum-log-odds"`` (the default: boosted trees, the probability is the
logistic of ``base_score`` plus the sum of the leaves) or ``"mean-probability"`` (a forest: each
leaf holds a probability and the model's is their mean; ``base_score`` is unused).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import numpy.typing as npt

from detectors.findings import DetectorInputError

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I32 = npt.NDArray[np.int32]

FORMAT = "anxin-trees/1"
SUM_LOG_ODDS = "sum-log-odds"
MEAN_PROBABILITY = "mean-probability"
AGGREGATES = (SUM_LOG_ODDS, MEAN_PROBABILITY)


@dataclass(frozen=True, eq=False)
class TreeModel:
    """Boosted trees padded to one node count, as arrays ``(n_trees, n_nodes)``.

    Attributes:
        name: Model name and version, e.g. ``wrist-fall-v1``.
        features: Feature names, in column order of the input matrix.
        feature: int32 split feature per node (0 at leaves).
        split: float64 split threshold per node (``x <= split`` goes left; +inf at leaves).
        left: int32 left child per node (itself at leaves and padding).
        right: int32 right child per node (itself at leaves and padding).
        value: float64 leaf value per node (0 at internal nodes).
        base_score: Log-odds added to the sum over trees.
        depth: Steps needed to reach a leaf from the root in every tree.
        nan_value: Replacement of NaN features (the training did the same).
        threshold: Probability at or above which a candidate is called a fall.
        rate_hz: Sample rate of the recordings it was trained on.
        aggregate: How the trees' leaves make one probability (:data:`AGGREGATES`).
    """

    name: str
    features: tuple[str, ...]
    feature: I32
    split: F64
    left: I32
    right: I32
    value: F64
    base_score: float
    depth: int
    nan_value: float
    threshold: float
    rate_hz: int
    aggregate: str = SUM_LOG_ODDS

    @classmethod
    def from_json(cls, text: str) -> TreeModel:
        """Parse a model file.

        Raises:
            DetectorInputError: If the text is not an ``anxin-trees/1`` model.
        """
        try:
            doc: dict[str, Any] = json.loads(text)
            if doc.get("format") != FORMAT:
                raise DetectorInputError(
                    f"Model format is {doc.get('format')!r}; expected {FORMAT!r}."
                )
            trees = doc["trees"]
            width = max(len(t["feature"]) for t in trees)
            n = len(trees)
            feature = np.zeros((n, width), np.int32)
            split = np.full((n, width), np.inf, np.float64)
            node = np.arange(width, dtype=np.int32)
            left = np.tile(node, (n, 1))
            right = np.tile(node, (n, 1))
            value = np.zeros((n, width), np.float64)
            for i, t in enumerate(trees):
                m = len(t["feature"])
                feature[i, :m] = t["feature"]
                split[i, :m] = [np.inf if v is None else v for v in t["threshold"]]
                left[i, :m] = t["left"]
                right[i, :m] = t["right"]
                value[i, :m] = t["value"]
            names = tuple(str(f) for f in doc["features"])
            aggregate = str(doc.get("aggregate", SUM_LOG_ODDS))
            if aggregate not in AGGREGATES:
                raise DetectorInputError(
                    f"Model aggregate is {aggregate!r}; expected one of {AGGREGATES}."
                )
            if feature.max(initial=0) >= len(names) or left.max(initial=0) >= width:
                raise DetectorInputError(
                    "Model refers to a feature or node that does not exist; expected indices "
                    f"below {len(names)} features and {width} nodes."
                )
            return cls(
                name=str(doc["name"]),
                features=names,
                feature=feature,
                split=split,
                left=left,
                right=right,
                value=value,
                base_score=float(doc["base_score"]),
                depth=int(doc["depth"]),
                nan_value=float(doc["nan_value"]),
                threshold=float(doc["threshold"]),
                rate_hz=int(doc["rate_hz"]),
                aggregate=aggregate,
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, DetectorInputError):
                raise
            raise DetectorInputError(
                f"Model file is not a valid {FORMAT} model ({exc!r}); expected the output of "
                "detectors/training/train_wrist.py."
            ) from exc

    @classmethod
    def constant(
        cls, features: tuple[str, ...], *, rate_hz: int, probability: float = 0.5
    ) -> TreeModel:
        """A model of one leaf giving ``probability`` to every candidate (to record features)."""
        raw = float(np.log(probability / (1.0 - probability)))
        zero_i = np.zeros((1, 1), np.int32)
        return cls(
            name="constant",
            features=features,
            feature=zero_i,
            split=np.full((1, 1), np.inf),
            left=zero_i.copy(),
            right=zero_i.copy(),
            value=np.zeros((1, 1)),
            base_score=raw,
            depth=0,
            nan_value=-1.0,
            threshold=1.0,
            rate_hz=rate_hz,
        )

    @classmethod
    def load(cls, name: str) -> TreeModel:
        """Load a model shipped in ``detectors/models/`` (``name`` without ``.json``)."""
        text = resources.files("detectors.models").joinpath(f"{name}.json").read_text("utf-8")
        return cls.from_json(text)

    @functools.cached_property
    def _flat(
        self,
    ) -> tuple[npt.NDArray[np.intp], F64, npt.NDArray[np.int64], npt.NDArray[np.int64], F64]:
        """The node arrays raveled, children as flat node numbers (see :meth:`predict_proba`)."""
        n_trees, width = self.feature.shape
        offset = (np.arange(n_trees, dtype=np.int64) * width)[:, None]
        return (
            self.feature.ravel().astype(np.intp),
            self.split.ravel(),
            (self.left + offset).ravel(),
            (self.right + offset).ravel(),
            self.value.ravel(),
        )

    def predict_proba(self, x: npt.ArrayLike) -> F64:
        """Probability of a fall for every row of ``x``.

        Args:
            x: ``(k, n_features)`` feature matrix, columns as in :attr:`features`. NaN is
                replaced by :attr:`nan_value`, as in training.

        Returns:
            float64 ``(k,)`` in 0..1; empty for ``k == 0``.

        Raises:
            DetectorInputError: If ``x`` has the wrong number of columns.
        """
        xa = np.asarray(x, dtype=np.float64)
        if xa.ndim != 2 or xa.shape[1] != len(self.features):
            raise DetectorInputError(
                f"Model {self.name} got features of shape {xa.shape}; expected (k, "
                f"{len(self.features)})."
            )
        xa = np.where(np.isnan(xa), self.nan_value, xa)
        n_trees, width = self.feature.shape
        # Node numbers are flat over all trees ((tree, node) -> tree * width + node), and the
        # children already carry their tree's offset: one 1-D gather per array and level.
        feature, split, left, right, value = self._flat
        node = np.broadcast_to(np.arange(n_trees, dtype=np.int64) * width, (xa.shape[0], n_trees))
        for _ in range(self.depth):
            go_left = np.take_along_axis(xa, feature[node], axis=1) <= split[node]
            node = np.where(go_left, left[node], right[node])
        if self.aggregate == MEAN_PROBABILITY:
            mean: F64 = value[node].mean(axis=1)
            return mean
        raw = self.base_score + value[node].sum(axis=1)
        out: F64 = 1.0 / (1.0 + np.exp(-raw))
        return out
