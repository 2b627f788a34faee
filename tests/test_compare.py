"""Comparing runs: reference images, CKA, filter alignment and dataset examples, from real fits
read back through TensorBoard's data provider, and the math they rest on."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tb_cnnviz import compare, metadata, similarity

keras = pytest.importorskip("keras")

from demo.data import make_shapes  # noqa: E402
from tb_cnnviz.callbacks import CNNViz, References  # noqa: E402

N_REFS = 32
EPOCHS = 2


def build(seed: int = 0):
    """A small CNN: two conv layers, global pooling and a dense head."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(8, 3, activation="relu", name="c1"),
            keras.layers.Conv2D(12, 3, activation="relu", name="c2"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(4, name="out"),
        ]
    )
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(keras.optimizers.SGD(0.01), loss)
    return model


def permuted(model, p1, p2):
    """The same function with c1's filters permuted by `p1` and c2's by `p2`."""
    other = build(seed=1)
    (k1, b1), (k2, b2), (k3, b3) = (model.get_layer(n).get_weights() for n in ("c1", "c2", "out"))
    other.get_layer("c1").set_weights([k1[..., p1], b1[p1]])
    other.get_layer("c2").set_weights([k2[:, :, p1, :][..., p2], b2[p2]])
    other.get_layer("out").set_weights([k3[p2], b3])
    return other


def activations(model, layer, images):
    sub = keras.Model(model.inputs, model.get_layer(layer).output)
    return np.asarray(keras.ops.convert_to_numpy(sub(images, training=False)), np.float64)


def direct_cka(x, y):
    """Linear CKA in float64 from the features, as Kornblith et al. write it."""
    x = x.reshape(len(x), -1)
    y = y.reshape(len(y), -1)
    x, y = x - x.mean(0), y - y.mean(0)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """Two runs of one function (b's filters a permutation of a's) and a run on other images."""
    logdir = tmp_path_factory.mktemp("compare")
    x, y = make_shapes(64, size=16, seed=1)
    y = y % 4
    refs, _ = make_shapes(N_REFS, size=16, seed=2)
    p1 = np.random.default_rng(3).permutation(8)
    p2 = np.random.default_rng(4).permutation(12)
    a = build()
    b = permuted(a, p1, p2)
    for name, model, images in [("a", a, refs), ("b", b, refs), ("c", build(), refs[::-1])]:
        cb = References(logdir / name, images, budget=None)
        model.fit(x, y, epochs=EPOCHS, batch_size=16, shuffle=False, verbose=0, callbacks=[cb])
    return {
        "logs": compare.Logdir(logdir),
        "models": {"a": a, "b": b},
        "refs": refs,
        "p1": p1,
        "p2": p2,
    }


def test_runs_hold_responses_per_step_and_reference_images_once(fitted):
    """Each layer has responses at every epoch; the reference images are written once, hashed."""
    logs = fitted["logs"]
    assert logs.runs() == ["a/train", "b/train", "c/train"]
    for layer in ("c1", "c2"):
        assert logs.steps("a", layer, "responses") == list(range(EPOCHS))
    assert logs.steps("a", "reference_images", "references") == [0]
    record = logs.read_record("a", "c1", "responses")
    assert record.index["references"] == similarity.reference_hash(fitted["refs"])
    stored = compare.reference_images(logs, "a")
    np.testing.assert_allclose(stored, fitted["refs"], atol=1 / 255 + 1e-6)


def test_cka_of_a_layer_with_itself_is_one(fitted):
    """CKA of (run, layer, step) with itself is 1 within 1e-6, at every step."""
    for step in range(EPOCHS):
        for layer in ("c1", "c2"):
            value = compare.cka(fitted["logs"], layer, ("a", step), ("a/train", step))
            assert abs(value - 1) < 1e-6


