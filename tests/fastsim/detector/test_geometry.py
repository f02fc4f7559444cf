"""Detector geometry: presets, layer arrays, material budget, misalignment and bad inputs."""

import copy
import math
import tomllib
from importlib import resources

import numpy as np
import pytest
from numba import njit

from fastsim.config import content_hash
from fastsim.detector.geometry import (
    KIND_SENSOR,
    KIND_TARGET,
    Calorimeter,
    Geometry,
    Misalignment,
    Module,
    Station,
    available_geometries,
    load_geometry,
)
from fastsim.generator.targets import Target

TB2022_Z_CM = (18.02, 21.87, 55.36, 56.62, 89.92, 93.77)
TILT = 0.233
# Radiation lengths by hand from the PDG values in g/cm^2 and the densities (REFERENCE.md).
X0_SI_CM = 21.82 / 2.329
X0_GRAPHITE_CM = 42.70 / 1.83


def tb2022_table():
    """The tb2022 preset as a plain dict, to be modified by the bad-input tests."""
    text = resources.files("fastsim.detector").joinpath("geometries/tb2022_station.toml").read_text()
    return tomllib.loads(text)


def one_station(*modules, target=None, length_cm=None, **station):
    return Geometry("test", (Station("S0", 0.0, target=target, modules=modules, length_cm=length_cm, **station),))


# --- presets ---------------------------------------------------------------------------------
def test_the_presets_are_there():
    assert {"tb2022_station", "tr2023", "run2025", "full"} <= set(available_geometries())


@pytest.mark.parametrize("name", available_geometries())
def test_every_preset_loads_with_consistent_layers(name):
    geometry = load_geometry(name)
    layers = geometry.layers()
    assert geometry.name == name
    assert len(layers) == geometry.target_count + geometry.sensor_count
    assert geometry.sensor_count == 2 * geometry.module_count
    assert np.all(np.diff(layers.z_cm) > 0.0)  # z-ordered, no two layers at the same z
    assert np.array_equal(layers.z_cm, layers.centre_cm[:, 2])
    sensors = layers.kind == KIND_SENSOR
    assert np.sum(layers.kind == KIND_TARGET) == geometry.target_count
    pairs = {(s, m) for s, m in zip(layers.station[sensors], layers.module[sensors])}
    assert len(pairs) == geometry.module_count
    assert np.all(np.bincount(layers.sensor[sensors]) == geometry.module_count)  # sensors 0 and 1 of each
    # every sensor frame is orthonormal and right-handed: u x s = n
    u, s, n = layers.measure_dir[sensors], layers.strip_dir[sensors], layers.normal[sensors]
    np.testing.assert_allclose(np.cross(u, s), n, atol=1e-15)
    np.testing.assert_allclose(np.linalg.norm(u, axis=1), 1.0, rtol=1e-15)
    assert geometry.is_nominal


def test_tb2022_modules_at_the_reference_positions():
    geometry = load_geometry("tb2022_station")
    station = geometry.stations[0]
    assert [m.view for m in station.modules] == ["X", "Y", "U", "V", "X", "Y"]
    assert station.target == Target("graphite", 2.0, 0.0)
    layers = geometry.layers()
    sensors = layers.kind == KIND_SENSOR
    centres = layers.centre_cm[sensors].reshape(6, 2, 3)
    np.testing.assert_allclose(centres.mean(axis=1)[:, 2], TB2022_Z_CM, rtol=1e-15)
    spacing = np.linalg.norm(centres[:, 1] - centres[:, 0], axis=1)
    np.testing.assert_allclose(spacing, [0.18, 0.18, 0.40, 0.40, 0.18, 0.18], rtol=1e-12)
    assert np.all(layers.pitch_cm[sensors] == 0.009) and np.all(layers.n_strips[sensors] == 1016)
    np.testing.assert_allclose(layers.resolution_cm[sensors], 0.009 / math.sqrt(12.0))


