"""The resize to the network's size: OpenCV's kernels in exact integer arithmetic (frugalvision.data.resize)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from frugalvision.data.resize import CARRY_BITS, WEIGHT_BITS, resize_matrix, resize_square, uses_area

FLAGS = {"bicubic": cv2.INTER_CUBIC, "bilinear": cv2.INTER_LINEAR}


def _photo_like(n: int, seed: int) -> np.ndarray:
    """Smooth gradients, edges and fine texture: what a resize meets in photos."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n, 0:n] / max(n, 1)
    base = 128 + 90 * np.sin(6 * xx[..., None] + np.array([0.0, 1.0, 2.0]) + 4 * yy[..., None])
    base += 60 * ((xx > 0.4) & (yy < 0.7))[..., None]  # a hard edge
    base += rng.normal(0, 12, (n, n, 3))
    return np.clip(base, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("n", [20, 64, 200, 270, 448, 449, 1080])
@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_within_one_grey_level_of_opencv(n, interpolation):
    x = _photo_like(n, n)
    flag = cv2.INTER_AREA if uses_area(n, 224) else FLAGS[interpolation]
    ours = resize_square(x, 224, interpolation).astype(np.float64)
    assert np.abs(ours - cv2.resize(x, (224, 224), interpolation=flag)).max() <= 1
    # Against OpenCV's float resize (no rounding inside): the nearest grey level, up to the 2**-4 carried between
    # the passes and the 2**-11 of the weights. OpenCV's own uint8 bilinear is coarser (12 % of pixels differ).
    exact = np.clip(cv2.resize(x.astype(np.float32), (224, 224), interpolation=flag), 0, 255)
    assert np.abs(ours - exact).max() <= 0.5 + 0.1


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear", "nearest"])
def test_flat_images_stay_flat_and_shapes_follow(interpolation):
    for n in (1, 2, 5, 37, 224, 270, 449, 1500):
        for value in (0, 1, 200, 255):
            x = np.full((n, n, 3), value, np.uint8)
            out = resize_square(x, 224, interpolation)
            assert out.shape == (224, 224, 3) and out.dtype == np.uint8 and (out == value).all(), (n, value)
    grey = resize_square(np.full((50, 50), 7, np.uint8), 32, interpolation)
    assert grey.shape == (32, 32) and (grey == 7).all()


def test_weights_are_integers_summing_to_one_and_sums_stay_exact_in_float32():
    worst = 0
    for n in list(range(1, 600)) + [1080, 2000, 4000]:
        for interpolation in ("bicubic", "bilinear", "nearest"):
            w = resize_matrix(n, 224, interpolation, uses_area(n, 224))
            assert w.dtype == np.int32 and w.shape == (224, n)
            assert (w.sum(1) == 1 << WEIGHT_BITS).all(), (n, interpolation)
            worst = max(worst, int(np.abs(w).sum(1).max()))
    # The largest partial sum of the second pass must stay below 2**24 for float32 to hold it exactly.
    carried = (255 * worst >> (WEIGHT_BITS - CARRY_BITS)) + 1
    assert carried * worst < 1 << 24


def test_any_order_of_additions_gives_the_same_pixels():
    """Dense float32 (BLAS), float64 and integer products give resize_square's pixels: nothing is rounded on the
    way, which is why the exported graph's MatMuls agree with predict."""
    x = _photo_like(300, 1)
    w = resize_matrix(300, 224, "bicubic", False).astype(np.int64)
    for dtype in (np.float32, np.float64, np.int64):
        xs = x.astype(dtype).transpose(2, 0, 1)  # 3 x h x w
        rows = np.matmul(w.astype(dtype), xs)
        rows = np.floor(rows / 2 ** (WEIGHT_BITS - CARRY_BITS) + 0.5) if dtype != np.int64 else \
            (rows + (1 << (WEIGHT_BITS - CARRY_BITS - 1))) >> (WEIGHT_BITS - CARRY_BITS)
        out = np.matmul(rows, w.T.astype(rows.dtype))
        out = np.floor(out / 2 ** (WEIGHT_BITS + CARRY_BITS) + 0.5) if dtype != np.int64 else \
            (out + (1 << (WEIGHT_BITS + CARRY_BITS - 1))) >> (WEIGHT_BITS + CARRY_BITS)
        got = np.clip(out, 0, 255).astype(np.uint8).transpose(1, 2, 0)
        np.testing.assert_array_equal(got, resize_square(x, 224, "bicubic"), err_msg=str(dtype))


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear", "nearest"])
def test_the_graph_computes_the_same_weights_and_pixels(interpolation):
    """The exported graph's free-size crop and resize (export._crop_resize_nodes) gives resize_square's pixels for
    every interpolation, shrinking (area) and enlarging."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from frugalvision.data.decode import to_input
    from frugalvision.export import _crop_resize_nodes

    inits, made = [], {}

    def const(name, array, dtype=np.float32):
        if name not in made:
            made[name] = True
            inits.append(numpy_helper.from_array(np.array(array, dtype=dtype), name=f"fv_{name}"))
        return f"fv_{name}"

    nodes = _crop_resize_nodes(const, helper, TensorProto, 32, 0.875, interpolation, None)
    graph = helper.make_graph(nodes, "resize",
                              [helper.make_tensor_value_info("images", TensorProto.UINT8, [1, None, None, 3])],
                              [helper.make_tensor_value_info("fv_net_images", TensorProto.UINT8, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for h, w in [(9, 7), (30, 41), (37, 37), (80, 120), (200, 150)]:
        x = _photo_like(max(h, w), h * w)[:h, :w]
        expected, _ = to_input(x, 32, 0.875, interpolation)
        got = sess.run(["fv_net_images"], {"images": x[None]})[0][0]
        np.testing.assert_array_equal(got, expected, err_msg=f"{interpolation} {h}x{w}")