def test_cka_from_the_stored_data_equals_numpy_from_the_activations(fitted):
    """Stored Gram matrices give the CKA a float64 NumPy computation gets from the activations."""
    logs, refs = fitted["logs"], fitted["refs"]
    a, b = fitted["models"]["a"], fitted["models"]["b"]
    last = EPOCHS - 1
    c1, c2 = activations(a, "c1", refs), activations(a, "c2", refs)
    got = compare.cka(logs, "c1", ("a", last), ("a", last), layer_b="c2")
    assert abs(got - direct_cka(c1, c2)) < 1e-5
    got = compare.cka(logs, "c2", ("a", last), ("b", last))
    assert abs(got - direct_cka(c2, activations(b, "c2", refs))) < 1e-5
    assert abs(got - 1) < 1e-5  # a permutation of the filters is the same representation
    over_time = compare.cka(logs, "c1", ("a", 0), ("a", last))
    assert 0 < over_time <= 1 + 1e-9


def test_alignment_recovers_a_known_permutation_exactly(fitted):
    """Run b's filters are a permutation of run a's: align returns exactly that permutation."""
    logs, last = fitted["logs"], EPOCHS - 1
    for layer, p in (("c1", fitted["p1"]), ("c2", fitted["p2"])):
        expected = np.argsort(p).tolist()  # b's filter j is a's filter p[j]
        assert compare.align(logs, layer, ("a", last), ("b", last)) == expected
        back = compare.alignment(logs, layer, ("b", last), ("a", last))
        assert back.matches == p.tolist()
        assert min(back.correlations) > 0.999


def test_dataset_examples_equal_a_brute_force_argmax(fitted):
    """Each filter's stored top-k equals a brute-force search over the reference images."""
    refs, model = fitted["refs"], fitted["models"]["a"]
    for layer in ("c1", "c2"):
        acts = activations(model, layer, refs).astype(np.float32)
        n, h, w, filters = acts.shape
        got = compare.examples(fitted["logs"], "a", layer, EPOCHS - 1)
        assert len(got) == filters
        for f in range(filters):
            flat = acts[..., f].reshape(n, h * w)
            peaks = [float(flat[i].max()) for i in range(n)]
            best = sorted(range(n), key=lambda i: (-peaks[i], i))[:8]
            expected = [(i, *divmod(int(flat[i].argmax()), w), peaks[i]) for i in best]
            assert [e[:3] for e in got[f]] == [e[:3] for e in expected]
            np.testing.assert_allclose([e[3] for e in got[f]], [e[3] for e in expected], rtol=1e-6)


def test_runs_with_other_reference_images_are_refused(fitted):
    """CKA and alignment across different reference images raise instead of giving a number."""
    logs = fitted["logs"]
    with pytest.raises(compare.ReferenceMismatchError, match="different reference images"):
        compare.cka(logs, "c1", ("a", 0), ("c", 0))
    with pytest.raises(compare.ReferenceMismatchError, match="same reference_images"):
        compare.align(logs, "c1", ("a", 0), ("c", 0))


def test_unknown_runs_layers_and_steps_raise_not_found_listing_what_exists(fitted):
    """A typo gets the reader's NotFoundError naming what the logdir holds."""
    logs = fitted["logs"]
    with pytest.raises(compare.NotFoundError, match=r"runs: 'a/train', 'b/train', 'c/train'"):
        compare.cka(logs, "c1", ("nope", 0), ("a", 0))
    with pytest.raises(compare.NotFoundError, match=r"layers: 'c1', 'c2'"):
        compare.align(logs, "conv9", ("a", 0), ("b", 0))
    with pytest.raises(compare.NotFoundError, match=r"its steps: 0, 1"):
        compare.examples(logs, "a", "c1", 7)
    with pytest.raises(ValueError, match=r"Received: a=\('a', 0, 1\)"):
        compare.cka(logs, "c1", ("a", 0, 1), ("b", 0))


