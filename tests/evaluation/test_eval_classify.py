"""`medmix eval classify` end to end on CPU: a tiny random ViT and `scratch` on four fixture benchmarks
in their native layouts (npz, gzipped HDF5, zipped class folders, LC25000 folders), through the real
fetch, adapters, image store, probe/fine-tune, and the table/JSON/Markdown/PNG report."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from fixtures import lc25000, medmnist, nct_crc_he, pcam, write_tree
from typer.testing import CliRunner

from medmix.cli.eval_commands import eval_classify
from medmix.core.errors import MedmixError
from medmix.evaluation import classify as cl
from medmix.evaluation.eval_data import fetch_split_files

BENCH = ["pneumoniamnist", "pcam", "nct_crc_he", "lc25000_colon"]


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory) -> Path:
    """A random 1-layer ViT at 32 px saved like any Hugging Face model folder."""
    from transformers import ViTConfig, ViTModel

    path = tmp_path_factory.mktemp("tiny-vit")
    torch.manual_seed(0)
    ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=64)).save_pretrained(path)
    (path / "preprocessor_config.json").write_text(json.dumps(
        {"image_processor_type": "ViTImageProcessor", "size": {"height": 32, "width": 32},
         "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}))
    return path


@pytest.fixture(scope="module")
def bench_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("benchmarks")
    dirs = {
        "pneumoniamnist": write_tree(root / "pn", medmnist.build("pneumoniamnist", 2, gray=True,
                                                                 counts={"train": 16, "validation": 2, "test": 10})),
        "pcam": write_tree(root / "pcam", pcam.build(counts={"train": 12, "validation": 2, "test": 8})),
        "nct_crc_he": write_tree(root / "nct", nct_crc_he.build(per_class={"train": 2, "test": 1}, bad=True)),
    }
    dirs["lc25000_colon"], _ = lc25000.write(root / "lc", originals=6, augment=2)
    return dirs


def _files_for(bench_dirs, cache):
    return lambda source, splits: fetch_split_files(source, splits, cache_dir=cache, from_dir=bench_dirs[source.name])


def _cli(args: list[str]):
    app = typer.Typer()
    app.command()(eval_classify)
    return CliRunner().invoke(app, args, env={"COLUMNS": "220"})  # wide enough that no name folds


def test_cli_writes_table_json_markdown_and_plot(tiny_vit, bench_dirs, tmp_path):
    args = ["--encoder", str(tiny_vit), "--encoder", "scratch", "--epochs", "2", "--batch-size", "16",
            "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out")]
    for name in BENCH:
        args += ["--benchmark", name, "--from", f"{name}={bench_dirs[name]}"]
    result = _cli(args)
    assert result.exit_code == 0, result.output
    # one table, encoders as rows side by side, the paper's numbers as reference rows
    for text in (str(tiny_vit), "scratch", "OpenMedQ (paper)", "0.757", "BiomedCLIP (paper)", "0.745",
                 "PubMedCLIP (paper)", "0.746", "scratch (paper)", "0.616", "pcam", "lc25000_colon"):
        assert text in result.output, text
    assert result.output.count("Classification transfer") == 1

    report = json.loads((tmp_path / "out" / "classification.json").read_text())
    assert report["benchmarks"] == BENCH and list(report["encoders"]) == [str(tiny_vit), "scratch"]
    assert report["reference_mean_macro_f1"]["OpenMedQ (paper)"] == 0.757
    from sklearn.metrics import f1_score

    for name, enc in report["encoders"].items():
        per = enc["benchmarks"]
        assert set(per) == set(BENCH)
        assert enc["mean_macro_f1"] == pytest.approx(np.mean([per[b]["macro_f1"] for b in BENCH]))
        for score in per.values():
            assert score["mode"] == ("finetune" if name == "scratch" else "linear")
            confusion = np.array(score["confusion"])
            assert confusion.sum() == score["n_test"]
            truth = np.repeat(np.arange(len(confusion)), confusion.sum(axis=1))
            pred = np.concatenate([np.repeat(np.arange(len(confusion)), row) for row in confusion])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                assert score["macro_f1"] == pytest.approx(f1_score(truth, pred, average="macro"))
    nct = report["encoders"]["scratch"]["benchmarks"]["nct_crc_he"]
    assert [s["id"] for s in nct["skipped"]["train"]] == ["train/TUM/TUM-BROKEN"]  # listed, the rest evaluated
    assert "undecodable image" in nct["skipped"]["train"][0]["reason"]
    assert str(tmp_path) not in (tmp_path / "out" / "classification.json").read_text()  # no cache paths in results
    assert (nct["n_train"], nct["n_test"]) == (18, 9)
    # colour tints are learnable from frozen random-ViT features: a label/image misalignment would sit at chance
    tiny = report["encoders"][str(tiny_vit)]["benchmarks"]
    assert tiny["pcam"]["accuracy"] >= 0.9 and tiny["lc25000_colon"]["accuracy"] >= 0.9

    md = (tmp_path / "out" / "classification.md").read_text()
    assert "| encoder | pneumoniamnist | pcam | nct_crc_he | lc25000_colon | mean macro-F1 |" in md
    assert "| *OpenMedQ (paper)* | — | — | — | — | 0.757 |" in md
    png = (tmp_path / "out" / "classification.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_same_inputs_give_byte_identical_reports(tiny_vit, bench_dirs, tmp_path):
    from medmix.evaluation.presentation import write_reports

    outputs = []
    for run in ("a", "b"):  # separate caches: nothing is reused between the two runs
        recipe = cl.ProbeRecipe(epochs=1, batch_size=8)
        report = cl.run_classification([str(tiny_vit), "scratch"], ["pcam"], recipe,
                                       files_for=_files_for(bench_dirs, tmp_path / run), cache_dir=tmp_path / run)
        paths = write_reports(report, tmp_path / run / "out")
        outputs.append({k: p.read_bytes() for k, p in paths.items()})
    assert outputs[0] == outputs[1]


def test_probe_and_finetune_never_train_on_test_rows(tiny_vit, bench_dirs, tmp_path, monkeypatch):
    """Instrumentation: record every array the probe is fitted on and every batch the network trains on,
    then check none of it is a test row (and that the recording saw the training rows)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    features: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    real_extract = cl.extract_features

    def recording_extract(encoder, store, **kw):
        out = real_extract(encoder, store, **kw)
        features[store.split].append(out)
        return out

    fitted: list[np.ndarray] = []
    real_scaler_fit, real_lr_fit = StandardScaler.fit, LogisticRegression.fit
    monkeypatch.setattr(cl, "extract_features", recording_extract)
    monkeypatch.setattr(StandardScaler, "fit", lambda self, X, *a, **k: (fitted.append(np.array(X)),
                                                                         real_scaler_fit(self, X, *a, **k))[1])
    monkeypatch.setattr(LogisticRegression, "fit", lambda self, X, y, *a, **k: (fitted.append(np.array(X)),
                                                                                real_lr_fit(self, X, y, *a, **k))[1])
    trained_on: list[torch.Tensor] = []

    def hook(module, args):
        if module.training and args and isinstance(args[0], torch.Tensor) and args[0].dim() == 4:
            trained_on.append(args[0].detach().clone())

    handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
    try:
        recipe = cl.ProbeRecipe(epochs=1, batch_size=8)
        report = cl.run_classification([str(tiny_vit), "scratch"], ["pneumoniamnist"], recipe,
                                       files_for=_files_for(bench_dirs, tmp_path), cache_dir=tmp_path)
    finally:
        handle.remove()
    assert report.scores["scratch"]["pneumoniamnist"].mode == "finetune"

    train_feats, test_feats = np.concatenate(features["train"]), np.concatenate(features["test"])
    lr_inputs = fitted[1]  # scaler first (raw features), then the standardized matrix
    assert np.array_equal(fitted[0], train_feats) and len(lr_inputs) == len(train_feats)
    test_rows = {row.tobytes() for row in test_feats}
    assert not any(row.tobytes() in test_rows for row in fitted[0])

    from medmix.evaluation.encoders import load_encoder
    from medmix.evaluation.eval_data import materialize
    from medmix.sources.pneumoniamnist import PneumoniaMNIST

    enc = load_encoder(str(tiny_vit))
    files = _files_for(bench_dirs, tmp_path)(PneumoniaMNIST(), ("train", "test"))
    pix = {s: enc.pixels(materialize(PneumoniaMNIST(), s, files, size=32, cache_dir=tmp_path).images)
           for s in ("train", "test")}
    seen = torch.cat([t for t in trained_on if t.shape[1:] == pix["test"].shape[1:]])
    assert len(seen) > 0
    test_set = {img.numpy().tobytes() for img in pix["test"]}
    train_set = {img.numpy().tobytes() for img in pix["train"]}
    assert not any(img.numpy().tobytes() in test_set for img in seen)
    assert all(img.numpy().tobytes() in train_set for img in seen)


