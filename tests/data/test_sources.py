"""Layout detection and source resolution, on real images rearranged into each layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from skindx.data.errors import SourceError
from skindx.data.sources import ENV_VAR, read_source, resolve_source
from tests.conftest import needs_real_data
from tests.data.conftest import make_isic2018_layout, make_kaggle_layout, read_metadata_csv

DATA = {"source": None, "default_source": "../shared/data/ham10000"}


def test_flat_layout(fullres_dir: Path):
    table = read_source(fullres_dir)
    assert table.layout == "flat"
    assert len(table.metadata) == 70 and table.n_missing_images == 0
    assert table.unavailable_columns == ()
    assert all(Path(p).parent == fullres_dir / "images" for p in table.metadata["source_path"])


@pytest.mark.parametrize("tab", [False, True], ids=["kaggle-csv", "dataverse-tab"])
def test_kaggle_layout_with_part_folders(fullres_dir: Path, tmp_path: Path, tab: bool):
    source = make_kaggle_layout(fullres_dir, tmp_path / "kaggle", tab=tab)
    table = read_source(source)
    assert table.layout == "kaggle"
    assert table.n_missing_images == 0 and table.unlisted_images == 0
    expected = read_metadata_csv(fullres_dir)
    assert list(table.metadata["image_id"]) == list(expected["image_id"])
    assert list(table.metadata["dx"]) == list(expected["dx"])
    parents = {Path(p).parent.name for p in table.metadata["source_path"]}
    assert parents == {"HAM10000_images_part_1", "HAM10000_images_part_2"}


def test_isic2018_layout_one_hot_and_lesion_groupings(fullres_dir: Path, tmp_path: Path):
    table = read_source(make_isic2018_layout(fullres_dir, tmp_path / "isic"))
    assert table.layout == "isic2018"
    assert table.n_missing_images == 0
    expected = read_metadata_csv(fullres_dir).set_index("image_id")
    got = table.metadata.set_index("image_id")
    assert (got["dx"] == expected["dx"]).all()
    assert (got["lesion_id"] == expected["lesion_id"]).all()
    assert (got["dx_type"] == expected["dx_type"]).all()  # spelled-out names mapped back
    assert set(table.unavailable_columns) == {"age", "sex", "localization"}
    assert got["age"].isna().all()


def test_isic2018_row_that_is_not_one_hot_keeps_a_readable_label(fullres_dir: Path, tmp_path: Path):
    source = make_isic2018_layout(fullres_dir, tmp_path / "isic")
    csv = source / "ISIC2018_Task3_Training_GroundTruth" / "ISIC2018_Task3_Training_GroundTruth.csv"
    truth = pd.read_csv(csv)
    truth.loc[0, ["MEL", "NV"]] = 1.0
    truth.to_csv(csv, index=False)
    table = read_source(source)
    assert table.metadata.loc[0, "dx"].startswith("not-one-hot(")


def test_isic2018_without_lesion_groupings_says_what_is_missing(fullres_dir: Path, tmp_path: Path):
    source = make_isic2018_layout(fullres_dir, tmp_path / "isic", groupings=False)
    with pytest.raises(SourceError, match="ISIC2018_Task3_Training_LesionGroupings.csv"):
        read_source(source)


def test_missing_images_and_unlisted_images_are_counted(fullres_dir: Path, tmp_path: Path):
    source = Path(shutil.copytree(fullres_dir, tmp_path / "src"))
    first = read_metadata_csv(source).loc[0, "image_id"]
    (source / "images" / f"{first}.jpg").rename(source / "images" / "ISIC_9999999.jpg")
    table = read_source(source)
    assert table.n_missing_images == 1
    assert table.metadata.set_index("image_id")["source_path"].isna()[first]
    assert table.unlisted_images == 1


@pytest.mark.parametrize(
    ("prepare", "message"),
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.mkdir(), "no HAM10000 metadata found"),
        (lambda p: p.write_text("x"), "is not a folder"),
    ],
    ids=["missing", "empty-folder", "a-file"],
)
def test_unusable_source_gives_one_clear_message(tmp_path: Path, prepare, message):
    source = tmp_path / "source"
    prepare(source)
    with pytest.raises(SourceError, match=message) as info:
        read_source(source)
    assert str(source) in str(info.value)
    if message != "is not a folder":
        assert "expected" in str(info.value)


def test_metadata_without_image_id_column_is_named(fullres_dir: Path, tmp_path: Path):
    source = Path(shutil.copytree(fullres_dir, tmp_path / "src"))
    meta = read_metadata_csv(source).rename(columns={"image_id": "picture"})
    meta.to_csv(source / "HAM10000_metadata.csv", index=False)
    with pytest.raises(SourceError, match="no image_id column"):
        read_source(source)


def test_metadata_without_images_says_where_it_looked(fullres_dir: Path, tmp_path: Path):
    source = tmp_path / "src"
    source.mkdir()
    shutil.copyfile(fullres_dir / "HAM10000_metadata.csv", source / "HAM10000_metadata.csv")
    with pytest.raises(SourceError, match="no images"):
        read_source(source)


# --- resolution order: data.source, $SKINDX_DATA_DIR, data.default_source, download ----------


def test_data_source_wins_over_environment(tmp_path: Path):
    resolved = resolve_source({**DATA, "source": "mine"}, {ENV_VAR: "/env"}, root=tmp_path)
    assert (resolved.origin, resolved.path) == ("data.source", tmp_path / "mine")


def test_environment_wins_over_default(tmp_path: Path):
    (tmp_path / "default").mkdir()
    data = {**DATA, "default_source": "default"}
    resolved = resolve_source(data, {ENV_VAR: str(tmp_path / "env")}, root=tmp_path)
    assert (resolved.origin, resolved.path) == (f"${ENV_VAR}", tmp_path / "env")


def test_default_source_when_it_exists(tmp_path: Path):
    (tmp_path / "default").mkdir()
    resolved = resolve_source({**DATA, "default_source": "default"}, {}, root=tmp_path)
    assert (resolved.origin, resolved.path) == ("data.default_source", tmp_path / "default")


def test_download_when_nothing_else_is_there(tmp_path: Path):
    resolved = resolve_source({**DATA, "default_source": "absent"}, {}, root=tmp_path)
    assert resolved.origin == "download" and resolved.path is None and resolved.url is None
    assert "download" in resolved.describe()


def test_data_source_may_be_a_url(tmp_path: Path):
    url = "https://example.org/ham.zip"
    resolved = resolve_source({**DATA, "source": url}, {}, root=tmp_path)
    assert (resolved.origin, resolved.url, resolved.path) == ("data.source", url, None)


@needs_real_data
def test_the_default_source_of_this_machine_is_the_shared_data(ham_dir: Path):
    project_root = Path(__file__).resolve().parents[2]
    resolved = resolve_source(DATA, {}, root=project_root)
    assert resolved.path.resolve() == ham_dir.resolve()