def test_tb2022_material_budget_by_hand():
    layers = load_geometry("tb2022_station").layers()
    sensor_pair = 2 * 0.032 / X0_SI_CM
    expected = 2.0 / X0_GRAPHITE_CM + 4 * sensor_pair / math.cos(TILT) + 2 * sensor_pair
    assert layers.x_over_x0.sum() == pytest.approx(expected, rel=1e-12)
    assert layers.x_over_x0[layers.kind == KIND_TARGET].sum() == pytest.approx(2.0 / X0_GRAPHITE_CM, rel=1e-12)


def test_multi_station_presets():
    tr2023, run2025, full = (load_geometry(n) for n in ("tr2023", "run2025", "full"))
    assert [s.target.thickness_cm for s in tr2023.stations] == [2.0, 3.0]
    assert {s.target.material for s in tr2023.stations + run2025.stations} == {"graphite"}
    assert len(run2025.stations) == 3
    assert len(full.stations) == 40 and full.module_count == 240
    assert [s.name for s in full.stations[:2]] == ["S0", "S1"] and full.stations[-1].name == "S39"
    assert [s.z_origin_cm for s in full.stations] == [100.0 * k for k in range(40)]
    assert sum(s.target.thickness_cm for s in full.stations if s.target.material == "Be") == pytest.approx(60.0)
    assert full.calorimeter == Calorimeter(z_cm=4000.0)
    # station k of the full detector is station 0 moved by 100 k cm
    layers = full.layers()
    first, last = layers.z_cm[layers.station == 0], layers.z_cm[layers.station == 39]
    np.testing.assert_allclose(last - first, 3900.0, rtol=1e-14)


# --- views and tilt --------------------------------------------------------------------------
def test_view_directions_and_tilt_axis():
    geometry = one_station(
        Module("X", "X", 10.0, tilt_rad=TILT), Module("Y", "Y", 20.0, tilt_rad=TILT), Module("U", "U", 30.0),
        Module("V", "V", 40.0), Module("S", "stereo", 50.0, stereo_angle_rad=0.1),
    )
    layers = geometry.layers()
    u, s, n = layers.measure_dir[::2], layers.strip_dir[::2], layers.normal[::2]
    c, t = math.cos(TILT), math.sin(TILT)
    # X: strips along y, tilt about them: the normal leans towards +x, u gets a -z component
    np.testing.assert_allclose(u[0], [c, 0, -t], atol=1e-16)
    np.testing.assert_allclose(s[0], [0, 1, 0], atol=1e-16)
    np.testing.assert_allclose(n[0], [t, 0, c], atol=1e-16)
    np.testing.assert_allclose(u[1], [0, c, -t], atol=1e-16)
    np.testing.assert_allclose(s[1], [-1, 0, 0], atol=1e-16)
    r = math.sqrt(0.5)
    np.testing.assert_allclose(u[2], [r, r, 0], atol=1e-16)  # U measures (x + y) / sqrt 2
    np.testing.assert_allclose(u[3], [r, -r, 0], atol=1e-16)  # V measures (x - y) / sqrt 2
    np.testing.assert_allclose(u[4], [math.cos(0.1), math.sin(0.1), 0], atol=1e-16)
    # a track along z crosses a tilted 320 um sensor over 320 um tan(tilt) in u (charge sharing)
    assert 0.032 * abs(u[0] @ [0, 0, 1]) / (n[0] @ [0, 0, 1]) == pytest.approx(0.032 * math.tan(TILT), rel=1e-14)


def test_tilt_enters_the_overlap_check():
    # untilted X stacks span +-0.106 cm and do not touch 1.5 cm apart; tilted by 0.233 rad they
    # span +-(0.212 cos + 9.144 sin) / 2 = +-1.16 cm and overlap
    one_station(Module("A", "X", 18.0), Module("B", "X", 19.5))
    with pytest.raises(ValueError, match=r"modules\[1\].z_cm = 19.5 overlaps modules\[0\]"):
        one_station(Module("A", "X", 18.0, tilt_rad=TILT), Module("B", "X", 19.5, tilt_rad=TILT))


