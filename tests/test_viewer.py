"""Offline slice viewers (cesynth.evaluate.viewer): page content from arrays and files, and the pages in headless
Chromium opened from the file system with no network (pixels of every pane, linked slices, outline toggle,
threshold)."""

import base64
import gzip
import html
import re

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from cesynth.evaluate import viewer
from cesynth.infer.predict import WARNING
from cesynth.io import Stack, save_nifti
from conftest import make_stack, viewer_config
from headless_chromium import CHROMIUM, Browser

MODALITIES = ["t1", "t2", "adc"]
MODELS = ["unet2d", "hrfcn3d"]


def payload(text, key):
    """The NIfTI image stored under ``key`` in a page."""
    data = re.search(rf'<script type="application/octet-stream" id="{key}">(.*?)</script>', text).group(1)
    return nib.Nifti1Image.from_bytes(gzip.decompress(base64.b64decode(data)))


def patient(tmp_path, *, tumour=True, nan=False, empty_uncertainty=False):
    """A phantom test patient: its stack, both models' syntheses and uncertainty maps, and a metrics table
    with a second patient in it."""
    stack_path = make_stack(tmp_path / "P1_desc-preproc.npy", seed=1, shape=(24, 48, 48), tumour=tumour)
    stack = Stack(stack_path)
    truth = stack.to_xyz(np.asarray(stack["ce_t1"]))
    syntheses, maps = {}, {}
    for k, model in enumerate(MODELS):
        image = truth * (0.8 + 0.1 * k)
        if nan:
            image[3, 4, 5] = np.nan
        syntheses[model] = tmp_path / f"{model}_synth.nii.gz"
        save_nifti(image, stack.affine, syntheses[model])
        maps[model] = tmp_path / f"{model}_uncertainty.nii.gz"
        save_nifti(np.zeros_like(truth) if empty_uncertainty else np.abs(truth - image) + 0.01, stack.affine,
                   maps[model])
    metrics = pd.DataFrame([{"model": m, "scan": s, "set": "B", "psnr_brain": 20 + k + (s == "P2") * 5,
                             "ssim_brain": 0.7} for k, m in enumerate(["identity", *MODELS]) for s in ("P1", "P2")])
    return stack_path, syntheses, maps, metrics


def report_page(tmp_path, **kwargs):
    stack_path, syntheses, maps, metrics = patient(tmp_path, **kwargs)
    out = tmp_path / "viewer" / "P1.html"
    viewer.report_viewer(out, scan="P1", study="baselines", stack_path=stack_path,
                         models={m: (syntheses[m], maps[m]) for m in MODELS}, metrics=metrics, modalities=MODALITIES,
                         reference="ce_t1")
    return out


def predict_page(tmp_path, uncertainty=True):
    stack_path, syntheses, maps, _ = patient(tmp_path)
    out = tmp_path / "predict" / "viewer.html"
    viewer.predict_viewer(out, scan="NEW1", stack_path=stack_path, synthesis=syntheses["hrfcn3d"],
                          uncertainty=maps["hrfcn3d"] if uncertainty else None, inputs=MODALITIES, model="hrfcn3d",
                          warning=WARNING)
    return out


