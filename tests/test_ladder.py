from pathlib import Path

import pytest

from launcher import ladder, overrides
from launcher.errors import BadInput

from conftest import RUNG, ROOT, ladder_text


def test_default_ladder_encodes_the_users_notes():
    lad = ladder.load(ROOT / "ladders" / "default.toml")
    rows = [(r.name, r.model.spec, r.epochs, r.batch, r.workers, r.cache, r.threads, r.vram_fraction,
             r.alloc_conf, r.cleanup_every, r.min_free_vram_gib) for r in lad.rungs]
    fast = "max_split_size_mb:512,garbage_collection_threshold:0.7,expandable_segments:True"
    assert rows == [
        ("optimal", "rtdetr-l.pt", 100, 6, 8, "ram", 8, None, fast, 100, 15.0),
        ("optimal-b4", "rtdetr-l.pt", 100, 4, 8, "ram", 8, None, fast, 100, 11.0),
        ("mnv4", "rtdetr-mnv4", 150, 6, 8, "ram", 8, None, fast, 100, 11.0),
        ("safe", "rtdetr-l.pt", 100, 2, 2, "off", 2, 0.85, "max_split_size_mb:64", 50, 0.0),
    ]
    assert lad.job.imgsz == 640 and lad.job.name == "coco-indoor"
    assert lad.rung("mnv4").pretrained is True
    assert lad.rung("optimal").model.kind == "ultralytics"


def test_demo_ladder_is_offline_and_small():
    lad = ladder.load(ROOT / "ladders" / "demo.toml")
    assert [r.name for r in lad.rungs] == ["optimal", "optimal-b4", "mnv4", "safe"]
    assert all(r.model.download is None for r in lad.rungs), "the demo must download nothing"
    assert all(r.epochs == 2 for r in lad.rungs)
    assert lad.job.imgsz <= 128 and lad.job.device is None  # run --demo picks GPU 0 or the CPU
    assert lad.job.args == {"plots": False}
    assert lad.job.dataset == (ROOT / "logs" / "demo-data" / "shapes.yaml").resolve()


def test_relative_paths_resolve_against_the_ladder_file(tmp_path, ladder_file):
    (tmp_path / "m.yaml").write_text("nc: 1\n")
    path = ladder_file(ladder_text(rungs=RUNG.format(name="a", model="m.yaml", epochs=1, batch=1)))
    lad = ladder.load(path)
    assert lad.job.dataset == (tmp_path / "ds" / "data.yaml").resolve()
    assert lad.rungs[0].model.kind == "file" and lad.rungs[0].model.source == str((tmp_path / "m.yaml").resolve())