def test_the_tab_lists_responses_with_their_steps_but_no_reference_images(fitted, read_logdir):
    """/tags lists each layer's responses (kind "responses", every step), not the references."""
    assert metadata.KINDS == ("weights", "feature_maps", "actmax", "attribution")
    client = read_logdir(fitted["logs"].path).client()
    response = client.get("/data/plugin/cnnviz/tags")
    assert response.status_code == 200
    steps = list(range(EPOCHS))
    want = {
        f"{layer}/responses": {"kind": "responses", "layer": layer, "steps": steps}
        for layer in ("c1", "c2")
    }
    got = response.get_json()
    assert sorted(got) == ["a/train", "b/train", "c/train"]
    for tags in got.values():
        assert {t: {k: v[k] for k in ("kind", "layer", "steps")} for t, v in tags.items()} == want
    assert client.get("/data/plugin/cnnviz/runs").get_json() == ["a/train", "b/train", "c/train"]
    layer = client.get("/data/plugin/cnnviz/layer?run=a/train&tag=c1/responses").get_json()
    assert layer["index"] is None and layer["atlases"] == []
    assert "/examples serves its dataset examples" in layer["warning"]


def test_cnnviz_logs_responses_with_reference_images(tmp_path, read_logdir):
    """CNNViz(reference_images=...) logs responses beside its pictures; without, none."""
    x, y = make_shapes(32, size=16, seed=1)
    refs, _ = make_shapes(16, size=16, seed=2)
    for name, extra in (("with", {"reference_images": refs}), ("without", {})):
        viz = CNNViz(tmp_path / name, budget=None, actmax_freq=0, **extra)
        build().fit(x, y % 4, epochs=1, batch_size=16, verbose=0, callbacks=[viz])
    tags = {t for r, t in read_logdir(tmp_path).cnnviz_tags() if r == "with/train"}
    assert {"c1/responses", "c2/responses", metadata.REFERENCES_TAG} <= tags
    assert not any(
        "responses" in t for r, t in read_logdir(tmp_path).cnnviz_tags() if "without" in r
    )


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (np.zeros((8, 16, 16, 3)), r"at least 16 images.*Received: 8 images"),
        (np.array([["a"] * 16]), r"must hold numbers.*Received: dtype="),
        (np.zeros(16), r"Received: reference_images.shape=\(16,\)"),
        (np.full((16, 16, 16, 3), np.nan), "NaN or Inf"),
    ],
)
def test_bad_reference_images_are_refused_at_construction(tmp_path, images, message):
    """Too few, non-numeric, rank-1 or non-finite reference images: a ValueError at once."""
    with pytest.raises(ValueError, match=message):
        References(tmp_path, images)
    with pytest.raises(ValueError, match=message):
        CNNViz(tmp_path, reference_images=images)


def test_reference_images_that_do_not_fit_the_model_fail_before_the_first_epoch(tmp_path):
    """Gray images for an RGB model raise in on_train_begin, before any epoch runs."""
    epochs = []
    cb = References(tmp_path, np.zeros((16, 16, 16, 1)))
    mark = keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: epochs.append(e))
    x, y = make_shapes(16, size=16, seed=1)
    with pytest.raises(ValueError, match=r"(?s)do not fit the model.*Received: reference_images"):
        build().fit(x, y % 4, epochs=1, verbose=0, callbacks=[cb, mark])
    assert epochs == []


def test_top_k_and_the_reference_count_are_checked(tmp_path):
    """top_k must be a positive integer; the summary function refuses fewer than 16 rows."""
    with pytest.raises(ValueError, match="Received: top_k=0"):
        References(tmp_path, np.zeros((16, 8, 8, 3)), top_k=0)
    from tb_cnnviz import summary

    writer = summary.create_file_writer(str(tmp_path))
    with writer.as_default(step=0), pytest.raises(ValueError, match="Received: 4 images"):
        summary.responses("c", np.zeros((4, 3, 3, 2)), reference_images="0" * 16)


# -- the math, as properties ---------------------------------------------------------------
def _triangle(features):
    return similarity.pack_triangle(similarity.layer_responses(features)["gram"])


