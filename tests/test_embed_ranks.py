"""`torchrun --nproc-per-node 2 -m faceaudit embed`: the images split across ranks, each rank's part
resumed after a Ctrl-C, the output byte-identical to a one-process run (CPU, gloo, 2 processes,
MobileFaceNet with random weights)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from faceaudit.embed import embed_dataset
from faceaudit.embed.distributed import manifest_path, part_files, share
from faceaudit.embed.resume import OutputFiles
from faceaudit.errors import FaceauditError
from test_embed import ARCH, ENV, lines_of, make_images, write_folder

ROOT = Path(__file__).resolve().parents[1]
ONE = dict(arch=ARCH, workers=0, batch_size=2, threads=1, progress=False, log=lambda message: None)

# Runs in each of the 2 ranks: (1) a fresh run; (2) the same with --overwrite, rank 1 "pressing
# Ctrl-C" once its first batch is on disk; (3) the same command again, which resumes.
SCRIPT = r"""
import json, os, sys, time
from pathlib import Path
from faceaudit import cli
from faceaudit.embed import distributed
from faceaudit.embed.embedder import Embedder

data, out, weights, report = sys.argv[1:5]
rank = int(os.environ["RANK"])
args = ["embed", data, "-o", out, "--arch", "mobilefacenet", "--weights", weights, "--batch-size", "2",
        "--workers", "0", "--no-progress"]
codes = [cli.main(args)]
fresh = Path(out).read_bytes().decode() if rank == 0 else None

submit, calls = Embedder.submit, []
def ctrl_c_at_the_third_batch(self, batch):
    calls.append(1)
    if len(calls) == 3:
        part = distributed.part_files(distributed.OutputFiles.for_output(out), 1, 2)[0]
        deadline = time.monotonic() + 120
        while part.read_bytes().count(b"\n") < 2 and time.monotonic() < deadline:
            time.sleep(0.02)  # the first batch is written by the writer thread
        raise KeyboardInterrupt
    return submit(self, batch)
if rank == 1:
    Embedder.submit = ctrl_c_at_the_third_batch
codes.append(cli.main(args + ["--overwrite"]))
Embedder.submit = submit
left = sorted(p.name for p in Path(out).parent.iterdir())
parts = [distributed.part_files(distributed.OutputFiles.for_output(out), r, 2)[0] for r in range(2)]
kept = [p.read_bytes().count(b"\n") for p in parts]
codes.append(cli.main(args))
if rank == 0:
    Path(report).write_text(json.dumps({"codes": codes, "fresh": fresh, "left": left, "kept": kept,
                                        "after": sorted(p.name for p in Path(out).parent.iterdir())}))
else:
    Path(report + ".rank1").write_text(json.dumps({"codes": codes}))
"""


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    from faceaudit.models import create_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "mobilefacenet_random.pth"
    torch.save(create_model(ARCH).state_dict(), path)
    return path


def test_share_gives_each_rank_whole_batches_in_turn():
    todo = [f"p/{i:02d}.jpg" for i in range(11)]
    shares = [share(todo, rank, 3, 2) for rank in range(3)]
    assert shares[0] == ["p/00.jpg", "p/01.jpg", "p/06.jpg", "p/07.jpg"]
    assert shares[1] == ["p/02.jpg", "p/03.jpg", "p/08.jpg", "p/09.jpg"]
    assert shares[2] == ["p/04.jpg", "p/05.jpg", "p/10.jpg"]
    assert sorted(sum(shares, [])) == todo


def test_torchrun_two_ranks_resume_and_equal_one_process(tmp_path, weights):
    data = write_folder(tmp_path / "Dataset", make_images())
    one = tmp_path / "one" / "emb.jsonl"
    embed_dataset(data, one, weights=weights, **ONE)
    out, report = tmp_path / "two" / "emb.jsonl", tmp_path / "report.json"
    script = tmp_path / "ranks.py"
    script.write_text(SCRIPT)
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             str(script), str(data), str(out), str(weights), str(report)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=600,
                            env=dict(ENV, PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'tests'}"))
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(report.read_text())
    # (1) a fresh run of 2 ranks writes the very bytes of a one-process run, in its order
    assert found["fresh"].encode() == one.read_bytes()
    # (2) Ctrl-C on rank 1: both stop (exit 130); each part keeps its finished batches, nothing is merged
    assert found["codes"][1] == 130 and json.loads(Path(str(report) + ".rank1").read_text())["codes"][1] == 130
    assert found["kept"] == [6, 2]  # rank 0's three batches; rank 1's first
    assert "emb.jsonl" not in found["left"] and "emb.jsonl.ranks.meta.json" in found["left"]
    assert "rank 1 of 2 was interrupted" in result.stderr
    assert "interrupted; 2 embeddings are kept in" in result.stderr and "rank1-of-2.partial.jsonl" in result.stderr
    # (3) the same command resumes rank 1's part; the merged output is again the one-process bytes
    assert found["codes"][2] == 0
    assert out.read_bytes() == one.read_bytes()
    assert "8 of them from before" in result.stdout  # 6 + 2 lines kept in the parts
    assert sorted(found["after"]) == ["emb.jsonl", "emb.jsonl.meta.json"]  # parts and manifest removed
    meta = json.loads((tmp_path / "two" / "emb.jsonl.meta.json").read_text())
    assert meta["complete"] and meta["count"] == 12 and meta["ranks"] == 2 and meta["precision"] == "fp32"


def test_one_process_run_leaves_unmerged_parts_alone(tmp_path, weights):
    data = write_folder(tmp_path / "Dataset", make_images())
    out = tmp_path / "emb.jsonl"
    files = OutputFiles.for_output(out)
    stream, _ = part_files(files, 1, 2)
    stream.write_text('{"identity":"id_a","image_name":"02.png","embedding":[1.0]}\n')
    manifest_path(files).write_text(json.dumps({"world": 2, "batch_size": 2}))
    with pytest.raises(FaceauditError, match=r"unfinished run of 2 processes: resume it with torchrun "
                                             r"--nproc-per-node 2 and --batch-size 2, or use --overwrite"):
        embed_dataset(data, out, weights=weights, **ONE)
    assert stream.is_file() and not out.exists()
    summary = embed_dataset(data, out, weights=weights, overwrite=True, **ONE)
    assert summary["total"] == 12 and not stream.exists() and not manifest_path(files).exists()
    assert len(lines_of(out)) == 12