# --- misalignment ----------------------------------------------------------------------------
def test_module_shift_moves_its_sensor_centres():
    geometry = load_geometry("tb2022_station")
    nominal = geometry.layers()
    moved = geometry.with_misalignment(modules={(0, "U"): Misalignment(dx_cm=0.01, dz_cm=-0.002)}).layers()
    in_module = (moved.station == 0) & (moved.module == 2)
    assert np.count_nonzero(in_module) == 2
    np.testing.assert_allclose(moved.centre_cm[in_module] - nominal.centre_cm[in_module], [[0.01, 0, -0.002]] * 2,
                               atol=1e-13)
    np.testing.assert_array_equal(moved.centre_cm[~in_module], nominal.centre_cm[~in_module])
    np.testing.assert_array_equal(moved.measure_dir, nominal.measure_dir)


def test_module_rotation_about_z_rotates_the_strips():
    geometry = load_geometry("tb2022_station").with_misalignment(modules={(0, 2): {"rot_z_rad": 1e-3}})
    layers = geometry.layers()
    u = layers.measure_dir[(layers.module == 2)][0]
    angle = math.pi / 4 + 1e-3
    np.testing.assert_allclose(u, [math.cos(angle), math.sin(angle), 0.0], atol=1e-16)
    centres = layers.centre_cm[layers.module == 2]
    np.testing.assert_allclose(centres[:, 2], [55.36 - 0.2, 55.36 + 0.2], rtol=1e-14)  # about the module centre


def test_length_scale_moves_a_module_at_90_cm_by_0_09_cm():
    geometry = one_station(Module("A", "X", 10.0), Module("B", "Y", 90.0))
    scaled = geometry.with_misalignment(stations={0: {"length_scale": 1.001}}).layers()
    centre = scaled.centre_cm[scaled.module == 1].mean(axis=0)
    assert centre[2] - 90.0 == pytest.approx(0.09, rel=1e-9)
    shifted = geometry.with_misalignment(stations={"S0": {"z_offset_cm": 0.05}}).layers()
    np.testing.assert_allclose(shifted.z_cm - geometry.layers().z_cm, 0.05, rtol=1e-9)


def test_nominal_undoes_the_misalignment():
    geometry = load_geometry("tr2023")
    misaligned = geometry.with_misalignment(
        modules={("S0", "X1"): Misalignment(dy_cm=0.003, rot_x_rad=1e-4), (1, 5): {"dx_cm": -0.002}},
        stations={"S1": {"length_scale": 1.00001, "z_offset_cm": 0.001}},
    )
    assert not misaligned.is_nominal
    assert misaligned.nominal() == geometry
    assert content_hash(misaligned) != content_hash(geometry)
    a, b = misaligned.nominal().layers(), geometry.layers()
    np.testing.assert_array_equal(a.centre_cm, b.centre_cm)
    np.testing.assert_array_equal(a.normal, b.normal)


def test_misalignment_from_toml(tmp_path):
    table = tb2022_table()
    table["stations"][0]["length_scale"] = 1.001
    table["stations"][0]["modules"][4]["misalignment"] = {"dx_cm": 0.02}
    path = tmp_path / "mine.toml"
    path.write_text(_to_toml(table))
    geometry = load_geometry(path)
    assert geometry.stations[0].modules[4].misalignment == Misalignment(dx_cm=0.02)
    layers = geometry.layers()
    centre = layers.centre_cm[layers.module == 4].mean(axis=0)
    np.testing.assert_allclose(centre, [0.02, 0.0, 89.92 * 1.001], rtol=1e-13)
    assert geometry.nominal() == load_geometry("tb2022_station")


