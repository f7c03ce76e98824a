"""What the 8 downstream classification benchmark adapters share: the base classes that make them sources.

A benchmark adapter is a normal `Source` (so `medmix sources` lists it, decontamination can hash
its test split, and the same fetch code downloads it) with `benchmark = True`, task
`classification`, the class name as `answer` and the class index as `meta["label"]`. The class
list is declared once per adapter (`classes`) and is the only label mapping evaluation uses.

Split names are the same for every benchmark: `train`, `validation` (where one exists) and
`test`, whatever the upstream calls them (PCam's `valid`, MedMNIST's `val`), so one evaluation
recipe can say "fit on train, score on test" for all eight.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

from medmix.core.errors import MedmixError
from medmix.sources._lc25000_split import split_class_folder
from medmix.sources._native import encode_png, find_class_root, iter_npz_rows, list_images, npz_array, npz_shape
from medmix.sources.base import Bad, Manual, Record, Remote, Source, Unit, Upstream


class ClassificationBenchmark(Source):
    """Base of the benchmark adapters: declares the task and turns (image, label index) into a Record."""

    tasks: ClassVar[tuple[str, ...]] = ("classification",)
    benchmark: ClassVar[bool] = True
    eval_splits: ClassVar[frozenset[str]] = frozenset({"test"})
    classes: ClassVar[tuple[str, ...]] = ()
    # Side of every image when they all share one (None: sizes vary), so evaluation can store them
    # at that size instead of the encoder's larger input size.
    native_size: int | None = None

    def labelled(self, native_id: str, label: Any, image: bytes | Path, *, image_name: str | None = None,
                 file: str | None = None, **meta: Any) -> Record | Bad:
        """A Record for one sample, or a Bad naming the file when the label is not a class index."""
        try:
            index = int(label)
        except (TypeError, ValueError):
            return Bad(native_id, f"label {label!r} is not an integer class index", file=file)
        if not 0 <= index < len(self.classes) or index != label:
            return Bad(native_id, f"label {label!r} is not a class index 0..{len(self.classes) - 1}", file=file)
        return Record(native_id=native_id, answer=self.classes[index], image=image, image_name=image_name,
                      meta={"label": index, **meta})


class MedMNISTBenchmark(ClassificationBenchmark):
    """One MedMNIST v2 subset: a single `.npz` with `{train,val,test}_{images,labels}` arrays.

    Option `size` picks the MedMNIST+ resolution (28, 64, 128 or 224 px; same samples and
    splits at every size). 28 px is the MedMNIST v2 standard and the default.
    """

    flag: ClassVar[str]
    splits: ClassVar[Mapping[str, int | None]] = {}
    homepage: ClassVar[str] = "https://medmnist.com/"
    SIZES: ClassVar[tuple[int, ...]] = (28, 64, 128, 224)
    _SPLIT_KEYS: ClassVar[dict[str, str]] = {"train": "train", "validation": "val", "test": "test"}
    citation_medmnist: ClassVar[str] = """
