import json

import numpy as np
import pytest

from systematics.histogram import Axis, Binning, Histogram


def test_fill_matches_numpy_histogram2d():
    rng = np.random.default_rng(1)
    x, y, w = rng.uniform(-0.1, 1.1, 1000), rng.uniform(-0.1, 1.1, 1000), rng.uniform(0, 2, 1000)
    binning = Binning.uniform(a=(5, 0.0, 1.0), b=(4, 0.0, 1.0))
    h = Histogram.fill(binning, {"a": x, "b": y}, w)
    inside = (x < 1.0) & (y < 1.0)  # half-open ranges [low, high)
    ref, _, _ = np.histogram2d(x[inside], y[inside], bins=[binning.axes[0].edges, binning.axes[1].edges], weights=w[inside])
    ref2, _, _ = np.histogram2d(x[inside], y[inside], bins=[binning.axes[0].edges, binning.axes[1].edges], weights=w[inside] ** 2)
    np.testing.assert_allclose(h.values, ref, rtol=1e-12)
    np.testing.assert_allclose(h.variances, ref2, rtol=1e-12)


def test_save_load_round_trip(tmp_path):
    binning = Binning((Axis("theta_e_rad", [0.0, 0.001, 0.003, 0.01]),))
    h = Histogram(binning, [1.0, 2.0, 3.5], [1.0, 2.5, 3.0], luminosity_inv_nb=12.5, metadata={"seed": 3})
    path = tmp_path / "h.json"
    h.save(path)
    back = Histogram.load(path)
    assert back.binning.same_as(binning) and back.binning.names == ("theta_e_rad",)
    np.testing.assert_array_equal(back.values, h.values)
    np.testing.assert_array_equal(back.variances, h.variances)
    assert back.luminosity_inv_nb == 12.5 and back.metadata == {"seed": 3}


def test_bad_files(tmp_path):
    with pytest.raises(ValueError, match="cannot be read"):
        Histogram.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        Histogram.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"values": [1]}))
    with pytest.raises(ValueError, match="not a muone-histogram"):
        Histogram.load(tmp_path / "other.json")
    doc = Histogram(Binning.uniform(x=(2, 0, 1)), [1, 2]).to_dict()
    doc["values"] = [1, 2, 3]
    (tmp_path / "shape.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"values have shape \(3,\)"):
        Histogram.load(tmp_path / "shape.json")


def test_binning_mismatch_messages():
    a = Binning.uniform(theta_e_rad=(4, 0.0, 0.032))
    with pytest.raises(ValueError, match=r"data has axes \['theta_e_rad'\], templates has axes \['theta_mu_rad'\]"):
        a.require_same(Binning.uniform(theta_mu_rad=(4, 0.0, 0.032)))
    with pytest.raises(ValueError, match="data has 4 bins, templates has 5"):
        a.require_same(Binning.uniform(theta_e_rad=(5, 0.0, 0.032)))
    with pytest.raises(ValueError, match="edge 1 is 0.008 in data and 0.0075 in templates"):
        a.require_same(Binning.uniform(theta_e_rad=(4, 0.0, 0.03)))


def test_bad_axes():
    with pytest.raises(ValueError, match="strictly increasing"):
        Axis("x", [0.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="at least 2"):
        Axis("x", [0.0])
    with pytest.raises(ValueError, match="variances must be finite and >= 0"):
        Histogram(Binning.uniform(x=(2, 0, 1)), [1, 2], [-1, 2])