def test_layers_feed_numba_kernels():
    @njit
    def budget(x_over_x0, kind):
        total = 0.0
        for i in range(x_over_x0.size):
            if kind[i] == 1:
                total += x_over_x0[i]
        return total

    layers = load_geometry("tb2022_station").layers()
    assert layers.kind.dtype == np.int64 and layers.centre_cm.flags.c_contiguous
    assert budget(layers.x_over_x0, layers.kind) == pytest.approx(layers.x_over_x0[1:].sum(), rel=1e-14)


# --- bad inputs ------------------------------------------------------------------------------
def _bad(change):
    table = tb2022_table()
    change(table)
    return table


def _module(table, i=0):
    return table["stations"][0]["modules"][i]


@pytest.mark.parametrize("change, message", [
    (lambda t: _module(t).update(material="Unobtainium"),
     r"geometry.stations\[0\].modules\[0\].material = 'Unobtainium' is unknown"),
    (lambda t: t["stations"][0]["target"].update(material="Kryptonite"),
     r"geometry.stations\[0\].target.material = 'Kryptonite' is unknown"),
    (lambda t: _module(t).update(sensor_thickness_cm=0.0),
     r"geometry.stations\[0\].modules\[0\].sensor_thickness_cm = 0.0 is outside the allowed range \(0.0, 1.0\]"),
    (lambda t: t["stations"][0]["target"].update(thickness_cm=-2.0),
     r"geometry.stations\[0\].target.thickness_cm = -2.0 is outside the allowed range \(0.0"),
    (lambda t: _module(t).update(pitch_cm=-0.009), r"modules\[0\].pitch_cm = -0.009 is outside"),
    (lambda t: _module(t, 3).update(z_cm=50.0),
     r"geometry.stations\[0\].modules\[3\].z_cm = 50.0 is not after modules\[2\].z_cm = 55.36; .*z order"),
    (lambda t: _module(t, 3).update(z_cm=55.6),
     r"geometry.stations\[0\].modules\[3\].z_cm = 55.6 overlaps modules\[2\]"),
    (lambda t: _module(t, 0).update(z_cm=1.5), r"target.z_cm = 0.0 overlaps modules\[0\]"),
    (lambda t: _module(t, 5).update(z_cm=99.5),
     r"modules\[5\].z_cm = 99.5 is outside the station: .* allowed \[0, 100.0\] cm"),
    (lambda t: t["stations"][0]["target"].update(z_cm=-3.0), r"target.z_cm = -3.0 is outside the station"),
    (lambda t: _module(t).update(hit_efficiency=1.5),
     r"modules\[0\].hit_efficiency = 1.5 is outside the allowed range \[0.0, 1.0\]"),
    (lambda t: _module(t).update(hit_efficiency=-0.1), r"modules\[0\].hit_efficiency = -0.1 is outside"),
    (lambda t: _module(t).update(noise_hits_per_event=-1.0), r"modules\[0\].noise_hits_per_event = -1.0 is outside"),
    (lambda t: _module(t).update(noise_hits_per_event=150.0),
     r"modules\[0\].noise_hits_per_event = 150.0 is outside the allowed range \[0.0, 100.0\]"),
    (lambda t: t["stations"][0].update(modules=[], target=None) or t["stations"][0].pop("target"),
     r"geometry.stations\[0\] \('S0'\) has neither a target nor modules"),
    (lambda t: _module(t).update(colour="red"), r"unknown key geometry.stations\[0\].modules\[0\].colour = 'red'"),
    (lambda t: t["stations"][0].update(colour="red"), r"unknown key geometry.stations\[0\].colour = 'red'"),
    (lambda t: t.update(colour="red"), r"unknown key geometry.colour = 'red'"),
    (lambda t: _module(t).update(misalignment={"dq_cm": 1.0}),
     r"unknown key geometry.stations\[0\].modules\[0\].misalignment.dq_cm"),
    (lambda t: _module(t).update(misalignment={"rot_x_rad": 0.5}),
     r"modules\[0\].misalignment.rot_x_rad = 0.5 is outside the allowed range \[-0.1, 0.1\]"),
    (lambda t: _module(t).update(z_cm="18.02"), r"modules\[0\].z_cm = '18.02' has the wrong type"),
    (lambda t: _module(t).update(n_strips=1016.0), r"modules\[0\].n_strips = 1016.0 has the wrong type"),
    (lambda t: _module(t).update(view="W"), r"modules\[0\].view = 'W' is not allowed; choose one of"),
    (lambda t: _module(t).update(view="stereo"), r"modules\[0\].stereo_angle_rad is required with view = 'stereo'"),
    (lambda t: _module(t).update(stereo_angle_rad=0.1), r"stereo_angle_rad = 0.1 is only allowed with view = 'stereo'"),
    (lambda t: _module(t, 1).update(name="X1"), r"modules\[1\].name = 'X1' is used twice"),
    (lambda t: _module(t).pop("z_cm"), r"missing required key geometry.stations\[0\].modules\[0\].z_cm"),
    (lambda t: t["stations"][0].update(length_scale=2.0),
     r"geometry.stations\[0\].length_scale = 2.0 is outside the allowed range \[0.9, 1.1\]"),
    (lambda t: t["stations"][0].update(copies=3), r"missing required key geometry.stations\[0\].copy_step_cm"),
    (lambda t: t["stations"][0].update(copies=0), r"geometry.stations\[0\].copies = 0 is outside"),
    (lambda t: t.update(calorimeter={"z_cm": 50.0}),
     r"geometry.calorimeter.z_cm = 50.0 is before the end of the last station"),
    (lambda t: t.update(calorimeter={"z_cm": 150.0, "material": "Jelly"}), r"calorimeter.material = 'Jelly' is unknown"),
    (lambda t: t.update(calorimeter={"z_cm": 150.0, "n_x": 0}), r"calorimeter.n_x = 0 is outside"),
    (lambda t: t.pop("stations"), r"missing required key geometry.stations"),
    (lambda t: t.update(stations=[]), r"stations = \(\) is empty"),
])
def test_bad_input_names_the_key(change, message):
    with pytest.raises(ValueError, match=message):
        Geometry.from_dict(_bad(change))