def test_split_discipline_guard_refuses_overlap_and_swapped_splits(tiny_vit, bench_dirs, tmp_path):
    from medmix.evaluation.eval_data import materialize
    from medmix.sources.pcam import PCam

    files = _files_for(bench_dirs, tmp_path)(PCam(), ("train", "test"))
    train = materialize(PCam(), "train", files, size=32, cache_dir=tmp_path)
    test = materialize(PCam(), "test", files, size=32, cache_dir=tmp_path)
    recipe = cl.ProbeRecipe()
    cl.check_split_discipline(train, test, recipe)
    with pytest.raises(MedmixError, match="recipe says fit 'train', score 'test'"):
        cl.check_split_discipline(test, train, recipe)
    leaky = cl.ImageStore(train.path, "pcam", "train", 32, train.labels, train.ids[:-1] + [test.ids[0]])
    with pytest.raises(MedmixError, match=r"1 row id\(s\) are in both 'train' and 'test'.*test/000000"):
        cl.check_split_discipline(leaky, test, recipe)
    with pytest.raises(MedmixError, match="fits and scores on the same split"):
        cl.ProbeRecipe(train_split="test")
    with pytest.raises(MedmixError, match="mode must be one of"):
        cl.ProbeRecipe(mode="zero-shot")


def test_bad_names_fail_clearly_before_any_work(tiny_vit, tmp_path):
    with pytest.raises(MedmixError, match="unknown source 'pcamm'.*did you mean pcam"):
        cl.get_benchmark("pcamm")
    with pytest.raises(MedmixError, match="'vqa_rad' is not a classification benchmark"):
        cl.get_benchmark("vqa_rad")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MedmixError, match="neither a medmix checkpoint nor a Hugging Face model folder"):
        cl.build_encoders([str(tmp_path / "empty")], seed=0)
    with pytest.raises(MedmixError, match="open_clip.*not installed"):
        cl.build_encoders(["biomedclip"], seed=0)
    with pytest.raises(MedmixError, match="PMC-CLIP"):
        cl.build_encoders(["pmc-clip"], seed=0)
    with pytest.raises(MedmixError, match="named twice"):
        cl.build_encoders([str(tiny_vit), str(tiny_vit)], seed=0)
    result = _cli(["--encoder", str(tmp_path / "empty"), "--benchmark", "pcam", "--cache", str(tmp_path / "c")])
    assert result.exit_code == 2 and "error:" in result.output