def test_data_override_is_relative_to_the_cwd(tmp_path, ladder_file, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lad = ladder.load(ladder_file(ladder_text()), data="other/d.yaml")
    assert lad.job.dataset == tmp_path / "other" / "d.yaml"


def test_defaults_for_optional_rung_keys(ladder_file):
    r = ladder.load(ladder_file(ladder_text())).rungs[0]
    assert (r.workers, r.cache, r.threads, r.vram_fraction, r.alloc_conf, r.cleanup_every, r.min_free_vram_gib) == (
        8, "off", None, None, None, 0, 0.0)


def rung(**kv) -> str:
    base = {"name": '"a"', "model": '"rtdetr-l.yaml"', "epochs": "3", "batch": "4"}
    base.update(kv)
    return "[[rung]]\n" + "".join(f"{k} = {v}\n" for k, v in base.items() if v is not None)


# (ladder text, what the message must name)
BAD = {
    "malformed toml": ('[job\nname = "t"', ["not valid TOML", "line 1"]),
    "no job": (rung(), ["[job]", "missing"]),
    "unknown top-level": (ladder_text() + "\n[extra]\nx = 1\n", ["'extra'", "unknown"]),
    "unknown rung key": (ladder_text(rungs=rung(bacth="4")), ["rung 'a'", "key 'bacth'", "unknown key"]),
    "unknown job key": (ladder_text(job_extra="epochs = 3"), ["[job]", "key 'epochs'", "unknown key"]),
    "missing job name": ('[job]\ndataset = "d.yaml"\n' + rung(), ["[job]", "key 'name'", "missing"]),
    "missing model": (ladder_text(rungs=rung(model=None)), ["rung 'a'", "key 'model'", "missing"]),
    "batch wrong type": (ladder_text(rungs=rung(batch='"6"')), ["key 'batch'", "whole number", "'6'"]),
    "batch zero": (ladder_text(rungs=rung(batch="0")), ["key 'batch'", "≥ 1", "got 0"]),
    "batch negative (autobatch)": (ladder_text(rungs=rung(batch="-1")), ["key 'batch'", "AutoBatch"]),
    "batch bool": (ladder_text(rungs=rung(batch="true")), ["key 'batch'", "whole number"]),
    "epochs float": (ladder_text(rungs=rung(epochs="2.5")), ["key 'epochs'", "whole number"]),
    "workers negative": (ladder_text(rungs=rung(workers="-1")), ["key 'workers'", "≥ 0"]),
    "threads zero": (ladder_text(rungs=rung(threads="0")), ["key 'threads'", "≥ 1"]),
    "cache unknown": (ladder_text(rungs=rung(cache='"gpu"')), ["key 'cache'", "'ram'"]),
    "vram_fraction zero": (ladder_text(rungs=rung(vram_fraction="0")), ["key 'vram_fraction'", "> 0"]),
    "vram_fraction above one": (ladder_text(rungs=rung(vram_fraction="1.2")), ["key 'vram_fraction'", "≤ 1"]),
    "vram_fraction string": (ladder_text(rungs=rung(vram_fraction='"85%"')), ["key 'vram_fraction'", "number"]),
    "alloc_conf syntax": (ladder_text(rungs=rung(alloc_conf='"max_split_size_mb=64"')), ["key 'alloc_conf'",
                                                                                        "key:value"]),
    "alloc_conf unknown option": (ladder_text(rungs=rung(alloc_conf='"max_split:64"')), ["key 'alloc_conf'",
                                                                                       "'max_split'"]),
    "cleanup negative": (ladder_text(rungs=rung(cleanup_every="-5")), ["key 'cleanup_every'"]),
    "min free negative": (ladder_text(rungs=rung(min_free_vram_gib="-1")), ["key 'min_free_vram_gib'"]),
    "pretrained string": (ladder_text(rungs=rung(pretrained='"yes"')), ["key 'pretrained'", "true or false"]),
    "imgsz below 32": (ladder_text().replace("imgsz = 64", "imgsz = 16"), ["key 'imgsz'", "32"]),
    "bad run name": (ladder_text().replace('name = "t"', 'name = "../up"'), ["key 'name'", "folder name"]),
    "bad device": (ladder_text(job_extra='device = "cuda:0"'), ["key 'device'", "'0,1'"]),
    "empty ladder": (ladder_text(rungs=""), ["no rungs"]),
    "max_attempts zero": (ladder_text(job_extra="max_attempts = 0"), ["key 'max_attempts'", "≥ 1"]),
    "retries negative": (ladder_text(job_extra="retries = -1"), ["key 'retries'", "≥ 0"]),
    "args reserved": (ladder_text(job_extra="args = { batch = 8 }"), ["[job.args], key 'batch'", "each rung"]),
    "args unknown": (ladder_text(job_extra="args = { lr = 0.1 }"), ["[job.args], key 'lr'",
                                                                    "not an Ultralytics training argument", "'lr0'"]),
    "args job's own": (ladder_text(job_extra="args = { epochs = 8 }"), ["[job.args], key 'epochs'", "each rung's"]),
    # issue 17, items 5-9, and issue 19 (cos_lr = 1 was accepted here while key=value refused it)
    "args optimizer": (ladder_text(job_extra="args = { optimizer = \"NoSuchOpt\" }"),
                       ["[job.args], key 'optimizer'", "Ultralytics refuses it", "Optimizer 'NoSuchOpt' not found"]),
    "args out of range": (ladder_text(job_extra="args = { lr0 = 2 }"), ["key 'lr0'", "between 0.0 and 1.0"]),
    "args default None": (ladder_text(job_extra="args = { channels_last = 5 }"), ["key 'channels_last'",
                                                                                  "must be a bool"]),
    "args bool as int": (ladder_text(job_extra="args = { cos_lr = 1 }"), ["key 'cos_lr'", "must be a bool"]),
    "args save false": (ladder_text(job_extra="args = { save = false }"), ["key 'save'", "resumes from the checkpoints",
                                                                          "leave save out"]),
    "args time": (ladder_text(job_extra="args = { time = 8 }"), ["key 'time'", "each training process",
                                                                 "issue 22"]),
    "args not a table": (ladder_text(job_extra="args = 3"), ["key 'args'", "table"]),
    "rung not a table": ("rung = [1]\n" + ladder_text(rungs=""), ["rung 1", "not a table"]),
    "duplicate names": (ladder_text(rungs=rung() + rung(batch="2")), ["rung 'a'", "key 'name'", "two rungs"]),
    "shared model, other epochs": (ladder_text(rungs=rung() + rung(name='"b"', epochs="5")),
                                   ["rung 'b'", "key 'epochs'", "rung 'a'", "set epochs = 3"]),
    "unknown model": (ladder_text(rungs=rung(model='"rtdetr-huge.pt"')), ["key 'model'", "rtdetr-huge.pt",
                                                                          "neither a file"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_ladders_name_file_rung_and_key(case, ladder_file):
    text, must_name = BAD[case]
    path = ladder_file(text)
    with pytest.raises(BadInput) as e:
        ladder.load(path)
    msg = str(e.value)
    assert str(path) in msg and "fix:" in msg and "\n" not in msg
    for part in must_name:
        assert part in msg, f"{part!r} not in {msg!r}"


@pytest.mark.parametrize("name", ["m.pth", "m.onnx", "m.safetensors", "m"])
def test_a_model_file_ultralytics_would_not_train_names_file_rung_and_key(name, ladder_file, tmp_path):
    """Issue 17, item 7: RTDETR takes 'm.pth' for an exported model and train() refuses it in the
    child; the night stepped down to the next rung's other model and ended "trained"."""
    (tmp_path / name).write_bytes(b"weights")
    path = ladder_file(ladder_text(rungs=rung(model=f'"{name}"') + rung(name='"b"')))
    with pytest.raises(BadInput) as e:
        ladder.load(path)
    msg = str(e.value)
    assert f"{path}: rung 'a', key 'model'" in msg and f"'{name}'" in msg and "should be a *.pt" in msg
    (tmp_path / "m.PT").write_bytes(b"weights")  # Ultralytics takes .pt in any case
    assert ladder.load(ladder_file(ladder_text(rungs=rung(model='"m.PT"')))).rungs[0].model.source.endswith("m.PT")


def test_missing_ladder_file_is_bad_input(tmp_path):
    with pytest.raises(BadInput, match="no such ladder file"):
        ladder.load(tmp_path / "nope.toml")


def test_default_ladder_found_from_another_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert ladder.load().path == ROOT / "ladders" / "default.toml"


def test_start_rung_lookup_lists_the_names(ladder_file):
    lad = ladder.load(ladder_file(ladder_text()))
    with pytest.raises(BadInput, match="use one of: a"):
        lad.rung("nope")


def test_project_model_unavailable_when_its_yaml_is_missing(monkeypatch, tmp_path):
    from launcher import models
    monkeypatch.setitem(models.PROJECT_MODELS, "rtdetr-mnv4", models.ProjectModel(
        "rtdetr-mnv4", tmp_path / "missing.yaml", "launcher.models.mnv4", "x"))
    ref = models.resolve("rtdetr-mnv4", (Path.cwd(),))
    assert ref is not None and not ref.available and "not built" in ref.weights


def test_weights_on_disk_are_found_in_ultralytics_weights_dir(tmp_path, monkeypatch, sealed_env):
    from launcher import models
    weights = tmp_path / "w"
    weights.mkdir()
    (weights / "rtdetr-l.pt").write_bytes(b"x")
    cfg = sealed_env / "yolo" / "Ultralytics"
    cfg.mkdir(parents=True)
    (cfg / "settings.json").write_text(f'{{"weights_dir": "{weights}"}}')
    ref = models.resolve("rtdetr-l.pt", (tmp_path,))
    assert ref.download is None and str(weights / "rtdetr-l.pt") in ref.weights
    monkeypatch.chdir(tmp_path)
    (weights / "rtdetr-l.pt").unlink()
    ref = models.resolve("rtdetr-l.pt", (tmp_path,))
    assert ref.download and "first use" in ref.weights


def test_pretrained_backbone_found_in_hf_cache(sealed_env):
    from launcher import models
    ref = models.resolve("rtdetr-mnv4", (Path.cwd(),), pretrained=True)
    assert ref.available and ref.download and "timm" in ref.download
    snap = sealed_env / "hf" / ("models--timm--" + models.PROJECT_MODELS["rtdetr-mnv4"].timm_model) / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap / "model.safetensors").write_bytes(b"x")
    ref = models.resolve("rtdetr-mnv4", (Path.cwd(),), pretrained=True)
    assert ref.download is None and "cached" in ref.weights
    assert models.resolve("rtdetr-mnv4.yaml", (Path.cwd(),), pretrained=False).weights.startswith("random init")


def test_job_args_pass_through_known_ultralytics_arguments(ladder_file):
    job = ladder.load(ladder_file(ladder_text(job_extra="max_attempts = 5\nretries = 1\n"
                                              "args = { lr0 = 0.0005, patience = 20, plots = false }"))).job
    assert job.args == {"lr0": 0.0005, "patience": 20, "plots": False}
    assert (job.max_attempts, job.retries) == (5, 1)
    assert {"lr0", "patience", "plots", "mosaic"} <= set(overrides.defaults())


@pytest.mark.parametrize("name", ["night\n", "night\r", "a\nb", "\nnight"])
def test_a_run_name_with_a_newline_never_matches(name):
    """A run name goes into #SBATCH lines and paths: the pattern refuses a newline anywhere, a
    trailing one too (`$` would match before it), however it is applied; run_name() itself strips
    surrounding whitespace, as every string in the ladder, and refuses one inside."""
    assert ladder.RUN_NAME.match(name) is None and ladder.RUN_NAME.search(name) is None
    if name.strip() == "night":
        assert ladder.run_name(name) == "night"
    else:
        with pytest.raises(ValueError, match="letters, digits"):
            ladder.run_name(name)
