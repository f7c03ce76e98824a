"""PatchCamelyon (PCam): 96x96 lymph-node H&E patches, metastasis in the centre or not; a downstream benchmark.

Read from the upstream gzipped HDF5 files (`camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5.gz`,
datasets `x`: N×96×96×3 uint8 and `y`: N×1×1×1), a chunk of rows at a time. HDF5 needs random
access, which a gzip stream cannot give, so the files are declared `extract=True` and arrive
inflated (fetch's extractor turns a lone `.gz` into a folder holding the `.h5`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

from medmix.core.errors import MedmixError
from medmix.sources._classification_sets import ClassificationBenchmark
from medmix.sources._native import encode_png, h5_dataset, open_h5
from medmix.sources.base import Bad, Record, Remote, Unit

_UPSTREAM_SPLIT = {"train": "train", "validation": "valid", "test": "test"}
_CHUNK = 1024


def _file(split: str, part: str) -> str:
    return f"camelyonpatch_level_2_split_{_UPSTREAM_SPLIT[split]}_{part}.h5.gz"


class PCam(ClassificationBenchmark):
    name = "pcam"
    title = "PatchCamelyon (PCam)"
    homepage = "https://github.com/basveeling/pcam"
    citation = """
@inproceedings{veeling2018rotation,
  title={Rotation Equivariant CNNs for Digital Pathology},
  author={Veeling, Bastiaan S and Linmans, Jasper and Winkens, Jim and Cohen, Taco and Welling, Max},
  booktitle={MICCAI}, pages={210--218}, year={2018}, doi={10.1007/978-3-030-00934-2_24}
}
@article{bejnordi2017diagnostic,
  title={Diagnostic Assessment of Deep Learning Algorithms for Detection of Lymph Node Metastases in Women With
    Breast Cancer},
  author={Ehteshami Bejnordi, Babak and others}, journal={JAMA}, volume={318}, number={22}, pages={2199--2210},
    year={2017}
}"""
    license = "CC0-1.0"
    domain = "pathology"
    modality = "H&E"
    # Label 1: at least one pixel of tumour tissue in the centre 32x32 region of the patch.
    classes = ("no metastatic tissue in the centre", "metastatic tissue in the centre")
    splits = {"train": 262144, "validation": 32768, "test": 32768}
    native_size = 96
    files = tuple(
        Remote(name=_file(split, part),
               url=f"https://zenodo.org/records/2546921/files/{_file(split, part)}?download=1",
               extract=True, splits=(split,))
        for split in _UPSTREAM_SPLIT for part in ("x", "y")
    )
    notes = ("Splits share no whole-slide image (upstream design) and are 50/50 balanced. The label depends only "
             "on the centre 32x32 px, so evaluation resizes the whole patch and never crops. Upstream also ships "
             "MD5 sums; the valid/test x files were replaced once (2019), so pin by sha256 with `medmix lock`.")

    def read(self, unit: Unit, files: Mapping[str, Path]) -> Iterator[Record | Bad]:
        if unit.split not in _UPSTREAM_SPLIT:
            raise MedmixError(f"source 'pcam': unknown split {unit.split!r}; splits: {list(_UPSTREAM_SPLIT)}")
        x_name, y_name = _file(unit.split, "x"), _file(unit.split, "y")
        missing = [n for n in (x_name, y_name) if n not in files]
        if missing:
            raise MedmixError(f"source 'pcam': no local path for {missing}")
        x_path, y_path = Path(files[x_name]), Path(files[y_name])
        with open_h5(y_path) as yf:
            labels = h5_dataset(yf, "y", y_name)[:].reshape(-1)
        with open_h5(x_path) as xf:
            images = h5_dataset(xf, "x", x_name)
            if images.ndim != 4 or images.shape[0] != len(labels):
                raise MedmixError(f"{x_name}: dataset 'x' has shape {images.shape}, expected "
                                  f"({len(labels)}, H, W, 3) to match the {len(labels)} labels in {y_name}")
            for start in range(0, len(labels), _CHUNK):
                for offset, pixels in enumerate(images[start:start + _CHUNK]):
                    row = start + offset
                    native_id = f"{unit.split}/{row:06d}"
                    yield self.labelled(native_id, labels[row].item(), encode_png(pixels),
                                        image_name=f"{native_id}.png", file=f"{x_name}[{row}]")
