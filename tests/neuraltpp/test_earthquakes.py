"""pycsep earthquake catalogs: extraction from a cached wheel, binning, and real-data loads."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest

from commonio import wheels
from commonio.wheels import FetchError
from neuraltpp import earthquakes
from neuraltpp.cli import main
from neuraltpp.data import DataError

RIDGECREST_CSV = (
    "lon,lat,M,time_string,depth,catalog_id,event_id\n"
    "-117.4,35.6,4.73,2019-07-06T03:22:35.630000,9.35,-1,\n"
    "-117.7,35.8,2.90,2019-07-06T15:22:35.630000,9.1,-1,\n"
    "-117.6,35.8,3.50,2019-07-06T15:22:35.630000,11.4,-1,\n"
    "-117.6,35.8,3.10,2019-07-07T03:22:35,11.4,-1,\n"
)
UCERF3_CSV = (
    "lon,lat,mag,time_string,depth,catalog_id,event_id\n"
    "-124.5,40.4,5.65,1992-07-10T19:10:07.057000,18.0,0,\n"
    "-124.5,40.4,4.95,1992-08-30T16:44:54.183000,21.0,0,\n"
    "-116.3,33.9,5.15,1992-09-11T14:57:55.473000,0.2,2,\n"
)


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A `python` that fails like pip does when offline: any download attempt fails."""
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'ERROR: network unreachable' >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(wheels.sys, "executable", str(fake))


@pytest.fixture
def fake_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offline: None) -> Path:
    """A cache holding a small stand-in for the pycsep wheel (a download would fail)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("NEURALTPP_CACHE", str(cache))
    wheel = cache / "wheels" / "pycsep-0.8.0-py3-none-any.whl"
    wheel.parent.mkdir(parents=True)
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(earthquakes.MEMBERS["ridgecrest"], RIDGECREST_CSV)
        archive.writestr(earthquakes.MEMBERS["ucerf3"], UCERF3_CSV)
        archive.writestr("csep/__init__.py", "")
    return cache


def test_fetch_extracts_only_the_csvs(fake_cache: Path) -> None:
    paths = earthquakes.fetch()
    assert paths["ridgecrest"].read_text() == RIDGECREST_CSV
    assert paths["ucerf3"].read_text() == UCERF3_CSV
    files = fake_cache / "files" / "pycsep-0.8.0"
    assert sorted(str(p.relative_to(files)) for p in files.rglob("*") if p.is_file()) == sorted(
        earthquakes.MEMBERS.values()
    )  # no temporary files either


def test_empty_cache_variable_is_an_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NEURALTPP_CACHE", "")
    with pytest.raises(FetchError, match="NEURALTPP_CACHE is set but empty"):
        earthquakes.fetch()
    assert main(["fetch"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: NEURALTPP_CACHE is set but empty") and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # nothing written to the current directory


def test_failed_download_names_the_package_and_leaves_nothing(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    offline: None,
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("NEURALTPP_CACHE", str(cache))
    assert main(["fetch"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: could not download the package pycsep==0.8.0")
    assert "network unreachable" in err
    assert [p for p in cache.rglob("*") if p.is_file()] == []


def test_ucerf3_empty_catalog_reported(fake_cache: Path) -> None:
    ds = earthquakes.load_catalog("ucerf3")
    assert [s.seq_id for s in ds.sequences] == ["catalog-0", "catalog-2"]
    assert ds.metadata["excluded_empty_catalogs"] == [1]
    assert ds.n_events == ds.metadata["n_rows"] == 3
    np.testing.assert_array_equal(ds.sequences[0].types, [3, 0])
    assert ds.time_scale == 86400.0 and ds.sequences[0].window_end == 365.25


def test_ridgecrest_bins_days_and_ties(fake_cache: Path) -> None:
    ds = earthquakes.load_catalog("ridgecrest", magnitude_edges=[3.0, 3.5])
    (seq,) = ds.sequences
    np.testing.assert_allclose(seq.times, [0.0, 0.5, 0.5, 1.0 - 0.63 / 86400])
    np.testing.assert_array_equal(seq.types, [2, 0, 2, 1])
    assert ds.type_names == ["M[-inf,3.0)", "M[3.0,3.5)", "M[3.5,inf)"]
    with pytest.raises(DataError, match="increasing"):
        earthquakes.load_catalog("ridgecrest", magnitude_edges=[3.5, 3.0])
    with pytest.raises(DataError, match="unknown earthquake dataset"):
        earthquakes.load_catalog("tohoku")


@pytest.mark.integration
def test_real_ucerf3() -> None:
    splits = earthquakes.load_earthquakes("ucerf3", seed=0)
    train = splits["train"]
    excluded = train.metadata["excluded_empty_catalogs"]
    assert excluded == [111] and train.metadata["n_catalogs"] == 10_000
    assert sum(len(ds) for ds in splits.values()) == 9_999
    assert sum(ds.n_events for ds in splits.values()) == train.metadata["n_rows"] == 192_826
    ids = {s.seq_id for ds in splits.values() for s in ds.sequences}
    assert len(ids) == 9_999
    again = earthquakes.load_earthquakes("ucerf3", seed=0)
    assert [s.seq_id for s in again["test"].sequences] == [
        s.seq_id for s in splits["test"].sequences
    ]


@pytest.mark.integration
def test_real_ridgecrest() -> None:
    splits = earthquakes.load_earthquakes("ridgecrest")
    assert sum(ds.n_events for ds in splits.values()) == 829
    full = earthquakes.load_catalog("ridgecrest")
    assert full.n_events == full.metadata["n_rows"] == 829
    assert np.bincount(full.sequences[0].types).tolist() == [378, 263, 134, 54]
    assert splits["train"].sequences[0].window_end == splits["dev"].sequences[0].window_start
