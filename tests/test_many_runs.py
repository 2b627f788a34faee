"""A logdir of 50 runs through the real plugin app: every run listed, and the Similarity view's
runs × runs heatmap over all of them (issue 22; `benchmarks/many_runs.py` measures the same at
50 runs × 100 steps, with the bounds the README states)."""

from __future__ import annotations

import numpy as np
import pytest

from tb_cnnviz import similarity, summary

RUNS, STEPS, REFERENCES = 50, 3, 16
ROUTES = "/data/plugin/cnnviz/"


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    """50 runs × 3 steps of one conv layer's weights and responses to 16 reference images,
    written with `tb_cnnviz.summary`, read through TensorBoard's data provider."""
    from conftest import LogdirReader

    root = tmp_path_factory.mktemp("many")
    rng = np.random.default_rng(0)
    refs = rng.random((REFERENCES, 8, 8, 3), dtype=np.float32)
    digest = similarity.reference_hash(refs)
    for r in range(RUNS):
        writer = summary.create_file_writer(str(root / f"run_{r:02d}"))
        base = rng.normal(size=(REFERENCES, 4, 4, 8))
        for step in range(STEPS):
            with writer.as_default(step=step):
                if step == 0:
                    summary.reference_images(refs)
                summary.filter_weights("conv", rng.normal(size=(3, 3, 3, 8)).astype(np.float32))
                acts = np.maximum(base + 0.1 * step * rng.normal(size=base.shape), 0)
                summary.responses("conv", acts.astype(np.float32), reference_images=digest)
        writer.close()
    return LogdirReader(root).client()


def get(client, route):
    response = client.get(ROUTES + route)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def test_every_one_of_fifty_runs_is_listed_with_every_step(many):
    """/runs and /tags list all 50 runs, each with its 3 steps of weights and responses."""
    names = [f"run_{r:02d}" for r in range(RUNS)]
    assert sorted(get(many, "runs")) == names
    tags = get(many, "tags")
    assert sorted(tags) == names
    for run in names:
        assert tags[run]["conv/weights"]["steps"] == list(range(STEPS))


def test_the_runs_by_runs_heatmap_covers_fifty_runs_and_is_answered_again_the_same(many):
    """The Similarity heatmap of all 50 runs is 50 × 50, symmetric with ones on its diagonal,
    and asking again answers the same matrix (from the answered-heatmap cache)."""
    names = ",".join(f"run_{r:02d}" for r in range(RUNS))
    first = get(many, f"similarity?mode=runs&runs={names}&layer=conv&step={STEPS - 1}")
    [matrix] = first["matrices"]
    m = np.array(matrix, dtype=float)
    assert m.shape == (RUNS, RUNS)
    assert np.allclose(np.diag(m), 1, atol=1e-6) and np.allclose(m, m.T, atol=1e-12)
    assert (m[~np.eye(RUNS, dtype=bool)] < 1 - 1e-6).all()  # distinct runs differ
    assert get(many, f"similarity?mode=runs&runs={names}&layer=conv&step={STEPS - 1}") == first
