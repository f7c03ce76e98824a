"""Classification transfer: one fixed downstream recipe for every encoder, scored by macro-F1.

The recipe (the same for every encoder and benchmark, so differences are the encoder's):

* Data: the benchmark adapter's `train` split to fit, `test` split to score; `validation` is
  not used (no hyperparameter is tuned). `max_train` optionally keeps about that many training
  rows, picked by a seeded hash of the row id, identical for every encoder.
* Pixels: RGB, the whole image squashed to the encoder's input size (bicubic, no crop; Pillow,
  or torch on the device for benchmarks stored at a smaller native size), scaled to [0, 1] and
  normalized with the encoder's own mean/std.
* `linear` (default): frozen encoder, pooled features (see encoders.py), standardized with
  statistics of the training rows, then multinomial logistic regression (L-BFGS, C=1.0,
  max_iter=1000, random_state=seed).
* `finetune`: encoder + a linear head trained end to end: AdamW (lr 1e-4, weight decay 0.05),
  cosine schedule, 10 epochs, batch 64, seeded shuffles. `scratch` encoders are always trained
  this way (a linear probe of random weights measures nothing a from-scratch baseline means).

Test rows are touched once, after training, to predict; `evaluate` refuses a train split that
is the test split or shares row ids with it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medmix.core.errors import MedmixError
from medmix.evaluation.encoders import Encoder, default_architecture, load_encoder, scratch_encoder
from medmix.evaluation.eval_data import ImageStore, materialize
from medmix.evaluation.metrics import accuracy, macro_f1
from medmix.evaluation.suite import BENCHMARKS
from medmix.sources._classification_sets import ClassificationBenchmark

MODES = ("linear", "finetune")


@dataclass(frozen=True)
class ProbeRecipe:
    """The one transfer protocol every encoder is scored under (a probe's settings, not a mixture `Recipe`)."""

    mode: str = "linear"
    train_split: str = "train"
    test_split: str = "test"
    max_train: int | None = None
    seed: int = 0
    batch_size: int = 64
    C: float = 1.0
    max_iter: int = 1000
    epochs: int = 10
    lr: float = 1e-4
    weight_decay: float = 0.05

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise MedmixError(f"recipe mode must be one of {list(MODES)}, not {self.mode!r}")
        if self.train_split == self.test_split:
            raise MedmixError(f"recipe fits and scores on the same split {self.train_split!r}")
        if self.batch_size < 1 or self.epochs < 1 or self.max_iter < 1 or self.C <= 0:
            raise MedmixError(f"recipe has a non-positive setting: {self}")


@dataclass
class BenchmarkScore:
    benchmark: str
    macro_f1: float
    accuracy: float
    mode: str
    n_train: int
    n_test: int
    confusion: list[list[int]] = field(default_factory=list)  # [true class][predicted class], test split
    skipped: dict[str, list[dict[str, str]]] = field(default_factory=dict)


@dataclass
class ClassifyReport:
    recipe: ProbeRecipe
    benchmarks: list[str]
    encoders: list[str]
    scores: dict[str, dict[str, BenchmarkScore]]

    def mean_macro_f1(self, encoder: str) -> float | None:
        values = [s.macro_f1 for s in self.scores.get(encoder, {}).values()]
        return sum(values) / len(values) if values else None

    def to_dict(self) -> dict[str, Any]:
        from medmix import __version__
        from medmix.evaluation.suite import PAPER_MEAN_MACRO_F1

        return {
            "medmix_version": __version__,
            "recipe": asdict(self.recipe),
            "benchmarks": self.benchmarks,
            "encoders": {
                name: {"mean_macro_f1": self.mean_macro_f1(name),
                       "benchmarks": {b: asdict(s) for b, s in self.scores[name].items()}}
                for name in self.encoders
            },
            "reference_mean_macro_f1": dict(PAPER_MEAN_MACRO_F1),
            "reference_note": "OpenMedQ abstract: mean macro-F1 over its 8 benchmarks; comparable only when all 8 "
                              "benchmarks were run with the full training sets",
        }


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _autocast(device: torch.device) -> Any:
    """bf16 autocast on CUDA, where fp32 ViT-B/16 is compute-bound: frozen features at 224 px ran at
    1,097 img/s in fp32 and 4,179 img/s in bf16 on one H100 (batch 256). CPU stays fp32, where bf16
    is slower and only loses precision."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


@torch.inference_mode()
def extract_features(encoder: Encoder, store: ImageStore, *, batch_size: int, device: torch.device) -> np.ndarray:
    """Frozen, eval-mode features of every image in `store`, in store order, as float32."""
    module = encoder.module.to(device).eval()
    out = []
    for _, images in store.batches(batch_size):
        with _autocast(device):
            features = module(encoder.pixels(images, device))
        out.append(features.float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, encoder.feature_dim()), np.float32)


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, recipe: ProbeRecipe) -> np.ndarray:
    """Standardize on the training rows, fit logistic regression, predict the test rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(train_y)) < 2:
        raise MedmixError("the training split holds a single class; a classifier cannot be fitted")
    scaler = StandardScaler().fit(train_x)
    clf = LogisticRegression(C=recipe.C, max_iter=recipe.max_iter, random_state=recipe.seed)
    clf.fit(scaler.transform(train_x), train_y)
    return clf.predict(scaler.transform(test_x))


