"""The pairs figure: images from folders and archives, placeholders, bad CSVs, plot_similar.py."""
import io
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from faceaudit.report import grid
from faceaudit.cli import main as cli_main
from faceaudit.errors import FaceauditError

ROOT = Path(__file__).resolve().parents[1]


def png_bytes(color, size=(40, 48)):
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


FILES = {
    "casia": {"0001/image_1.jpg": (200, 0, 0), "0002/image_2.jpg": (0, 200, 0)},
    "synth": {"s01/a.png": (0, 0, 200), "s02/b.png": (200, 200, 0)},
}


@pytest.fixture
def image_sets(tmp_path):
    """Each set as a folder, a zip with a top-level folder, and a tar.gz."""
    out = {}
    for name, files in FILES.items():
        folder = tmp_path / name
        for rel, color in files.items():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_bytes(png_bytes(color))
        zpath = tmp_path / f"{name}.zip"
        with zipfile.ZipFile(zpath, "w") as z:
            for rel, color in files.items():
                z.writestr(f"{name}_top/{rel}", png_bytes(color))
        tpath = tmp_path / f"{name}.tar.gz"
        with tarfile.open(tpath, "w:gz") as t:
            for rel in files:
                t.add(folder / rel, arcname=rel)
        out[name] = {"folder": folder, "zip": zpath, "tgz": tpath}
    return out


@pytest.fixture
def pairs_csv(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text('query_path,casia_path,similarity_score\n'
                    '"s01/a.png","0001/image_1.jpg",0.7017117142677307\n'
                    '"s02/b.png","0002/image_2.jpg",0.6907355189323425\n'
                    '"s03/missing.png","0002/image_2.jpg",0.5\n')
    return path


@pytest.mark.parametrize("kind", ["folder", "zip", "tgz"])
def test_pairs_figure_from_folders_and_archives(image_sets, pairs_csv, tmp_path, kind, recwarn):
    out = tmp_path / f"fig_{kind}"
    path = grid.pairs_figure(pairs_csv, image_sets["casia"][kind], image_sets["synth"][kind], out, samples=2)
    assert path.parent == out and path.name == "comparison_synth_2_samples.png"
    assert [p.name for p in out.iterdir()] == [path.name]
    with Image.open(path) as img:
        assert img.width > 400 and img.height > 400
    assert not [w for w in recwarn if "not found" in str(w.message)]


def test_images_are_found_and_drawn(image_sets):
    from faceaudit.io.sources import open_source
    with open_source(image_sets["casia"]["zip"]) as src:
        img = grid.load_thumbnail(src, "0001/image_1.jpg")
    assert img.shape == (48, 40, 3) and tuple(img[0, 0]) == (200, 0, 0)
    with open_source(image_sets["synth"]["folder"]) as src:  # fallback by file name
        assert grid.load_thumbnail(src, "elsewhere/b.png") is not None


def test_missing_image_gets_placeholder_and_warning(image_sets, pairs_csv, tmp_path):
    with pytest.warns(UserWarning, match="missing.png"):
        path = grid.pairs_figure(pairs_csv, image_sets["casia"]["zip"], image_sets["synth"]["zip"], tmp_path / "o",
                                 samples=3)
    assert path.name == "comparison_synth_3_samples.png" and path.is_file()
    fig = grid.draw_pairs([(None, None)], [grid.Pair("q/x.png", "r/y.jpg", 0.5)])
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert texts.count("Image not found") == 2


def test_bad_csv_and_samples(image_sets, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("query,casia,score\na,b,0.5\n")
    with pytest.raises(FaceauditError, match="missing column"):
        grid.pairs_figure(bad, image_sets["casia"]["folder"], image_sets["synth"]["folder"], tmp_path)
    ok = tmp_path / "ok.csv"
    ok.write_text("query_path,casia_path,similarity_score\na,b,high\n")
    with pytest.raises(FaceauditError, match="not a number"):
        grid.read_pairs_csv(ok)
    with pytest.raises(FaceauditError, match="> 0"):
        grid.read_pairs_csv(ok, samples=0)


def test_corrupt_archive_is_one_error(image_sets, pairs_csv, tmp_path):
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(FaceauditError):
        grid.pairs_figure(pairs_csv, broken, image_sets["synth"]["folder"], tmp_path / "o")


def test_cli_pairs_figure(image_sets, pairs_csv, tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli_main(["pairs-figure", str(pairs_csv), "--reference-images", str(image_sets["casia"]["folder"]),
                     "--query-images", str(image_sets["synth"]["zip"]), "--samples", "2", "--out", str(out)]) == 0
    assert (out / "comparison_synth_2_samples.png").is_file()
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\n1,2\n")
    capsys.readouterr()
    assert cli_main(["pairs-figure", str(bad), "--reference-images", str(image_sets["casia"]["folder"]),
                     "--query-images", str(image_sets["synth"]["zip"]), "--out", str(out)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_plot_similar_script_as_written(image_sets, pairs_csv, tmp_path):
    """python plot_similar.py SIMILAR.csv --casia-file CASIA.zip --other-file OTHER.zip --samples K"""
    work = tmp_path / "work"
    work.mkdir()
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "CASIA_compare" / "plot_similar.py"), str(pairs_csv),
                           "--casia-file", str(image_sets["casia"]["zip"]),
                           "--other-file", str(image_sets["synth"]["tgz"]), "--samples", "2"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in (work / "comparison_figures").iterdir()] == ["comparison_synth_2_samples.png"]
    assert sorted(p.name for p in work.iterdir()) == ["comparison_figures"]