def test_encode_volume_keeps_values_within_half_a_level_and_nan_becomes_the_minimum():
    volume = np.linspace(0.1, 0.9, 4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    volume[0, 0, 0] = np.nan
    image = nib.Nifti1Image.from_bytes(gzip.decompress(base64.b64decode(viewer.encode_volume(volume, np.eye(4)))))
    assert image.get_data_dtype() == np.uint8
    decoded = image.get_fdata()
    level = (0.9 - volume[0, 0, 1]) / 255
    assert np.allclose(decoded.ravel()[1:], volume.ravel()[1:], atol=level / 2 + 1e-6)
    assert decoded[0, 0, 0] == pytest.approx(volume[0, 0, 1])  # NaN -> the minimum of the finite voxels


def test_report_page_has_every_pane_the_labels_and_only_this_patients_metrics(tmp_path):
    text = report_page(tmp_path).read_text()
    config = viewer_config(text)
    assert [p["title"] for p in config["panes"]] == [
        *MODALITIES, "ce_t1 (acquired)", "unet2d (synthetic)", "hrfcn3d (synthetic)", "|hrfcn3d - ce_t1|",
        "uncertainty hrfcn3d"]  # hrfcn3d: the highest mean brain PSNR
    assert config["shown"] == [0, 3, 5, 6]  # t1, the truth, the best synthesis, its error; the rest in the menus
    labels = payload(text, config["labels"]).get_fdata()
    assert set(np.unique(labels)) == {0, viewer.TUMOUR}  # the phantom has a tumour mask, no et_mask
    stack = Stack(tmp_path / "P1_desc-preproc.npy")
    centre = nib.affines.apply_affine(stack.affine, np.argwhere(stack.to_xyz(np.asarray(stack["tumour_mask"]))).mean(0))
    assert config["start"] == pytest.approx(centre)  # the crosshair starts in the tumour
    truth = payload(text, config["panes"][3]["volume"]).get_fdata()
    assert truth.shape == (48, 48, 24) and truth.max() > 0.5
    assert "21.000" in text and "22.000" in text and "26.000" not in text  # P1's PSNRs, not P2's
    assert 'class="hidden">uncertainty above' in text  # no threshold slider in the report
    assert "niivue" in text and "https://" not in text.replace("https://github.com/niivue/niivue", "")
    bundle = gzip.decompress(base64.b64decode(re.search(r'id="niivue">(.*?)</script>', text).group(1)))
    vendored = (viewer.ASSETS / "niivue.umd.js").read_bytes()
    assert b'"AGFzbQ' not in bundle and vendored.count(b'"AGFzbQ') == 3  # the three Zarr codecs left out
    assert len(bundle) == len(vendored) - sum(map(len, re.findall(rb'"AGFzbQ[^"]*"', vendored))) + 2 * 3


def test_page_with_nan_empty_uncertainty_and_no_tumour_label_still_builds(tmp_path):
    text = report_page(tmp_path, tumour=False, nan=True, empty_uncertainty=True).read_text()
    config = viewer_config(text)
    assert config["labels"] is None and '<label class="hidden"><input type="checkbox" id="outline"' in text
    unet = payload(text, config["panes"][4]["volume"]).get_fdata()
    assert np.isfinite(unet).all() and unet.max() > 0.3
    uncertainty = config["panes"][-1]
    assert uncertainty["window"] == [0.0, 1.0]  # an empty map gets a usable window
    assert not payload(text, uncertainty["volume"]).get_fdata().any()


def test_predict_page_is_marked_synthetic_with_uncertainty_over_the_synthesis(tmp_path):
    text = predict_page(tmp_path).read_text()
    config = viewer_config(text)
    assert [p["title"] for p in config["panes"]] == [*MODALITIES, "SYNTHETIC ce_t1 (hrfcn3d)",
                                                     "SYNTHETIC ce_t1 + uncertainty"]
    assert config["shown"] == [0, 3, 4]
    overlay = config["panes"][-1]
    spread = payload(text, overlay["overlay"]).get_fdata()
    low, high = overlay["overlayWindow"]
    assert 0 < low < high and (spread > low).mean() < 0.2  # starts at a threshold that shows a minority
    assert f'<div class="banner">{html.escape(WARNING)}</div>' in text and WARNING.startswith("SYNTHETIC")
    assert "<title>SYNTHETIC CE-T1: NEW1</title>" in text
    no_map = viewer_config(predict_page(tmp_path / "b", uncertainty=False).read_text())
    assert [p["title"] for p in no_map["panes"]][-1] == "SYNTHETIC ce_t1 (hrfcn3d)" and no_map["shown"] == [0, 3]


def test_study_index_links_every_patient_with_its_metrics(tmp_path):
    out = tmp_path / "viewers.html"
    metrics = pd.DataFrame({"model": ["a", "a", "b", "b"], "scan": ["P1", "P2", "P1", "P2"],
                            "set": ["test_A", "B", "test_A", "B"], "psnr_brain": [20.0, 21.0, 22.0, 23.5]})
    viewer.study_index(out, study="baselines", metrics=metrics, pages={"P2": "viewer/P2.html", "P1": "viewer/P1.html"})
    text = out.read_text()
    assert "<th>PSNR brain a</th>\n      <th>PSNR brain b</th>" in text
    rows = re.findall(r"<td><a href='(.*?)'>(.*?)</a></td>\s*<td>(.*?)</td>\s*<td>(.*?)</td>\s*<td>(.*?)</td>", text)
    assert rows == [("viewer/P2.html", "P2", "B", "21.00", "23.50"), ("viewer/P1.html", "P1", "test_A", "20.00", "22.00")]


def test_too_many_panes_or_a_pane_beyond_the_volumes_are_refused():
    pane = viewer.Pane("x", np.zeros((2, 2, 2)), (0, 1))
    with pytest.raises(ValueError, match="1 to 16 panes"):
        viewer.page("t", [pane] * (viewer.MAX_PANES + 1), np.eye(4))
    with pytest.raises(ValueError, match=r"shown \[0, 2\] names a pane beyond the 2 given"):
        viewer.page("t", [pane] * 2, np.eye(4), shown=[0, 2])
    assert viewer_config(viewer.page("t", [pane] * 20, np.eye(4), shown=[19, 0]))["shown"] == [19, 0]


# --- in the browser -------------------------------------------------------------------------------------------

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (Debian package chromium; scripts/test.sh installs it as root)")


@pytest.fixture(scope="module")
def browser():
    b = Browser()
    yield b
    b.close()


def settled(browser):
    """Wait for the frames NiiVue drew after the last input to reach the screen."""
    browser.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def pane_boxes(browser):
    boxes = browser.evaluate("[...document.querySelectorAll('canvas')].map(c => { const r = "
                             "c.getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; })")
    return [tuple(round(v) for v in box) for box in boxes]


def crops(image, boxes):
    return [image[y:y + h, x:x + w].astype(float) for x, y, w, h in boxes]


def red_pixels(image):
    r, g, b = (image[..., i].astype(int) for i in range(3))
    return int(((r > 200) & (g < 60) & (b < 60)).sum())


def choose(browser, pane, k):
    """Pick entry ``k`` of the page's volumes in the menu of pane ``pane`` (from 1), as a reader would."""
    browser.evaluate(f"(() => {{ const m = document.querySelector('select[aria-label=\"volume of pane {pane}\"]'); "
                     f"m.value = {k}; m.dispatchEvent(new Event('change')); }})()")


def open_offline(browser, path, screenshot):
    seconds = browser.open(path)
    assert browser.evaluate("cesynthViewer.error") is None
    # nothing but the page itself and data the page holds: no request could leave the machine
    assert [u for u in browser.requests if not u.startswith(("file://", "data:", "blob:"))] == []
    settled(browser)
    return seconds, browser.screenshot(screenshot)


@needs_chromium
def test_report_viewer_in_chromium_draws_links_and_toggles_outlines(tmp_path, browser):
    page = report_page(tmp_path)
    _, before = open_offline(browser, page, tmp_path / "report.png")
    boxes = pane_boxes(browser)
    assert len(boxes) == 4
    for crop in crops(before, boxes):  # each pane drew a volume: many lit pixels, not one flat colour
        assert (crop.max(axis=2) > 40).mean() > 0.05 and crop.std() > 15

    # a pane's menu switches it to another volume (here the first pane from t1 to the real CE-T1, whose
    # tumour is bright), the others stay; switched back, it draws as before
    choose(browser, 1, 3)
    settled(browser)
    switched = crops(browser.screenshot(tmp_path / "report_menu.png"), boxes)
    assert np.abs(switched[0] - crops(before, boxes)[0]).mean() > 1
    assert np.abs(switched[0] - crops(before, boxes)[1]).mean() < 0.5  # now what the second pane shows
    assert red_pixels(switched[0]) == red_pixels(crops(before, boxes)[0]) > 5  # the outline stays on
    for old, new in zip(crops(before, boxes)[1:], switched[1:]):
        assert np.abs(new - old).mean() < 0.05
    choose(browser, 1, 0)
    settled(browser)
    assert np.abs(crops(browser.screenshot(), boxes)[0] - crops(before, boxes)[0]).mean() < 0.05

    browser.key("ArrowUp", "ArrowUp", 38)
    browser.key("ArrowUp", "ArrowUp", 38)
    settled(browser)
    keyed = browser.screenshot(tmp_path / "report_key.png")
    for old, new in zip(crops(before, boxes), crops(keyed, boxes)):  # a key press moves every pane
        assert np.abs(new - old).mean() > 0.05

    x, y, w, h = boxes[0]
    browser.click(x + w // 2 + w // 12, y + h // 3)  # the first pane's coronal view, off the crosshair
    settled(browser)
    clicked = browser.screenshot(tmp_path / "report_click.png")
    for old, new in zip(crops(keyed, boxes), crops(clicked, boxes)):  # a click moves every pane
        assert np.abs(new - old).mean() > 0.05

    assert red_pixels(clicked) > 20  # the tumour outline
    box = browser.evaluate("(() => { const r = document.getElementById('outline').getBoundingClientRect(); "
                           "return [r.left + r.width / 2, r.top + r.height / 2]; })()")
    browser.click(*box)
    settled(browser)
    hidden = browser.screenshot(tmp_path / "report_no_outline.png")
    assert red_pixels(hidden) == 0
    browser.click(*box)
    settled(browser)
    assert red_pixels(browser.screenshot()) == red_pixels(clicked)


@needs_chromium
def test_predict_viewer_in_chromium_shows_synthetic_and_thresholds_the_uncertainty(tmp_path, browser):
    page = predict_page(tmp_path)
    _, before = open_offline(browser, page, tmp_path / "predict.png")
    assert WARNING in browser.evaluate("document.querySelector('.banner').innerText")
    boxes = pane_boxes(browser)
    assert len(boxes) == 3
    for crop in crops(before, boxes):
        assert (crop.max(axis=2) > 40).mean() > 0.05 and crop.std() > 15
    synthesis, overlaid = crops(before, boxes)[-2:]
    assert np.abs(overlaid - synthesis).mean() > 1  # the uncertainty shows over the synthesis
    browser.evaluate("(() => { const s = document.getElementById('threshold'); s.value = s.max; "
                     "s.dispatchEvent(new Event('input')); })()")
    settled(browser)
    synthesis, overlaid = crops(browser.screenshot(tmp_path / "predict_threshold.png"), boxes)[-2:]
    assert np.abs(overlaid - synthesis).mean() < 1  # above the top of the map: nothing over the synthesis


@needs_chromium
def test_page_with_nan_empty_uncertainty_and_no_tumour_label_renders_in_chromium(tmp_path, browser):
    page = report_page(tmp_path, tumour=False, nan=True, empty_uncertainty=True)
    _, image = open_offline(browser, page, tmp_path / "odd.png")
    boxes = pane_boxes(browser)
    assert len(boxes) == 4 and red_pixels(image) == 0  # no labels: no outline
    for crop in crops(image, boxes)[:3]:  # t1, the truth and the synthesis with a NaN voxel drew
        assert (crop.max(axis=2) > 40).mean() > 0.05 and crop.std() > 15
    last = len(viewer_config(page.read_text())["panes"]) - 1  # the all-zero uncertainty map, into the last pane
    choose(browser, 4, last)
    settled(browser)
    assert browser.evaluate("cesynthViewer.error") is None
    assert browser.evaluate("cesynthViewer.panes[3].shown") == last