@article{yang2023medmnist,
  title={MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D biomedical image classification},
  author={Yang, Jiancheng and Shi, Rui and Wei, Donglai and Liu, Zequan and Zhao, Lin and Ke, Bilian and
          Pfister, Hanspeter and Ni, Bingbing},
  journal={Scientific Data}, volume={10}, number={1}, pages={41}, year={2023}
}"""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "flag" in cls.__dict__:  # a concrete subset: declare its default (28 px) file for `medmix sources`
            cls.files = (cls.remote(28),)

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        size = int(self.options.get("size", 28))
        if size not in self.SIZES:
            raise MedmixError(f"source {self.name!r}: size must be one of {list(self.SIZES)}, got {size}")
        self.size = self.native_size = size

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return ("size",)

    @classmethod
    def remote(cls, size: int = 28) -> Remote:
        file = f"{cls.flag}.npz" if size == 28 else f"{cls.flag}_{size}.npz"
        return Remote(name=file, url=f"https://zenodo.org/records/10519652/files/{file}?download=1")

    def files_for(self, splits: tuple[str, ...]) -> tuple[Upstream, ...]:
        return (self.remote(self.size),)

    def read(self, unit: Unit, files: Mapping[str, Path]) -> Iterator[Record | Bad]:
        name = self.remote(self.size).name
        if name not in files:
            raise MedmixError(f"source {self.name!r}: no local path for {name!r} (got {sorted(files)})")
        path = Path(files[name])
        prefix = self._SPLIT_KEYS.get(unit.split)
        if prefix is None:
            raise MedmixError(f"source {self.name!r}: unknown split {unit.split!r}; splits: {list(self._SPLIT_KEYS)}")
        labels = npz_array(path, f"{prefix}_labels").reshape(-1)
        n_images = npz_shape(path, f"{prefix}_images")[0]
        if n_images != len(labels):
            raise MedmixError(f"{path}: {prefix}_images has {n_images} rows but {prefix}_labels has {len(labels)}")
        row = 0
        for chunk in iter_npz_rows(path, f"{prefix}_images", chunk=512):
            for pixels in chunk:
                native_id = f"{unit.split}/{row:06d}"
                yield self.labelled(native_id, labels[row].item(), encode_png(pixels),
                                    image_name=f"{native_id}.png", file=f"{path.name}:{prefix}_images[{row}]")
                row += 1


class LC25000Benchmark(ClassificationBenchmark):
    """One organ of LC25000: a folder per class of 768x768 JPEGs, split by `_lc25000_split` (read it)."""

    organ_dir: ClassVar[str]
    class_dirs: ClassVar[tuple[str, ...]]
    homepage: ClassVar[str] = "https://github.com/tampapath/lung_colon_image_set"
    license: ClassVar[str] = "LicenseRef-LC25000-no-license-stated"
    # No license is stated upstream (re-uploads tag it "unlicense", which is not the author's word):
    # the default is all rights reserved, so medmix never re-publishes it.
    redistributable: ClassVar[bool] = False
    domain: ClassVar[str] = "pathology"
    modality: ClassVar[str | None] = "H&E"
    files: ClassVar[tuple[Upstream, ...]] = (
        Manual(name="lung_colon_image_set", is_dir=True,
               how="Download LC25000.zip (1.85 GB; links in the README of "
                   "https://github.com/tampapath/lung_colon_image_set, or a Kaggle copy), unzip it, and place "
                   "its 'lung_colon_image_set' folder (holding lung_image_sets/ and colon_image_sets/) under DIR"),
    )
    citation: ClassVar[str] = """
@article{borkowski2019lung,
  title={Lung and Colon Cancer Histopathological Image Dataset (LC25000)},
  author={Borkowski, Andrew A and Bui, Marilyn M and Thomas, L Brannon and Wilson, Catherine P and
          DeLand, Lauren A and Mastorides, Stephen M},
  journal={arXiv preprint arXiv:1912.12142}, year={2019}
}"""
    notes: ClassVar[str] = ("No official split: medmix's fixed seeded 70/10/20 split keeps near-duplicate "
                            "augmentations of one original together where it can detect them (see "
                            "medmix/sources/_lc25000_split.py); some leakage remains, so scores are optimistic.")

    def read(self, unit: Unit, files: Mapping[str, Path]) -> Iterator[Record | Bad]:
        if unit.split not in self.splits:
            raise MedmixError(f"source {self.name!r}: unknown split {unit.split!r}; splits: {list(self.splits)}")
        if "lung_colon_image_set" not in files:
            raise MedmixError(f"source {self.name!r}: no local path for 'lung_colon_image_set'")
        top = Path(files["lung_colon_image_set"])
        organ = top / self.organ_dir
        if not organ.is_dir():
            raise MedmixError(f"{top}: folder {self.organ_dir!r} is missing; is this the LC25000 "
                              "'lung_colon_image_set' folder?")
        root = find_class_root(organ, self.class_dirs)
        for label, folder in enumerate(self.class_dirs):
            if not (root / folder).is_dir():
                raise MedmixError(f"{root}: class folder {folder!r} is missing; expected {list(self.class_dirs)}")
            assignment = split_class_folder(root / folder)
            for path in list_images(root / folder):
                if assignment[path.name] != unit.split:
                    continue
                yield self.labelled(f"{folder}/{path.stem}", label, path, image_name=f"{folder}/{path.name}",
                                    file=f"{folder}/{path.name}")