def test_station_inside_the_previous_one():
    table = tb2022_table()
    second = copy.deepcopy(table["stations"][0])
    second.update(name="S1", z_origin_cm=50.0)
    table["stations"].append(second)
    with pytest.raises(ValueError, match=r"geometry.stations\[1\].z_origin_cm = 50.0 is inside stations\[0\]"):
        Geometry.from_dict(table)
    # without length_cm, the station reaches as far as its last sensor stack
    for station in table["stations"]:
        del station["length_cm"]
    table["stations"][1]["z_origin_cm"] = 94.0
    with pytest.raises(ValueError, match=r"stations\[1\].z_origin_cm = 94.0 is inside stations\[0\], which reaches z = 94.928"):
        Geometry.from_dict(table)
    table["stations"][1]["z_origin_cm"] = 95.0
    assert len(Geometry.from_dict(table).stations) == 2


def test_direct_construction_validates():
    with pytest.raises(ValueError, match=r"hit_efficiency = 2.0 is outside the allowed range \[0.0, 1.0\]"):
        Module("X1", "X", 18.0, hit_efficiency=2.0)
    with pytest.raises(ValueError, match=r"material = 'Pb2' is unknown"):
        Module("X1", "X", 18.0, material="Pb2")
    with pytest.raises(ValueError, match=r"modules\[1\].z_cm = 10.0 is not after modules\[0\].z_cm = 20.0"):
        Station("S0", 0.0, modules=(Module("A", "X", 20.0), Module("B", "Y", 10.0)))
    with pytest.raises(ValueError, match=r"modules\[0\].z_cm = 150.0 is outside the station"):
        Station("S0", 0.0, modules=(Module("A", "X", 150.0),), length_cm=100.0)
    assert Module("U", "U", 0.5).sensor_spacing_cm == 0.40 and Module("X", "X", 0.5).sensor_spacing_cm == 0.18


