"""A just-uploaded image is served from the upload's own decoded copy, and the loaded models' input tensors are made
from it during the upload; the answers must be exactly those of a server that reads the stored PNG back (its decoded copies and input tensors not kept): byte-identical ``.npy`` and equal
predictions, on a real photo. The input tensor is also checked against torchvision's transforms applied to the
photo as Pillow opens it, without the server."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from torchvision.models import ResNet18_Weights

from server.main import create_app
from server.settings import Settings
from tests.harness import SHARED_DATA, serving

PHOTO = SHARED_DATA / "images" / "zebra.jpg"
URL = "/api/models/resnet18/images/{}"
Q = {"weights": "untrained"}


def _answers(client: httpx.Client, image_id: str) -> dict[str, bytes]:
    """input.npy, predictions, and saliency.npy for each of the top-5 classes, in the order the page asks."""
    predictions = client.get(URL.format(image_id) + "/predictions", params=Q)
    assert predictions.status_code == 200, predictions.text
    answers = {"predictions": predictions.content}
    for p in predictions.json()["predictions"]:
        answer = client.get(URL.format(image_id) + "/saliency.npy", params={**Q, "target": p["index"]})
        assert answer.status_code == 200, answer.text
        answers[f"saliency {p['index']}"] = answer.content
    answers["input"] = client.get(URL.format(image_id) + "/input.npy", params=Q).content
    return answers


@pytest.mark.skipif(not PHOTO.is_file(), reason="needs ../shared/data/images")
def test_fresh_upload_answers_equal_those_from_the_stored_png(tmp_path) -> None:
    storage = tmp_path / "images"
    app = create_app(Settings(storage_dir=storage))
    with serving(app) as port, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
        other = client.post("/api/images", files={"file": ("cat.jpg", (PHOTO.parent / "cat.jpg").read_bytes())})
        _answers(client, other.json()["image_id"])  # ResNet-18 is loaded: a page is using it
        image_id = client.post("/api/images", files={"file": ("zebra.jpg", PHOTO.read_bytes())}).json()["image_id"]
        # the upload made the loaded model's input from its own decoded copy
        assert ("resnet18", image_id) in app.state.inputs.cache
        fresh = _answers(client, image_id)
    # the same store on disk, nothing decoded or prepared kept: every request reads the PNG back
    cold = Settings(storage_dir=storage, decoded_image_cache_bytes=0, model_input_cache_bytes=0)
    with serving(create_app(cold)) as port, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
        from_png = _answers(client, image_id)
    assert fresh.keys() == from_png.keys() and len(fresh) == 7
    for name in fresh:
        assert fresh[name] == from_png[name], f"{name} differs between the fresh upload and the stored PNG"

    served = np.load(io.BytesIO(fresh["input"]))
    reference = ResNet18_Weights.IMAGENET1K_V1.transforms()(ImageOps.exif_transpose(Image.open(PHOTO)).convert("RGB"))
    assert served.shape == (3, 224, 224)
    torch.testing.assert_close(torch.from_numpy(served), reference, rtol=0, atol=0)


def test_a_decode_returns_with_the_next_worker_started(tmp_path) -> None:
    """The first views of a new image must not share the cores with the start of the next decoder process: the
    decode (and so the upload's answer) waits for it, and the next decode uses it."""
    from server.services.images.decode import DecodeLimits, IsolatedDecoder

    decoder = IsolatedDecoder(DecodeLimits(spare_wait_seconds=60))
    try:
        png = io.BytesIO()
        Image.new("RGB", (5, 3), (10, 20, 30)).save(png, format="PNG")
        first = decoder(png.getvalue())
        assert decoder.spare_ready
        second = decoder(png.getvalue())  # on the ready worker, which reads the upload after its first line
        assert first.tobytes() == second.tobytes() == Image.new("RGB", (5, 3), (10, 20, 30)).tobytes()
        assert decoder.spare_ready
    finally:
        decoder.close()
    assert not decoder.spare_ready
