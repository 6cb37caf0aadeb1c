"""`python -m prresq.infer`: inputs, corrupt files listed and skipped, resume without duplicates, JSONL with aspects."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import compose_config
from omegaconf import DictConfig
from PIL import Image

from prresq.infer import list_inputs, run

FAST = ["scoring.max_new_tokens=4", "scoring.batch_size=3"]


def compose_infer(overrides: list[str], out_dir: Path, model_dir: Path) -> DictConfig:
    return compose_config(
        "infer",
        [*FAST, *overrides],
        model_dir=model_dir,
        root_dir=out_dir,
        output_dir=out_dir,
        cache_dir=out_dir / "cache",
        data_dir=out_dir / "data",
    )


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def folder(tmp_path: Path, synthetic_iqa: Path) -> Path:
    """4 images (one in a subfolder), a corrupt .jpg, and a file that is not media."""
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    images = sorted((synthetic_iqa / "images").rglob("*.png"))[:4]
    for i, img in enumerate(images):
        shutil.copy(img, (root / "sub" if i == 3 else root) / f"img{i}.png")
    (root / "sub" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (root / "notes.txt").write_text("not media")
    return root


def test_folder_with_a_corrupt_file_completes_and_resumes(tmp_path, folder, tiny_model_dir):
    out = tmp_path / "scores.csv"
    cfg = compose_infer([f"input={folder}", f"output={out}"], tmp_path, tiny_model_dir)
    summary = run(cfg)
    rows = _read_csv(out)
    assert summary["inputs"] == 5 and summary["error"] == 1 and summary["ok"] + summary["no_answer"] == 4
    assert [Path(r["path"]).name for r in rows] == ["img0.png", "img1.png", "img2.png", "broken.jpg", "img3.png"]
    broken = rows[3]
    assert broken["status"].startswith("error: ") and "broken.jpg" in broken["status"] and broken["score"] == ""
    assert all(not r["status"].startswith("error") for i, r in enumerate(rows) if i != 3)
    assert list(rows[0]) == ["path", "status", "score", "n_parsed", "text"]
    assert out.read_text().count("\n") == 6  # header + one line per row

    again = run(compose_infer([f"input={folder}", f"output={out}"], tmp_path, tiny_model_dir))
    assert again["already_done"] == 5 and again["ok"] + again["no_answer"] + again["error"] == 0
    assert _read_csv(out) == rows

    # an interrupted write (partial last row) and a new file: only the missing ones are scored
    data = out.read_bytes()
    out.write_bytes(data[: data.rstrip(b"\n").rfind(b"\n") + 12])
    shutil.copy(folder / "img0.png", folder / "sub" / "new.png")
    third = run(compose_infer([f"input={folder}", f"output={out}"], tmp_path, tiny_model_dir))
    assert third["already_done"] == 4 and third["ok"] + third["no_answer"] == 2
    paths = [r["path"] for r in _read_csv(out)]
    assert len(paths) == len(set(paths)) == 6

    # the corrupt file got repaired: retry_errors scores it again, and only it
    Image.open(folder / "img0.png").save(folder / "sub" / "broken.jpg")
    fourth = run(compose_infer([f"input={folder}", f"output={out}", "retry_errors=true"], tmp_path, tiny_model_dir))
    assert fourth["already_done"] == 5 and fourth["error"] == 0 and fourth["ok"] + fourth["no_answer"] == 1
    rows = _read_csv(out)
    assert len(rows) == 6 and not any(r["status"].startswith("error") for r in rows)


def test_jsonl_output_with_aspect_scores(tmp_path, folder, tiny_model_dir):
    out = tmp_path / "scores.jsonl"
    listing = tmp_path / "items.jsonl"
    listing.write_text(
        "\n".join(
            json.dumps(r)
            for r in [{"image": ["in/img0.png"]}, {"path": str(folder / "img1.png")}, {"media": "in/gone.png"}]
        )
    )
    cfg = compose_infer([f"input={listing}", f"output={out}", "prompt=preresq_iqa"], tmp_path, tiny_model_dir)
    summary = run(cfg)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [Path(r["path"]).name for r in rows] == ["img0.png", "img1.png", "gone.png"]
    assert summary["error"] == 1 and rows[2]["status"].startswith("error") and rows[2]["score"] is None
    names = ["saturation", "granularity", "sharpness", "foreground", "background"]
    for r in rows[:2]:
        assert list(r["aspects"]) == names and isinstance(r["text"], str)
        number = re.search(r"\d+(?:\.\d+)?", r["text"])  # the released PreResQ-R1 IQA rule, answer or not
        if number:
            assert r["status"] == "ok" and r["n_parsed"] == 1
            assert r["score"] == pytest.approx(min(max(float(number.group()), 1.0), 5.0))
        else:  # blank or unreadable: no_answer, counted, never 3.0
            assert r["status"] == "no_answer" and r["score"] is None and r["n_parsed"] == 0
            assert all(v is None or v != v for v in r["aspects"].values())  # no padded 3.0 aspects
    assert summary["no_answer"] == sum(r["status"] == "no_answer" for r in rows) >= 1


def test_list_inputs(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ("a/x.PNG", "a/y.mp4", "a/z.txt", "b.jpg"):
        (tmp_path / name).write_bytes(b"")
    assert [Path(p).relative_to(tmp_path).as_posix() for p in list_inputs(tmp_path)] == ["a/x.PNG", "a/y.mp4", "b.jpg"]
    listing = tmp_path / "list.txt"
    listing.write_text("# comment\nb.jpg\n\n/abs/c.png\nb.jpg\n")
    assert list_inputs(listing) == [str(tmp_path / "b.jpg"), "/abs/c.png"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        list_inputs(bad)
    with pytest.raises(FileNotFoundError):
        list_inputs(tmp_path / "missing")


def test_images_and_videos_in_one_folder(tmp_path, synthetic_iqa, tiny_model_dir):
    from prresq.data.synthetic_video import generate_synthetic_vqa

    vqa = generate_synthetic_vqa(
        tmp_path / "vqa",
        types=["blur"],
        levels=2,
        frames=8,
        width=64,
        height=48,
        photos=["astronaut", "coffee", "rocket"],
        progress=False,
    )
    root = tmp_path / "mixed"
    root.mkdir()
    shutil.copy(sorted((synthetic_iqa / "images").rglob("*.png"))[0], root / "a.png")
    shutil.copy(sorted((vqa / "videos").rglob("*.mp4"))[0], root / "b.mp4")
    (root / "c.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated")
    out = tmp_path / "scores.jsonl"
    native = ["dataflow@video_dataflow=video_native", "video_dataflow.max_pixels=3136", "video_dataflow.max_frames=4"]
    summary = run(compose_infer([f"input={root}", f"output={out}", *native], tmp_path, tiny_model_dir))
    rows = {Path(r["path"]).name: r for r in map(json.loads, out.read_text().splitlines())}
    assert list(rows) == ["a.png", "b.mp4", "c.mp4"]
    assert not rows["a.png"]["status"].startswith("error") and not rows["b.mp4"]["status"].startswith("error")
    assert rows["c.mp4"]["status"].startswith("error: ") and summary["error"] == 1


def test_single_image_file_is_scored(tmp_path, synthetic_iqa, tiny_model_dir):
    """`input=photo.png` scores that one file (it raised UnicodeDecodeError: read as a text list)."""
    photo = tmp_path / "photo.png"
    shutil.copy(sorted((synthetic_iqa / "images").rglob("*.png"))[0], photo)
    out = tmp_path / "one.csv"
    summary = run(compose_infer([f"input={photo}", f"output={out}"], tmp_path, tiny_model_dir))
    rows = _read_csv(out)
    assert summary["inputs"] == 1 and summary["ok"] + summary["no_answer"] == 1
    assert [r["path"] for r in rows] == [str(photo)] and not rows[0]["status"].startswith("error")


def test_input_files_recognised_by_extension_or_content(tmp_path):
    """Media by extension or by its header, lists by extension or content; binary junk is a clear DataError."""
    from prresq.data.records import DataError

    for name in ("clip.MP4", "photo.png"):
        (tmp_path / name).write_bytes(b"")
        assert list_inputs(tmp_path / name) == [str(tmp_path / name)]
    Image.new("RGB", (8, 8)).save(tmp_path / "scan.img", format="PNG")  # an image under an unknown extension
    assert list_inputs(tmp_path / "scan.img") == [str(tmp_path / "scan.img")]
    (tmp_path / "paths.dat").write_text("a.png\n# note\nb.jpg\n")
    assert list_inputs(tmp_path / "paths.dat") == [str(tmp_path / "a.png"), str(tmp_path / "b.jpg")]
    (tmp_path / "rows.json").write_text('{"path": "c.png"}\n{"media": ["d.mp4"]}\n')
    assert list_inputs(tmp_path / "rows.json") == [str(tmp_path / "c.png"), str(tmp_path / "d.mp4")]
    (tmp_path / "junk.bin").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(DataError, match=r"junk\.bin: neither an image or video .* binary"):
        list_inputs(tmp_path / "junk.bin")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9.png\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.txt: a list of paths must be UTF-8"):
        list_inputs(tmp_path / "latin1.txt")


def test_infer_does_not_import_eval():
    """Pins the module seam: `prresq.infer` gets model loading from `prresq.models` and the prompt and flows
    from `prresq.data`, never from the `prresq.eval` entry point."""
    import subprocess
    import sys

    code = "import sys, prresq.infer; print('prresq.eval' in sys.modules)"
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_a_second_process_on_the_same_output_stops_clearly(tmp_path, synthetic_iqa, tiny_model_dir):
    """Pins (issue 25 item 8): two `prresq.infer` processes on one output both scored everything (150 rows for
    75 files). A real process holds the output's lock; `python -m prresq.infer` on the same output exits non-zero
    naming it and the holder's pid, and writes no row."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "scores.csv"
    hold = "import sys, time; from prresq.infer_output import ResultWriter; ResultWriter(sys.argv[1], []).lock()"
    hold += "; print('locked', flush=True); time.sleep(120)"
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(out)], cwd=root, env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        image = sorted((synthetic_iqa / "images").rglob("*.png"))[0]
        cmd = [sys.executable, "-m", "prresq.infer", f"input={image}", f"output={out}", *FAST]
        cmd += [f"model.name_or_path={tiny_model_dir}", f"hydra.run.dir={tmp_path / 'run'}"]
        second = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    finally:
        holder.kill()
        holder.wait()
    assert second.returncode != 0
    assert f"output={out} is being written by another prresq.infer process (pid {holder.pid}" in second.stderr
    assert not out.exists()


