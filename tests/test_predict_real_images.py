"""`semiseg predict` on real images (docs/deployment.md: Predicting images): glob patterns and recursive folders,
images larger than the crop through the sliding window of `semiseg eval`, batches that change nothing, the
confidence PNG, and EXIF-rotated photos predicted upright."""

import io
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import semiseg
from engine_runs import single_thread
from semiseg.cli import main
from semiseg.data.normalize import normalize, to_tensor
from semiseg.engine import inference
from semiseg.engine.evaluator import predict_logits
from test_cli import assert_one_line_error

CROP, CLASSES = 32, 7  # the tiny checkpoint's crop (its sliding window) and class count


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from test_export import train_tiny

    return train_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def network(tiny):
    """What `semiseg eval` runs: the method's predict, with its crop."""
    cfg, preset, method, _ = inference.load_for_inference(tiny, device=torch.device("cpu"))
    assert inference.crop_size(cfg, preset) == CROP and preset.num_classes == CLASSES
    return method.predictor()


def predict(capsys, *argv):
    with single_thread():
        code = main(["predict", *map(str, argv), "--no-progress"])
    out, err = capsys.readouterr()
    return code, out, err


def image(path, size=(20, 24), seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)
    return path


def read(path):
    return np.array(Image.open(path))


def outputs(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*.pred.png"))


def test_glob_patterns_are_expanded_sorted_and_one_matching_nothing_stops(tiny, tmp_path, capsys, monkeypatch):
    for name in ("photos/b.jpg", "photos/2024/a.jpg", "photos/2024/c.png", "photos/2024/deep/d.JPG"):
        image(tmp_path / name)
    (tmp_path / "photos" / "notes.jpg.txt").write_text("not an image")
    monkeypatch.chdir(tmp_path)
    code, stdout, err = predict(capsys, tiny, "photos/**/*.jpg", "--out", "pred")
    assert code == 0, err
    assert "wrote 2 predictions" in stdout  # ** matches no folder, one or more; the pattern is case-sensitive
    assert outputs(tmp_path / "pred") == ["a.jpg.pred.png", "b.jpg.pred.png"]
    code, stdout, err = predict(capsys, tiny, "photos/*/*.[jp][pn]g", "photos/2024/a.jpg", "--out", "pred")
    assert code == 0, err
    assert "wrote 2 predictions" in stdout  # a.jpg (matched and named) once, c.png
    # earlier predictions match a pattern too, and are skipped like in a folder
    code, stdout, err = predict(capsys, tiny, "pred/*.png", "--out", "again")
    assert_one_line_error(code, err, "no images match the pattern pred/*.png")
    code, _, err = predict(capsys, tiny, "photos/**/*.tif", "--out", "none")
    assert_one_line_error(code, err, "no images match the pattern photos/**/*.tif", ".tif")
    assert not (tmp_path / "none").exists() and not (tmp_path / "again").exists()


def test_recursive_folders(tiny, tmp_path, capsys):
    for name in ("photos/a.png", "photos/trip/b.png", "photos/trip/day2/c.png", "photos/other/a.png"):
        image(tmp_path / name)
    code, stdout, err = predict(capsys, tiny, tmp_path / "photos", "--out", tmp_path / "top")
    assert code == 0, err
    assert "wrote 1 predictions" in stdout and outputs(tmp_path / "top") == ["a.png.pred.png"]
    for _ in range(2):  # into the input folder itself: the second run skips the first one's outputs
        code, stdout, err = predict(capsys, tiny, tmp_path / "photos", "--recursive", "--out", tmp_path / "photos")
        assert code == 0, err
        assert "wrote 4 predictions" in stdout  # two a.png: every output mirrors its image's folder
    assert outputs(tmp_path / "photos") == ["a.png.pred.png", "other/a.png.pred.png", "trip/b.png.pred.png",
                                            "trip/day2/c.png.pred.png"]
    code, _, err = predict(capsys, tiny, tmp_path / "photos" / "trip", "--out", tmp_path / "x")
    assert code == 0, err  # b.png; c.png one level down is not read
    image(tmp_path / "nested" / "only" / "d.png")
    code, _, err = predict(capsys, tiny, tmp_path / "nested", "--out", tmp_path / "nested_pred")
    assert_one_line_error(code, err, "no images found in", "pass --recursive to read the sub-folders too")


def test_a_large_image_goes_through_the_sliding_window_of_eval(tiny, network, tmp_path, capsys):
    large = image(tmp_path / "in" / "large.png", (3 * CROP, 2 * CROP + 7), seed=1)  # 96 x 71
    small = image(tmp_path / "in" / "small.png", (CROP, CROP - 5), seed=2)
    code, stdout, err = predict(capsys, tiny, tmp_path / "in", "--out", tmp_path / "out", "--confidence")
    assert code == 0, err
    assert "1 at their own size, 1 larger than the 32 px crop with sliding 32 x 32 windows" in stdout
    with torch.inference_mode():
        for path, mode in ((large, "sliding_window"), (small, "original")):
            x = normalize(to_tensor(np.array(Image.open(path)))).unsqueeze(0)
            scores, _ = predict_logits(network, x, CLASSES, mode, crop_size=CROP)
            labels = read(tmp_path / "out" / f"{path.name}.pred.png")
            assert labels.shape == x.shape[-2:]
            assert np.array_equal(labels, scores.argmax(1)[0].numpy())
    code, stdout, err = predict(capsys, tiny, large, "--out", tmp_path / "whole", "--mode", "original")
    assert code == 0, err
    assert "(mode original;" in stdout  # an explicit --mode is kept for every image
    whole = read(tmp_path / "whole" / "large.png.pred.png")
    assert whole.shape == (3 * CROP, 2 * CROP + 7)
    assert not np.array_equal(whole, read(tmp_path / "out" / "large.png.pred.png"))  # the two modes differ here


def test_batches_give_the_results_of_one_image_at_a_time(tiny, tmp_path, capsys, monkeypatch):
    sizes = [(20, 24)] * 5 + [(24, 20), (70, 40), (70, 40), (70, 40), (20, 24)]
    for i, size in enumerate(sizes):
        image(tmp_path / "in" / f"{i:02d}.png", size, seed=i)
    passes = []
    batch_scores = inference.Segmenter.batch_scores

    def recorded(self, images):
        passes.append(len(images))
        return batch_scores(self, images)

    monkeypatch.setattr(inference.Segmenter, "batch_scores", recorded)
    for batch in (1, 4):
        code, _, err = predict(capsys, tiny, tmp_path / "in", "--out", tmp_path / f"b{batch}", "--confidence",
                               "--batch-size", batch)
        assert code == 0, err
    assert passes[:10] == [1] * 10
    assert sorted(passes[10:]) == [1, 2, 3, 4]  # 20 x 24: 4 then 2; 70 x 40 (sliding windows): 3; 24 x 20: 1
    for i in range(len(sizes)):
        for suffix in (".pred.png", ".confidence.png"):
            one, four = (read(tmp_path / f"b{batch}" / f"{i:02d}.png{suffix}") for batch in (1, 4))
            assert np.array_equal(one, four), (i, suffix)


def test_confidence_png_is_the_largest_softmax_probability(tiny, network, tmp_path, capsys):
    path = image(tmp_path / "a.png", (24, 30), seed=3)
    code, stdout, err = predict(capsys, tiny, path, "--out", tmp_path / "out", "--confidence")
    assert code == 0, err
    assert "NAME.EXT.confidence.png" in stdout
    saved = Image.open(tmp_path / "out" / "a.png.confidence.png")
    assert saved.mode == "L" and saved.size == (30, 24)
    with torch.inference_mode():
        logits = network(normalize(to_tensor(np.array(Image.open(path)))).unsqueeze(0))
    top = logits.softmax(1).amax(1)[0].double().numpy()
    assert np.array_equal(np.array(saved), np.rint(255 * top).astype(np.uint8))
    assert np.array(saved).min() >= np.floor(255 / CLASSES)


def test_exif_rotated_jpeg_is_predicted_upright(tiny, tmp_path, capsys):
    raw = np.random.default_rng(4).integers(0, 256, (24, 40, 3), dtype=np.uint8)  # stored 40 wide, 24 high
    photo = Image.fromarray(raw)
    exif = photo.getexif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise: 24 wide, 40 high
    path = tmp_path / "in" / "photo.jpg"
    path.parent.mkdir()
    photo.save(path, exif=exif, quality=95)
    stored = np.array(Image.open(path).convert("RGB"))  # the decoded pixels, as stored
    code, _, err = predict(capsys, tiny, path, "--out", tmp_path / "out", "--confidence")
    assert code == 0, err
    for suffix in (".pred.png", ".overlay.jpg", ".confidence.png"):
        assert Image.open(tmp_path / "out" / f"photo.jpg{suffix}").size == (24, 40), suffix
    written = read(tmp_path / "out" / "photo.jpg.pred.png")
    with single_thread():
        model = semiseg.load(tiny)  # the same default mode: 40 > 32, sliding windows
        from_pil = model.predict(Image.open(path))
        upright = model.predict(np.ascontiguousarray(np.rot90(stored, -1)))
        buffer = io.BytesIO()
        Image.open(path).save(buffer, format="PNG", exif=exif)  # a PNG with the same orientation tag
        from_png = model.predict(Image.open(buffer))
    assert np.array_equal(written, from_pil) and np.array_equal(written, upright)
    assert from_png.shape == (40, 24)
    overlay = np.array(Image.open(tmp_path / "out" / "photo.jpg.overlay.jpg")).astype(int)
    blend = np.rot90(stored, -1).astype(int)  # the overlay is drawn on the upright photo
    assert np.abs(overlay - blend).mean() < np.abs(overlay - np.rot90(blend, 2)).mean()


def test_batch_size_below_one_stops_before_loading(tmp_path, capsys):
    image(tmp_path / "a.png")
    code, _, err = predict(capsys, tmp_path / "absent.pt", tmp_path / "a.png", "--out", tmp_path / "out",
                           "--batch-size", 0)
    assert_one_line_error(code, err, "--batch-size must be >= 1", "got 0")
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_evaluated_in_resize_mode_resizes_the_images_up_to_the_crop(tmp_path, capsys):
    from conftest import REPO
    from test_export import TINY

    with single_thread():
        assert main(["train", str(REPO / "configs/synthetic/supervised.yaml"), f"output_dir={tmp_path / 'run'}",
                     *TINY, "eval.mode=resize", "eval.resize_multiple=8"]) == 0
    capsys.readouterr()
    small, large = image(tmp_path / "in" / "small.png", (20, 27)), image(tmp_path / "in" / "large.png", (70, 40))
    code, stdout, err = predict(capsys, tmp_path / "run" / "latest.pt", small, large, "--out", tmp_path / "out")
    assert code == 0, err
    assert "(1 resized to multiples of 8, 1 larger than the 32 px crop with sliding 32 x 32 windows;" in stdout
    _, _, method, _ = inference.load_for_inference(tmp_path / "run" / "latest.pt", device=torch.device("cpu"))
    with torch.inference_mode():
        x = normalize(to_tensor(np.array(Image.open(small)))).unsqueeze(0)
        scores, _ = predict_logits(method.predictor(), x, CLASSES, "resize", resize_multiple=8)
    assert np.array_equal(read(tmp_path / "out" / "small.png.pred.png"), scores.argmax(1)[0].numpy())


def test_a_progress_bar_on_a_terminal_unless_no_progress(tiny, tmp_path, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    image(tmp_path / "a.png")
    for extra in ((), ("--no-progress",)):
        monkeypatch.setattr("sys.stderr", Terminal())
        with single_thread():
            assert main(["predict", str(tiny), str(tmp_path / "a.png"), "--out", str(tmp_path / "out"), *extra]) == 0
        shown = "predict: 100%" in sys.stderr.getvalue()
        assert shown == (not extra), extra
