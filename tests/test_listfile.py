"""List parsing and ListFileSource loading, with every user-facing error."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from semiseg.data.listfile import ListEntry, ListFileSource, check_overlap, check_source, read_list
from semiseg.data.presets import make_lut
from semiseg.errors import SemisegError

SPLITS = Path(__file__).resolve().parents[2] / "shared" / "splits"
H, W, C = 12, 16, 5


def save_image(path, h=H, w=W, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def save_mask(path, values, mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(np.asarray(values, dtype=np.uint8), mode="L")
    if mode == "P":
        image = image.convert("P")
        image.putpalette([v for i in range(256) for v in (i, 0, 255 - i)])
        image.putdata(list(np.asarray(values, dtype=np.uint8).ravel()))
    elif mode == "RGB":
        image = image.convert("RGB")
    image.save(path)


def tiny_mask(top=0, bottom=1):
    mask = np.full((H, W), top, np.uint8)
    mask[H // 2:] = bottom
    return mask


def make_source(tmp_path, mask=None, labeled=True, lut=None, image_name="img/a.png", mask_name="ann/a.png"):
    save_image(tmp_path / image_name)
    if mask is not None:
        save_mask(tmp_path / mask_name, mask)
    (tmp_path / "list.txt").write_text(f"{image_name} {mask_name}")
    return ListFileSource(tmp_path, read_list(tmp_path / "list.txt"), C, tmp_path / "list.txt", lut, labeled)


def test_read_list_without_trailing_newline_comments_and_crlf(tmp_path):
    path = tmp_path / "l.txt"
    path.write_text("# a comment\r\nimg/a.jpg ann/a.png\r\n\n   \nimg/b.jpg\tann/b.png\nimg/c.jpg")
    entries = read_list(path)
    assert [(e.image, e.mask, e.line) for e in entries] == [
        ("img/a.jpg", "ann/a.png", 2), ("img/b.jpg", "ann/b.png", 5), ("img/c.jpg", None, 6)]
    assert entries[0].where == f"{path}:2"


def test_read_real_list_without_trailing_newline():
    path = SPLITS / "pascal" / "92" / "labeled.txt"
    if not path.is_file():
        pytest.skip(f"shared split lists not found at {SPLITS}")
    assert not path.read_bytes().endswith(b"\n")  # a real list without a trailing newline
    entries = read_list(path)
    assert len(entries) == 92
    assert entries[0] == ListEntry("JPEGImages/2007_000733.jpg", "SegmentationClass/2007_000733.png", 1, str(path))
    assert entries[-1].mask.endswith(".png") and entries[-1].line == 92


def test_read_list_errors(tmp_path):
    with pytest.raises(SemisegError, match=r"list file not found: .*missing\.txt; set data\.val_list"):
        read_list(tmp_path / "missing.txt", "data.val_list")
    (tmp_path / "three.txt").write_text("a.jpg a.png\na.jpg a.png extra\n")
    with pytest.raises(SemisegError, match=r"three\.txt:2: .*got 3 fields"):
        read_list(tmp_path / "three.txt")
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(SemisegError, match=r"empty\.txt has no entries"):
        read_list(tmp_path / "empty.txt")


def test_load_labeled_sample(tmp_path):
    source = make_source(tmp_path, tiny_mask(0, 4))
    sample = source.load(0)
    assert len(source) == 1 and source.num_classes == C and source.name(0) == "img/a.png"
    assert sample.image.shape == (H, W, 3) and sample.image.dtype == np.uint8
    assert sample.mask.shape == (H, W) and sample.mask.dtype == np.uint8
    assert set(np.unique(sample.mask)) == {0, 4}
    assert sample.name == "img/a.png"


def test_palette_mask_gives_indices_and_lut_applies(tmp_path):
    save_image(tmp_path / "a.jpg")
    save_mask(tmp_path / "a.png", tiny_mask(7, 2), mode="P")
    entries = [ListEntry("a.jpg", "a.png", 1, "l.txt")]
    lut = make_lut({7: 255, 2: 1})
    sample = ListFileSource(tmp_path, entries, C, "l.txt", label_lut=lut).load(0)
    assert sample.mask[0, 0] == 255 and sample.mask[-1, -1] == 1


def test_unlabeled_never_opens_masks(tmp_path):
    source = make_source(tmp_path, mask=None, labeled=False, mask_name="ann/does_not_exist.png")
    sample = source.load(0)
    assert sample.mask is None and sample.image.shape == (H, W, 3)


def test_missing_image(tmp_path):
    (tmp_path / "list.txt").write_text("img/nope.png ann/nope.png")
    source = ListFileSource(tmp_path, read_list(tmp_path / "list.txt"), C, tmp_path / "list.txt")
    with pytest.raises(SemisegError, match=r"image file not found: .*nope\.png \(listed at .*list\.txt:1\)"):
        source.load(0)


def test_missing_mask(tmp_path):
    save_image(tmp_path / "a.png")
    source = ListFileSource(tmp_path, [ListEntry("a.png", "gone.png", 3, "my.txt")], C, "my.txt")
    with pytest.raises(SemisegError, match=r"mask file not found: .*gone\.png \(listed at my\.txt:3\)"):
        source.load(0)


def test_corrupt_image(tmp_path):
    source = make_source(tmp_path, tiny_mask())
    (tmp_path / "img" / "a.png").write_bytes(b"this is not a png at all" * 10)
    with pytest.raises(SemisegError, match=r"cannot read image .*a\.png \(listed at .*list\.txt:1\)"):
        source.load(0)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_image(tmp_path, suffix):
    path = tmp_path / f"big{suffix}"
    save_image(path, 64, 64)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    source = ListFileSource(tmp_path, [ListEntry(path.name, None, 1, "t.txt")], C, "t.txt", labeled=False)
    with pytest.raises(SemisegError, match=rf"cannot read image .*big\{suffix} \(listed at t\.txt:1\)"):
        source.load(0)


def test_mask_size_mismatch(tmp_path):
    source = make_source(tmp_path, np.zeros((H + 1, W), np.uint8))
    with pytest.raises(SemisegError, match=rf"mask .*a\.png is {W}x{H + 1} but its image .* is {W}x{H}"):
        source.load(0)


def test_label_out_of_range(tmp_path):
    source = make_source(tmp_path, tiny_mask(C, 200))  # C itself is out of range: valid labels are 0..C-1
    with pytest.raises(SemisegError, match=rf"a\.png .*has values {C}, 200 outside 0\.\.{C - 1}.*map them to 255"):
        source.load(0)


def test_ignore_is_in_range(tmp_path):
    assert set(np.unique(make_source(tmp_path, tiny_mask(255, 0)).load(0).mask)) == {0, 255}


def test_rgb_mask(tmp_path):
    save_image(tmp_path / "a.png")
    save_mask(tmp_path / "m.png", tiny_mask(), mode="RGB")
    source = ListFileSource(tmp_path, [ListEntry("a.png", "m.png", 1, "l.txt")], C, "l.txt")
    with pytest.raises(SemisegError, match=r"m\.png .*RGB image; masks must be single-channel class-id PNGs"):
        source.load(0)


def test_labeled_entry_without_mask(tmp_path):
    with pytest.raises(SemisegError, match=r"l\.txt:4: labeled entry 'a\.png' has no mask"):
        ListFileSource(tmp_path, [ListEntry("a.png", None, 4, "l.txt")], C, "l.txt")


def test_check_source_collects_problems(tmp_path):
    save_image(tmp_path / "ok.png")
    save_mask(tmp_path / "ok_m.png", tiny_mask())
    save_mask(tmp_path / "bad_m.png", tiny_mask(0, 9))
    (tmp_path / "l.txt").write_text("ok.png ok_m.png\nmissing.png ok_m.png\nok.png bad_m.png\n")
    source = ListFileSource(tmp_path, read_list(tmp_path / "l.txt"), C, tmp_path / "l.txt")
    problems = source.check()
    assert len(problems) == 2
    assert "missing.png" in problems[0] and "l.txt:2" in problems[0]
    assert "bad_m.png" in problems[1] and "l.txt:3" in problems[1]
    assert check_source(source, indices=[0]) == []


def test_check_overlap():
    labeled = [ListEntry("a.jpg", "a.png", 1, "lab.txt"), ListEntry("b.jpg", "b.png", 2, "lab.txt")]
    unlabeled = [ListEntry("c.jpg", None, 1, "unl.txt"), ListEntry("./b.jpg", None, 2, "unl.txt")]
    check_overlap(labeled, unlabeled[:1])
    with pytest.raises(SemisegError, match=r"1 image\(s\) are both labeled and unlabeled, e\.g\. \./b\.jpg "
                                           r"\(lab\.txt:2 and unl\.txt:2\)"):
        check_overlap(labeled, unlabeled)
