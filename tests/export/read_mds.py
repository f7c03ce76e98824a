"""Read an MDS folder with mosaicml-streaming's `StreamingDataset`; print every sample as JSON on stdout.

Run by tests/export/test_export_mds.py with the python of an isolated virtual environment that has
`mosaicml-streaming` (it cannot be installed beside medmix). Usage: python read_mds.py MDS_DIR

`import streaming` imports `streaming.vision` (CIFAR/ImageNet wrappers), which imports torchvision.
The venv reuses the machine's CPU torch (pip would otherwise fetch a multi-GB CUDA build), and
PyPI's torchvision wheel is built against CUDA torch, so its compiled ops fail to load there. Only
then are the three torchvision names `streaming.vision` imports replaced by empty stand-ins: the
MDS reading path (`StreamingDataset` → `MDSReader`) never touches them, and it is what is tested.
"""

import hashlib
import importlib.machinery
import json
import sys
import types

try:
    import torchvision  # noqa: F401
except Exception as exc:  # noqa: BLE001 - any failure to import the compiled wheel
    print(f"torchvision unusable here ({type(exc).__name__}: {exc}); stand-ins for streaming.vision's imports",
          file=sys.stderr)
    for name in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
        del sys.modules[name]
    tv, ds = types.ModuleType("torchvision"), types.ModuleType("torchvision.datasets")
    tr, fn = types.ModuleType("torchvision.transforms"), types.ModuleType("torchvision.transforms.functional")
    ds.VisionDataset = type("VisionDataset", (), {})
    ds.CIFAR10 = None
    fn.to_tensor = None
    tv.datasets, tv.transforms, tr.functional = ds, tr, fn
    for m in (tv, ds, tr, fn):
        m.__spec__ = importlib.machinery.ModuleSpec(m.__name__, None)
        sys.modules[m.__name__] = m

import streaming  # noqa: E402
from streaming import StreamingDataset  # noqa: E402

dataset = StreamingDataset(local=sys.argv[1], shuffle=False, batch_size=1)
samples = [{"id": s["id"], "image_sha256": hashlib.sha256(s["image"]).hexdigest() if len(s["image"]) else None,
            "record": s["record"]} for s in dataset]
print(json.dumps({"streaming_version": streaming.__version__, "len": len(dataset), "samples": samples}))