def test_max_train_keeps_the_same_seeded_rows_for_every_encoder(bench_dirs, tmp_path):
    from medmix.evaluation.eval_data import materialize
    from medmix.sources.nct_crc_he import NctCrcHe

    src = NctCrcHe()
    files = _files_for(bench_dirs, tmp_path)(src, ("train",))
    # the declared split size is 100,000: asking for 50,000 keeps each fixture row with probability 1/2
    a = materialize(src, "train", files, size=16, cache_dir=tmp_path / "a", max_rows=50_000, seed=3)
    b = materialize(src, "train", files, size=32, cache_dir=tmp_path / "b", max_rows=50_000, seed=3)
    c = materialize(src, "train", files, size=16, cache_dir=tmp_path / "a", max_rows=50_000, seed=4)
    assert a.ids == b.ids and 0 < len(a) < 18
    assert a.ids != c.ids
    assert a.images.shape == (len(a), 16, 16, 3) and b.images.shape == (len(b), 32, 32, 3)


def test_benchmarks_smaller_than_the_encoder_input_are_stored_at_their_own_size(bench_dirs, tmp_path):
    from medmix.evaluation.eval_data import materialize
    from medmix.sources.pcam import PCam
    from medmix.sources.pneumoniamnist import PneumoniaMNIST

    for src, native in ((PCam(), 96), (PneumoniaMNIST(), 28)):
        files = _files_for(bench_dirs, tmp_path)(src, ("test",))
        store = materialize(src, "test", files, size=224, cache_dir=tmp_path)
        assert store.size == native and store.images.shape[1:] == (native, native, 3)