def test_bad_misalignment_requests():
    geometry = load_geometry("tb2022_station")
    with pytest.raises(ValueError, match=r"station = 'S7' is unknown; stations: .*\['S0'\]"):
        geometry.with_misalignment(modules={("S7", 0): Misalignment()})
    with pytest.raises(ValueError, match=r"module = 'Z9' is unknown in station 'S0'; .*'X1'"):
        geometry.with_misalignment(modules={(0, "Z9"): Misalignment()})
    with pytest.raises(ValueError, match=r"unknown key stations\[0\].tilt = 0.1"):
        geometry.with_misalignment(stations={0: {"tilt": 0.1}})
    with pytest.raises(ValueError, match=r"stations\[0\].length_scale = 1.5 is outside"):
        geometry.with_misalignment(stations={0: {"length_scale": 1.5}})
    with pytest.raises(ValueError, match=r"unknown key misalignment\[\(0, 0\)\].dr_cm"):
        geometry.with_misalignment(modules={(0, 0): {"dr_cm": 0.1}})


def test_misalignment_keeps_stations_modules_and_calorimeter_in_order():
    """A station's length scale or z offset, or a module's dz, may not move a layer past the next
    station's, the next module's or the calorimeter: checked on the misaligned layers, by name."""
    geometry = load_geometry("tr2023")
    with pytest.raises(ValueError, match=r"stations 'S0' \(length_scale = 1.1, z_offset_cm = 0.0\) and 'S1' .* overlap "
                                         r"with the misalignment: a layer of 'S0' is at z = 103.059 cm"):
        geometry.with_misalignment(stations={0: {"length_scale": 1.1}})
    with pytest.raises(ValueError, match=r"calorimeter.z_cm = 200.0 is before the last layer, which reaches z = 213.874 cm"):
        geometry.with_misalignment(stations={1: {"z_offset_cm": 20.0}})
    with pytest.raises(ValueError, match=r"modules 'X1' .* and 'Y1' \(Misalignment\(.*dz_cm=-4.0.*\)\) of station 'S0' "
                                         r".* overlap with the misalignment"):
        geometry.with_misalignment(modules={(0, "Y1"): Misalignment(dz_cm=-4.0)})
    # misalignments of the studies' size are accepted
    assert not geometry.with_misalignment(stations={0: {"length_scale": 1.0001, "z_offset_cm": 0.01}},
                                          modules={(1, "U"): Misalignment(dz_cm=0.05)}).is_nominal


def test_unknown_preset_lists_the_available_ones():
    with pytest.raises(ValueError, match=r"geometry = 'tb2099' is neither a preset .*'tb2022_station'"):
        load_geometry("tb2099")


def test_bad_toml_file_names_the_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("name = \n")
    with pytest.raises(ValueError, match="broken.toml.* is not valid TOML"):
        load_geometry(path)
    path.write_text('[[stations]]\nname = "S0"\nz_origin_cm = 0.0\nlength = 3\n')
    with pytest.raises(ValueError, match=r"unknown key .*broken.toml.stations\[0\].length = 3"):
        load_geometry(path)


def _to_toml(table):
    """A minimal TOML writer for the geometry tables of these tests (str, float, int, lists of tables)."""
    def value(v):
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, str):
            return f'"{v}"'
        return repr(v)

    lines = [f"{k} = {value(v)}" for k, v in table.items() if k != "stations"]
    for station in table["stations"]:
        lines.append("[[stations]]")
        lines += [f"{k} = {value(v)}" for k, v in station.items()]
    return "\n".join(lines) + "\n"
