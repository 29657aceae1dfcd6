"""The plumbing every stage shares: the argument-check policy and the plotting set-up."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from fastsae._checks import ArgumentTypeError, check_bool, check_choice, check_int, check_number
from fastsae._plot import figure_png, new_figure, save_figure


@pytest.mark.parametrize("bad", [2.7, "3", True, None, np.float64(3.0)], ids=["float", "str", "bool", "none", "np_float"])
def test_wrong_type_is_a_type_error_that_older_callers_still_catch(bad):
    with pytest.raises(TypeError, match=r"^k must be an int, got "):
        check_int(bad, "k", min=1)
    with pytest.raises(ValueError):  # ArgumentTypeError is both
        check_int(bad, "k", min=1)


@pytest.mark.parametrize("value, kw, msg", [
    (0, dict(min=1), r"k must be >= 1, got 0"),
    (9, dict(min=1, max=8), r"k must be in \[1, 8\], got 9"),
    (-1, dict(max=-2), r"k must be <= -2, got -1"),
], ids=["below", "above", "max_only"])
def test_wrong_int_value_is_a_value_error(value, kw, msg):
    with pytest.raises(ValueError, match=msg) as e:
        check_int(value, "k", **kw)
    assert not isinstance(e.value, TypeError)


def test_accepted_values_come_back_as_builtins():
    assert check_int(np.int32(3), "k", min=1) == 3 and type(check_int(np.int64(3), "k")) is int
    assert check_int(None, "k", none=True) is None
    assert check_number(np.float32(0.5), "lr") == 0.5 and type(check_number(1, "lr")) is float
    assert check_choice("max", "rule", ("max", "min")) == "max"
    assert check_bool(np.bool_(True), "flag") is True


@pytest.mark.parametrize("value, kw, msg", [
    (0.0, dict(min=0, min_open=True), r"lr must be > 0, got 0"),
    (1.0, dict(min=0, max=1, max_open=True), r"lr must be in \[0, 1\), got 1"),
    (float("nan"), {}, r"lr must be finite, got nan"),
    (float("inf"), dict(min=0), r"lr must be finite, got inf"),
], ids=["open_min", "open_max", "nan", "inf"])
def test_wrong_number_value(value, kw, msg):
    with pytest.raises(ValueError, match=msg):
        check_number(value, "lr", **kw)


def test_other_checks():
    with pytest.raises(ArgumentTypeError, match="lr must be a number"):
        check_number("1e-3", "lr")
    with pytest.raises(ValueError, match=r"rule must be one of 'max', 'min'; got 'mean'"):
        check_choice("mean", "rule", ("max", "min"))
    with pytest.raises(TypeError, match="flag must be True or False"):
        check_bool(1, "flag")


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_figures_are_drawn_without_pyplot_and_written_atomically(tmp_path):
    import sys

    fig, ax = new_figure(4.0, 3.0)
    ax.plot([0, 1], [1, 0])
    path = save_figure(fig, tmp_path / "f.png", dpi=50)
    assert _png_size(open(path, "rb").read()) == (200, 150)  # inches x dpi
    assert _png_size(figure_png(fig, dpi=100)) == (400, 300)
    assert [p.name for p in tmp_path.iterdir()] == ["f.png"]  # no temporary left behind
    fig, axes = new_figure(6.0, 2.0, ncols=3, layout="constrained")
    assert len(axes) == 3
    assert "matplotlib.pyplot" not in sys.modules or not _pyplot_used_here()


def _pyplot_used_here() -> bool:
    import matplotlib.pyplot as plt

    return bool(plt.get_fignums())  # figures made through pyplot would be registered there
