"""Matrix files: JSON, CSV and .npy read the same matrix; everything malformed is a DataError."""

import json

import numpy as np
import pytest

from cnnlab.errors import DataError, DataNotFoundError, UserError
from cnnlab.numpy_ref.matrix_io import load_matrix

M = [[1, 2.5, -3], [4, 5, 6e-3]]


def test_json_csv_and_npy_give_the_same_matrix(tmp_path):
    (tmp_path / "m.json").write_text(json.dumps(M))
    (tmp_path / "m.csv").write_text("1, 2.5, -3\n4,5,6e-3\n\n")
    np.save(tmp_path / "m.npy", np.array(M))
    np.save(tmp_path / "i.npy", np.array([[1, 2], [3, 4]], dtype=np.int16))
    for name in ("m.json", "m.csv", "m.npy"):
        m = load_matrix(tmp_path / name)
        assert m.dtype == np.float64
        np.testing.assert_array_equal(m, M)
    np.testing.assert_array_equal(load_matrix(tmp_path / "i.npy"), [[1, 2], [3, 4]])


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("r.json", "[[1, 2], [3]]", "ragged matrix: row 2 has 1 values but row 1 has 2"),
        ("s.json", '[[1, "a"]]', 'row 1, column 2 is "a", not a number'),
        ("b.json", "[[1, true]]", "row 1, column 2 is true, not a number"),
        ("3d.json", "[[[1]]]", "row 1, column 1 is .* not a number .a 2-D matrix"),
        ("1d.json", "[1, 2, 3]", "row 1 is 1, not a list"),
        ("n.json", "[[1, NaN]]", "row 1, column 2 is nan; only finite numbers"),
        ("e.json", "[]", "non-empty list of rows"),
        ("bad.json", "[[1, 2]", "not valid JSON"),
        ("x.csv", "1,2\n3,x\n", "line 2, column 2 is 'x', not a number"),
        ("r.csv", "1,2\n3\n", "ragged matrix: row 2 has 1 values but row 1 has 2"),
        ("i.csv", "1,inf\n", "only finite numbers"),
        ("e.csv", "\n\n", "the file has no values"),
        ("m.txt", "1 2", "unsupported file type '.txt'"),
    ],
)
def test_malformed_text_files(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=message) as info:
        load_matrix(tmp_path / name, "kernel")
    assert isinstance(info.value, UserError) and str(info.value).startswith(
        f"kernel file {tmp_path / name}"
    )


def test_malformed_npy_files(tmp_path):
    np.save(tmp_path / "3d.npy", np.zeros((2, 2, 2)))
    np.save(tmp_path / "o.npy", np.array([[1, "a"]], dtype=object), allow_pickle=True)
    np.save(tmp_path / "c.npy", np.zeros((2, 2), dtype=complex))
    (tmp_path / "junk.npy").write_bytes(b"not an array")
    for name, message in (
        ("3d.npy", "expected a 2-D matrix, got a 3-D array"),
        ("o.npy", "holds pickled Python objects, not a numeric array"),
        ("c.npy", "expected integers or floats, got dtype complex128"),
        ("junk.npy", "not a .npy file"),
    ):
        with pytest.raises(DataError, match=message):
            load_matrix(tmp_path / name)


def test_missing_file(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        load_matrix(tmp_path / "nope.csv")
