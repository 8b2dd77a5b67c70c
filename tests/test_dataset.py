"""Reading an Ultralytics dataset YAML before a child starts: counts, and each way it can be wrong."""

import json

import pytest

from launcher import dataset, models
from launcher.errors import BadInput

from conftest import make_image_tree, write


def test_counts_images_in_folders_and_lists(tmp_path):
    ds = dataset.inspect(make_image_tree(tmp_path / "d", train=7, val=3, names=("a", "b")))
    assert (ds.train_images, ds.val_images, ds.images, ds.names) == (7, 3, 10, 2)
    (tmp_path / "d" / "images" / "train" / "notes.txt").write_text("not an image")
    (tmp_path / "d" / "images" / "train" / "sub").mkdir()
    (tmp_path / "d" / "images" / "train" / "sub" / "x.PNG").touch()
    assert dataset.inspect(tmp_path / "d" / "data.yaml").train_images == 8
    (tmp_path / "d" / "images" / "train" / ".x.jpg").touch()  # hidden: Ultralytics' glob skips it (issue 12)
    (tmp_path / "d" / "images" / "train" / ".thumbs").mkdir()
    (tmp_path / "d" / "images" / "train" / ".thumbs" / "y.jpg").touch()
    assert dataset.inspect(tmp_path / "d" / "data.yaml").train_images == 8
    write(tmp_path / "d" / "train.txt", "./images/train/00000.jpg\n./images/train/00001.jpg\n")
    y = write(tmp_path / "d" / "list.yaml", "train: train.txt\nval: images/val\nnc: 1\n")
    assert dataset.inspect(y).train_images == 2  # no 'path': the YAML's folder


def test_relative_path_key_is_relative_to_the_cwd_then_datasets_dir(tmp_path, monkeypatch):
    # as check_det_dataset: never relative to the YAML's folder (tests/test_parity.py holds it to Ultralytics)
    make_image_tree(tmp_path / "d", train=2, val=1)
    make_image_tree(tmp_path / "datasets" / "d", train=3, val=1)
    make_image_tree(tmp_path / "cfg" / "d", train=4, val=1)  # beside the YAML: never looked at
    write(models.ultralytics_config_dir() / "settings.json", json.dumps({"datasets_dir": str(tmp_path / "datasets")}))
    y = write(tmp_path / "cfg" / "data.yaml", "path: d\ntrain: images/train\nval: images/val\nnames: [x]\n")
    monkeypatch.chdir(tmp_path)
    assert (dataset.inspect(y).root, dataset.inspect(y).train_images) == (tmp_path / "d", 2)
    monkeypatch.chdir(tmp_path / "cfg" / "d" / "images")  # no d/ here: Ultralytics' datasets_dir is asked
    assert (dataset.inspect(y).root, dataset.inspect(y).train_images) == (tmp_path / "datasets" / "d", 3)
    other = write(tmp_path / "cfg" / "other.yaml", "path: d\ntrain: images/nope\nval: images/val\nnames: [x]\n")
    with pytest.raises(BadInput, match=f"{tmp_path / 'datasets' / 'd'}/images/nope does not exist"):
        dataset.inspect(other)


@pytest.mark.parametrize("text, names", [
    ("train: images/train\nnames: [x]\n", ["key 'val'", "missing"]),
    ("val: images/val\nnames: [x]\n", ["key 'train'", "missing"]),
    ("train: images/train\nval: images/val\n", ["key 'names'"]),
    ("train: nowhere\nval: images/val\nnames: [x]\n", ["key 'train'", "nowhere does not exist"]),
    ("train: empty\nval: images/val\nnames: [x]\n", ["key 'train'", "no images"]),
    ("- just\n- a list\n", ["not a dataset YAML"]),
    ("train: [images/train\n", ["not a readable YAML"]),
])
def test_bad_datasets(tmp_path, text, names):
    make_image_tree(tmp_path, train=2, val=1)
    (tmp_path / "empty").mkdir()
    y = write(tmp_path / "bad.yaml", text)
    with pytest.raises(BadInput) as e:
        dataset.inspect(y)
    assert str(y) in str(e.value) and "fix:" in str(e.value)
    for n in names:
        assert n in str(e.value)


def test_missing_yaml(tmp_path):
    with pytest.raises(BadInput, match="dataset YAML not found.*--data"):
        dataset.inspect(tmp_path / "nope.yaml")


def test_resolved_copy_has_only_absolute_paths(tmp_path, monkeypatch):
    make_image_tree(tmp_path / "d", train=3, val=2)
    y = write(tmp_path / "cfg" / "data.yaml", "path: ../d\ntrain: images/train\nval: [images/val]\n"
                                              "test: images/val\nnames: [x]\ndownload: https://example.com/d.zip\n")
    monkeypatch.chdir(tmp_path / "cfg")
    ds = dataset.inspect(y)
    out = dataset.write_resolved(ds, tmp_path / "run" / "dataset.yaml")
    import yaml
    data = yaml.safe_load(out.read_text())
    assert data["path"] == str((tmp_path / "d").resolve())
    assert data["train"] == str((tmp_path / "d" / "images" / "train").resolve())
    assert data["test"] == str((tmp_path / "d" / "images" / "val").resolve())
    assert "download" not in data and data["names"] == ["x"]
    monkeypatch.chdir(tmp_path)  # from anywhere, the copy counts the same images
    again = dataset.inspect(out)
    assert (again.train_images, again.val_images) == (3, 2)