def _orthogonal(rng, d):
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(16, 48),
    d=st.integers(2, 24),
    scale=st.floats(1e-2, 1e2),
    seed=st.integers(0, 2**16),
)
def test_cka_is_invariant_to_rotations_and_isotropic_scaling(n, d, scale, seed):
    """CKA(X, Z) = CKA(c X Q, Z) for orthogonal Q and c > 0; CKA(X, c X Q) = 1."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    z = np.maximum(rng.normal(size=(n, 3, 3, 4)), 0).astype(np.float32)
    moved = (scale * x @ _orthogonal(rng, d)).astype(np.float32)
    tx, tm, tz = _triangle(x), _triangle(moved), _triangle(z)
    assert abs(similarity.cka(tx, tm) - 1) < 1e-5
    assert abs(similarity.cka(tx, tz) - similarity.cka(tm, tz)) < 1e-5
    assert abs(similarity.cka(tx, tz) - direct_cka(x.astype(np.float64), z)) < 1e-5


@settings(max_examples=20, deadline=None)
@given(n=st.integers(16, 40), filters=st.integers(1, 10), seed=st.integers(0, 2**16))
def test_alignment_undoes_any_permutation_of_distinct_filters(n, filters, seed):
    """Matching standardized responses recovers a random permutation of the filters."""
    rng = np.random.default_rng(seed)
    pooled = rng.normal(size=(n, filters))
    p = rng.permutation(filters)
    za, _, _ = similarity.standardize(pooled)
    zb, _, _ = similarity.standardize(pooled[:, p])
    matches, scores = similarity.match(similarity.correlations(za, zb))
    assert matches == np.argsort(p).tolist()
    assert all(abs(s - 1) < 2e-3 for s in scores)


def test_cka_matrix_agrees_with_pairwise_cka():
    """The all-pairs matrix (for heatmaps) equals CKA computed pair by pair."""
    rng = np.random.default_rng(0)
    triangles = [_triangle(rng.normal(size=(20, 3, 3, k))) for k in (2, 5, 9)]
    matrix = similarity.cka_matrix(triangles)
    for i, ti in enumerate(triangles):
        for j, tj in enumerate(triangles):
            assert abs(matrix[i, j] - similarity.cka(ti, tj)) < 1e-9


# What the References callback stores of the same model and weights (test_backends).
SAME_RESPONSES = """
from tb_cnnviz.callbacks import References

refs = np.random.default_rng(1).random((20, 16, 16, 3), dtype=np.float32)
cb = References(logdir, refs, budget=None)
model.fit(refs[:4], np.zeros(4), epochs=1, batch_size=4, verbose=0, callbacks=[cb])
"""


@pytest.mark.tensorflow  # runs TensorFlow beside JAX
def test_the_same_responses_on_tensorflow_and_jax(tmp_path):
    """JAX (TF hidden) stores what TF stores: runs compare as one (CKA 1, identity alignment)."""
    pytest.importorskip("jax")
    from test_backends import REPORT, SAME_MODEL, make_weights, write_on_tensorflow_and_jax

    script = SAME_MODEL + SAME_RESPONSES + REPORT
    write_on_tensorflow_and_jax(script, tmp_path, make_weights(tmp_path))
    logs = compare.Logdir(tmp_path)
    for layer, filters in (("c1", 6), ("c2", 8)):
        a, b = ("tensorflow", 0), ("jax", 0)
        assert abs(compare.cka(logs, layer, a, b) - 1) < 1e-5
        assert compare.align(logs, layer, a, b) == list(range(filters))
        got_tf, got_jax = (
            compare.examples(logs, "tensorflow", layer),
            compare.examples(logs, "jax", layer),
        )
        assert [[e[:3] for e in f] for f in got_tf] == [[e[:3] for e in f] for f in got_jax]


# -- the tab's routes, through the real plugin WSGI app -------------------------------------
ROUTES = "/data/plugin/cnnviz/"


@pytest.fixture(scope="module")
def routes(fitted):
    """A client of the real plugin app over the fitted logdir, read by TensorBoard's provider."""
    from conftest import LogdirReader

    return LogdirReader(fitted["logs"].path).client()


def get(client, route, status=200):
    response = client.get(ROUTES + route)
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json()