class _Classifier(nn.Module):
    def __init__(self, backbone: nn.Module, dim: int, n_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(dim, n_classes)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(pixel_values))


def finetune(encoder: Encoder, n_classes: int, train: ImageStore, test: ImageStore, recipe: ProbeRecipe,
             device: torch.device) -> np.ndarray:
    """Train a copy of the encoder plus a linear head on `train`, then predict `test`.

    A copy, so every benchmark starts from the same weights (for `scratch`: the same random init).
    """
    torch.manual_seed(recipe.seed)
    model = _Classifier(copy.deepcopy(encoder.module), encoder.feature_dim(), n_classes).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps = recipe.epochs * math.ceil(len(train) / recipe.batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    labels = torch.from_numpy(train.labels)
    order_rng = torch.Generator().manual_seed(recipe.seed)
    model.train()
    for _ in range(recipe.epochs):
        order = torch.randperm(len(train), generator=order_rng).numpy()
        for idx, images in train.batches(recipe.batch_size, order):
            with _autocast(device):
                logits = model(encoder.pixels(images, device))
            loss = nn.functional.cross_entropy(logits.float(), labels[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    preds = []
    with torch.inference_mode():
        for _, images in test.batches(recipe.batch_size):
            with _autocast(device):
                logits = model(encoder.pixels(images, device))
            preds.append(logits.argmax(dim=1).cpu().numpy())
    return np.concatenate(preds)


def check_split_discipline(train: ImageStore, test: ImageStore, recipe: ProbeRecipe) -> None:
    """Refuse to fit on anything that is, or overlaps, the scored split."""
    if train.split != recipe.train_split or test.split != recipe.test_split:
        raise MedmixError(f"{train.source}: fitting on split {train.split!r} and scoring {test.split!r}, but the "
                          f"recipe says fit {recipe.train_split!r}, score {recipe.test_split!r}")
    shared = set(train.ids) & set(test.ids)
    if shared:
        raise MedmixError(f"{train.source}: {len(shared)} row id(s) are in both {train.split!r} and {test.split!r} "
                          f"(e.g. {sorted(shared)[:3]}); refusing to score a classifier fitted on test rows")


def evaluate(encoder: Encoder, benchmark: ClassificationBenchmark, train: ImageStore, test: ImageStore,
             recipe: ProbeRecipe, device: torch.device) -> BenchmarkScore:
    check_split_discipline(train, test, recipe)
    mode = "finetune" if encoder.from_scratch else recipe.mode
    if mode == "linear":
        train_x = extract_features(encoder, train, batch_size=recipe.batch_size, device=device)
        test_x = extract_features(encoder, test, batch_size=recipe.batch_size, device=device)
        preds = linear_probe(train_x, train.labels, test_x, recipe)
    else:
        preds = finetune(encoder, len(benchmark.classes), train, test, recipe, device)
    truth, predicted = test.labels.tolist(), preds.tolist()
    confusion = np.zeros((len(benchmark.classes),) * 2, dtype=np.int64)
    np.add.at(confusion, (test.labels, preds), 1)
    return BenchmarkScore(benchmark.name, macro_f1(truth, predicted), accuracy(truth, predicted), mode,
                          len(train), len(test), confusion.tolist(), {"train": train.skipped, "test": test.skipped})


def get_benchmark(name: str, options: Mapping[str, Any] | None = None) -> ClassificationBenchmark:
    from medmix.sources import get_source

    cls = get_source(name)
    if not issubclass(cls, ClassificationBenchmark):
        raise MedmixError(f"source {name!r} is not a classification benchmark; benchmarks: {list(BENCHMARKS)}")
    return cls(**dict(options or {}))


def build_encoders(names: Sequence[str], *, seed: int) -> list[Encoder]:
    """Load every named encoder; `scratch[:NAME]` copies NAME's (or the first loaded encoder's) architecture."""
    if not names:
        raise MedmixError("no encoder given")
    if len(set(names)) != len(names):
        raise MedmixError(f"an encoder is named twice: {list(names)}")
    loaded: dict[str, Encoder] = {n: load_encoder(n) for n in names if n.split(":", 1)[0] != "scratch"}
    out = []
    for name in names:
        if name in loaded:
            out.append(loaded[name])
            continue
        _, _, of = name.partition(":")
        template = (loaded.get(of) or load_encoder(of)) if of else next(iter(loaded.values()), None)
        architecture = template.architecture if template is not None else default_architecture()
        out.append(scratch_encoder(name, architecture, seed=seed, template=template))
    return out


def run_classification(encoders: Sequence[str], benchmarks: Sequence[str], recipe: ProbeRecipe, *,
                       files_for: Callable[[ClassificationBenchmark, tuple[str, ...]], Mapping[str, Path]],
                       cache_dir: Path, device: str | None = None,
                       benchmark_options: Mapping[str, Mapping[str, Any]] | None = None,
                       log: Callable[[str], None] = lambda msg: None) -> ClassifyReport:
    """Every encoder on every benchmark under `recipe`. `files_for(source, splits)` supplies local files."""
    dev = resolve_device(device)
    if not benchmarks:
        raise MedmixError("no benchmark given")
    sources = [get_benchmark(b, (benchmark_options or {}).get(b)) for b in benchmarks]
    loaded = build_encoders(encoders, seed=recipe.seed)
    scores: dict[str, dict[str, BenchmarkScore]] = {e.name: {} for e in loaded}
    for source in sources:
        files = files_for(source, (recipe.train_split, recipe.test_split))
        for encoder in loaded:
            stores = {}
            for split, cap in ((recipe.train_split, recipe.max_train), (recipe.test_split, None)):
                log(f"{source.name}: decoding {split} at {encoder.image_size}px")
                stores[split] = materialize(source, split, files, size=encoder.image_size, cache_dir=cache_dir,
                                            max_rows=cap, seed=recipe.seed, log=log)
            log(f"{source.name}: {encoder.name} ({'finetune' if encoder.from_scratch else recipe.mode})")
            score = evaluate(encoder, source, stores[recipe.train_split], stores[recipe.test_split], recipe, dev)
            log(f"{source.name}: {encoder.name} macro-F1 {score.macro_f1:.4f}")
            scores[encoder.name][source.name] = score
    return ClassifyReport(recipe, [s.name for s in sources], [e.name for e in loaded], scores)