def test_retry_errors_rewrite_that_fails_keeps_the_results_file(tmp_path):
    """Pins: `retry_errors=true` deleted the results file before writing the kept rows back, so a failure in
    between lost every row. The rewrite goes through a temporary file and a rename: a failed rewrite leaves the
    file as it was and no temporary file."""
    from prresq.infer_output import ResultWriter

    out = tmp_path / "scores.csv"
    writer = ResultWriter(out, [])
    writer.append([{"path": "a.png", "status": "ok", "score": 3.0, "n_parsed": 1, "text": "3"}])
    before = out.read_bytes()
    with pytest.raises(ValueError, match="fields not in fieldnames"):
        writer.rewrite([{"path": "a.png", "status": "ok", "bogus": 1}])  # fails while writing the rows
    assert out.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["scores.csv"]
    writer.rewrite([])
    assert _read_csv(out) == [] and out.read_text().startswith("path,status")


def test_an_unwritable_output_folder_fails_before_the_model_loads(tmp_path, synthetic_iqa):
    """Pins (issue 25 item 9): an output folder that cannot be created or written fails first, naming the output,
    not after the model is loaded (the model here does not exist: loading it first would fail on that)."""
    from prresq.infer_output import OutputFolderError

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    image = sorted((synthetic_iqa / "images").rglob("*.png"))[0]
    cfg = compose_infer([f"input={image}", f"output={blocker / 'scores.csv'}"], tmp_path, tmp_path / "no_model")
    with pytest.raises(OutputFolderError, match=r"output=.*a_file/scores\.csv: cannot write in .*a_file"):
        run(cfg)