def test_plugin_cka_equals_numpy_from_the_activations(fitted, routes):
    """/similarity's CKA equals a float64 NumPy CKA of the activations, to 1e-5."""
    refs, last = fitted["refs"], EPOCHS - 1
    a, b = fitted["models"]["a"], fitted["models"]["b"]
    c1, c2 = activations(a, "c1", refs), activations(a, "c2", refs)
    layers = get(routes, f"similarity?mode=layers&run=a/train&step={last}")
    assert abs(layers["matrix"][0][1] - direct_cka(c1, c2)) < 1e-5
    runs = get(routes, f"similarity?mode=runs&runs=a/train,b/train&layer=c2&step={last}")
    assert abs(runs["matrices"][0][0][1] - direct_cka(c2, activations(b, "c2", refs))) < 1e-5
    time = get(routes, "similarity?mode=time&run=a/train&layer=c1")
    want = compare.cka(fitted["logs"], "c1", ("a", 0), ("a", last))
    assert abs(time["matrix"][0][last] - want) < 1e-9


def test_plugin_cka_of_a_layer_with_itself_is_one(routes):
    """Every diagonal cell of every mode is 1 within 1e-6, and every matrix is symmetric."""
    answers = [
        get(routes, "similarity?mode=time&run=a/train&layer=c2")["matrix"],
        get(routes, "similarity?mode=layers&run=b/train")["matrix"],
        *get(routes, "similarity?mode=runs&runs=a/train,b/train")["matrices"],
    ]
    for matrix in answers:
        m = np.array(matrix, dtype=float)
        assert np.allclose(np.diag(m), 1, atol=1e-6)
        assert np.allclose(m, m.T, atol=1e-12)


def test_similarity_modes_have_their_shapes_and_labels(routes):
    """time: steps x steps; runs: layers x runs x runs at the latest shared step; layers: L x L."""
    time = get(routes, "similarity?mode=time&run=a/train&layer=c1")
    assert (time["mode"], time["run"], time["layer"]) == ("time", "a/train", "c1")
    assert time["steps"] == list(range(EPOCHS))
    assert np.array(time["matrix"]).shape == (EPOCHS, EPOCHS)
    runs = get(routes, "similarity?mode=runs&runs=b/train,a/train")
    assert (runs["runs"], runs["layers"], runs["step"]) == (["b/train", "a/train"], ["c1", "c2"], 1)
    assert np.array(runs["matrices"]).shape == (2, 2, 2)
    one = get(routes, 'similarity?mode=runs&runs=["a/train","b/train"]&layer=c2&step=0')
    assert (one["layers"], one["step"], np.array(one["matrices"]).shape) == (["c2"], 0, (1, 2, 2))
    layers = get(routes, "similarity?mode=layers&run=a/train&step=0")
    assert (layers["layers"], layers["step"], np.array(layers["matrix"]).shape) == (
        ["c1", "c2"],
        0,
        (2, 2),
    )
    assert "warning" not in time and "warning" not in runs and "warning" not in layers


def test_alignment_route_recovers_a_known_permutation_exactly(fitted, routes):
    """/alignment gives the permutation b's filters were made with, at correlation ~1."""
    for layer, p in (("c1", fitted["p1"]), ("c2", fitted["p2"])):
        got = get(routes, f"alignment?layer={layer}&a=a/train&b=b/train&a_step=1&b_step=1")
        assert got["matches"] == np.argsort(p).tolist()
        assert min(got["correlations"]) > 0.999
        assert got["a"] == {"run": "a/train", "step": 1, "filters": len(p)}
        assert got["matches"] == compare.align(fitted["logs"], layer, ("a", 1), ("b", 1))


def test_examples_route_equals_compare_examples_with_what_crops_need(fitted, routes):
    """/examples lists compare.examples, and the stored reference images' atlases and scale."""
    got = get(routes, "examples?run=a/train&layer=c2&step=1")
    want = compare.examples(fitted["logs"], "a", "c2", 1)
    assert got["examples"] == [[list(e) for e in per] for per in want]
    assert (got["filters"], got["top_k"], got["grid"]) == (12, 8, [12, 12])
    images = got["images"]
    assert (images["count"], images["shape"], images["scale"]) == (N_REFS, [16, 16, 3], 1)
    assert images["tile"] == [16, 16, 3] and images["stride"] == [16 / 12, 16 / 12]
    assert sum(part["count"] for part in images["layout"]) == N_REFS
    atlas = routes.get(ROUTES + images["atlases"][0])
    assert atlas.status_code == 200 and atlas.mimetype == "image/png"
    assert "max-age" in atlas.headers["Cache-Control"]


def test_different_reference_images_get_the_message_and_no_number(routes):
    """Runs on other reference images: null cells and a warning; /alignment a 409, no matches."""
    runs = get(routes, "similarity?mode=runs&runs=a/train,c/train&layer=c1")
    assert runs["matrices"][0][0][1] is None and runs["matrices"][0][1][0] is None
    assert "different reference images" in runs["warning"]
    got = get(routes, "alignment?layer=c1&a=a/train&b=c/train", status=409)
    assert set(got) == {"error"} and "different reference images" in got["error"]
    assert "same reference_images" in got["error"]


def test_a_run_without_reference_images_is_told_how_to_log_them(tmp_path, read_logdir):
    """Every comparison route on a run logged without references says how to turn them on."""
    from tb_cnnviz.callbacks import FilterWeights

    x, y = make_shapes(16, size=16, seed=1)
    build().fit(x, y % 4, epochs=1, verbose=0, callbacks=[FilterWeights(tmp_path, budget=None)])
    client = read_logdir(tmp_path).client()
    for route in (
        "similarity?mode=time&run=train&layer=c1",
        "similarity?mode=layers&run=train",
        "similarity?mode=runs&runs=train",
        "alignment?layer=c1&a=train&b=train",
        "examples?run=train&layer=c1",
    ):
        error = get(client, route, status=404)["error"]
        assert "reference_images=x_val[:256]" in error, (route, error)


@pytest.mark.parametrize(
    ("route", "says"),
    [
        ("similarity?mode=time&run=nope&layer=c1", "runs with layer responses: 'a/train'"),
        ("similarity?mode=time&run=a/train&layer=c9", "layers: 'c1', 'c2'"),
        ("similarity?mode=layers&run=a/train&step=7", "logged steps: 0, 1"),
        ("similarity?mode=runs&runs=a/train,b/train&step=7", "steps they share: 0, 1"),
        ("similarity?mode=runs&runs=a/train,nope", "runs with layer responses"),
        ("alignment?layer=c1&a=a/train&b=b/train&b_step=9", "logged steps: 0, 1"),
        ("examples?run=a/train&layer=c3", "layers: 'c1', 'c2'"),
    ],
)
def test_unknown_runs_layers_and_steps_are_404_listing_what_exists(routes, route, says):
    """A run, layer or step that is not there: a JSON 404 naming what is."""
    assert says in get(routes, route, status=404)["error"]


@pytest.mark.parametrize(
    ("route", "says"),
    [
        ("similarity?run=a/train", "missing required parameter 'mode'"),
        ("similarity?mode=cka", "mode must be one of time, runs, layers"),
        ("similarity?mode=time&run=a/train", "'layer' for mode=time"),
        ("similarity?mode=runs&runs=a/train,", "runs must name runs"),
        ("similarity?mode=runs&runs=[1]", "JSON array of names"),
        ("similarity?mode=layers&run=a/train&step=-1", "step must be an integer"),
        ("alignment?layer=c1&a=a/train", "missing required parameter 'b'"),
        ("alignment?layer=c1&a=a/train&b=b/train&b_step=x", "Received: b_step='x'"),
        ("examples?run=a/train&layer=c1&step=1.5", "step must be an integer"),
    ],
)
def test_malformed_comparison_requests_are_400(routes, route, says):
    """Missing or malformed parameters: a JSON 400 saying which."""
    assert says in get(routes, route, status=400)["error"]