def test_pixels_are_capped_by_default_and_an_overlong_prompt_is_an_error_for_that_item(
    tmp_path, synthetic_iqa, tiny_model_dir
):
    """Pins (issue 25 item 9): inference did not cap pixels (an 8K video became a 49,683-token prompt past the
    model's context and held up its batch). By default a 2600 px image is capped to 512 vision tokens like
    training's and scored; with the cap off (`scoring.max_pixels_cap=null`) its prompt (~8,600 tokens) exceeds the
    tiny model's 4,096-token context: that item is an error row naming its length, and the small image of the same
    batch is scored."""
    from prresq.models import load_scoring_model, processor_max_pixels

    folder = tmp_path / "in"
    folder.mkdir()
    ramp = Image.linear_gradient("L").resize((2600, 2600)).convert("RGB")
    ramp.save(folder / "big.png")
    shutil.copy(sorted((synthetic_iqa / "images").rglob("*.png"))[0], folder / "small.png")

    capped = compose_infer([f"input={folder}", f"output={tmp_path / 'capped.csv'}"], tmp_path, tiny_model_dir)
    assert capped.scoring.max_pixels_cap == 401408
    _, processor = load_scoring_model({"name_or_path": str(tiny_model_dir)}, device="cpu", max_pixels_cap=401408)
    assert processor_max_pixels(processor) == 401408
    summary = run(capped)
    assert summary["error"] == 0 and summary["ok"] + summary["no_answer"] == 2

    out = tmp_path / "uncapped.csv"
    uncapped = compose_infer(
        [f"input={folder}", f"output={out}", "scoring.max_pixels_cap=null"], tmp_path, tiny_model_dir
    )
    summary = run(uncapped)
    rows = {Path(r["path"]).name: r for r in _read_csv(out)}
    assert summary["error"] == 1 and rows["small.png"]["status"] in ("ok", "no_answer")
    status = rows["big.png"]["status"]
    assert status.startswith("error: its prompt is ") and "more than the 4092 the model's context leaves" in status
